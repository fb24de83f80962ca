#include "tools/perf.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <future>
#include <memory>
#include <ostream>

#include "CLI/CLI.hpp"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/status.h"
#include "fmt/format.h"
#include "nvme/host/commands.h"
#include "nvme/host/queue_pair.h"
#include "nvme/host/sync_controller.h"
#include "reactor/reactor.h"

namespace smad::tools {

using nvme::host::Completion;
using nvme::host::QueuePair;
using nvme::host::SyncController;
using nvme::host::TransportId;

absl::StatusOr<Workload> ParseWorkload(absl::string_view text) {
  std::string w = absl::AsciiStrToLower(text);
  if (w == "read") return Workload::kRead;
  if (w == "write") return Workload::kWrite;
  if (w == "randread") return Workload::kRandRead;
  if (w == "randwrite") return Workload::kRandWrite;
  if (w == "rw") return Workload::kRw;
  if (w == "randrw") return Workload::kRandRw;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown workload '", text, "' (read, write, randread, randwrite, rw, randrw)"));
}

const char* WorkloadName(Workload workload) {
  switch (workload) {
    case Workload::kRead: return "read";
    case Workload::kWrite: return "write";
    case Workload::kRandRead: return "randread";
    case Workload::kRandWrite: return "randwrite";
    case Workload::kRw: return "rw";
    case Workload::kRandRw: return "randrw";
  }
  return "?";
}

namespace {

bool IsRandom(Workload w) {
  return w == Workload::kRandRead || w == Workload::kRandWrite || w == Workload::kRandRw;
}
bool IsMixed(Workload w) { return w == Workload::kRw || w == Workload::kRandRw; }

}  // namespace

absl::StatusOr<uint64_t> ParseSize(absl::string_view text) {
  absl::string_view t = absl::StripAsciiWhitespace(text);
  size_t digits = 0;
  while (digits < t.size() && absl::ascii_isdigit(static_cast<unsigned char>(t[digits]))) ++digits;
  if (digits == 0) return absl::InvalidArgumentError(absl::StrCat("size '", text, "' does not start with a number"));
  uint64_t value = 0;
  if (!absl::SimpleAtoi(t.substr(0, digits), &value)) {
    return absl::InvalidArgumentError(absl::StrCat("size '", text, "' is out of range"));
  }
  std::string suffix = absl::AsciiStrToLower(t.substr(digits));
  int shift = 0;
  if (!suffix.empty()) {
    switch (suffix[0]) {
      case 'k': shift = 10; break;
      case 'm': shift = 20; break;
      case 'g': shift = 30; break;
      case 'b': shift = 0; break;
      default: return absl::InvalidArgumentError(absl::StrCat("size '", text, "' has an unknown suffix"));
    }
    absl::string_view rest = absl::string_view(suffix).substr(suffix[0] == 'b' ? 0 : 1);
    if (!(rest.empty() || rest == "b" || rest == "ib")) {
      return absl::InvalidArgumentError(absl::StrCat("size '", text, "' has an unknown suffix"));
    }
  }
  if (value == 0) return absl::InvalidArgumentError(absl::StrCat("size '", text, "' is zero"));
  if (shift > 0 && value > (UINT64_MAX >> shift)) {
    return absl::InvalidArgumentError(absl::StrCat("size '", text, "' is out of range"));
  }
  return value << shift;
}

absl::StatusOr<PerfOptions> ParsePerfArgs(int argc, const char* const* argv, std::string* help_text) {
  PerfOptions options;
  std::string trid_text, size_text, workload_text;
  int read_percent = -1;
  bool no_busy_poll = false;

  CLI::App app{"smad-perf: NVMe/TCP I/O load generator (one I/O queue pair per core of the mask)",
               "smad-perf"};
  app.add_option("-r,--transport-id", trid_text,
                 "Target, SPDK transport ID form: 'trtype:tcp adrfam:ipv4 traddr:127.0.0.1 trsvcid:4420 "
                 "subnqn:nqn...' (also hostnqn:, ns:)")
      ->required();
  app.add_option("-q,--queue-depth", options.queue_depth, "I/Os kept in flight per queue pair")
      ->required()
      ->check(CLI::Range(1, 65535));
  app.add_option("-o,--io-size", size_text, "I/O size in bytes: 4096, 4k, 128k, 1m")->required();
  app.add_option("-w,--workload", workload_text, "read, write, randread, randwrite, rw or randrw")->required();
  app.add_option("-M,--rwmixread", read_percent, "Percentage of reads in rw/randrw (default 50)")
      ->check(CLI::Range(0, 100));
  app.add_option("-t,--time", options.seconds, "Run time in seconds")->required()->check(CLI::PositiveNumber);
  app.add_option("-c,--core-mask", options.cpumask, "CPU mask (0x3) or list ([0,2-3]); one queue pair per core");
  app.add_flag("--hdgst", options.hdgst, "Request NVMe/TCP header digests");
  app.add_flag("--ddgst", options.ddgst, "Request NVMe/TCP data digests");
  app.add_option("--ns", options.nsid, "Namespace ID (default: ns: of the transport ID, else the first active)")
      ->check(CLI::Range(1u, 0xfffffffeu));
  app.add_flag("--verify", options.verify,
               "Write a pattern, read it back and compare (each I/O slot owns its own blocks)");
  app.add_flag("--no-busy-poll", no_busy_poll, "Let the I/O reactors sleep in epoll instead of spinning");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    options.help = true;
    if (help_text != nullptr) *help_text = app.help();
    return options;
  } catch (const CLI::ParseError& e) {
    return absl::InvalidArgumentError(e.what());
  }

