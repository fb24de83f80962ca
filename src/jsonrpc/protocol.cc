#include "jsonrpc/protocol.h"

#include <exception>
#include <utility>

namespace smad::jsonrpc {
namespace {

bool IsWhitespace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

bool IsStructural(char c) {
  return c == '{' || c == '}' || c == '[' || c == ']' || c == ',' || c == ':' || c == '"';
}

// Compact the buffer once at least this many returned bytes sit in front of it (and they are at least
// half of it), so the memmove cost stays proportional to the bytes consumed.
constexpr size_t kCompactThreshold = 64 * 1024;

Json InvalidRequest(const Json& id) { return MakeError(id, kInvalidRequest, "Invalid request"); }

// Decodes one element: a single request or one member of a batch.
Decoded::Item DecodeOne(const Json& value) {
  Decoded::Item item;
  if (!value.is_object()) {
    item.error_response = InvalidRequest(nullptr);
    return item;
  }
  Request request;
  auto id_it = value.find("id");
  if (id_it != value.end()) {
    if (!id_it->is_number() && !id_it->is_string() && !id_it->is_null()) {
      item.error_response = InvalidRequest(nullptr);
      return item;
    }
    request.has_id = true;
    request.id = *id_it;
  }
  auto version_it = value.find("jsonrpc");
  if (version_it != value.end() && !(version_it->is_string() && *version_it == "2.0")) {
    item.error_response = InvalidRequest(request.id);
    return item;
  }
  auto method_it = value.find("method");
  if (method_it == value.end() || !method_it->is_string()) {
    item.error_response = InvalidRequest(request.id);
    return item;
  }
  request.method = method_it->get<std::string>();
  auto params_it = value.find("params");
  if (params_it != value.end()) {
    if (!params_it->is_object() && !params_it->is_array()) {
      item.error_response = InvalidRequest(request.id);
      return item;
    }
    request.params = *params_it;
  }
  item.request = std::move(request);
  return item;
}

void AppendValue(std::string& out, const Json& value) {
  out += value.dump(-1, ' ', false, Json::error_handler_t::replace);
}

void AppendResponse(std::string& out, const Json& response) {
  if (response.is_array()) {
    out.push_back('[');
    bool first = true;
    for (const Json& element : response) {
      if (!first) out.push_back(',');
      first = false;
      AppendResponse(out, element);
    }
    out.push_back(']');
    return;
  }
  if (!response.is_object() || !response.contains("jsonrpc")) {
    AppendValue(out, response);
    return;
  }
  static constexpr const char* kOrder[] = {"jsonrpc", "id", "result", "error"};
  out.push_back('{');
  bool first = true;
  auto append_member = [&](const std::string& key, const Json& value) {
    if (!first) out.push_back(',');
    first = false;
    AppendValue(out, Json(key));
    out.push_back(':');
    AppendValue(out, value);
  };
  for (const char* key : kOrder) {
    auto it = response.find(key);
    if (it != response.end()) append_member(key, *it);
  }
  for (auto it = response.begin(); it != response.end(); ++it) {
    bool ordered = false;
    for (const char* key : kOrder) ordered |= it.key() == key;
    if (!ordered) append_member(it.key(), it.value());
  }
  out.push_back('}');
}

}  // namespace

void StreamFramer::Append(const char* data, size_t size) {
  if (!error_.ok() || size == 0) return;
  Compact();
  buffer_.append(data, size);
}

void StreamFramer::Compact() {
  if (consumed_ == 0) return;
  if (consumed_ == buffer_.size()) {
    buffer_.clear();
  } else if (consumed_ >= kCompactThreshold && consumed_ >= buffer_.size() / 2) {
    buffer_.erase(0, consumed_);
  } else {
    return;
  }
  scan_pos_ = scan_pos_ > consumed_ ? scan_pos_ - consumed_ : 0;
  consumed_ = 0;
}

absl::StatusOr<std::optional<std::string>> StreamFramer::Next() {
  if (!error_.ok()) return error_;
  if (!started_) {
    while (consumed_ < buffer_.size() && IsWhitespace(buffer_[consumed_])) ++consumed_;
    if (consumed_ == buffer_.size()) {
      Compact();
      return std::nullopt;
    }
    char first = buffer_[consumed_];
    if (first == '}' || first == ']' || first == ',' || first == ':') {
      error_ = absl::InvalidArgumentError(
          std::string("unexpected character '") + first + "' at the start of a JSON value");
      return error_;
    }
    started_ = true;
    depth_ = 0;
    in_string_ = false;
    escape_ = false;
    scalar_ = false;
    if (first == '{' || first == '[') {
      depth_ = 1;
    } else if (first == '"') {
      in_string_ = true;
    } else {
      scalar_ = true;
    }
    scan_pos_ = consumed_ + 1;
  }

  // Never scan past the size limit: a value that has not ended within it is an error.
  const size_t limit = max_message_size_ > buffer_.size() - consumed_ ? buffer_.size()
                                                                      : consumed_ + max_message_size_;
  size_t end = 0;  // one past the last byte of the value, when found
  size_t pos = scan_pos_;
  const char* bytes = buffer_.data();
  if (scalar_) {
    while (pos < limit && !IsWhitespace(bytes[pos]) && !IsStructural(bytes[pos])) ++pos;
    if (pos < limit) end = pos;
  } else {
    for (; pos < limit; ++pos) {
      char c = bytes[pos];
      if (in_string_) {
        if (escape_) {
          escape_ = false;
        } else if (c == '\\') {
          escape_ = true;
        } else if (c == '"') {
          in_string_ = false;
          if (depth_ == 0) {  // a top-level string
            end = pos + 1;
            break;
          }
        }
      } else if (c == '"') {
        in_string_ = true;
      } else if (c == '{' || c == '[') {
        if (++depth_ > kMaxNestingDepth) {
          error_ = absl::InvalidArgumentError("JSON value nested deeper than " +
                                              std::to_string(kMaxNestingDepth) + " levels");
          return error_;
        }
      } else if (c == '}' || c == ']') {
        if (--depth_ == 0) {
          end = pos + 1;
          break;
        }
      }
    }
  }
  scan_pos_ = pos;
  if (end == 0) {
    if (buffer_.size() - consumed_ >= max_message_size_) {
      error_ = absl::ResourceExhaustedError("JSON value larger than " +
                                            std::to_string(max_message_size_) + " bytes");
      return error_;
    }
    return std::nullopt;
  }
  std::string text = buffer_.substr(consumed_, end - consumed_);
  consumed_ = end;
  scan_pos_ = end;
  started_ = false;
  Compact();
  return std::optional<std::string>(std::move(text));
}

Decoded DecodeRequestText(const std::string& text) {
  Decoded decoded;
  Json value;
  try {
    value = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  } catch (const std::exception&) {
    value = Json(Json::value_t::discarded);
  }
  if (value.is_discarded()) {
    decoded.parse_error = true;
    Decoded::Item item;
    item.error_response = MakeError(nullptr, kParseError, "Parse error");
    decoded.items.push_back(std::move(item));
    return decoded;
  }
  if (value.is_array()) {
    if (value.empty()) {
      Decoded::Item item;
      item.error_response = InvalidRequest(nullptr);
      decoded.items.push_back(std::move(item));
      return decoded;
    }
    decoded.is_batch = true;
    decoded.items.reserve(value.size());
    for (const Json& element : value) decoded.items.push_back(DecodeOne(element));
    return decoded;
  }
  decoded.items.push_back(DecodeOne(value));
  return decoded;
}

Json MakeResult(const Json& id, Json result) {
  Json response = Json::object();
  response["jsonrpc"] = "2.0";
  response["id"] = id;
  response["result"] = std::move(result);
  return response;
}

Json MakeError(const Json& id, int code, const std::string& message) {
  Json response = Json::object();
  response["jsonrpc"] = "2.0";
  response["id"] = id;
  response["error"] = Json{{"code", code}, {"message", message}};
  return response;
}

std::string Serialize(const Json& response) {
  std::string out;
  try {
    AppendResponse(out, response);
  } catch (const std::exception&) {
    // Not expected (dump with the replace handler does not throw); answer something well formed.
    out = R"({"jsonrpc":"2.0","id":null,"error":{"code":-32603,"message":"Internal error"}})";
  }
  out.push_back('\n');
  return out;
}

}  // namespace smad::jsonrpc
