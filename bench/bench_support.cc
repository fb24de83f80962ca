#include "bench_support.h"

#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "tgt/bdev/memory_bdevs.h"

namespace smad::bench {

SampleSummary Summarize(std::vector<uint64_t> samples_ns) {
  SampleSummary s;
  s.count = samples_ns.size();
  if (samples_ns.empty()) return s;
  std::sort(samples_ns.begin(), samples_ns.end());
  double sum = 0;
  for (uint64_t v : samples_ns) sum += static_cast<double>(v);
  s.mean_ns = sum / static_cast<double>(s.count);
  auto rank = [&](double q) {
    size_t r = static_cast<size_t>(q * static_cast<double>(s.count) + 0.999999);
    return samples_ns[std::clamp<size_t>(r, 1, s.count) - 1];
  };
  s.p50_ns = rank(0.50);
  s.p99_ns = rank(0.99);
  s.max_ns = samples_ns.back();
  return s;
}

// --- Machine -----------------------------------------------------------------------------------------

std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string one, five, fifteen;
  in >> one >> five >> fifteen;
  return one + " " + five + " " + fifteen;
}

std::string MachineDescription() {
  std::string model = "unknown";
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);) {
    if (line.rfind("model name", 0) == 0) {
      model = std::string(absl::StripAsciiWhitespace(line.substr(line.find(':') + 1)));
      break;
    }
  }
  utsname u{};
  uname(&u);
  std::ostringstream out;
  out << "machine: " << sysconf(_SC_NPROCESSORS_ONLN) << " CPUs online, " << model << ", Linux " << u.release
      << "\nload average (1/5/15 min): " << LoadAverage() << "\n";
  return out.str();
}

absl::StatusOr<std::vector<int>> ParseCoreList(const std::string& text) {
  std::vector<int> cores;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    int core;
    if (!absl::SimpleAtoi(part, &core) || core < 0) {
      return absl::InvalidArgumentError("invalid core list '" + text + "'");
    }
    cores.push_back(core);
  }
  if (cores.empty()) return absl::InvalidArgumentError("empty core list");
  return cores;
}

// --- BdevHarness -------------------------------------------------------------------------------------

absl::StatusOr<tgt::Bdev*> BdevHarness::CreateMalloc(const std::string& name, uint64_t num_blocks,
                                                     uint32_t block_size) {
  auto bdev = tgt::MallocBdev::Create({name, Uuid(), block_size, num_blocks});
  if (!bdev.ok()) return bdev.status();
  tgt::Bdev* raw = bdev->get();
  absl::Status status;
  layer_.OnControl([&] { status = layer_.manager()->Register(std::move(bdev).value()); });
  if (!status.ok()) return status;
  return raw;
}

absl::Status BdevHarness::SetQos(tgt::Bdev& bdev, const tgt::QosLimits& limits) {
  std::promise<absl::Status> result;
  layer_.control().Post(
      [&] { layer_.manager()->SetQos(bdev, limits, [&](absl::Status s) { result.set_value(s); }); });
  return result.get_future().get();
}

// --- IoResult ----------------------------------------------------------------------------------------

void IoResult::ComputeRates() {
  double seconds = static_cast<double>(elapsed_ns) / 1e9;
  if (seconds <= 0) return;
  constexpr double kMiB = 1024.0 * 1024.0;
  iops = static_cast<double>(ios) / seconds;
  read_mibps = static_cast<double>(read_bytes) / kMiB / seconds;
  write_mibps = static_cast<double>(write_bytes) / kMiB / seconds;
}

void IoResult::Merge(const IoResult& other) {
  ios += other.ios;
  read_ios += other.read_ios;
  write_ios += other.write_ios;
  read_bytes += other.read_bytes;
  write_bytes += other.write_bytes;
  errors += other.errors;
  elapsed_ns = std::max(elapsed_ns, other.elapsed_ns);
  latency.Merge(other.latency);
  iops += other.iops;
  read_mibps += other.read_mibps;
  write_mibps += other.write_mibps;
}

// --- IoGenerator -------------------------------------------------------------------------------------

IoGenerator::IoGenerator(Reactor& reactor, tgt::Bdev& bdev, const IoPattern& pattern, uint64_t seed,
                         const std::atomic<Phase>& phase)
    : reactor_(reactor), bdev_(bdev), pattern_(pattern), phase_(phase), rng_(seed | 1) {
  blocks_per_io_ = std::max<uint64_t>(1, pattern_.io_size / bdev_.block_size());
  slots_in_bdev_ = std::max<uint64_t>(1, bdev_.num_blocks() / blocks_per_io_);
  size_t bytes = static_cast<size_t>(pattern_.queue_depth) * pattern_.io_size;
  memory_ = static_cast<uint8_t*>(std::aligned_alloc(4096, (bytes + 4095) / 4096 * 4096));
  std::memset(memory_, 0xa5, bytes);
  slots_.resize(pattern_.queue_depth);
  for (uint32_t i = 0; i < pattern_.queue_depth; ++i) {
    Slot& s = slots_[i];
    s.owner = this;
    s.buffer = memory_ + static_cast<size_t>(i) * pattern_.io_size;
    s.iov = {s.buffer, pattern_.io_size};
    s.start_ns = 0;
    s.read = true;
  }
}