  auto trid = nvme::host::ParseTransportId(trid_text);
  if (!trid.ok()) return absl::InvalidArgumentError(absl::StrCat("-r: ", trid.status().message()));
  options.trid = *std::move(trid);
  auto size = ParseSize(size_text);
  if (!size.ok()) return absl::InvalidArgumentError(absl::StrCat("-o: ", size.status().message()));
  if (*size > (1u << 30)) return absl::InvalidArgumentError("-o: I/O size above 1 GiB");
  options.io_size = static_cast<uint32_t>(*size);
  auto workload = ParseWorkload(workload_text);
  if (!workload.ok()) return absl::InvalidArgumentError(absl::StrCat("-w: ", workload.status().message()));
  options.workload = *workload;
  if (read_percent >= 0 && !IsMixed(options.workload)) {
    return absl::InvalidArgumentError("-M only applies to the rw and randrw workloads");
  }
  options.read_percent = IsMixed(options.workload) ? (read_percent >= 0 ? read_percent : 50) : -1;
  auto cores = ParseCpuMask(options.cpumask);
  if (!cores.ok()) return absl::InvalidArgumentError(absl::StrCat("-c: ", cores.status().message()));
  options.busy_poll = !no_busy_poll;
  return options;
}

namespace {

struct AlignedFree {
  void operator()(uint8_t* p) const { std::free(p); }
};
using AlignedBuffer = std::unique_ptr<uint8_t, AlignedFree>;

struct WorkerConfig {
  uint32_t nsid = 0;
  uint32_t io_size = 0;
  uint32_t blocks_per_io = 0;
  uint64_t units = 0;  // io_size-aligned positions in the namespace
  Workload workload = Workload::kRandRead;
  int read_percent = 0;
  bool verify = false;
  uint32_t worker_index = 0;
  uint32_t worker_count = 1;
  uint32_t slots_per_worker = 1;  // every worker's depth, for --verify's partitioning
};

// One core's load: a queue pair on that core's reactor and `depth` I/O slots. Thread safety: constructed
// anywhere; everything else, including destruction, on its reactor.
class PerfWorker {
 public:
  PerfWorker(Reactor& reactor, int core, const WorkerConfig& config) : reactor_(reactor), config_(config) {
    result_.core = core;
    rng_ = 0x9e3779b97f4a7c15ull ^ (static_cast<uint64_t>(core + 1) * 0xbf58476d1ce4e5b9ull) ^ NowNs();
    if (rng_ == 0) rng_ = 1;
  }
  ~PerfWorker() {
    if (timer_ != 0) reactor_.CancelTimer(timer_);
    qp_.reset();
  }

  void Connect(const TransportId& trid, const QueuePair::Options& options,
               absl::AnyInvocable<void(absl::Status) &&> done) {
    qp_ = std::make_unique<QueuePair>(reactor_, trid, options);
    result_.qid = options.qid;
    qp_->Connect(std::move(done));
  }

