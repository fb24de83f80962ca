// smad provisioning throughput and overhead: N devices, each CreateDevice + AttachVolume (provision), then
// DetachVolume + DeleteDevice (deprovision), through smad (gRPC) against its embedded smad-tgt, with 1
// and with 16 concurrent clients. The floor is the same target work issued directly over JSON-RPC
// (nvmf_create_subsystem + nvmf_subsystem_add_listener + nvmf_subsystem_add_ns; nvmf_subsystem_remove_ns
// + nvmf_delete_subsystem), one connection per client. Also smad's resident memory idle and with N
// devices. Usage: sma_bench [--devices N] [--state-sync full|normal]

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <sstream>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "common/latency_histogram.h"
#include "jsonrpc/blocking_client.h"
#include "support/net.h"
#include "support/sma_helpers.h"
#include "support/smad_process.h"
#include "support/temp_dir.h"

namespace {

using smad::LatencyHistogram;
using smad::testing::Json;
using Clock = std::chrono::steady_clock;

// A field of /proc/PID/status or /proc/PID/smaps_rollup, in KiB.
long MemoryKiB(pid_t pid, const char* file, const std::string& field) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/", file));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stol(line.substr(field.size() + 1));
  }
  return -1;
}

long RssKiB(pid_t pid) { return MemoryKiB(pid, "status", "VmRSS"); }

// User + system CPU time a process has used so far, in microseconds (clock-tick resolution).
double CpuMicros(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t after_comm = stat.rfind(')');
  if (after_comm == std::string::npos) return 0;
  std::istringstream fields(stat.substr(after_comm + 2));
  std::string field;
  double ticks = 0;
  for (int i = 3; i <= 15 && fields >> field; ++i) {
    if (i == 14 || i == 15) ticks += std::stod(field);  // utime, stime
  }
  return ticks * 1e6 / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// CPU used by smad, by its smad-tgt and by this program (the clients) over an interval.
struct CpuMeter {
  pid_t smad, tgt;
  double smad_start, tgt_start, self_start;
  CpuMeter(pid_t smad_pid, pid_t tgt_pid)
      : smad(smad_pid),
        tgt(tgt_pid),
        smad_start(CpuMicros(smad_pid)),
        tgt_start(CpuMicros(tgt_pid)),
        self_start(CpuMicros(getpid())) {}
  std::string PerOp(int ops) const {
    char text[160];
    std::snprintf(text, sizeof(text),
                  "CPU per device (provision + deprovision): smad %.0f us, smad-tgt %.0f us, clients %.0f us",
                  (CpuMicros(smad) - smad_start) / ops, (CpuMicros(tgt) - tgt_start) / ops,
                  (CpuMicros(getpid()) - self_start) / ops);
    return text;
  }
};

// RSS, the part of it that is shared library pages, and what is private to smad (anonymous memory).
std::string Memory(pid_t pid) {
  char text[160];
  std::snprintf(text, sizeof(text), "RSS %.1f MiB (file-backed, mostly shared libraries: %.1f MiB; anonymous: %.1f MiB; "
                "PSS %.1f MiB)",
                RssKiB(pid) / 1024.0, MemoryKiB(pid, "status", "RssFile") / 1024.0,
                MemoryKiB(pid, "status", "RssAnon") / 1024.0, MemoryKiB(pid, "smaps_rollup", "Pss") / 1024.0);
  return text;
}

struct Phase {
  LatencyHistogram provision;    // CreateDevice + AttachVolume, per device
  LatencyHistogram deprovision;  // DetachVolume + DeleteDevice, per device
  double provision_seconds = 0;
  double deprovision_seconds = 0;
  int errors = 0;
};

// Runs provision(i) for every device, then deprovision(i), spread over `clients` threads (device i goes
// to client i % clients).
Phase Run(int devices, int clients, const std::function<bool(int client, int i)>& provision,
          const std::function<bool(int client, int i)>& deprovision) {
  Phase phase;
  std::mutex mu;
  auto stage = [&](const std::function<bool(int, int)>& fn, LatencyHistogram& hist) {
    auto start = Clock::now();
    std::vector<std::thread> threads;
    for (int c = 0; c < clients; ++c) {
      threads.emplace_back([&, c] {
        LatencyHistogram local;
        int errors = 0;
        for (int i = c; i < devices; i += clients) {
          auto t0 = Clock::now();
          if (!fn(c, i)) ++errors;
          local.Record(std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count());
        }
        std::lock_guard<std::mutex> lock(mu);
        hist.Merge(local);
        phase.errors += errors;
      });
    }
    for (auto& t : threads) t.join();
    return std::chrono::duration<double>(Clock::now() - start).count();
  };
  phase.provision_seconds = stage(provision, phase.provision);
  phase.deprovision_seconds = stage(deprovision, phase.deprovision);
  return phase;
}

void Print(const char* what, int clients, int devices, const Phase& p) {
  std::printf("%-6s %3d clients: provision %7.0f/s p50 %6.0f us p99 %6.0f us | deprovision %7.0f/s p50 %6.0f us "
              "p99 %6.0f us | errors %d\n",
              what, clients, devices / p.provision_seconds, double(p.provision.Percentile(0.5)),
              double(p.provision.Percentile(0.99)), devices / p.deprovision_seconds,
              double(p.deprovision.Percentile(0.5)), double(p.deprovision.Percentile(0.99)), p.errors);
}

}  // namespace

