#include "agent/api/sma_service.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/uuid.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "sma.grpc.pb.h"
#include "spdlog/spdlog.h"

namespace smad::agent {
namespace {

constexpr char kServiceName[] = "sma.StorageManagementAgent";
// gRPC sync server threads waiting for calls: at least kMinPollers; threads beyond kMaxPollers exit
// once idle.
constexpr int kMinPollers = 2;
constexpr int kMaxPollers = 32;

// A volume id for logs: the UUID when well formed, else its length (never the raw bytes).
std::string VolumeForLog(const std::string& bytes) {
  auto uuid = Uuid::FromBytes(bytes);
  return uuid.ok() ? uuid->ToString() : absl::StrCat("<", bytes.size(), " bytes>");
}

// Runs `fn`, logs the outcome (requests are described by `what`, which never holds secrets), maps it.
template <typename Fn>
grpc::Status Serve(const char* method, const std::string& what, Fn&& fn) {
  auto start = std::chrono::steady_clock::now();
  absl::Status status = fn();
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - start).count();
  if (status.ok()) {
    spdlog::debug("{} {}: OK ({} us)", method, what, us);
  } else {
    spdlog::info("{} {}: {} ({} us)", method, what, status.ToString(), us);
  }
  return ToGrpcStatus(status);
}

class SmaService final : public sma::StorageManagementAgent::Service {
 public:
  explicit SmaService(Agent& agent) : agent_(agent) {}

  grpc::Status CreateDevice(grpc::ServerContext*, const sma::CreateDeviceRequest* request,
                            sma::CreateDeviceResponse* response) override {
    std::string what = absl::StrCat("type=", static_cast<int>(request->params_case()));
    if (request->has_nvmf_tcp()) absl::StrAppend(&what, " subnqn=", request->nvmf_tcp().subnqn().substr(0, 256));
    if (request->has_volume()) absl::StrAppend(&what, " volume=", VolumeForLog(request->volume().volume_id()));
    return Serve("CreateDevice", what, [&]() -> absl::Status {
      auto result = agent_.CreateDevice(*request);
      if (!result.ok()) return result.status();
      *response = std::move(*result);
      return absl::OkStatus();
    });
  }

  grpc::Status DeleteDevice(grpc::ServerContext*, const sma::DeleteDeviceRequest* request,
                            sma::DeleteDeviceResponse*) override {
    return Serve("DeleteDevice", request->handle().substr(0, 256), [&] { return agent_.DeleteDevice(*request); });
  }

  grpc::Status AttachVolume(grpc::ServerContext*, const sma::AttachVolumeRequest* request,
                            sma::AttachVolumeResponse*) override {
    std::string what = absl::StrCat(request->device_handle().substr(0, 256), " volume=",
                                    VolumeForLog(request->volume().volume_id()),
                                    request->volume().has_crypto() ? " (encrypted)" : "");
    return Serve("AttachVolume", what, [&] { return agent_.AttachVolume(*request); });
  }

  grpc::Status DetachVolume(grpc::ServerContext*, const sma::DetachVolumeRequest* request,
                            sma::DetachVolumeResponse*) override {
    std::string what =
        absl::StrCat(request->device_handle().substr(0, 256), " volume=", VolumeForLog(request->volume_id()));
    return Serve("DetachVolume", what, [&] { return agent_.DetachVolume(*request); });
  }

  grpc::Status SetQos(grpc::ServerContext*, const sma::SetQosRequest* request, sma::SetQosResponse*) override {
    std::string what =
        absl::StrCat(request->device_handle().substr(0, 256), " volume=", VolumeForLog(request->volume_id()));
    return Serve("SetQos", what, [&] { return agent_.SetQos(*request); });
  }

  grpc::Status GetQosCapabilities(grpc::ServerContext*, const sma::GetQosCapabilitiesRequest* request,
                                  sma::GetQosCapabilitiesResponse* response) override {
    return Serve("GetQosCapabilities", absl::StrCat("type=", request->device_type()), [&]() -> absl::Status {
      auto result = agent_.GetQosCapabilities(*request);
      if (!result.ok()) return result.status();
      *response = std::move(*result);
      return absl::OkStatus();
    });
  }

 private:
  Agent& agent_;
};

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

absl::StatusOr<std::unique_ptr<GrpcServer>> GrpcServer::Start(const std::string& address, uint16_t port,
                                                              Agent& agent) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  std::unique_ptr<GrpcServer> server(new GrpcServer());
  server->service_ = std::make_unique<SmaService>(agent);
  grpc::ServerBuilder builder;
  int bound_port = 0;
  std::string host = address.find(':') != std::string::npos && address.front() != '[' ? absl::StrCat("[", address, "]") : address;
  builder.AddListeningPort(absl::StrCat(host, ":", port), grpc::InsecureServerCredentials(), &bound_port);
  builder.RegisterService(server->service_.get());
  builder.SetMaxReceiveMessageSize(4 << 20);
  // The sync server's defaults (1-2 polling threads) make it start a thread for nearly every call and
  // end one after it, which cost more CPU than the call itself. Keep a few pollers and let threads that
  // served a call go back to polling instead of exiting.
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MIN_POLLERS, kMinPollers);
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MAX_POLLERS, kMaxPollers);
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || bound_port == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", host, ":", port));
  }
  server->port_ = static_cast<uint16_t>(bound_port);
  return server;
}

GrpcServer::~GrpcServer() { Shutdown(std::chrono::milliseconds(0)); }

void GrpcServer::SetServing(bool serving) {
  if (server_ == nullptr) return;
  auto* health = server_->GetHealthCheckService();
  if (health == nullptr) return;
  health->SetServingStatus(serving);
  health->SetServingStatus(kServiceName, serving);
}

void GrpcServer::Shutdown(std::chrono::milliseconds grace) {
  if (server_ == nullptr) return;
  server_->Shutdown(std::chrono::system_clock::now() + grace);
  server_->Wait();
  server_.reset();
}

}  // namespace smad::agent
