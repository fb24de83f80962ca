#include "support/sma_helpers.h"

#include "absl/strings/str_cat.h"
#include "common/uuid.h"

namespace smad::testing {

std::string UuidBytes(const std::string& uuid) {
  auto parsed = Uuid::Parse(uuid);
  if (!parsed.ok()) return std::string();
  return std::string(reinterpret_cast<const char*>(parsed->bytes().data()), 16);
}

std::string RandomUuid() { return Uuid::Generate().ToString(); }

absl::Status FromGrpc(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

std::unique_ptr<grpc::ClientContext> SmaClient::Context() const {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  context->set_wait_for_ready(wait_for_ready_);
  return context;
}

absl::StatusOr<std::string> SmaClient::CreateDevice(const sma::CreateDeviceRequest& request) {
  sma::CreateDeviceResponse response;
  auto status = FromGrpc(stub_->CreateDevice(Context().get(), request, &response));
  if (!status.ok()) return status;
  return response.handle();
}

absl::Status SmaClient::DeleteDevice(const std::string& handle) {
  sma::DeleteDeviceRequest request;
  request.set_handle(handle);
  sma::DeleteDeviceResponse response;
  return FromGrpc(stub_->DeleteDevice(Context().get(), request, &response));
}

absl::Status SmaClient::AttachVolume(const sma::AttachVolumeRequest& request) {
  sma::AttachVolumeResponse response;
  return FromGrpc(stub_->AttachVolume(Context().get(), request, &response));
}

absl::Status SmaClient::AttachVolume(const std::string& handle, const std::string& uuid) {
  sma::AttachVolumeRequest request;
  request.set_device_handle(handle);
  request.mutable_volume()->set_volume_id(UuidBytes(uuid));
  return AttachVolume(request);
}

absl::Status SmaClient::DetachVolume(const std::string& handle, const std::string& uuid) {
  sma::DetachVolumeRequest request;
  request.set_device_handle(handle);
  request.set_volume_id(UuidBytes(uuid));
  sma::DetachVolumeResponse response;
  return FromGrpc(stub_->DetachVolume(Context().get(), request, &response));
}

absl::Status SmaClient::SetQos(const sma::SetQosRequest& request) {
  sma::SetQosResponse response;
  return FromGrpc(stub_->SetQos(Context().get(), request, &response));
}

absl::StatusOr<sma::GetQosCapabilitiesResponse> SmaClient::GetQosCapabilities(int device_type) {
  sma::GetQosCapabilitiesRequest request;
  request.set_device_type(static_cast<sma::DeviceType>(device_type));
  sma::GetQosCapabilitiesResponse response;
  auto status = FromGrpc(stub_->GetQosCapabilities(Context().get(), request, &response));
  if (!status.ok()) return status;
  return response;
}

sma::CreateDeviceRequest NvmfTcpDevice(const std::string& nqn, const std::string& port,
                                       const std::vector<std::string>& hosts, bool allow_any_host) {
  sma::CreateDeviceRequest request;
  auto* p = request.mutable_nvmf_tcp();
  p->set_subnqn(nqn);
  p->set_adrfam("ipv4");
  p->set_traddr("127.0.0.1");
  p->set_trsvcid(port);
  p->set_allow_any_host(allow_any_host);
  for (const auto& h : hosts) p->add_hosts(h);
  return request;
}

absl::Status TargetView::Reconnect() {
  auto client = jsonrpc::BlockingClient::Connect(socket_);
  if (!client.ok()) return client.status();
  client_.emplace(std::move(*client));
  return absl::OkStatus();
}

absl::StatusOr<Json> TargetView::Call(const std::string& method, const Json& params) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (!client_.has_value()) {
      absl::Status connected = Reconnect();
      if (!connected.ok()) return connected;
    }
    auto result = client_->Call(method, params, std::chrono::seconds(30));
    if (result.ok() || jsonrpc::ErrorCodeOf(result.status()).has_value()) return result;
    client_.reset();  // connection lost (target restarted): try once more on a new one
  }
  return absl::UnavailableError("target unreachable");
}

std::vector<Json> TargetView::Subsystems() {
  std::vector<Json> out;
  auto list = Call("nvmf_get_subsystems");
  if (!list.ok()) return out;
  for (auto& s : *list) {
    if (s.value("subtype", "") != "Discovery") out.push_back(s);
  }
  return out;
}

std::vector<Json> TargetView::Namespaces(const std::string& nqn) {
  for (auto& s : Subsystems()) {
    if (s["nqn"] == nqn) return s.value("namespaces", Json::array()).get<std::vector<Json>>();
  }
  return {};
}

bool TargetView::HasSubsystem(const std::string& nqn) {
  for (auto& s : Subsystems()) {
    if (s["nqn"] == nqn) return true;
  }
  return false;
}

std::string TargetView::BdevUuid(const std::string& name) {
  auto bdevs = Call("bdev_get_bdevs", Json{{"name", name}});
  if (!bdevs.ok() || bdevs->empty()) return std::string();
  return (*bdevs)[0].value("uuid", "");
}

}  // namespace smad::testing
