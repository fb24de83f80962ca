// bdev_bench: I/O throughput and latency of the bdev layer on a malloc bdev, no network.
//
// For each core set (default: "0" and "0,1") and each workload (4 KiB random read, random write), one
// I/O generator per reactor keeps --qd I/Os in flight on the same malloc bdev, resubmitting from the
// completion callback, for --seconds after --warmup. Prints IOPS, MiB/s and completion latency
// percentiles (submit to callback) per configuration.
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
  uint32_t io_size = 4096;
  uint32_t queue_depth = 32;
  uint32_t block_size = 512;
  uint64_t bdev_mib = 256;
  std::vector<std::string> core_sets = {"0", "0,1"};
  std::vector<std::string> workloads = {"randread", "randwrite"};
  bool busy_poll = false;
};

int Run(const Options& options) {
  if (options.io_size == 0 || options.io_size % options.block_size != 0 || options.queue_depth == 0) {
    std::fprintf(stderr,
                 "bdev_bench: --io-size must be a positive multiple of --block-size, --qd positive\n");
    return 2;
  }
  std::printf(
      "bdev_bench: malloc bdev %llu MiB (block size %u), %u B I/O, QD %u per reactor, %.1f s "
      "(+%.1f s warmup) per row%s\n",
      static_cast<unsigned long long>(options.bdev_mib), options.block_size, options.io_size,
      options.queue_depth, options.seconds, options.warmup, options.busy_poll ? ", busy-poll" : "");
  std::printf("%s\n", MachineDescription().c_str());
  std::printf("%-9s %-6s %-10s %12s %10s %14s %9s %9s %9s\n", "reactors", "cores", "workload", "IOPS",
              "MiB/s", "IOPS/reactor", "p50 us", "p99 us", "max us");
  int failures = 0;
  for (const std::string& core_set : options.core_sets) {
    auto cores = ParseCoreList(core_set);
    if (!cores.ok()) {
      std::fprintf(stderr, "bdev_bench: %s\n", std::string(cores.status().message()).c_str());
      return 2;
    }
    BdevHarness harness(*cores, options.busy_poll);
    uint64_t num_blocks = options.bdev_mib * 1024 * 1024 / options.block_size;
    auto bdev = harness.CreateMalloc("Malloc0", num_blocks, options.block_size);
    if (!bdev.ok()) {
      std::fprintf(stderr, "bdev_bench: %s\n", std::string(bdev.status().message()).c_str());
      return 2;
    }
    if (absl::Status s = FillBdev(harness.reactor(0), **bdev); !s.ok()) {
      std::fprintf(stderr, "bdev_bench: %s\n", std::string(s.message()).c_str());
      return 2;
    }
    for (const std::string& workload : options.workloads) {
      IoPattern pattern;
      pattern.io_size = options.io_size;
      pattern.queue_depth = options.queue_depth;
      pattern.read_percent = workload == "randread" ? 100 : 0;
      std::atomic<Phase> phase{Phase::kWarmup};
      std::vector<std::unique_ptr<IoGenerator>> generators;
      std::vector<IoGenerator*> raw;
      for (size_t i = 0; i < harness.size(); ++i) {
        generators.push_back(
            std::make_unique<IoGenerator>(harness.reactor(i), **bdev, pattern, 0x9e3779b9 + i, phase));
        raw.push_back(generators.back().get());
      }
      IoResult total;
      for (const IoResult& r : RunTimed(raw, phase, options.warmup, options.seconds)) total.Merge(r);
      if (total.errors != 0) ++failures;
      std::string note = total.errors ? " (" + std::to_string(total.errors) + " errors)" : "";
      std::printf("%-9zu %-6s %-10s %12.0f %10.1f %14.0f %9.2f %9.2f %9.1f%s\n", harness.size(),
                  core_set.c_str(), workload.c_str(), total.iops, total.mibps(),
                  total.iops / static_cast<double>(harness.size()),
                  static_cast<double>(total.latency.Percentile(0.50)) / 1e3,
                  static_cast<double>(total.latency.Percentile(0.99)) / 1e3,
                  static_cast<double>(total.latency.max()) / 1e3, note.c_str());
      std::fflush(stdout);
    }
  }
  std::printf("\nload average at end: %s\n", LoadAverage().c_str());
  return failures == 0 ? 0 : 1;
}

}  // namespace
}  // namespace smad::bench

int main(int argc, char** argv) {
  smad::bench::Options options;
  CLI::App app{"bdev_bench: malloc bdev throughput and latency per reactor count"};
  app.add_option("-t,--seconds", options.seconds, "measured seconds per configuration")
      ->capture_default_str();
  app.add_option("--warmup", options.warmup, "seconds of warm-up before measuring")->capture_default_str();
  app.add_option("--io-size", options.io_size, "bytes per I/O")->capture_default_str();
  app.add_option("--qd", options.queue_depth, "I/Os in flight per reactor")->capture_default_str();
  app.add_option("--block-size", options.block_size, "malloc bdev block size")->capture_default_str();
  app.add_option("--bdev-mib", options.bdev_mib, "malloc bdev size in MiB")->capture_default_str();
  app.add_option("--cores", options.core_sets, "core sets to run, e.g. --cores 0 --cores 0,1")
      ->capture_default_str();
  app.add_option("--workload", options.workloads, "randread and/or randwrite")
      ->check(CLI::IsMember({"randread", "randwrite"}))
      ->capture_default_str();
  app.add_flag("--busy-poll", options.busy_poll, "reactors spin instead of sleeping when idle");
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);
  return smad::bench::Run(options);
}
