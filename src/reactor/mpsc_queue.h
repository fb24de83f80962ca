#pragma once

#include <atomic>
#include <utility>

namespace smad {

// Lock-free multi-producer single-consumer FIFO of heap nodes (Vyukov's intrusive design).
// Thread safety: Push() from any thread; Pop() and the destructor only from the single consumer.
// Ownership: the queue owns pushed nodes until Pop() hands one back (callers `delete` it).
template <typename T>
class MpscQueue {
 public:
  struct Node {
    std::atomic<Node*> next{nullptr};
    T value;
    explicit Node(T v) : value(std::move(v)) {}
    Node() = default;
  };

  MpscQueue() : head_(&stub_), tail_(&stub_) {}
  MpscQueue(const MpscQueue&) = delete;
  MpscQueue& operator=(const MpscQueue&) = delete;
  ~MpscQueue() {
    while (Node* n = Pop()) delete n;
  }

  void Push(Node* node) {
    node->next.store(nullptr, std::memory_order_relaxed);
    Node* prev = head_.exchange(node, std::memory_order_acq_rel);
    prev->next.store(node, std::memory_order_release);
  }

  // Returns the oldest node, or nullptr when empty (or when a producer is half-way through Push; the
  // node then appears on a later call).
  Node* Pop() {
    Node* tail = tail_;
    Node* next = tail->next.load(std::memory_order_acquire);
    if (tail == &stub_) {
      if (next == nullptr) return nullptr;
      tail_ = next;
      tail = next;
      next = next->next.load(std::memory_order_acquire);
    }
    if (next != nullptr) {
      tail_ = next;
      return tail;
    }
    if (tail != head_.load(std::memory_order_acquire)) return nullptr;
    Push(&stub_);
    next = tail->next.load(std::memory_order_acquire);
    if (next != nullptr) {
      tail_ = next;
      return tail;
    }
    return nullptr;
  }

  // Consumer-side hint; may report non-empty while a Push is half-done.
  bool MaybeEmpty() const {
    return tail_ == &stub_ && tail_->next.load(std::memory_order_acquire) == nullptr;
  }

 private:
  std::atomic<Node*> head_;
  Node* tail_;
  Node stub_;
};

}  // namespace smad
