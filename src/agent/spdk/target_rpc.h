#pragma once

#include <chrono>

#include "agent/spdk/spdk_client.h"

namespace smad::agent {

// A client plus the per-call timeout from the configuration: what device managers and the agent use to
// issue target calls. Thread safe (as SpdkClient). The client must outlive it.
class TargetRpc {
 public:
  TargetRpc(SpdkClient& client, std::chrono::milliseconds timeout) : client_(client), timeout_(timeout) {}

  absl::StatusOr<Json> Call(absl::string_view method, const Json& params = Json()) const {
    return client_.Call(method, params, timeout_);
  }
  absl::StatusOr<Json> Call(absl::string_view method, const Json& params,
                            std::chrono::milliseconds timeout) const {
    return client_.Call(method, params, timeout);
  }
  uint64_t connection_epoch() const { return client_.connection_epoch(); }

 private:
  SpdkClient& client_;
  std::chrono::milliseconds timeout_;
};

// True when `status` is a failure to reach the target (as opposed to an answer): Unavailable or
// DeadlineExceeded.
inline bool IsTransportError(const absl::Status& status) {
  return absl::IsUnavailable(status) || absl::IsDeadlineExceeded(status);
}

}  // namespace smad::agent
