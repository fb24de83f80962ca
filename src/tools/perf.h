#pragma once

// smad-perf: an NVMe/TCP load generator in the manner of SPDK's perf. One I/O queue pair per core of the
// mask, each on its own pinned reactor, keeps a fixed number of I/Os in flight and records per-I/O latency
// in a log-linear histogram.

#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nvme/host/transport_id.h"
#include "common/latency_histogram.h"

namespace smad::tools {

enum class Workload { kRead, kWrite, kRandRead, kRandWrite, kRw, kRandRw };

// "read", "write", "randread", "randwrite", "rw", "randrw". Errors: InvalidArgument.
absl::StatusOr<Workload> ParseWorkload(absl::string_view text);
const char* WorkloadName(Workload workload);

// Parses a byte count: a decimal number with an optional binary suffix k/K, m/M, g/G (optionally followed
// by "b"/"iB"), e.g. "4096", "4k", "128K", "1m". Errors: InvalidArgument (empty, junk, zero, overflow).
absl::StatusOr<uint64_t> ParseSize(absl::string_view text);

struct PerfOptions {
  nvme::host::TransportId trid;
  uint32_t queue_depth = 0;
  uint32_t io_size = 0;
  Workload workload = Workload::kRandRead;
  int read_percent = -1;  // -M; the read share of mixed workloads (default 50)
  double seconds = 0;
  std::string cpumask = "0x1";
  bool hdgst = false;
  bool ddgst = false;
  uint32_t nsid = 0;  // 0: trid.nsid, else the first active namespace
  bool verify = false;
  bool busy_poll = true;
  bool help = false;  // --help was given; the text is in ParsePerfArgs' `help_text`
};

// Parses smad-perf's command line (argv[0] is the program name). On --help returns options with
// help=true and fills `help_text`. Errors: InvalidArgument naming the bad option.
absl::StatusOr<PerfOptions> ParsePerfArgs(int argc, const char* const* argv, std::string* help_text);

struct CoreResult {
  int core = 0;
  uint16_t qid = 0;
  uint32_t queue_depth = 0;  // I/Os kept in flight (the request, clamped to the controller's queue size)
  uint64_t ios = 0;  // completed successfully
  uint64_t reads = 0;
  uint64_t writes = 0;
  uint64_t bytes = 0;
  uint64_t errors = 0;
  uint64_t verify_failures = 0;
  double seconds = 0;  // from the first submission to the last completion
  LatencyHistogram latency_ns;

  double iops() const { return seconds > 0 ? static_cast<double>(ios) / seconds : 0; }
  double mib_per_second() const { return seconds > 0 ? static_cast<double>(bytes) / seconds / (1 << 20) : 0; }
};

struct PerfResult {
  std::string device;  // "TCP (addr:... subnqn:...) NSID n"
  std::vector<CoreResult> cores;
  CoreResult total;  // sums; seconds is the longest core's
  std::string first_error;
};

// Connects, runs the workload for `options.seconds` and returns the measurements. Progress lines go to
// `log`. Errors: connection and setup failures (bad namespace, I/O size not a multiple of the block size
// or above MDTS, too few I/O queues). I/O errors during the run are counted in the result, not returned.
absl::StatusOr<PerfResult> RunPerf(const PerfOptions& options, std::ostream& log);

// The human-readable table (per core and total: IOPS, MiB/s, average/p50/p99/p99.9/min/max latency in
// microseconds) followed by one JSON line with the totals.
std::string FormatPerfReport(const PerfOptions& options, const PerfResult& result);

}  // namespace smad::tools
