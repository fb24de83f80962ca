#include "tgt/rpc/params.h"

namespace smad::tgt {

using Json = nlohmann::json;

ParamReader::ParamReader(const Json& params, std::initializer_list<const char*> allowed, bool ignore_unknown)
    : params_(params) {
  if (params_.is_null()) return;
  if (!params_.is_object()) {
    Fail("params must be an object");
    return;
  }
  if (ignore_unknown) return;
  for (const auto& item : params_.items()) {
    bool known = false;
    for (const char* key : allowed) known |= item.key() == key;
    if (!known) {
      Fail("unknown parameter '" + item.key() + "'");
      return;
    }
  }
}

void ParamReader::Fail(const std::string& message) {
  if (status_.ok()) status_ = absl::InvalidArgumentError(message);
}

bool ParamReader::Has(const char* key) const { return params_.is_object() && params_.contains(key); }

const Json* ParamReader::Get(const char* key, bool required) {
  if (!ok()) return nullptr;
  if (!Has(key)) {
    if (required) Fail(std::string("missing required parameter '") + key + "'");
    return nullptr;
  }
  return &params_[key];
}

std::string ParamReader::String(const char* key, bool required, const std::string& fallback) {
  const Json* v = Get(key, required);
  if (v == nullptr) return fallback;
  if (!v->is_string()) {
    Fail(std::string("parameter '") + key + "' must be a string");
    return fallback;
  }
  return v->get<std::string>();
}

std::optional<std::string> ParamReader::OptionalString(const char* key) {
  if (!Has(key)) return std::nullopt;
  std::string value = String(key, true);
  if (!ok()) return std::nullopt;
  return value;
}

uint64_t ParamReader::U64(const char* key, bool required, uint64_t fallback) {
  const Json* v = Get(key, required);
  if (v == nullptr) return fallback;
  if (!v->is_number_unsigned()) {
    // A non-negative value stored as signed is fine too.
    if (v->is_number_integer() && v->get<int64_t>() >= 0) return static_cast<uint64_t>(v->get<int64_t>());
    Fail(std::string("parameter '") + key + "' must be a non-negative integer");
    return fallback;
  }
  return v->get<uint64_t>();
}

uint32_t ParamReader::U32(const char* key, bool required, uint32_t fallback) {
  bool present = Has(key);
  uint64_t value = U64(key, required, fallback);
  if (present && ok() && value > UINT32_MAX) {
    Fail(std::string("parameter '") + key + "' does not fit in 32 bits");
    return fallback;
  }
  return static_cast<uint32_t>(value);
}

int32_t ParamReader::I32(const char* key, bool required, int32_t fallback) {
  const Json* v = Get(key, required);
  if (v == nullptr) return fallback;
  if (!v->is_number_integer() || (v->is_number_unsigned() && v->get<uint64_t>() > INT32_MAX) ||
      (!v->is_number_unsigned() && (v->get<int64_t>() < INT32_MIN || v->get<int64_t>() > INT32_MAX))) {
    Fail(std::string("parameter '") + key + "' must be a 32-bit integer");
    return fallback;
  }
  return static_cast<int32_t>(v->get<int64_t>());
}

bool ParamReader::Bool(const char* key, bool required, bool fallback) {
  const Json* v = Get(key, required);
  if (v == nullptr) return fallback;
  if (!v->is_boolean()) {
    Fail(std::string("parameter '") + key + "' must be a boolean");
    return fallback;
  }
  return v->get<bool>();
}

Json ParamReader::Object(const char* key, bool required) {
  const Json* v = Get(key, required);
  if (v == nullptr) return Json();
  if (!v->is_object()) {
    Fail(std::string("parameter '") + key + "' must be an object");
    return Json();
  }
  return *v;
}

std::optional<std::vector<std::string>> ParamReader::StringList(const char* key) {
  const Json* v = Get(key, false);
  if (v == nullptr) return std::nullopt;
  if (!v->is_array()) {
    Fail(std::string("parameter '") + key + "' must be an array of strings");
    return std::nullopt;
  }
  std::vector<std::string> out;
  for (const auto& item : *v) {
    if (!item.is_string()) {
      Fail(std::string("parameter '") + key + "' must be an array of strings");
      return std::nullopt;
    }
    out.push_back(item.get<std::string>());
  }
  return out;
}

}  // namespace smad::tgt
