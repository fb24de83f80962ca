#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "nlohmann/json.hpp"

namespace smad::tgt {

// Strict decoding of a JSON-RPC params object, in the manner of SPDK's spdk_json_decode_object: every
// key must be known, every value of the declared type; the first problem is kept as a message that
// names the field. Never throws.
//
//   ParamReader r(params, {"name", "num_blocks"});
//   std::string name = r.String("name", /*required=*/true);
//   uint64_t blocks = r.U64("num_blocks", /*required=*/true);
//   if (!r.ok()) return Fail(r.status());
class ParamReader {
 public:
  // `params` may be null (no params): then only optional fields can be read. A key outside `allowed` is
  // refused, unless `ignore_unknown` (SPDK's spdk_json_decode_object_relaxed, used by methods whose
  // params also carry options for a transport).
  ParamReader(const nlohmann::json& params, std::initializer_list<const char*> allowed,
              bool ignore_unknown = false);

  bool ok() const { return status_.ok(); }
  const absl::Status& status() const { return status_; }
  bool Has(const char* key) const;

  std::string String(const char* key, bool required, const std::string& fallback = "");
  std::optional<std::string> OptionalString(const char* key);
  uint64_t U64(const char* key, bool required, uint64_t fallback = 0);
  uint32_t U32(const char* key, bool required, uint32_t fallback = 0);
  // A signed 32-bit integer (SPDK's int32 parameters, e.g. ctrlr_loss_timeout_sec).
  int32_t I32(const char* key, bool required, int32_t fallback = 0);
  bool Bool(const char* key, bool required, bool fallback = false);
  // A nested object (null when absent and not required).
  nlohmann::json Object(const char* key, bool required);
  // A list of strings.
  std::optional<std::vector<std::string>> StringList(const char* key);

 private:
  const nlohmann::json* Get(const char* key, bool required);
  void Fail(const std::string& message);

  const nlohmann::json& params_;
  absl::Status status_;
};

}  // namespace smad::tgt