IoGenerator::~IoGenerator() { std::free(memory_); }

void IoGenerator::Start() {
  reactor_.Post([this] { Begin(); });
}

IoResult IoGenerator::Wait() {
  done_.get_future().wait();
  IoResult result = result_;
  result.ComputeRates();
  return result;
}

uint64_t IoGenerator::NextRandom() {
  // xorshift64*
  rng_ ^= rng_ >> 12;
  rng_ ^= rng_ << 25;
  rng_ ^= rng_ >> 27;
  return rng_ * 0x2545F4914F6CDD1Dull;
}

void IoGenerator::Begin() {
  channel_ = bdev_.AcquireChannel();
  UpdateState(NowNs());
  for (Slot& slot : slots_) {
    if (state_ == State::kStopped || (pattern_.max_ios != 0 && submitted_ >= pattern_.max_ios)) break;
    Submit(slot);
  }
  MaybeFinish(NowNs());
}

void IoGenerator::Submit(Slot& slot) {
  uint64_t position;
  if (pattern_.sequential) {
    position = next_sequential_++ % slots_in_bdev_;
  } else {
    position = static_cast<uint64_t>((static_cast<unsigned __int128>(NextRandom()) * slots_in_bdev_) >> 64);
  }
  slot.read =
      pattern_.read_percent >= 100 ||
      (pattern_.read_percent > 0 && NextRandom() % 100 < static_cast<uint64_t>(pattern_.read_percent));
  slot.start_ns = NowNs();
  ++submitted_;
  int rc = channel_->Submit(slot.read ? tgt::IoType::kRead : tgt::IoType::kWrite, position * blocks_per_io_,
                            blocks_per_io_, &slot.iov, 1, &IoGenerator::OnComplete, &slot);
  if (rc != 0) {
    ++result_.errors;
    return;
  }
  ++in_flight_;
}

void IoGenerator::UpdateState(uint64_t now) {
  Phase phase = phase_.load(std::memory_order_relaxed);
  if (state_ == State::kWarmup && phase != Phase::kWarmup) {
    state_ = State::kMeasure;
    window_start_ns_ = now;
  }
  if (state_ == State::kMeasure && phase == Phase::kStop) {
    state_ = State::kStopped;
    result_.elapsed_ns = now - window_start_ns_;
  }
}

void IoGenerator::OnComplete(void* arg, int status) {
  Slot& slot = *static_cast<Slot*>(arg);
  IoGenerator& self = *slot.owner;
  uint64_t now = NowNs();
  --self.in_flight_;
  self.UpdateState(now);
  if (self.state_ == State::kMeasure) {
    IoResult& r = self.result_;
    ++r.ios;
    if (status != 0) ++r.errors;
    if (slot.read) {
      ++r.read_ios;
      r.read_bytes += self.pattern_.io_size;
    } else {
      ++r.write_ios;
      r.write_bytes += self.pattern_.io_size;
    }
    r.latency.Record(now - slot.start_ns);
  }
  bool more = self.state_ != State::kStopped &&
              (self.pattern_.max_ios == 0 || self.submitted_ < self.pattern_.max_ios);
  if (more) self.Submit(slot);
  self.MaybeFinish(now);
}

void IoGenerator::MaybeFinish(uint64_t now) {
  if (in_flight_ != 0 || finished_) return;
  finished_ = true;
  if (state_ == State::kMeasure) result_.elapsed_ns = now - window_start_ns_;  // ended by max_ios
  bdev_.ReleaseChannel(channel_);
  channel_ = nullptr;
  done_.set_value();
}

std::vector<IoResult> RunTimed(const std::vector<IoGenerator*>& generators, std::atomic<Phase>& phase,
                               double warmup_seconds, double seconds) {
  phase.store(Phase::kWarmup);
  for (IoGenerator* g : generators) g->Start();
  std::this_thread::sleep_for(std::chrono::duration<double>(warmup_seconds));
  phase.store(Phase::kMeasure);
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  phase.store(Phase::kStop);
  std::vector<IoResult> results;
  for (IoGenerator* g : generators) results.push_back(g->Wait());
  return results;
}

absl::Status FillBdev(Reactor& reactor, tgt::Bdev& bdev) {
  IoPattern fill;
  fill.io_size = std::max<uint32_t>(bdev.block_size(), 128 * 1024 / bdev.block_size() * bdev.block_size());
  fill.queue_depth = 8;
  fill.read_percent = 0;
  fill.sequential = true;
  fill.max_ios = (bdev.num_blocks() * bdev.block_size() + fill.io_size - 1) / fill.io_size;
  std::atomic<Phase> phase{Phase::kMeasure};
  IoGenerator generator(reactor, bdev, fill, 1, phase);
  generator.Start();
  IoResult result = generator.Wait();
  if (result.errors != 0) return absl::InternalError("filling " + bdev.name() + " failed");
  return absl::OkStatus();
}

}  // namespace smad::bench
