#pragma once

// Helpers for tests that drive smad over gRPC and look at its target directly over JSON-RPC.

#include <chrono>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "grpcpp/grpcpp.h"
#include "jsonrpc/blocking_client.h"
#include "sma.grpc.pb.h"

namespace smad::testing {

using Json = nlohmann::json;

// The 16 RFC 4122 bytes of a canonical UUID string (what SMA's volume_id carries).
std::string UuidBytes(const std::string& uuid);
std::string RandomUuid();

// A gRPC call outcome as absl::Status (same codes).
absl::Status FromGrpc(const grpc::Status& status);

// Thin synchronous SMA client with a per-call deadline.
class SmaClient {
 public:
  // `wait_for_ready`: calls wait (up to their 60 s deadline) while the channel cannot connect, instead of
  // failing at once with UNAVAILABLE; for load tests where a transient connect failure is not the point.
  explicit SmaClient(std::unique_ptr<sma::StorageManagementAgent::Stub> stub, bool wait_for_ready = false)
      : stub_(std::move(stub)), wait_for_ready_(wait_for_ready) {}
  absl::StatusOr<std::string> CreateDevice(const sma::CreateDeviceRequest& request);
  absl::Status DeleteDevice(const std::string& handle);
  absl::Status AttachVolume(const sma::AttachVolumeRequest& request);
  absl::Status AttachVolume(const std::string& handle, const std::string& uuid);
  absl::Status DetachVolume(const std::string& handle, const std::string& uuid);
  absl::Status SetQos(const sma::SetQosRequest& request);
  absl::StatusOr<sma::GetQosCapabilitiesResponse> GetQosCapabilities(int device_type);
  sma::StorageManagementAgent::Stub& stub() { return *stub_; }

 private:
  std::unique_ptr<grpc::ClientContext> Context() const;
  std::unique_ptr<sma::StorageManagementAgent::Stub> stub_;
  bool wait_for_ready_ = false;
};

// sma.CreateDeviceRequest for an nvmf_tcp device on 127.0.0.1:`port`.
sma::CreateDeviceRequest NvmfTcpDevice(const std::string& nqn, const std::string& port,
                                       const std::vector<std::string>& hosts = {}, bool allow_any_host = false);

// A JSON-RPC connection to a target, for setup and inspection.
class TargetView {
 public:
  explicit TargetView(std::string socket) : socket_(std::move(socket)) {}
  // The result, or the error as a status (FailedPrecondition "code: message").
  absl::StatusOr<Json> Call(const std::string& method, const Json& params = Json());
  // Subsystems other than the discovery subsystem, by NQN order.
  std::vector<Json> Subsystems();
  // The namespaces of `nqn` (empty when absent).
  std::vector<Json> Namespaces(const std::string& nqn);
  bool HasSubsystem(const std::string& nqn);
  std::string BdevUuid(const std::string& name);

 private:
  absl::Status Reconnect();
  std::string socket_;
  std::optional<jsonrpc::BlockingClient> client_;
};

}  // namespace smad::testing
