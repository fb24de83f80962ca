#pragma once

#include <cstdint>
#include <memory>

#include "reactor/reactor.h"
#include "tgt/bdev/bdev.h"

namespace smad::tgt {

// The rate limiter of one bdev, in SPDK's design: every I/O of a limited bdev funnels through one
// reactor, which keeps token buckets (I/Os, read+write bytes, read bytes, write bytes) refilled for every
// elapsed 1 ms timeslice and executes admitted I/O on its own channel. An I/O may overdraw a bucket; the
// debt is paid from the next timeslices, so large I/Os are limited on average without starving.
//
// Thread safety: reactor-affine to reactor(); other reactors reach it by Reactor::Post only.
class Qos {
 public:
  static constexpr uint64_t kTimesliceNs = 1'000'000;
  // A refill credits every timeslice elapsed since the previous one, up to this many (a reactor stalled
  // for longer loses the excess rather than bursting it).
  static constexpr uint64_t kMaxCatchUpSlices = 10;

  Qos(Bdev& bdev, Reactor& reactor, const QosLimits& limits);
  ~Qos();
  Qos(const Qos&) = delete;
  Qos& operator=(const Qos&) = delete;

  Reactor& reactor() { return reactor_; }

  // On reactor(): acquires the executing channel and starts the timeslice timer.
  void Start();
  // On reactor(): executes everything still queued without limits, stops the timer, releases the
  // channel. No I/O may arrive afterwards (callers first detach every channel from this object).
  void Stop();
  // On reactor().
  void SetLimits(const QosLimits& limits);
  // On reactor(): queues `io` and executes what the buckets admit.
  void Enqueue(BdevIo* io);

  uint64_t queued() const { return queued_; }

 private:
  struct Bucket {
    uint64_t per_slice = 0;  // 0: unlimited
    int64_t remaining = 0;
  };
  bool Admit(const BdevIo& io);
  void Refill();
  void Dispatch();
  void Execute(BdevIo* io);

  Bdev& bdev_;
  Reactor& reactor_;
  BdevChannel* channel_ = nullptr;
  uint64_t timer_ = 0;
  uint64_t slice_start_ns_ = 0;  // start of the current timeslice; advances by whole timeslices
  Bucket ios_, rw_bytes_, r_bytes_, w_bytes_;
  BdevIo* head_ = nullptr;
  BdevIo* tail_ = nullptr;
  uint64_t queued_ = 0;
};

}  // namespace smad::tgt