  // Allocates the slots (as many as the queue pair's depth) and their buffers.
  absl::Status Prepare() {
    uint32_t depth = qp_->depth();
    size_t per_slot = static_cast<size_t>(config_.io_size) * (config_.verify ? 2 : 1);
    size_t total = per_slot * depth;
    void* p = std::aligned_alloc(4096, (total + 4095) / 4096 * 4096);
    if (p == nullptr) return absl::ResourceExhaustedError("cannot allocate I/O buffers");
    memory_.reset(static_cast<uint8_t*>(p));
    slots_.resize(depth);
    for (uint32_t i = 0; i < depth; ++i) {
      Slot& s = slots_[i];
      s.data = memory_.get() + per_slot * i;
      s.check = config_.verify ? s.data + config_.io_size : nullptr;
      // A recognisable non-zero pattern for plain writes.
      for (uint32_t b = 0; b < config_.io_size; ++b) s.data[b] = static_cast<uint8_t>(b * 31 + i + 1);
    }
    return absl::OkStatus();
  }

  void Run(uint64_t duration_ns, absl::AnyInvocable<void() &&> finished) {
    finished_ = std::move(finished);
    start_ns_ = NowNs();
    last_completion_ns_ = start_ns_;
    timer_ = reactor_.RunAfter(duration_ns, [this] {
      timer_ = 0;
      stopping_ = true;
      MaybeFinish();
    });
    for (uint32_t i = 0; i < slots_.size() && !stopping_; ++i) Issue(i);
    MaybeFinish();
  }

  CoreResult& result() { return result_; }
  const std::string& first_error() const { return first_error_; }
  uint16_t depth() const { return qp_->depth(); }

 private:
  struct Slot {
    uint8_t* data = nullptr;
    uint8_t* check = nullptr;  // --verify: read-back buffer
    uint64_t unit = 0;
    uint64_t start_ns = 0;
    uint64_t generation = 0;
    uint64_t seq_cursor = 0;
    bool read = false;
    bool verifying = false;  // --verify: the write landed, the read-back is next
  };

  uint64_t Random() {
    uint64_t x = rng_;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_ = x;
    return x * 0x2545f4914f6cdd1dull;
  }

  uint64_t NextUnit(Slot& s, uint32_t index) {
    if (config_.verify) {
      // Slot g of G owns units g, g+G, g+2G, ...: concurrent slots never overlap.
      uint64_t g = static_cast<uint64_t>(config_.worker_index) * config_.slots_per_worker + index;
      uint64_t stride = static_cast<uint64_t>(config_.worker_count) * config_.slots_per_worker;
      uint64_t owned = (config_.units - g + stride - 1) / stride;
      uint64_t k = IsRandom(config_.workload) ? Random() % owned : s.seq_cursor++ % owned;
      return g + k * stride;
    }
    if (IsRandom(config_.workload)) return Random() % config_.units;
    uint64_t start = config_.units * config_.worker_index / config_.worker_count;
    return (start + seq_cursor_++) % config_.units;
  }

  bool ChooseRead() {
    switch (config_.workload) {
      case Workload::kRead:
      case Workload::kRandRead: return true;
      case Workload::kWrite:
      case Workload::kRandWrite: return false;
      default: return static_cast<int>(Random() % 100) < config_.read_percent;
    }
  }

  void FillPattern(Slot& s) {
    uint64_t base = (s.unit << 20) ^ (s.generation << 44) ^ (static_cast<uint64_t>(result_.core) << 58);
    size_t words = config_.io_size / 8;
    for (size_t w = 0; w < words; ++w) {
      uint64_t v = base + w * 0x9e3779b97f4a7c15ull;
      std::memcpy(s.data + 8 * w, &v, 8);
    }
  }

  void Issue(uint32_t index) {
    Slot& s = slots_[index];
    if (!s.verifying) {
      s.unit = NextUnit(s, index);
      if (config_.verify) {
        s.read = false;
        ++s.generation;
        FillPattern(s);
      } else {
        s.read = ChooseRead();
      }
    }
    uint8_t sqe[nvme::kSqeSize];
    uint64_t lba = s.unit * config_.blocks_per_io;
    if (s.read) {
      nvme::host::BuildRead(sqe, config_.nsid, lba, config_.blocks_per_io);
    } else {
      nvme::host::BuildWrite(sqe, config_.nsid, lba, config_.blocks_per_io);
    }
    QueuePair::CompletionCallback cb = [this, index](const Completion& c) { OnComplete(index, c); };
    s.start_ns = NowNs();
    absl::Status status = s.read ? qp_->SubmitRead(sqe, s.verifying ? s.check : s.data, config_.io_size, std::move(cb))
                                 : qp_->SubmitWrite(sqe, s.data, config_.io_size, std::move(cb));
    if (!status.ok()) {
      ++result_.errors;
      if (first_error_.empty()) first_error_ = StatusMessage(status);
      stopping_ = true;
      return;
    }
    ++inflight_;
  }

