// Remote volumes through smad: a remote smad-tgt (a storage node: malloc bdevs, NVMe/TCP and discovery
// listeners) and smad with its embedded smad-tgt (the local node). Measures
//   1. attach time of a remote volume through discovery (AttachVolume, which starts the discovery
//      service, attaches the remote controller and exposes the namespace; DetachVolume in between stops
//      it again, so every attach is cold), p50/p99;
//   2. 4 KiB random read at QD32 with smad-perf: the remote namespace directly, then host -> local
//      smad-tgt -> remote smad-tgt, plain and encrypted (bdev_crypto, AES_CBC);
//   3. QoS through SetQos: one volume limited (IOPS, then bandwidth) while another runs unlimited, both
//      loaded by smad-perf at the same time.
// Usage: remote_volume_bench [--attaches N] [--seconds S] [--perf-core-mask MASK]

#include <signal.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "common/latency_histogram.h"
#include "nvme/host/transport_id.h"
#include "support/net.h"
#include "support/sma_helpers.h"
#include "support/smad_process.h"
#include "support/temp_dir.h"
#include "support/tgt_process.h"
#include "tools/perf.h"

namespace {

using smad::testing::Json;
using Clock = std::chrono::steady_clock;

constexpr char kRemoteNqn[] = "nqn.2016-06.io.spdk:remote0";
constexpr char kLocalNqn[] = "nqn.2016-06.io.spdk:local0";
constexpr char kHost[] = "nqn.2016-06.io.spdk:host0";
constexpr char kKey[] = "1234567890abcdef1234567890abcdef";

bool Check(const absl::Status& status, const char* what) {
  if (!status.ok()) std::fprintf(stderr, "%s: %s\n", what, status.ToString().c_str());
  return status.ok();
}

sma::VolumeParameters Volume(const std::string& uuid, const std::string& discovery_port, bool crypto) {
  sma::VolumeParameters v;
  v.set_volume_id(smad::testing::UuidBytes(uuid));
  v.mutable_nvmf()->set_hostnqn(kHost);
  auto* ep = v.mutable_nvmf()->mutable_discovery()->add_discovery_endpoints();
  ep->set_trtype("tcp");
  ep->set_traddr("127.0.0.1");
  ep->set_trsvcid(discovery_port);
  if (crypto) {
    v.mutable_crypto()->set_cipher(sma::VolumeCryptoParameters::AES_CBC);
    v.mutable_crypto()->set_key(kKey);
  }
  return v;
}

struct Perf {
  double iops = 0, mibps = 0, p50_us = 0, p99_us = 0;
  uint64_t errors = 0;
};

absl::StatusOr<Perf> RunPerf(const std::string& port, const std::string& nqn, uint32_t nsid, uint32_t io_size,
                             double seconds, const std::string& cpumask) {
  smad::tools::PerfOptions o;
  auto trid = smad::nvme::host::ParseTransportId(
      absl::StrCat("trtype:tcp adrfam:ipv4 traddr:127.0.0.1 trsvcid:", port, " subnqn:", nqn, " hostnqn:", kHost));
  if (!trid.ok()) return trid.status();
  o.trid = *trid;
  o.queue_depth = 32;
  o.io_size = io_size;
  o.workload = smad::tools::Workload::kRandRead;
  o.seconds = seconds;
  o.cpumask = cpumask;
  o.nsid = nsid;
  o.busy_poll = false;
  std::ostringstream log;
  auto result = smad::tools::RunPerf(o, log);
  if (!result.ok()) return result.status();
  Perf p;
  p.iops = result->total.iops();
  p.mibps = result->total.mib_per_second();
  p.p50_us = result->total.latency_ns.Percentile(0.5) / 1000.0;
  p.p99_us = result->total.latency_ns.Percentile(0.99) / 1000.0;
  p.errors = result->total.errors;
  return p;
}

void PrintPerf(const char* path, const absl::StatusOr<Perf>& p) {
  if (!p.ok()) {
    std::printf("%-36s failed: %s\n", path, p.status().ToString().c_str());
    return;
  }
  std::printf("%-36s %9.0f IOPS %8.1f MiB/s  p50 %7.1f us  p99 %7.1f us  errors %lu\n", path, p->iops, p->mibps,
              p->p50_us, p->p99_us, static_cast<unsigned long>(p->errors));
}

uint32_t NsidOf(smad::testing::TargetView& tgt, const std::string& uuid) {
  for (const Json& ns : tgt.Namespaces(kLocalNqn)) {
    if (ns.value("uuid", "") == uuid) return ns["nsid"].get<uint32_t>();
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  int attaches = 50;
  double seconds = 5;
  std::string perf_mask = "0x2";  // with the local node; see docs/benchmarks.md for other placements
  CLI::App cli{"remote volume benchmark"};
  cli.add_option("--perf-core-mask", perf_mask, "cores of smad-perf in the I/O runs")->capture_default_str();
  cli.add_option("--attaches", attaches, "cold attaches measured")->capture_default_str();
  cli.add_option("--seconds", seconds, "seconds per I/O run")->capture_default_str();
  CLI11_PARSE(cli, argc, argv);

  smad::testing::TempDir dir;
  // The remote node on core 0, the local node (smad's embedded target) on core 1; smad-perf's reactor
  // shares a core with them (the machine has two).
  smad::testing::TgtProcess remote(dir.path(), "remote");
  smad::testing::TgtProcess::Options remote_options;
  remote_options.cpumask = "0x1";
  if (!Check(remote.Start(remote_options), "remote smad-tgt")) return 1;
  smad::testing::TargetView rtgt(remote.socket());
  std::string data_port = smad::testing::FreeTcpPort(), discovery_port = smad::testing::FreeTcpPort();
  std::vector<std::string> uuids;
  bool ok = rtgt.Call("nvmf_create_transport", {{"trtype", "tcp"}}).ok() &&
            rtgt.Call("nvmf_create_subsystem", {{"nqn", kRemoteNqn}, {"allow_any_host", true}}).ok();
  for (int i = 0; ok && i < 2; ++i) {
    std::string name = absl::StrCat("m", i);
    ok = rtgt.Call("bdev_malloc_create", {{"name", name}, {"num_blocks", 65536}, {"block_size", 4096}}).ok() &&
         rtgt.Call("nvmf_subsystem_add_ns", {{"nqn", kRemoteNqn}, {"namespace", {{"bdev_name", name}}}}).ok();
    uuids.push_back(rtgt.BdevUuid(name));
  }
  for (const auto& [nqn, port] : {std::pair<std::string, std::string>{kRemoteNqn, data_port},
                                  {"nqn.2014-08.org.nvmexpress.discovery", discovery_port}}) {
    ok = ok && rtgt.Call("nvmf_subsystem_add_listener",
                         {{"nqn", nqn},
                          {"listen_address",
                           {{"trtype", "tcp"}, {"adrfam", "ipv4"}, {"traddr", "127.0.0.1"}, {"trsvcid", port}}}})
                   .ok();
  }
  if (!ok) {
    std::fprintf(stderr, "remote setup failed\n");
    return 1;
  }

  smad::testing::SmadProcess smad(dir.path());
  smad::testing::SmadProcess::Options options;
  options.config_yaml =
      "devices:\n  - name: nvmf_tcp\ncrypto:\n  name: bdev_crypto\nlog_level: warn\ntarget:\n  cpumask: \"0x2\"\n";
  if (!Check(smad.Start(options), "smad")) return 1;
  smad::testing::SmaClient client(smad.Stub());
  smad::testing::TargetView ltgt(smad.tgt_socket());
  std::string local_port = smad::testing::FreeTcpPort();
  auto handle = client.CreateDevice(smad::testing::NvmfTcpDevice(kLocalNqn, local_port, {}, true));
  if (!Check(handle.status(), "CreateDevice")) return 1;
  std::printf("load average %s", [] { std::ifstream f("/proc/loadavg"); std::string s; std::getline(f, s); return s + "\n"; }().c_str());

  // 1. Cold attach time through discovery.
  smad::LatencyHistogram attach_us;
  for (int i = 0; i < attaches; ++i) {
    sma::AttachVolumeRequest request;
    request.set_device_handle(*handle);
    *request.mutable_volume() = Volume(uuids[0], discovery_port, false);
    auto t0 = Clock::now();
    if (!Check(client.AttachVolume(request), "AttachVolume")) return 1;
    attach_us.Record(std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count());
    if (!Check(client.DetachVolume(*handle, uuids[0]), "DetachVolume")) return 1;
  }
  std::printf("attach through discovery (cold, %d attaches): p50 %.1f ms  p99 %.1f ms\n", attaches,
              attach_us.Percentile(0.5) / 1000.0, attach_us.Percentile(0.99) / 1000.0);

  // 2. 4 KiB random read, QD32.
  std::printf("\n4 KiB random read, QD32, %.0f s each (smad-perf on cores %s):\n", seconds, perf_mask.c_str());
  PrintPerf("remote directly", RunPerf(data_port, kRemoteNqn, 1, 4096, seconds, perf_mask));
  for (bool crypto : {false, true}) {
    sma::AttachVolumeRequest request;
    request.set_device_handle(*handle);
    *request.mutable_volume() = Volume(uuids[0], discovery_port, crypto);
    if (!Check(client.AttachVolume(request), "AttachVolume")) return 1;
    PrintPerf(crypto ? "host -> local (AES_CBC) -> remote" : "host -> local -> remote",
              RunPerf(local_port, kLocalNqn, NsidOf(ltgt, uuids[0]), 4096, seconds, perf_mask));
    if (!Check(client.DetachVolume(*handle, uuids[0]), "DetachVolume")) return 1;
  }

  // 3. QoS: volume 0 limited, volume 1 unlimited, both loaded at once.
  std::printf("\nQoS through SetQos, both volumes loaded at once (QD32 each):\n");
  for (int v = 0; v < 2; ++v) {
    sma::AttachVolumeRequest request;
    request.set_device_handle(*handle);
    *request.mutable_volume() = Volume(uuids[v], discovery_port, false);
    if (!Check(client.AttachVolume(request), "AttachVolume")) return 1;
  }
  struct QosCase {
    const char* name;
    uint64_t rw_kiops, rw_mbps;
    uint32_t io_size;
  };
  int failures = 0;
  for (const QosCase& c : {QosCase{"rw_iops 2 (2,000 IOPS), 4 KiB", 2, 0, 4096},
                           QosCase{"rw_bandwidth 40 MB/s, 64 KiB", 0, 40, 65536}}) {
    sma::SetQosRequest qos;
    qos.set_device_handle(*handle);
    qos.set_volume_id(smad::testing::UuidBytes(uuids[0]));
    qos.mutable_maximum()->set_rw_iops(c.rw_kiops);
    qos.mutable_maximum()->set_rw_bandwidth(c.rw_mbps);
    if (!Check(client.SetQos(qos), "SetQos")) return 1;
    absl::StatusOr<Perf> limited, free;
    std::thread other([&] { free = RunPerf(local_port, kLocalNqn, NsidOf(ltgt, uuids[1]), c.io_size, seconds, "0x2"); });
    limited = RunPerf(local_port, kLocalNqn, NsidOf(ltgt, uuids[0]), c.io_size, seconds, "0x1");
    other.join();
    if (!limited.ok() || !free.ok()) {
      std::printf("%s: perf failed\n", c.name);
      ++failures;
      continue;
    }
    double measured = c.rw_kiops ? limited->iops : limited->mibps;  // SPDK's QoS megabyte is 2^20 bytes
    double limit = c.rw_kiops ? c.rw_kiops * 1000.0 : double(c.rw_mbps);
    double deviation = (measured - limit) / limit * 100;
    bool pass = std::abs(deviation) <= 10;
    failures += !pass;
    std::printf("%-32s limited: %8.0f IOPS %7.1f MiB/s (%+5.1f%% of the limit) | unlimited: %8.0f IOPS %7.1f MiB/s  %s\n",
                c.name, limited->iops, limited->mibps, deviation, free->iops, free->mibps, pass ? "PASS" : "FAIL");
  }
  return failures == 0 ? 0 : 1;
}
