#pragma once

// A log-linear latency histogram (the HdrHistogram idea): exact below 256, then 128 buckets per power of
// two, so any recorded value is known to within 0.8% while the whole uint64 range fits in 7424 counters.
// Recording is O(1) and allocation free; per-core histograms merge by adding counters.

#include <cstddef>
#include <cstdint>
#include <vector>

namespace smad {

// Thread compatible: one writer, or external synchronization.
class LatencyHistogram {
 public:
  static constexpr int kSubBucketBits = 7;
  static constexpr uint64_t kSubBuckets = 1u << kSubBucketBits;  // per power of two
  static constexpr size_t kBucketCount = 2 * kSubBuckets + (63 - kSubBucketBits) * kSubBuckets;

  LatencyHistogram();

  void Record(uint64_t value);
  void Merge(const LatencyHistogram& other);
  void Clear();

  uint64_t count() const { return count_; }
  uint64_t min() const { return count_ == 0 ? 0 : min_; }
  uint64_t max() const { return max_; }
  double mean() const { return count_ == 0 ? 0.0 : sum_ / static_cast<double>(count_); }
  // The value below or at which `fraction` (0..1] of the samples lie: the midpoint of the bucket holding
  // that rank, clamped to [min, max]. 0 when empty.
  uint64_t Percentile(double fraction) const;

  // Bucket geometry, exposed for tests.
  static size_t BucketIndex(uint64_t value);
  static uint64_t BucketLow(size_t index);
  static uint64_t BucketHigh(size_t index);

 private:
  std::vector<uint64_t> buckets_;
  uint64_t count_ = 0;
  double sum_ = 0;
  uint64_t min_ = UINT64_MAX;
  uint64_t max_ = 0;
};

}  // namespace smad
