#pragma once

#include <memory>
#include <utility>

#include "gtest/gtest.h"
#include "tgt/bdev/in_process_bdev_layer.h"

namespace smad::testing {

// In-process bdev layer for unit tests: a control reactor and two data reactors, each on its own thread,
// and a BdevManager on the control reactor (tgt::InProcessBdevLayer, torn down after each test).
// Header-only, so only tests that link smad_tgt include it.
class BdevLayerTest : public ::testing::Test {
 protected:
  template <typename F>
  void OnControl(F fn) {
    layer_.OnControl(std::move(fn));
  }

  tgt::InProcessBdevLayer layer_{{0, 1}, false};
  Reactor& control_ = layer_.control();
  ReactorSet& reactors_ = layer_.reactors();
  std::unique_ptr<tgt::BdevManager>& manager_ = layer_.manager();
};

}  // namespace smad::testing
