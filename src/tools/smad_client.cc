// smad-client: calls one SMA method, like SPDK's scripts/sma-client.py. Reads {"method": NAME,
// "params": {...}} from stdin (proto3 JSON mapping: bytes in base64, enums by name or number, snake_case
// or lowerCamelCase names), prints the response as JSON (proto field names, defaults omitted), exits 1
// with "status = CODE" and "details = MESSAGE" on stderr when the call fails.
#include <cstdio>
#include <iostream>
#include <iterator>
#include <string>

#include "CLI/CLI.hpp"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/grpcpp.h"
#include "nlohmann/json.hpp"
#include "sma.grpc.pb.h"

namespace {

using google::protobuf::util::JsonParseOptions;
using google::protobuf::util::JsonPrintOptions;

const char* CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK: return "OK";
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::UNKNOWN: return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED: return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS: return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    default: return "UNKNOWN";
  }
}

// Parses `params` into a Request, calls `method` on the stub and prints the response.
template <typename Request, typename Response, typename Call>
int Invoke(const std::string& params, Call call) {
  Request request;
  JsonParseOptions parse;
  auto parsed = google::protobuf::util::JsonStringToMessage(params, &request, parse);
  if (!parsed.ok()) {
    std::fprintf(stderr, "smad-client: bad params: %s\n", parsed.ToString().c_str());
    return 2;
  }
  Response response;
  grpc::ClientContext context;
  grpc::Status status = call(&context, request, &response);
  if (!status.ok()) {
    std::fprintf(stderr, "status = StatusCode.%s\ndetails = \"%s\"\n", CodeName(status.error_code()),
                 status.error_message().c_str());
    return 1;
  }
  std::string out;
  JsonPrintOptions print;
  print.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(response, &out, print);
  std::printf("%s\n", nlohmann::json::parse(out).dump(2).c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string address = "localhost";
  int port = 8080;
  CLI::App cli{"smad-client: call one SMA method; reads {\"method\":..., \"params\":{...}} from stdin"};
  cli.add_option("-a,--address", address, "server address")->capture_default_str();
  cli.add_option("-p,--port", port, "server port")->capture_default_str();
  CLI11_PARSE(cli, argc, argv);

  std::string input((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  nlohmann::json doc = nlohmann::json::parse(input, nullptr, false);
  if (!doc.is_object() || !doc.contains("method") || !doc["method"].is_string()) {
    std::fprintf(stderr, "smad-client: stdin must be a JSON object with a string \"method\"\n");
    return 2;
  }
  std::string method = doc["method"];
  std::string params = doc.contains("params") ? doc["params"].dump() : "{}";
  std::string target = address.find(':') != std::string::npos && address.front() != '['
                           ? "[" + address + "]:" + std::to_string(port)
                           : address + ":" + std::to_string(port);
  auto stub = sma::StorageManagementAgent::NewStub(grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  using namespace sma;
  if (method == "CreateDevice") {
    return Invoke<CreateDeviceRequest, CreateDeviceResponse>(params, [&](auto* c, auto& q, auto* r) { return stub->CreateDevice(c, q, r); });
  }
  if (method == "DeleteDevice") {
    return Invoke<DeleteDeviceRequest, DeleteDeviceResponse>(params, [&](auto* c, auto& q, auto* r) { return stub->DeleteDevice(c, q, r); });
  }
  if (method == "AttachVolume") {
    return Invoke<AttachVolumeRequest, AttachVolumeResponse>(params, [&](auto* c, auto& q, auto* r) { return stub->AttachVolume(c, q, r); });
  }
  if (method == "DetachVolume") {
    return Invoke<DetachVolumeRequest, DetachVolumeResponse>(params, [&](auto* c, auto& q, auto* r) { return stub->DetachVolume(c, q, r); });
  }
  if (method == "SetQos") {
    return Invoke<SetQosRequest, SetQosResponse>(params, [&](auto* c, auto& q, auto* r) { return stub->SetQos(c, q, r); });
  }
  if (method == "GetQosCapabilities") {
    return Invoke<GetQosCapabilitiesRequest, GetQosCapabilitiesResponse>(
        params, [&](auto* c, auto& q, auto* r) { return stub->GetQosCapabilities(c, q, r); });
  }
  std::fprintf(stderr, "smad-client: unknown method \"%s\"\n", method.c_str());
  return 2;
}
