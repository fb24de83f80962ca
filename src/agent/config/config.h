#pragma once

// smad's configuration: the YAML keys of SPDK's SMA (address, port, socket, devices, plugins, crypto,
// discovery_timeout, volume_cleanup_period) plus smad's own (state_dir, target, log_level, state_sync).
// Precedence: defaults < config file < command line (-a/-p/-s) < SMA_PLUGINS (appended to plugins).

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace smad::agent {

struct DeviceConfig {
  std::string name;       // device manager name, e.g. "nvmf_tcp", "vfiouser", "vhost_blk", or a plugin's
  nlohmann::json params;  // the entry's `params` mapping converted to JSON; null when absent
};

struct CryptoConfig {
  std::string name = "nop";
  nlohmann::json params = nlohmann::json::object();
};

// How smad reaches its target.
struct TargetConfig {
  // Address of an external target (unix path, host:port, or http://user:pass@host:port); empty: smad
  // starts smad-tgt itself on <state_dir>/smad-tgt.sock (the embedded target).
  std::string socket;
  std::string binary;       // smad-tgt executable; empty: "smad-tgt" next to the smad binary
  std::string cpumask;      // passed as -m to smad-tgt; empty: its default
  std::string config_file;  // smad-tgt -c: a JSON config replayed at every start (e.g. the base bdevs)
  std::vector<std::string> args;  // extra smad-tgt arguments
  std::chrono::milliseconds rpc_timeout{30000};      // per JSON-RPC call
  std::chrono::milliseconds startup_timeout{60000};  // waiting for the target to answer at start
  std::chrono::milliseconds health_interval{1000};   // health ping period
};

struct AgentConfig {
  std::string address = "localhost";  // gRPC listen address
  uint16_t port = 8080;               // gRPC port (0 picks a free port; smad logs it)
  std::vector<DeviceConfig> devices;  // enabled device managers, in registration order
  std::vector<std::string> plugins;   // shared libraries to load (paths or names found via dlopen)
  CryptoConfig crypto;
  std::chrono::milliseconds discovery_timeout{10000};
  std::chrono::milliseconds volume_cleanup_period{60000};
  std::string state_dir = "/var/lib/smad";
  bool state_fsync = true;            // state_sync: full (true) | normal (false)
  std::string log_level = "info";     // trace, debug, info, warn, error
  TargetConfig target;
};

// Parses a YAML document (the whole file). Unknown keys, duplicate keys, wrong types, out-of-range numbers,
// duplicate device names and malformed entries give InvalidArgument with a one-line message naming the
// key, e.g. `port: expected an integer in 0..65535, got "abc"` or `devices[1].name: missing`; YAML syntax
// errors give `line L, column C: <problem>`. Also refused: more than one document, input over 1 MiB or
// nested more than 64 levels deep, and `params` that are not UTF-8 or expand (through aliases) to more
// than 100000 values. An empty document gives the defaults. Never throws.
//
// `params` scalars become JSON per the YAML 1.2 core schema: plain true/false, integers (decimal, 0x, 0o)
// and finite floats become booleans and numbers; null/~/empty become null; anything else, and every quoted
// or !!str scalar, stays a string. Durations are seconds (fractions allowed) and must be > 0.
absl::StatusOr<AgentConfig> ParseConfig(absl::string_view yaml_text);

// Reads and parses `path`. NotFound / PermissionDenied for an unreadable file (message names the path);
// parse errors as for ParseConfig, prefixed with "<path>: ".
absl::StatusOr<AgentConfig> LoadConfigFile(const std::string& path);

// Appends the colon-separated plugin list of SMA_PLUGINS (`env_value`, may be null or empty); empty items
// are skipped.
void AppendEnvPlugins(AgentConfig& config, const char* env_value);

}  // namespace smad::agent