  void OnComplete(uint32_t index, const Completion& c) {
    --inflight_;
    uint64_t now = NowNs();
    last_completion_ns_ = now;
    Slot& s = slots_[index];
    if (!c.ok()) {
      ++result_.errors;
      if (first_error_.empty()) first_error_ = StatusMessage(c.ToStatus(s.read ? "Read" : "Write"));
      if (!c.transport.ok()) stopping_ = true;  // the queue pair is gone
      s.verifying = false;
    } else {
      result_.latency_ns.Record(now - s.start_ns);
      ++result_.ios;
      result_.bytes += config_.io_size;
      ++(s.read ? result_.reads : result_.writes);
      if (config_.verify) {
        if (!s.read) {
          s.verifying = true;
          s.read = true;
        } else {
          if (std::memcmp(s.data, s.check, config_.io_size) != 0) {
            ++result_.verify_failures;
            if (first_error_.empty()) {
              first_error_ = absl::StrCat("data mismatch at LBA ", s.unit * config_.blocks_per_io);
            }
          }
          s.verifying = false;
        }
      }
    }
    if (stopping_) {
      MaybeFinish();
      return;
    }
    Issue(index);
  }

  void MaybeFinish() {
    if (!stopping_ || inflight_ != 0 || !finished_) return;
    result_.seconds = static_cast<double>(last_completion_ns_ - start_ns_) / 1e9;
    auto finished = std::move(finished_);
    finished_ = nullptr;
    std::move(finished)();
  }

  Reactor& reactor_;
  WorkerConfig config_;
  std::unique_ptr<QueuePair> qp_;
  AlignedBuffer memory_;
  std::vector<Slot> slots_;
  uint64_t rng_ = 1;
  uint64_t seq_cursor_ = 0;
  uint32_t inflight_ = 0;
  bool stopping_ = false;
  uint64_t start_ns_ = 0;
  uint64_t last_completion_ns_ = 0;
  uint64_t timer_ = 0;
  absl::AnyInvocable<void() &&> finished_;
  CoreResult result_;
  std::string first_error_;
};

// Runs `fn` on `reactor` and waits for it.
template <typename F>
void RunOn(Reactor& reactor, F fn) {
  std::promise<void> done;
  reactor.Post([&] {
    fn();
    done.set_value();
  });
  done.get_future().wait();
}

}  // namespace

