#include "tgt/bdev/qos.h"

#include <algorithm>

namespace smad::tgt {
namespace {

constexpr uint64_t kSlicesPerSecond = 1'000'000'000 / Qos::kTimesliceNs;

uint64_t PerSlice(uint64_t per_second) {
  if (per_second == 0) return 0;
  return std::max<uint64_t>(1, per_second / kSlicesPerSecond);
}

}  // namespace

Qos::Qos(Bdev& bdev, Reactor& reactor, const QosLimits& limits) : bdev_(bdev), reactor_(reactor) {
  SetLimits(limits);
}

Qos::~Qos() = default;

void Qos::SetLimits(const QosLimits& limits) {
  constexpr uint64_t kMiB = 1024 * 1024;
  ios_.per_slice = PerSlice(limits.rw_ios_per_sec);
  rw_bytes_.per_slice = PerSlice(limits.rw_mbytes_per_sec * kMiB);
  r_bytes_.per_slice = PerSlice(limits.r_mbytes_per_sec * kMiB);
  w_bytes_.per_slice = PerSlice(limits.w_mbytes_per_sec * kMiB);
  for (Bucket* b : {&ios_, &rw_bytes_, &r_bytes_, &w_bytes_}) {
    b->remaining = static_cast<int64_t>(b->per_slice);
  }
}

void Qos::Start() {
  channel_ = bdev_.AcquireChannel();
  slice_start_ns_ = NowNs();
  timer_ = reactor_.RunEvery(kTimesliceNs, [this] { Refill(); });
}

void Qos::Stop() {
  reactor_.CancelTimer(timer_);
  while (head_ != nullptr) {
    BdevIo* io = head_;
    head_ = io->next;
    --queued_;
    Execute(io);
  }
  tail_ = nullptr;
  // The channel stays referenced by I/O just executed; BdevChannel keeps itself alive until its
  // outstanding count drops, so releasing our reference here is safe.
  bdev_.ReleaseChannel(channel_);
  channel_ = nullptr;
}

bool Qos::Admit(const BdevIo& io) {
  auto has_room = [](const Bucket& b) { return b.per_slice == 0 || b.remaining > 0; };
  bool is_read = io.type == IoType::kRead;
  bool is_write = io.type == IoType::kWrite;
  if (!has_room(ios_) || !has_room(rw_bytes_)) return false;
  if (is_read && !has_room(r_bytes_)) return false;
  if (is_write && !has_room(w_bytes_)) return false;
  int64_t bytes = static_cast<int64_t>((is_read || is_write) ? io.bytes() : 0);
  if (ios_.per_slice) ios_.remaining -= 1;
  if (rw_bytes_.per_slice) rw_bytes_.remaining -= bytes;
  if (is_read && r_bytes_.per_slice) r_bytes_.remaining -= bytes;
  if (is_write && w_bytes_.per_slice) w_bytes_.remaining -= bytes;
  return true;
}

void Qos::Refill() {
  // The timer fires late by up to one reactor loop iteration, and Reactor::RunEvery schedules the next
  // firing from the late one, so firings are on average longer than a timeslice apart. Credit the
  // timeslices that actually elapsed (measured from a fixed boundary), not one per firing, or the limits
  // would be undershot by that lateness (about 10% with 64 KiB I/O on the same reactor).
  uint64_t now = NowNs();
  uint64_t elapsed = (now - slice_start_ns_) / kTimesliceNs;
  if (elapsed == 0) return;
  slice_start_ns_ += elapsed * kTimesliceNs;
  int64_t slices = static_cast<int64_t>(std::min(elapsed, kMaxCatchUpSlices));
  for (Bucket* b : {&ios_, &rw_bytes_, &r_bytes_, &w_bytes_}) {
    if (b->per_slice == 0) continue;
    // Pay debt first; never bank allowance a previous timeslice left unused.
    b->remaining = std::min<int64_t>(b->remaining, 0) + slices * static_cast<int64_t>(b->per_slice);
  }
  Dispatch();
}

void Qos::Enqueue(BdevIo* io) {
  io->next = nullptr;
  if (tail_) {
    tail_->next = io;
  } else {
    head_ = io;
  }
  tail_ = io;
  ++queued_;
  Dispatch();
}

void Qos::Dispatch() {
  while (head_ != nullptr && Admit(*head_)) {
    BdevIo* io = head_;
    head_ = io->next;
    if (head_ == nullptr) tail_ = nullptr;
    --queued_;
    Execute(io);
  }
}

void Qos::Execute(BdevIo* io) {
  io->next = nullptr;
  io->module_channel = channel_;
  if (channel_ != io->origin) ++channel_->executing_;  // balanced in Bdev::CompleteIo
  bdev_.SubmitIo(channel_->module(), *io);
}

}  // namespace smad::tgt
