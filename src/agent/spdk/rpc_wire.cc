#include "agent/spdk/rpc_wire.h"

#include <climits>
#include <exception>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "spdlog/spdlog.h"

namespace smad::agent {
namespace {

std::string Dump(const Json& value) { return value.dump(-1, ' ', false, Json::error_handler_t::replace); }

SpdkError DecodeError(const Json& error) {
  SpdkError decoded{jsonrpc::kInternalError, ""};
  if (!error.is_object()) {
    decoded.message = Dump(error);
    return decoded;
  }
  auto code = error.find("code");
  if (code != error.end() && code->is_number_integer()) {
    if (code->is_number_unsigned()) {
      if (code->get<uint64_t>() <= INT_MAX) decoded.code = code->get<int>();
    } else if (int64_t value = code->get<int64_t>(); value >= INT_MIN && value <= INT_MAX) {
      decoded.code = static_cast<int>(value);
    }
  }
  auto message = error.find("message");
  if (message != error.end())
    decoded.message = message->is_string() ? message->get<std::string>() : Dump(*message);
  return decoded;
}

absl::StatusOr<SpdkAnswer> DecodeResponse(Json& value) {
  if (!value.is_object())
    return absl::DataLossError(absl::StrCat("answer is a JSON ", value.type_name(), ", not an object"));
  SpdkAnswer answer;
  auto id = value.find("id");
  if (id == value.end() || id->is_null()) {
    answer.id_null = true;
  } else if (id->is_number_unsigned()) {
    if (id->get<uint64_t>() <= INT64_MAX) answer.id = static_cast<int64_t>(id->get<uint64_t>());
  } else if (id->is_number_integer()) {
    answer.id = id->get<int64_t>();
  }
  auto error = value.find("error");
  if (error != value.end() && !error->is_null()) {
    answer.error = DecodeError(*error);
    return answer;
  }
  auto result = value.find("result");
  if (result == value.end()) return absl::DataLossError("answer has neither result nor error");
  if (answer.id_null) return absl::DataLossError("result answer without an id");
  answer.result = std::move(*result);
  return answer;
}

// Parses one framed value into `out`.
absl::Status DecodeValue(const std::string& text, std::deque<SpdkAnswer>& out) {
  Json value;
  try {
    value = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  } catch (const std::exception&) {
    value = Json(Json::value_t::discarded);
  }
  if (value.is_discarded()) {
    spdlog::debug("spdk rpc: unparseable answer: {}", absl::CHexEscape(text.substr(0, 64)));
    return absl::DataLossError(absl::StrCat("unparseable answer (", text.size(), " bytes)"));
  }
  if (!value.is_array()) {
    ASSIGN_OR_RETURN(SpdkAnswer answer, DecodeResponse(value));
    out.push_back(std::move(answer));
    return absl::OkStatus();
  }
  if (value.empty()) return absl::DataLossError("empty batch answer");
  for (Json& element : value) {
    ASSIGN_OR_RETURN(SpdkAnswer answer, DecodeResponse(element));
    out.push_back(std::move(answer));
  }
  return absl::OkStatus();
}

}  // namespace

std::string EncodeRequest(int64_t id, absl::string_view method, const Json& params) {
  std::string request =
      absl::StrCat(R"({"jsonrpc":"2.0","method":)", Dump(Json(std::string(method))), R"(,"id":)", id);
  if (!params.is_null()) absl::StrAppend(&request, R"(,"params":)", Dump(params));
  request.push_back('}');
  return request;
}

absl::StatusOr<std::optional<SpdkAnswer>> AnswerStream::Next() {
  while (error_.ok()) {
    if (!pending_.empty()) {
      SpdkAnswer answer = std::move(pending_.front());
      pending_.pop_front();
      return answer;
    }
    absl::StatusOr<std::optional<std::string>> text = framer_.Next();
    if (!text.ok()) {
      error_ = absl::DataLossError(absl::StrCat("malformed answer stream: ", text.status().message()));
    } else if (!text->has_value()) {
      return std::nullopt;
    } else {
      error_ = DecodeValue(**text, pending_);
      if (!error_.ok()) pending_.clear();  // a batch is accepted whole or not at all
    }
  }
  return error_;
}

}  // namespace smad::agent
