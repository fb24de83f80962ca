#pragma once

#include <future>
#include <memory>

#include "gtest/gtest.h"
#include "reactor/reactor.h"
#include "tgt/bdev/bdev_manager.h"

namespace smad::testing {

// In-process bdev layer for unit tests: a control reactor and two data reactors, each on its own thread,
// and a BdevManager on the control reactor. TearDown deletes every bdev before stopping the reactors.
// Header-only, so only tests that link smad_tgt include it.
class BdevLayerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    control_.Start();
    reactors_.Start();
    OnControl([this] { manager_ = std::make_unique<tgt::BdevManager>(control_, reactors_); });
  }
  void TearDown() override {
    std::promise<void> done;
    control_.Post([&] { manager_->UnregisterAll([&] { done.set_value(); }); });
    done.get_future().wait();
    OnControl([this] { manager_.reset(); });
    reactors_.Stop();
    control_.Stop();
    control_.Join();
  }
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

  Reactor control_{Reactor::Options{.name = "control"}};
  ReactorSet reactors_{{0, 1}, false};
  std::unique_ptr<tgt::BdevManager> manager_;
};

}  // namespace smad::testing
