// Shared pieces of the benchmarks: machine description, an in-process bdev
// harness (control reactor + data reactors + BdevManager, as tests/unit/tgt/bdev_test.cc sets up) and a
// closed-loop I/O generator that keeps a fixed queue depth on one reactor.
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <cstdint>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/latency_histogram.h"
#include "reactor/reactor.h"
#include "tgt/bdev/bdev.h"
#include "tgt/bdev/bdev_manager.h"
#include "tgt/bdev/in_process_bdev_layer.h"

namespace smad::bench {

// Latencies are recorded in nanoseconds in smad::LatencyHistogram (common/latency_histogram.h).
using smad::LatencyHistogram;

// Exact summary of a small set of samples (nearest-rank percentiles).
struct SampleSummary {
  size_t count = 0;
  double mean_ns = 0;
  uint64_t p50_ns = 0, p99_ns = 0, max_ns = 0;
};
SampleSummary Summarize(std::vector<uint64_t> samples_ns);

// One line per fact: CPU count, CPU model, kernel, load average. Printed by every benchmark so a table
// can be traced to the machine and the load it ran under.
std::string MachineDescription();
// "0.12 0.30 0.41" from /proc/loadavg.
std::string LoadAverage();

// Parses "0,1" / "2" into core numbers. Errors: InvalidArgument.
absl::StatusOr<std::vector<int>> ParseCoreList(const std::string& text);

// A control reactor and data reactors on their own threads, with a BdevManager on the control reactor.
// Thread safety: construct, use and destroy on one (non-reactor) thread; methods block until the
// control reactor did the work. Every channel must be released before destruction (generators finished).
class BdevHarness {
 public:
  BdevHarness(const std::vector<int>& cores, bool busy_poll) : layer_(cores, busy_poll, "bench_control") {}
  BdevHarness(const BdevHarness&) = delete;
  BdevHarness& operator=(const BdevHarness&) = delete;

  size_t size() { return layer_.reactors().size(); }
  Reactor& reactor(size_t i) { return layer_.reactors().reactor(i); }

  // Creates and registers a malloc bdev; the pointer stays valid until the harness is destroyed.
  // Errors: those of MallocBdev::Create and BdevManager::Register.
  absl::StatusOr<tgt::Bdev*> CreateMalloc(const std::string& name, uint64_t num_blocks, uint32_t block_size);
  // BdevManager::SetQos, waited for.
  absl::Status SetQos(tgt::Bdev& bdev, const tgt::QosLimits& limits);

 private:
  tgt::InProcessBdevLayer layer_;
};

// What an IoGenerator submits.
struct IoPattern {
  uint32_t io_size = 4096;    // bytes; a multiple of the bdev's block size
  uint32_t queue_depth = 32;  // I/Os kept in flight
  int read_percent = 100;     // 0: all writes, 100: all reads
  bool sequential = false;    // else uniformly random, aligned to io_size
  uint64_t max_ios = 0;       // stop after submitting this many (0: until the phase says stop)
};

// The phases of a timed run, advanced by the driving thread and read by every generator of the run.
enum class Phase : int { kWarmup = 0, kMeasure = 1, kStop = 2 };

// What one or more generators measured during the kMeasure phase.
struct IoResult {
  uint64_t ios = 0, read_ios = 0, write_ios = 0, read_bytes = 0, write_bytes = 0, errors = 0;
  uint64_t elapsed_ns = 0;   // the measurement window (the longest one once merged)
  LatencyHistogram latency;  // submission to completion callback, in ns
  // Rates over the window. Merged results add the rates of their parts (each over its own window, and
  // the windows of one run coincide to within a completion).
  double iops = 0, read_mibps = 0, write_mibps = 0;

  // Computes the rates of a single generator's result from its counts and window.
  void ComputeRates();
  void Merge(const IoResult& other);
  double mibps() const { return read_mibps + write_mibps; }
};

// A closed-loop load generator on one reactor: keeps `queue_depth` I/Os in flight on `bdev` through this
// reactor's channel, resubmitting from each completion callback, and records what completes while the
// phase is kMeasure. The window starts at the first completion that sees kMeasure and ends at the first
// that sees kStop; then no more I/O is submitted and, once the last one finished, the channel is released.
//
// Thread safety: construct and call Start/Wait from the driving thread; everything else runs on the
// reactor. The generator must outlive Wait().
class IoGenerator {
 public:
  IoGenerator(Reactor& reactor, tgt::Bdev& bdev, const IoPattern& pattern, uint64_t seed,
              const std::atomic<Phase>& phase);
  ~IoGenerator();
  IoGenerator(const IoGenerator&) = delete;
  IoGenerator& operator=(const IoGenerator&) = delete;

  // Posts the start to the reactor. Call once.
  void Start();
  // Blocks until the generator stopped and its last I/O finished; returns what it measured (rates
  // computed).
  IoResult Wait();

 private:
  struct Slot {
    IoGenerator* owner;
    uint8_t* buffer;
    iovec iov;
    uint64_t start_ns;
    bool read;
  };
  enum class State { kWarmup, kMeasure, kStopped };

  static void OnComplete(void* arg, int status);
  void Begin();
  void Submit(Slot& slot);
  void UpdateState(uint64_t now);
  void MaybeFinish(uint64_t now);
  uint64_t NextRandom();

  Reactor& reactor_;
  tgt::Bdev& bdev_;
  const IoPattern pattern_;
  const std::atomic<Phase>& phase_;
  uint64_t rng_;
  uint64_t blocks_per_io_;
  uint64_t slots_in_bdev_;  // number of io_size-aligned positions
  std::vector<Slot> slots_;
  uint8_t* memory_ = nullptr;

  // Reactor thread only.
  tgt::BdevChannel* channel_ = nullptr;
  State state_ = State::kWarmup;
  uint64_t in_flight_ = 0;
  uint64_t submitted_ = 0;
  uint64_t next_sequential_ = 0;
  uint64_t window_start_ns_ = 0;
  bool finished_ = false;
  IoResult result_;

  std::promise<void> done_;
};

// Runs `generators` (not yet started) through warmup, measurement and stop, blocking the calling thread,
// and returns each one's result.
std::vector<IoResult> RunTimed(const std::vector<IoGenerator*>& generators, std::atomic<Phase>& phase,
                               double warmup_seconds, double seconds);

// Writes every block of `bdev` once (sequential 128 KiB writes from `reactor`), so that later reads and
// writes touch memory that is already mapped. Errors: Internal if any write failed.
absl::Status FillBdev(Reactor& reactor, tgt::Bdev& bdev);

}  // namespace smad::bench
