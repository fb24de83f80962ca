// qos_bench: does a QoS-limited bdev hold its limit while an unlimited bdev next to it runs free?
//
// Two malloc bdevs, "limited" and "unlimited", on the same reactors. For each case, the limited bdev gets
// one QoS limit (bdev_set_qos_limit semantics) and, on every reactor, one generator per bdev keeps --qd
// I/Os in flight. Prints what each bdev achieved, the limited one's deviation from its limit and PASS when
// it is within --tolerance percent. Exit status 1 if any case fails.
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "bench_support.h"
#include "spdlog/spdlog.h"

namespace smad::bench {
namespace {

struct Options {
  double seconds = 3.0;
  double warmup = 0.5;
  uint32_t queue_depth = 32;
  uint64_t iops_limit = 20000;
  uint64_t mbps_limit = 50;
  std::string cores = "0,1";
  double tolerance_percent = 10.0;
  bool busy_poll = false;
};

// Which figure of the limited bdev the limit applies to.
enum class Metric { kNone, kIops, kRwMiBps, kReadMiBps, kWriteMiBps };

struct Case {
  std::string name;
  tgt::QosLimits limits;
  uint32_t io_size;
  int read_percent;
  Metric metric;
  double limit;  // in the metric's unit
};

double Measured(const IoResult& r, Metric metric) {
  switch (metric) {
    case Metric::kIops:
      return r.iops;
    case Metric::kRwMiBps:
      return r.mibps();
    case Metric::kReadMiBps:
      return r.read_mibps;
    case Metric::kWriteMiBps:
      return r.write_mibps;
    case Metric::kNone:
      break;
  }
  return 0;
}

std::vector<Case> Cases(const Options& o) {
  std::vector<Case> cases;
  cases.push_back({"no limit (baseline)", {}, 4096, 50, Metric::kNone, 0});
  tgt::QosLimits l;
  l.rw_ios_per_sec = o.iops_limit;
  cases.push_back({"rw_ios_per_sec=" + std::to_string(o.iops_limit), l, 4096, 50, Metric::kIops,
                   static_cast<double>(o.iops_limit)});
  l = {};
  l.rw_mbytes_per_sec = o.mbps_limit;
  cases.push_back({"rw_mbytes_per_sec=" + std::to_string(o.mbps_limit), l, 65536, 50, Metric::kRwMiBps,
                   static_cast<double>(o.mbps_limit)});
  l = {};
  l.r_mbytes_per_sec = o.mbps_limit;
  cases.push_back({"r_mbytes_per_sec=" + std::to_string(o.mbps_limit), l, 65536, 100, Metric::kReadMiBps,
                   static_cast<double>(o.mbps_limit)});
  cases.push_back({"r_mbytes_per_sec=" + std::to_string(o.mbps_limit), l, 65536, 50, Metric::kReadMiBps,
                   static_cast<double>(o.mbps_limit)});
  l = {};
  l.w_mbytes_per_sec = o.mbps_limit;
  cases.push_back({"w_mbytes_per_sec=" + std::to_string(o.mbps_limit), l, 65536, 0, Metric::kWriteMiBps,
                   static_cast<double>(o.mbps_limit)});
  return cases;
}

void PrintRow(const std::string& case_name, const char* bdev, const Case& c, const IoResult& r,
              const std::string& verdict) {
  std::printf("%-22s %-9s %4uK %4d%% %10.0f %9.1f %9.1f %9.1f %9.1f  %s\n", case_name.c_str(), bdev,
              c.io_size / 1024, c.read_percent, r.iops, r.read_mibps, r.write_mibps,
              static_cast<double>(r.latency.Percentile(0.50)) / 1e3,
              static_cast<double>(r.latency.Percentile(0.99)) / 1e3, verdict.c_str());
}

int Run(const Options& options) {
  auto cores = ParseCoreList(options.cores);
  if (!cores.ok()) {
    std::fprintf(stderr, "qos_bench: %s\n", std::string(cores.status().message()).c_str());
    return 2;
  }
  std::printf(
      "qos_bench: bdevs 'limited' and 'unlimited' (malloc, 64 MiB each), QD %u per bdev per reactor, "
      "cores %s, %.1f s (+%.1f s warmup) per case, tolerance %.0f%%%s\n",
      options.queue_depth, options.cores.c_str(), options.seconds, options.warmup, options.tolerance_percent,
      options.busy_poll ? ", busy-poll" : "");
  std::printf("%s\n", MachineDescription().c_str());

  BdevHarness harness(*cores, options.busy_poll);
  constexpr uint32_t kBlockSize = 512;
  constexpr uint64_t kBlocks = 64ull * 1024 * 1024 / kBlockSize;
  auto limited = harness.CreateMalloc("limited", kBlocks, kBlockSize);
  auto unlimited = harness.CreateMalloc("unlimited", kBlocks, kBlockSize);
  if (!limited.ok() || !unlimited.ok()) {
    std::fprintf(stderr, "qos_bench: cannot create bdevs\n");
    return 2;
  }
  if (!FillBdev(harness.reactor(0), **limited).ok() || !FillBdev(harness.reactor(0), **unlimited).ok()) {
    std::fprintf(stderr, "qos_bench: cannot fill bdevs\n");
    return 2;
  }

  std::printf("%-22s %-9s %5s %5s %10s %9s %9s %9s %9s  %s\n", "case", "bdev", "I/O", "reads", "IOPS",
              "rd MiB/s", "wr MiB/s", "p50 us", "p99 us", "limited vs limit");
  int failures = 0;
  for (const Case& c : Cases(options)) {
    if (absl::Status s = harness.SetQos(**limited, c.limits); !s.ok()) {
      std::fprintf(stderr, "qos_bench: SetQos: %s\n", std::string(s.message()).c_str());
      return 2;
    }
    IoPattern pattern;
    pattern.io_size = c.io_size;
    pattern.queue_depth = options.queue_depth;
    pattern.read_percent = c.read_percent;
    std::atomic<Phase> phase{Phase::kWarmup};
    std::vector<std::unique_ptr<IoGenerator>> generators;
    std::vector<IoGenerator*> raw;
    for (size_t i = 0; i < harness.size(); ++i) {
      for (tgt::Bdev* bdev : {*limited, *unlimited}) {
        generators.push_back(
            std::make_unique<IoGenerator>(harness.reactor(i), *bdev, pattern, 77 + raw.size(), phase));
        raw.push_back(generators.back().get());
      }
    }
    std::vector<IoResult> results = RunTimed(raw, phase, options.warmup, options.seconds);
    IoResult limited_total, unlimited_total;
    for (size_t i = 0; i < results.size(); ++i)
      (i % 2 == 0 ? limited_total : unlimited_total).Merge(results[i]);
    if (limited_total.errors + unlimited_total.errors != 0) {
      std::fprintf(stderr, "qos_bench: %s: I/O errors\n", c.name.c_str());
      ++failures;
    }

    std::string verdict = "-";
    if (c.metric != Metric::kNone) {
      double achieved = Measured(limited_total, c.metric);
      double deviation = (achieved - c.limit) / c.limit * 100.0;
      bool pass = std::fabs(deviation) <= options.tolerance_percent;
      if (!pass) ++failures;
      char buf[96];
      std::snprintf(buf, sizeof(buf), "%.1f vs %.0f %s: %+.2f%% %s", achieved, c.limit,
                    c.metric == Metric::kIops ? "IOPS" : "MiB/s", deviation, pass ? "PASS" : "FAIL");
      verdict = buf;
    }
    PrintRow(c.name, "limited", c, limited_total, verdict);
    PrintRow("", "unlimited", c, unlimited_total, "");
    std::fflush(stdout);
  }
  if (absl::Status s = harness.SetQos(**limited, {}); !s.ok()) return 2;
  std::printf("\nload average at end: %s\n", LoadAverage().c_str());
  std::printf("%s\n", failures == 0 ? "qos_bench: all limits held (PASS)" : "qos_bench: FAIL");
  return failures == 0 ? 0 : 1;
}

}  // namespace
}  // namespace smad::bench

int main(int argc, char** argv) {
  smad::bench::Options options;
  CLI::App app{"qos_bench: a QoS-limited bdev next to an unlimited one"};
  app.add_option("-t,--seconds", options.seconds, "measured seconds per case")->capture_default_str();
  app.add_option("--warmup", options.warmup, "seconds of warm-up before measuring")->capture_default_str();
  app.add_option("--qd", options.queue_depth, "I/Os in flight per bdev per reactor")->capture_default_str();
  app.add_option("--iops-limit", options.iops_limit, "rw_ios_per_sec of the IOPS case (multiple of 1000)")
      ->capture_default_str();
  app.add_option("--mbps-limit", options.mbps_limit, "MiB/s of the bandwidth cases")->capture_default_str();
  app.add_option("--cores", options.cores, "reactor cores, e.g. 0,1")->capture_default_str();
  app.add_option("--tolerance", options.tolerance_percent, "allowed deviation in percent")
      ->capture_default_str();
  app.add_flag("--busy-poll", options.busy_poll, "reactors spin instead of sleeping when idle");
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);
  return smad::bench::Run(options);
}
