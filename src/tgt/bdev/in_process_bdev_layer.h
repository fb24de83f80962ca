#pragma once

// The bdev layer alone, in-process, for unit tests and benchmarks: a control reactor and data reactors
// on `cores`, each on its own thread, and a BdevManager on the control reactor. Header-only.
//
// Construction starts everything; destruction unregisters every bdev, destroys the manager on the control
// reactor and stops the reactors, in that order. Thread safety: construct and destroy on one thread that
// is not one of the reactors; OnControl from any such thread.

#include <future>
#include <memory>
#include <utility>
#include <vector>

#include "reactor/reactor.h"
#include "tgt/bdev/bdev_manager.h"

namespace smad::tgt {

class InProcessBdevLayer {
 public:
  InProcessBdevLayer(std::vector<int> cores, bool busy_poll, const char* control_name = "control")
      : control_(Reactor::Options{.name = control_name}), reactors_(std::move(cores), busy_poll) {
    control_.Start();
    reactors_.Start();
    OnControl([this] { manager_ = std::make_unique<BdevManager>(control_, reactors_); });
  }
  ~InProcessBdevLayer() {
    std::promise<void> done;
    control_.Post([&] { manager_->UnregisterAll([&] { done.set_value(); }); });
    done.get_future().wait();
    OnControl([this] { manager_.reset(); });
    reactors_.Stop();
    control_.Stop();
    control_.Join();
  }
  InProcessBdevLayer(const InProcessBdevLayer&) = delete;
  InProcessBdevLayer& operator=(const InProcessBdevLayer&) = delete;

  // Runs `fn` on the control reactor and waits for it.
  template <typename F>
  void OnControl(F fn) {
    std::promise<void> done;
    control_.Post([&] {
      fn();
      done.set_value();
    });
    done.get_future().wait();
  }

  Reactor& control() { return control_; }
  ReactorSet& reactors() { return reactors_; }
  // Set once constructed; used on the control reactor.
  std::unique_ptr<BdevManager>& manager() { return manager_; }

 private:
  Reactor control_;
  ReactorSet reactors_;
  std::unique_ptr<BdevManager> manager_;
};

}  // namespace smad::tgt