absl::StatusOr<PerfResult> RunPerf(const PerfOptions& options, std::ostream& log) {
  auto cores_or = ParseCpuMask(options.cpumask);
  if (!cores_or.ok()) return cores_or.status();
  std::vector<int> cores = *cores_or;

  SyncController::Options sync_options;
  sync_options.controller.hdgst = options.hdgst;
  sync_options.controller.ddgst = options.ddgst;
  sync_options.controller.num_io_queues = static_cast<uint16_t>(cores.size());
  sync_options.controller.io_command_timeout_ns = 30'000'000'000ull;
  const TransportId& trid = options.trid;
  auto ctrl_or = SyncController::Connect(trid, sync_options);
  if (!ctrl_or.ok()) {
    return absl::Status(ctrl_or.status().code(),
                        absl::StrCat("cannot connect to ", trid.Describe(), ": ", ctrl_or.status().message()));
  }
  std::unique_ptr<SyncController> ctrl = *std::move(ctrl_or);
  if (ctrl->is_discovery()) {
    return absl::InvalidArgumentError(
        absl::StrCat(trid.subnqn, " is a discovery subsystem: give the subnqn of an NVM subsystem"));
  }

  uint32_t nsid = options.nsid != 0 ? options.nsid : trid.nsid;
  if (nsid == 0) {
    auto active = ctrl->ActiveNamespaces();
    if (!active.ok()) return active.status();
    if (active->empty()) return absl::NotFoundError(absl::StrCat(trid.subnqn, " has no active namespace"));
    nsid = active->front();
  }
  auto ns = ctrl->IdentifyNamespace(nsid);
  if (!ns.ok()) return ns.status();
  uint32_t block_size = ns->block_size();
  if (block_size == 0) return absl::FailedPreconditionError(absl::StrCat("namespace ", nsid, " has no valid LBA format"));
  if (ns->lba_formats[ns->current_format()].metadata_size != 0) {
    return absl::FailedPreconditionError("namespaces with separate or extended metadata are not supported");
  }
  if (options.io_size % block_size != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("I/O size ", options.io_size, " is not a multiple of the block size ", block_size));
  }
  uint32_t blocks_per_io = options.io_size / block_size;
  if (blocks_per_io > 65536) return absl::InvalidArgumentError("I/O size above 65536 blocks");
  uint64_t mdts = ctrl->max_transfer_bytes();
  if (mdts != 0 && options.io_size > mdts) {
    return absl::InvalidArgumentError(
        absl::StrCat("I/O size ", options.io_size, " exceeds the controller's MDTS of ", mdts, " bytes"));
  }
  uint64_t units = ns->nsze * block_size / options.io_size;
  if (units == 0) return absl::InvalidArgumentError("namespace smaller than one I/O");
  if (ctrl->io_queues_granted() < cores.size()) {
    return absl::ResourceExhaustedError(absl::StrCat("controller granted ", ctrl->io_queues_granted(),
                                                     " I/O queues, the core mask needs ", cores.size()));
  }

  PerfResult result;
  result.device = absl::StrCat("TCP (addr:", trid.traddr, " subnqn:", trid.subnqn, ") NSID ", nsid);
  log << "Attached to NVMe/TCP controller at " << trid.traddr << ":" << trid.trsvcid << " subnqn:" << trid.subnqn
      << " (cntlid " << ctrl->cntlid() << (options.hdgst ? ", hdgst" : "") << (options.ddgst ? ", ddgst" : "")
      << ")\n";

  ReactorSet reactors(cores, options.busy_poll);
  reactors.Start();
  std::vector<std::unique_ptr<PerfWorker>> workers;
  absl::Status setup;
  std::vector<std::future<absl::Status>> connected;
  for (size_t i = 0; i < cores.size(); ++i) {
    auto qp_options = ctrl->AllocateIoQueue(static_cast<uint16_t>(options.queue_depth));
    if (!qp_options.ok()) {
      setup = qp_options.status();
      break;
    }
    WorkerConfig config;
    config.nsid = nsid;
    config.io_size = options.io_size;
    config.blocks_per_io = blocks_per_io;
    config.units = units;
    config.workload = options.workload;
    config.read_percent = options.read_percent;
    config.verify = options.verify;
    config.worker_index = static_cast<uint32_t>(i);
    config.worker_count = static_cast<uint32_t>(cores.size());
    config.slots_per_worker = qp_options->depth;
    if (options.verify && units < static_cast<uint64_t>(config.slots_per_worker) * cores.size()) {
      setup = absl::InvalidArgumentError("--verify needs at least queue depth x cores I/O-sized blocks");
      break;
    }
    if (qp_options->depth < options.queue_depth && i == 0) {
      log << "Queue depth " << options.queue_depth << " exceeds the controller's limit; using "
          << qp_options->depth << "\n";
    }
    auto worker = std::make_unique<PerfWorker>(reactors.reactor(i), cores[i], config);
    auto promise = std::make_shared<std::promise<absl::Status>>();
    connected.push_back(promise->get_future());
    PerfWorker* w = worker.get();
    reactors.reactor(i).Post([w, trid, opts = *qp_options, promise] {
      w->Connect(trid, opts, [w, promise](absl::Status status) {
        if (status.ok()) status = w->Prepare();
        promise->set_value(status);
      });
    });
    workers.push_back(std::move(worker));
    log << "Associating " << result.device << " with lcore " << cores[i] << " (qid " << qp_options->qid << ")\n";
  }
  for (auto& f : connected) {
    absl::Status s = f.get();
    if (setup.ok() && !s.ok()) setup = s;
  }

  if (setup.ok()) {
    log << "Initialization complete. Launching workers." << std::endl;
    uint64_t duration_ns = static_cast<uint64_t>(options.seconds * 1e9);
    std::vector<std::future<void>> finished;
    for (size_t i = 0; i < workers.size(); ++i) {
      auto promise = std::make_shared<std::promise<void>>();
      finished.push_back(promise->get_future());
      PerfWorker* w = workers[i].get();
      reactors.reactor(i).Post([w, duration_ns, promise] { w->Run(duration_ns, [promise] { promise->set_value(); }); });
    }
    for (auto& f : finished) f.wait();
  }

  for (size_t i = 0; i < workers.size(); ++i) {
    RunOn(reactors.reactor(i), [&] {
      if (setup.ok()) {
        workers[i]->result().queue_depth = workers[i]->depth();
        result.cores.push_back(workers[i]->result());
        if (result.first_error.empty()) result.first_error = workers[i]->first_error();
      }
      workers[i].reset();
    });
  }
  reactors.Stop();
  absl::Status shutdown = ctrl->Shutdown();
  if (!setup.ok()) return setup;
  if (!shutdown.ok()) log << "warning: controller shutdown: " << shutdown.message() << "\n";

  CoreResult& total = result.total;
  total.core = -1;
  for (const CoreResult& c : result.cores) {
    total.ios += c.ios;
    total.reads += c.reads;
    total.writes += c.writes;
    total.bytes += c.bytes;
    total.errors += c.errors;
    total.verify_failures += c.verify_failures;
    total.seconds = std::max(total.seconds, c.seconds);
    total.latency_ns.Merge(c.latency_ns);
  }
  // Total IOPS is the sum of the cores' rates (each measured over its own run time).
  return result;
}

