#include "support/nvme_host.h"

#include <chrono>
#include <thread>

#include "absl/strings/str_cat.h"
#include "nvme/host/transport_id.h"

namespace smad::testing {

std::unique_ptr<nvme::host::SyncController> ConnectHost(const std::string& port, const std::string& subnqn,
                                                        const std::string& hostnqn) {
  auto trid = nvme::host::ParseTransportId(absl::StrCat("trtype:tcp adrfam:ipv4 traddr:127.0.0.1 trsvcid:", port,
                                                        " subnqn:", subnqn, " hostnqn:", hostnqn));
  if (!trid.ok()) return nullptr;
  nvme::host::SyncController::Options options;
  options.controller.kato_ms = 10000;
  for (int attempt = 0; attempt < 100; ++attempt) {
    auto ctrl = nvme::host::SyncController::Connect(*trid, options);
    if (ctrl.ok()) return *std::move(ctrl);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return nullptr;
}

std::vector<uint8_t> Pattern(size_t size, uint64_t seed) {
  std::vector<uint8_t> data(size);
  for (size_t i = 0; i < size; ++i) data[i] = static_cast<uint8_t>((i * 131 + seed * 7919) >> 3);
  return data;
}

}  // namespace smad::testing
