#pragma once

#include <algorithm>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"

namespace smad::agent {

// Named exclusive locks ("device:<handle>", "volume:<id>"): an operation takes all the keys it touches
// at once, waiting until none of them is held, so operations on the same device or volume run one after
// another and all others in parallel. Taking every key at once (never one by one) rules out deadlock.
// Thread safe.
class KeyLocks {
 public:
  // Releases its keys when destroyed. Move-only.
  class Guard {
   public:
    Guard(Guard&& other) noexcept : locks_(other.locks_), keys_(std::move(other.keys_)) { other.locks_ = nullptr; }
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;
    Guard& operator=(Guard&&) = delete;
    ~Guard() {
      if (locks_ != nullptr) locks_->Release(keys_);
    }

   private:
    friend class KeyLocks;
    Guard(KeyLocks* locks, std::vector<std::string> keys) : locks_(locks), keys_(std::move(keys)) {}
    KeyLocks* locks_;
    std::vector<std::string> keys_;
  };

  // Blocks until every key is free, then holds them all. Duplicates and empty keys are ignored.
  Guard Lock(std::vector<std::string> keys) {
    std::vector<std::string> wanted;
    for (auto& k : keys) {
      if (!k.empty() && std::find(wanted.begin(), wanted.end(), k) == wanted.end()) wanted.push_back(std::move(k));
    }
    absl::MutexLock lock(&mu_);
    auto all_free = [this, &wanted]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      for (const auto& k : wanted) {
        if (held_.contains(k)) return false;
      }
      return true;
    };
    mu_.Await(absl::Condition(&all_free));
    for (const auto& k : wanted) held_.insert(k);
    return Guard(this, std::move(wanted));
  }

 private:
  void Release(const std::vector<std::string>& keys) {
    absl::MutexLock lock(&mu_);
    for (const auto& k : keys) held_.erase(k);
  }

  absl::Mutex mu_;
  absl::flat_hash_set<std::string> held_ ABSL_GUARDED_BY(mu_);
};

}  // namespace smad::agent
