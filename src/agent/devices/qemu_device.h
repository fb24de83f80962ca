#pragma once

// What the vfiouser and vhost_blk managers share: both put a PCI device into a QEMU VM (over QMP) for each
// SMA device and place it by physical_id on the PCI bridges listed in their params.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/devices/device_manager.h"
#include "agent/devices/qmp_client.h"

namespace smad::agent {

struct PciBus {
  std::string name;  // the QEMU id of a PCI bridge, e.g. "pci.spdk.0"
  uint32_t count = 32;
};

// Where a device goes: a bus and a slot on it.
struct PciSlot {
  std::string bus;
  uint32_t slot = 0;
  // The slot as QEMU's device_add "addr" (and Python's hex()): "0x0", "0xa", "0x1f".
  std::string Addr() const;
};

// The params both managers read (config `devices[].params`).
struct QemuDeviceConfig {
  std::vector<PciBus> buses;
  QmpOptions qmp;         // address, port, timeout
  std::string sock_path;  // a directory, without trailing '/' (except "/" itself)
};

// Parses {buses: [{name, count = 32}], qmp_addr = "127.0.0.1", qmp_port (required), sock_path =
// "/var/tmp/", qmp_timeout = 8 (seconds)}. `max_name`: the longest name a manager appends to sock_path
// ("/<name>"), so every socket path fits a Unix socket address. Errors: InvalidArgument naming the key
// ("params: missing (buses, qmp_port...)" for null params, "qmp_port: missing", "buses[1].name:
// duplicate", ...). Unknown keys are logged and ignored (as SPDK's SMA ignores them).
absl::StatusOr<QemuDeviceConfig> ParseQemuDeviceConfig(const Json& params, size_t max_name,
                                                       absl::string_view manager);

// The bus and slot of `physical_id`: the buses are filled in order, each with `count` slots.
// InvalidArgument "Invalid physical_id" beyond the last bus.
absl::StatusOr<PciSlot> PlacePhysicalId(const std::vector<PciBus>& buses, uint32_t physical_id);

// Where a device planned again goes: the bus and slot `previous` (its spec, when smad has one) recorded,
// whatever the buses say now; else PlacePhysicalId.
absl::StatusOr<PciSlot> SlotForDevice(const std::vector<PciBus>& buses, uint32_t physical_id,
                                      const DeviceSpec* previous);

// The spec of a handle "<prefix>N" that smad does not know (for a delete): {physical_id: N} for
// `manager`; NotFound "Invalid device handle" when the handle is not of that form.
absl::StatusOr<DeviceSpec> SpecFromNumberedHandle(absl::string_view handle, absl::string_view prefix,
                                                  const std::string& manager);

// The number N of a handle "<prefix>N" where N is a decimal uint32 without sign or leading zeros; nullopt
// for anything else (so no handle can smuggle a path or a second spelling of the same device).
std::optional<uint32_t> ParseHandleNumber(absl::string_view handle, absl::string_view prefix);

// `dir` + "/" + `name` (`dir` as QemuDeviceConfig::sock_path).
std::string JoinPath(const std::string& dir, absl::string_view name);

// The client-facing status for a failed QEMU step (as TargetFailure for the target): a QEMU that cannot be
// reached or does not answer in time keeps its code (Unavailable "<what>: QEMU unreachable: <cause>",
// DeadlineExceeded "<what>: QEMU timed out: <cause>"); anything else becomes Internal "<what>: <cause>".
absl::Status QemuFailure(const absl::Status& cause, absl::string_view what);

// A uint32 member of a spec's params (physical_id, slot); Internal when missing or malformed (specs come
// from PlanDevice or SpecFromHandle, so that means a corrupted store).
absl::StatusOr<uint32_t> SpecNumber(const DeviceSpec& spec, const char* key);
// A string member of a spec's params; Internal when missing.
absl::StatusOr<std::string> SpecString(const DeviceSpec& spec, const char* key);

// Whether a JSON-RPC failure means "no such object" (the target's -ENODEV/-ENOENT, or -32602 "Invalid
// parameters" that SPDK answers for an unknown NQN).
bool IsAbsentAnswer(const absl::Status& status);

}  // namespace smad::agent
