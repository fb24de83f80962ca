#pragma once

#include <string>
#include <utility>

#include "gtest/gtest.h"
#include "jsonrpc/blocking_client.h"

namespace smad::testing {

// gtest expectations over one JSON-RPC connection: every call must get an answer; Result and Error also
// expect its kind and say which call failed. Header-only. Thread compatible.
class RpcExpect {
 public:
  using Json = jsonrpc::Json;
  explicit RpcExpect(jsonrpc::BlockingClient client) : client_(std::move(client)) {}

  jsonrpc::BlockingClient& client() { return client_; }

  // The whole response object, or null when none came.
  Json Response(const std::string& method, const Json& params = nullptr) {
    auto response = client_.CallRaw(method, params);
    EXPECT_TRUE(response.ok()) << method << ": " << response.status();
    return response.ok() ? *response : Json();
  }
  // The result of a call that must succeed.
  Json Result(const std::string& method, const Json& params = nullptr) {
    Json response = Response(method, params);
    EXPECT_TRUE(response.contains("result")) << method << " " << params.dump() << " -> " << response.dump();
    return response.value("result", Json());
  }
  // The error object ({code, message}) of a call that must fail.
  Json Error(const std::string& method, const Json& params = nullptr) {
    Json response = Response(method, params);
    EXPECT_TRUE(response.contains("error")) << method << " " << params.dump() << " -> " << response.dump();
    return response.value("error", Json::object());
  }

 private:
  jsonrpc::BlockingClient client_;
};

}  // namespace smad::testing