int main(int argc, char** argv) {
  int devices = 1000;
  std::string state_sync = "full";
  CLI::App cli{"smad provisioning benchmark"};
  cli.add_option("--devices", devices, "devices per run")->capture_default_str();
  cli.add_option("--state-sync", state_sync, "full (fsync) or normal")->capture_default_str();
  CLI11_PARSE(cli, argc, argv);

  smad::testing::TempDir dir;
  smad::testing::SmadProcess smad(dir.path());
  smad::testing::SmadProcess::Options options;
  options.config_yaml = absl::StrCat("devices:\n  - name: nvmf_tcp\nstate_sync: ", state_sync, "\nlog_level: warn\n");
  if (auto s = smad.Start(options); !s.ok()) {
    std::fprintf(stderr, "smad: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  std::this_thread::sleep_for(std::chrono::seconds(1));
  std::string memory_idle = Memory(smad.pid());
  smad::testing::TargetView tgt(smad.tgt_socket());
  std::vector<std::string> uuids;
  for (int i = 0; i < devices; ++i) {
    auto created = tgt.Call("bdev_null_create", {{"name", absl::StrCat("b", i)}, {"num_blocks", 256}, {"block_size", 4096}});
    if (!created.ok()) return 1;
    uuids.push_back(tgt.BdevUuid(absl::StrCat("b", i)));
  }
  std::string port = smad::testing::FreeTcpPort();
  std::printf("devices %d, state_sync %s, load average %s", devices, state_sync.c_str(),
              [] { std::ifstream f("/proc/loadavg"); std::string s; std::getline(f, s); return s + "\n"; }().c_str());
  std::printf("smad idle: %s\n", memory_idle.c_str());

  const pid_t tgt_pid = smad.TgtPid();
  {
    // What gRPC alone costs: a call smad answers without the target or the state store.
    smad::testing::SmaClient client(smad.Stub());
    LatencyHistogram noop;
    for (int i = 0; i < 2200; ++i) {
      auto t0 = Clock::now();
      if (!client.GetQosCapabilities(sma::DEVICE_TYPE_NVMF_TCP).ok()) return 1;
      if (i >= 200) noop.Record(std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count());
    }
    std::printf("gRPC round trip without target work (GetQosCapabilities, 2000 calls): p50 %.0f us p99 %.0f us\n",
                double(noop.Percentile(0.5)), double(noop.Percentile(0.99)));
  }

  for (int clients : {1, 16}) {
    // The floor: direct JSON-RPC, one connection per client.
    std::vector<smad::jsonrpc::BlockingClient> conns;
    for (int c = 0; c < clients; ++c) conns.push_back(*smad::jsonrpc::BlockingClient::Connect(smad.tgt_socket()));
    auto nqn = [](int i) { return absl::StrCat("nqn.2016-06.io.spdk:bench", i); };
    CpuMeter floor_cpu(smad.pid(), tgt_pid);
    Phase floor = Run(
        devices, clients,
        [&](int c, int i) {
          auto& rpc = conns[c];
          return rpc.Call("nvmf_create_subsystem", {{"nqn", nqn(i)}, {"allow_any_host", true}}).ok() &&
                 rpc.Call("nvmf_subsystem_add_listener",
                          {{"nqn", nqn(i)},
                           {"listen_address", {{"trtype", "tcp"}, {"adrfam", "ipv4"}, {"traddr", "127.0.0.1"}, {"trsvcid", port}}}})
                     .ok() &&
                 rpc.Call("nvmf_subsystem_add_ns",
                          {{"nqn", nqn(i)}, {"namespace", {{"bdev_name", uuids[i]}, {"uuid", uuids[i]}}}})
                     .ok();
        },
        [&](int c, int i) {
          auto& rpc = conns[c];
          return rpc.Call("nvmf_subsystem_remove_ns", {{"nqn", nqn(i)}, {"nsid", 1}}).ok() &&
                 rpc.Call("nvmf_delete_subsystem", {{"nqn", nqn(i)}}).ok();
        });
    Print("direct", clients, devices, floor);
    std::printf("       %s\n", floor_cpu.PerOp(devices).c_str());

    std::vector<std::unique_ptr<smad::testing::SmaClient>> sma;
    for (int c = 0; c < clients; ++c) sma.push_back(std::make_unique<smad::testing::SmaClient>(smad.Stub()));
    std::string memory_full;
    CpuMeter through_cpu(smad.pid(), tgt_pid);
    Phase through = Run(
        devices, clients,
        [&](int c, int i) {
          auto handle = sma[c]->CreateDevice(smad::testing::NvmfTcpDevice(nqn(i), port, {}, true));
          return handle.ok() && sma[c]->AttachVolume(*handle, uuids[i]).ok();
        },
        [&](int c, int i) {
          if (i == 0 && memory_full.empty()) memory_full = Memory(smad.pid());
          std::string handle = absl::StrCat("nvmf-tcp:", nqn(i));
          return sma[c]->DetachVolume(handle, uuids[i]).ok() && sma[c]->DeleteDevice(handle).ok();
        });
    Print("smad", clients, devices, through);
    std::printf("       %s\n", through_cpu.PerOp(devices).c_str());
    std::printf("smad overhead over direct: provision %+.0f%%, deprovision %+.0f%% (wall time)\nsmad with %d devices: %s\n\n",
                100.0 * (through.provision_seconds / floor.provision_seconds - 1),
                100.0 * (through.deprovision_seconds / floor.deprovision_seconds - 1), devices, memory_full.c_str());
  }
  smad.Stop(SIGTERM);
  return 0;
}
