// Fuzzes the YAML configuration loader: ParseConfig must never crash or throw, must refuse with a one-line
// InvalidArgument, and whatever it accepts must hold the invariants the agent relies on.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>

#include "agent/config/config.h"

namespace {

void Check(bool condition) {
  if (!condition) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<smad::agent::AgentConfig> config = smad::agent::ParseConfig(text);
  if (!config.ok()) {
    Check(config.status().code() == absl::StatusCode::kInvalidArgument);
    Check(!config.status().message().empty());
    for (char c : config.status().message()) {  // one printable (hence UTF-8) line
      Check(static_cast<unsigned char>(c) >= 0x20 && static_cast<unsigned char>(c) < 0x7f);
    }
    return 0;
  }
  std::set<std::string> names;
  for (const smad::agent::DeviceConfig& device : config->devices) {
    Check(!device.name.empty() && names.insert(device.name).second);
    Check(device.params.is_null() || device.params.is_object());
    (void)device.params.dump();  // throws (and so aborts) on invalid UTF-8
  }
  Check(config->crypto.params.is_object());
  (void)config->crypto.params.dump();
  Check(!config->address.empty() && !config->state_dir.empty());
  for (const std::string& plugin : config->plugins) Check(!plugin.empty());
  for (auto period : {config->discovery_timeout, config->volume_cleanup_period, config->target.rpc_timeout,
                      config->target.startup_timeout, config->target.health_interval}) {
    Check(period.count() > 0);
  }
  return 0;
}
