// Fuzzes smad's request handling: arbitrary bytes as each SMA request message, handed to the agent (the
// code behind the gRPC service), which drives a real smad-tgt core running in-process. Input: the first
// byte picks the method, the rest is the serialized request. Checks: nothing crashes, no answer is
// UNKNOWN, and the agent's desired state always matches what its store holds.
//
// Inputs must not bind arbitrary addresses: every listener the agent adds is redirected to one loopback
// port picked at start, except port 1, which the in-process target refuses (exercising the rollback of
// a half-done CreateDevice).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <future>
#include <string>

#include "agent/core/agent.h"
#include "agent/devices/nvmf_tcp.h"
#include "agent/spdk/spdk_client.h"
#include "agent/store/state_store.h"
#include "nlohmann/json.hpp"
#include "reactor/reactor.h"
#include "spdlog/spdlog.h"
#include "tgt/app/target_core.h"

namespace {

using smad::agent::Json;

// SpdkClient over the in-process target's dispatcher.
class InProcessClient : public smad::agent::SpdkClient {
 public:
  InProcessClient(smad::Reactor& control, smad::tgt::TargetCore& core, std::string port)
      : control_(control), core_(core), port_(std::move(port)) {}
  absl::StatusOr<Json> Call(absl::string_view method, const Json& params, std::chrono::milliseconds) override {
    std::string name(method);
    Json bounded = params;
    if (name == "nvmf_subsystem_add_listener" && bounded.contains("listen_address")) {
      if (bounded["listen_address"].value("trsvcid", "") == "1") {
        return smad::agent::SpdkErrorStatus(name, {-32602, "Invalid parameters (refused by the fuzzer)"});
      }
      bounded["listen_address"] = {{"trtype", "tcp"}, {"adrfam", "ipv4"}, {"traddr", "127.0.0.1"}, {"trsvcid", port_}};
    }
    if (bounded.is_object() && bounded.contains("timeout")) bounded["timeout"] = 10;
    std::promise<Json> answer;
    control_.Post([&] {
      core_.dispatcher().Call(name, bounded, [&answer](const Json& response) { answer.set_value(response); });
    });
    Json response = answer.get_future().get();
    if (response.contains("result")) return response["result"];
    const Json& error = response["error"];
    return smad::agent::SpdkErrorStatus(name, {error.value("code", -32603), error.value("message", "")});
  }
  uint64_t connection_epoch() const override { return 1; }

 private:
  smad::Reactor& control_;
  smad::tgt::TargetCore& core_;
  std::string port_;
};

// A loopback port free a moment ago.
std::string FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    abort();
  }
  close(fd);
  return std::to_string(ntohs(addr.sin_port));
}

struct Environment {
  smad::Reactor control{smad::Reactor::Options{.name = "fuzz_ctrl"}};
  std::unique_ptr<smad::tgt::TargetCore> core;
  std::unique_ptr<InProcessClient> client;
  std::unique_ptr<smad::agent::TargetRpc> rpc;
  smad::agent::StateStorePtr store;
  std::unique_ptr<smad::agent::NvmfTcpDeviceManager> nvmf_tcp;
  smad::agent::CryptoEnginePtr crypto;
  std::unique_ptr<smad::agent::Agent> agent;

  Environment() {
    spdlog::set_level(spdlog::level::off);
    core = std::make_unique<smad::tgt::TargetCore>(control, std::vector<int>{0}, false, [] {});
    core->Start();
    control.Start();
    client = std::make_unique<InProcessClient>(control, *core, FreePort());
    rpc = std::make_unique<smad::agent::TargetRpc>(*client, std::chrono::seconds(10));
    // Volumes the seeds refer to: null bdevs with fixed UUIDs 00000000-0000-4000-8000-00000000000N.
    for (int i = 1; i <= 3; ++i) {
      (void)rpc->Call("bdev_null_create", Json{{"name", "null" + std::to_string(i)},
                                               {"num_blocks", 64},
                                               {"block_size", 4096},
                                               {"uuid", "00000000-0000-4000-8000-00000000000" + std::to_string(i)}});
    }
    char dir[] = "/tmp/sma-fuzz-XXXXXX";
    if (mkdtemp(dir) == nullptr) abort();
    smad::agent::StateStore::Options options;
    options.fsync = false;
    store = *smad::agent::StateStore::Open(std::string(dir) + "/state.db", options);
    nvmf_tcp = std::make_unique<smad::agent::NvmfTcpDeviceManager>(*rpc);
    crypto = smad::agent::MakeNopCryptoEngine();
    agent = std::make_unique<smad::agent::Agent>(smad::agent::Agent::Options{}, *rpc, *store,
                                                 std::vector<smad::agent::DeviceManager*>{nvmf_tcp.get()}, *crypto);
    if (!agent->Start().ok()) abort();
  }
};

// Leaked on purpose: reactor threads keep running until the process exits.
Environment& Env() {
  static Environment* env = new Environment();
  return *env;
}

void Check(const absl::Status& status) {
  if (status.code() == absl::StatusCode::kUnknown) abort();
}

// The agent's in-memory desired state must be exactly what its store holds.
void CheckConsistent(Environment& env) {
  auto records = env.store->LoadAll();
  if (!records.ok()) abort();
  size_t devices = 0, volumes = 0;
  for (const auto& r : *records) {
    if (r.kind == smad::agent::kDeviceKind) ++devices;
    if (r.kind == smad::agent::kVolumeKind) ++volumes;
  }
  if (devices != env.agent->DevicesForTest().size() || volumes != env.agent->VolumesForTest().size()) abort();
}

template <typename Message>
bool Parse(const uint8_t* data, size_t size, Message& message) {
  return message.ParseFromArray(data, static_cast<int>(size));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  Environment& env = Env();
  const uint8_t* body = data + 1;
  size_t body_size = size - 1;
  switch (data[0] % 6) {
    case 0: {
      sma::CreateDeviceRequest request;
      if (Parse(body, body_size, request)) Check(env.agent->CreateDevice(request).status());
      break;
    }
    case 1: {
      sma::DeleteDeviceRequest request;
      if (Parse(body, body_size, request)) Check(env.agent->DeleteDevice(request));
      break;
    }
    case 2: {
      sma::AttachVolumeRequest request;
      if (Parse(body, body_size, request)) Check(env.agent->AttachVolume(request));
      break;
    }
    case 3: {
      sma::DetachVolumeRequest request;
      if (Parse(body, body_size, request)) Check(env.agent->DetachVolume(request));
      break;
    }
    case 4: {
      sma::SetQosRequest request;
      if (Parse(body, body_size, request)) Check(env.agent->SetQos(request));
      break;
    }
    case 5: {
      sma::GetQosCapabilitiesRequest request;
      if (Parse(body, body_size, request)) Check(env.agent->GetQosCapabilities(request).status());
      break;
    }
  }
  CheckConsistent(env);
  return 0;
}
