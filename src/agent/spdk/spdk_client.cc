#include "agent/spdk/spdk_client.h"

#include <cerrno>
#include <climits>
#include <exception>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "agent/spdk/http_transport.h"
#include "agent/spdk/json_rpc_client.h"
#include "agent/spdk/transport.h"
#include "jsonrpc/protocol.h"

namespace smad::agent {
namespace {

// The payload carrying an SpdkError: {"code":N,"message":"..."}.
constexpr char kSpdkErrorPayloadUrl[] = "type.smad.dev/smad.spdk.error";

absl::StatusCode CodeForSpdkError(int code) {
  switch (code) {
    case -ENODEV:
    case -ENOENT: return absl::StatusCode::kNotFound;
    case -EEXIST: return absl::StatusCode::kAlreadyExists;
    case jsonrpc::kInvalidParams:
    case -EINVAL: return absl::StatusCode::kInvalidArgument;
    case jsonrpc::kMethodNotFound: return absl::StatusCode::kUnimplemented;
    case -EBUSY:
    case -EAGAIN: return absl::StatusCode::kUnavailable;
    default: return absl::StatusCode::kInternal;
  }
}

absl::Status ValidateOptions(const JsonRpcClientOptions& options) {
  if (options.max_in_flight == 0) return absl::InvalidArgumentError("max_in_flight must be at least 1");
  if (options.reconnect_min.count() <= 0 || options.reconnect_max < options.reconnect_min) {
    return absl::InvalidArgumentError("reconnect delays must satisfy 0 < reconnect_min <= reconnect_max");
  }
  if (options.max_response_size == 0) return absl::InvalidArgumentError("max_response_size must not be 0");
  return absl::OkStatus();
}

}  // namespace

absl::Status SpdkErrorStatus(absl::string_view method, const SpdkError& error) {
  absl::Status status(CodeForSpdkError(error.code),
                      absl::StrCat(method, ": ", error.message, " (code ", error.code, ")"));
  Json payload = {{"code", error.code}, {"message", error.message}};
  status.SetPayload(kSpdkErrorPayloadUrl,
                    absl::Cord(payload.dump(-1, ' ', false, Json::error_handler_t::replace)));
  return status;
}

std::optional<SpdkError> SpdkErrorOf(const absl::Status& status) {
  if (status.ok()) return std::nullopt;
  absl::optional<absl::Cord> payload = status.GetPayload(kSpdkErrorPayloadUrl);
  if (!payload) return std::nullopt;
  Json value;
  try {
    value = Json::parse(std::string(*payload), nullptr, /*allow_exceptions=*/false);
  } catch (const std::exception&) {
    return std::nullopt;
  }
  if (!value.is_object()) return std::nullopt;
  auto code = value.find("code");
  auto message = value.find("message");
  if (code == value.end() || !code->is_number_integer() || message == value.end() || !message->is_string()) {
    return std::nullopt;
  }
  int64_t code_value = code->get<int64_t>();
  if (code_value < INT_MIN || code_value > INT_MAX) return std::nullopt;
  return SpdkError{static_cast<int>(code_value), message->get<std::string>()};
}

absl::StatusOr<SpdkClientPtr> CreateJsonRpcClient(JsonRpcClientOptions options) {
  absl::StatusOr<SpdkAddress> address = ParseSpdkAddress(options.address);
  if (!address.ok()) return address.status();
  absl::Status valid = ValidateOptions(options);
  if (!valid.ok()) return valid;
  if (address->kind == SpdkAddress::Kind::kHttp)
    return NewHttpClient(*std::move(address), std::move(options));
  return NewStreamClient(*std::move(address), std::move(options));
}

}  // namespace smad::agent