std::string FormatPerfReport(const PerfOptions& options, const PerfResult& result) {
  auto us = [](double ns) { return ns / 1000.0; };
  double total_iops = 0, total_mibps = 0;
  for (const CoreResult& c : result.cores) {
    total_iops += c.iops();
    total_mibps += c.mib_per_second();
  }
  // The effective read share: -M for mixed workloads, else 100 or 0.
  int read_percent = options.read_percent;
  if (read_percent < 0 && IsMixed(options.workload)) read_percent = 50;
  if (read_percent < 0) {
    read_percent = options.workload == Workload::kRead || options.workload == Workload::kRandRead ? 100 : 0;
  }
  const std::string rule(72, '=');
  std::string out;
  size_t label_width = result.device.size() + 14;
  out += rule + "\n";
  out += fmt::format("{:<{}} : {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n", "Device Information", label_width,
                     "IOPS", "MiB/s", "Avg(us)", "p50(us)", "p99(us)", "p99.9(us)", "min(us)", "max(us)");
  auto line = [&](const std::string& label, double iops, double mibps, const LatencyHistogram& h) {
    return fmt::format("{:<{}} : {:>11.2f} {:>9.2f} {:>9.2f} {:>9.2f} {:>9.2f} {:>9.2f} {:>9.2f} {:>9.2f}\n", label,
                       label_width, iops, mibps, us(h.mean()), us(static_cast<double>(h.Percentile(0.50))),
                       us(static_cast<double>(h.Percentile(0.99))), us(static_cast<double>(h.Percentile(0.999))),
                       us(static_cast<double>(h.min())), us(static_cast<double>(h.max())));
  };
  for (const CoreResult& c : result.cores) {
    out += line(fmt::format("{} from core {:2}", result.device, c.core), c.iops(), c.mib_per_second(), c.latency_ns);
  }
  out += rule + "\n";
  const CoreResult& t = result.total;
  out += line("Total", total_iops, total_mibps, t.latency_ns);
  if (t.errors != 0 || t.verify_failures != 0) {
    out += fmt::format("\nI/O errors: {}  verify failures: {}  first: {}\n", t.errors, t.verify_failures,
                       result.first_error);
  }
  // Machine-readable summary, one JSON object on the last line.
  out += fmt::format(
      "{{\"tool\":\"smad-perf\",\"workload\":\"{}\",\"io_size\":{},\"queue_depth\":{},\"cores\":{},"
      "\"read_percent\":{},\"hdgst\":{},\"ddgst\":{},\"verify\":{},\"seconds\":{:.3f},\"ios\":{},\"reads\":{},"
      "\"writes\":{},\"iops\":{:.2f},\"mibps\":{:.2f},\"avg_us\":{:.2f},\"p50_us\":{:.2f},\"p99_us\":{:.2f},"
      "\"p999_us\":{:.2f},\"min_us\":{:.2f},\"max_us\":{:.2f},\"errors\":{},\"verify_failures\":{}}}\n",
      WorkloadName(options.workload), options.io_size,
      result.cores.empty() ? options.queue_depth : result.cores[0].queue_depth, result.cores.size(), read_percent, options.hdgst, options.ddgst, options.verify, t.seconds, t.ios, t.reads, t.writes,
      total_iops, total_mibps, us(t.latency_ns.mean()), us(static_cast<double>(t.latency_ns.Percentile(0.50))),
      us(static_cast<double>(t.latency_ns.Percentile(0.99))),
      us(static_cast<double>(t.latency_ns.Percentile(0.999))), us(static_cast<double>(t.latency_ns.min())),
      us(static_cast<double>(t.latency_ns.max())), t.errors, t.verify_failures);
  return out;
}

}  // namespace smad::tools
