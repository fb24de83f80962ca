#include "common/latency_histogram.h"

#include <algorithm>
#include <bit>
#include <cmath>

namespace smad {

LatencyHistogram::LatencyHistogram() : buckets_(kBucketCount, 0) {}

size_t LatencyHistogram::BucketIndex(uint64_t value) {
  if (value < 2 * kSubBuckets) return static_cast<size_t>(value);
  int msb = 63 - std::countl_zero(value);
  int shift = msb - kSubBucketBits;  // >= 1
  uint64_t mantissa = value >> shift;  // in [kSubBuckets, 2 * kSubBuckets)
  return static_cast<size_t>(2 * kSubBuckets + static_cast<uint64_t>(shift - 1) * kSubBuckets +
                             (mantissa - kSubBuckets));
}

uint64_t LatencyHistogram::BucketLow(size_t index) {
  if (index < 2 * kSubBuckets) return index;
  size_t rest = index - 2 * kSubBuckets;
  int shift = static_cast<int>(rest / kSubBuckets) + 1;
  uint64_t mantissa = rest % kSubBuckets + kSubBuckets;
  return mantissa << shift;
}

uint64_t LatencyHistogram::BucketHigh(size_t index) {
  if (index < 2 * kSubBuckets) return index;
  size_t rest = index - 2 * kSubBuckets;
  int shift = static_cast<int>(rest / kSubBuckets) + 1;
  uint64_t mantissa = rest % kSubBuckets + kSubBuckets;
  if (shift == 63 - kSubBucketBits && mantissa == 2 * kSubBuckets - 1) return UINT64_MAX;
  return ((mantissa + 1) << shift) - 1;
}

void LatencyHistogram::Record(uint64_t value) {
  ++buckets_[BucketIndex(value)];
  ++count_;
  sum_ += static_cast<double>(value);
  min_ = std::min(min_, value);
  max_ = std::max(max_, value);
}

void LatencyHistogram::Merge(const LatencyHistogram& other) {
  for (size_t i = 0; i < kBucketCount; ++i) buckets_[i] += other.buckets_[i];
  count_ += other.count_;
  sum_ += other.sum_;
  min_ = std::min(min_, other.min_);
  max_ = std::max(max_, other.max_);
}

void LatencyHistogram::Clear() {
  std::fill(buckets_.begin(), buckets_.end(), 0);
  count_ = 0;
  sum_ = 0;
  min_ = UINT64_MAX;
  max_ = 0;
}

uint64_t LatencyHistogram::Percentile(double fraction) const {
  if (count_ == 0) return 0;
  double wanted = std::ceil(std::clamp(fraction, 0.0, 1.0) * static_cast<double>(count_));
  uint64_t rank = std::clamp<uint64_t>(static_cast<uint64_t>(wanted), 1, count_);
  uint64_t seen = 0;
  for (size_t i = 0; i < kBucketCount; ++i) {
    seen += buckets_[i];
    if (seen >= rank) {
      uint64_t low = BucketLow(i), high = BucketHigh(i);
      uint64_t mid = low + (high - low) / 2;
      return std::clamp(mid, min_, max_);
    }
  }
  return max_;
}

}  // namespace smad
