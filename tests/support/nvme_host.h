#pragma once

// An NVMe/TCP host for tests: connects (retrying while the listener comes up) with a given host NQN.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "nvme/host/sync_controller.h"

namespace smad::testing {

// Connects to 127.0.0.1:`port`, subsystem `subnqn`, as `hostnqn`; retries for up to 10 s. Null on failure.
std::unique_ptr<nvme::host::SyncController> ConnectHost(const std::string& port, const std::string& subnqn,
                                                        const std::string& hostnqn);

// Deterministic bytes for data checks.
std::vector<uint8_t> Pattern(size_t size, uint64_t seed);

}  // namespace smad::testing
