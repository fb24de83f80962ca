#pragma once

// The gRPC front end: the SMA service (sma.StorageManagementAgent), the standard health service and
// server reflection, on one plaintext HTTP/2 port.

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "agent/core/agent.h"
#include "grpcpp/grpcpp.h"

namespace smad::agent {

// Maps an agent status to the gRPC status sent to the client (absl and gRPC share the canonical codes).
grpc::Status ToGrpcStatus(const absl::Status& status);

// Thread safety: Start once; the rest from any thread.
class GrpcServer {
 public:
  // Listens on address:port (port 0 picks one) and serves `agent` (which must outlive the server).
  // Errors: Unavailable when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<GrpcServer>> Start(const std::string& address, uint16_t port,
                                                           Agent& agent);
  ~GrpcServer();

  uint16_t port() const { return port_; }
  // What the health service answers (for "" and "sma.StorageManagementAgent").
  void SetServing(bool serving);
  // Stops accepting calls and waits up to `grace` for in-flight calls to finish, then cancels the rest.
  void Shutdown(std::chrono::milliseconds grace);

 private:
  GrpcServer() = default;
  std::unique_ptr<grpc::Service> service_;
  std::unique_ptr<grpc::Server> server_;
  uint16_t port_ = 0;
};

}  // namespace smad::agent
