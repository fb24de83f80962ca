#pragma once

// Reading and writing the NVMe-oF subsystem JSON SPDK's nvmf_* methods use; shared by the device managers
// whose devices are subsystems (nvmf_tcp, vfiouser).

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/devices/device_manager.h"
#include "agent/spdk/target_rpc.h"

namespace smad::agent {

// `a` is a string equal to `b`, ignoring ASCII case.
bool SameText(const Json& a, absl::string_view b);
// object[key] when it is a string, else "".
std::string TextField(const Json& object, const char* key);
// ns["nsid"] when it is a u32, else 0.
uint32_t NsidOf(const Json& ns);
// nvmf_subsystem_add_ns's `namespace` object for `volume`: the bdev, UUID and NGUID (= the volume id),
// and the nsid when the exposure has one.
Json NamespaceParams(const VolumeExposure& volume);
// The namespace of `subsystem` (an nvmf_get_subsystems entry) whose UUID is `volume_id`, or null.
const Json* FindNamespace(const Json& subsystem, const std::string& volume_id);
// The subsystem `nqn` as the target reports it (nvmf_get_subsystems {nqn}); nullopt when absent (SPDK
// answers -32602 for an unknown NQN; ours are validated, so that answer means "absent"). Errors: the
// call's, for any other failure.
absl::StatusOr<std::optional<Json>> GetSubsystemByNqn(const TargetRpc& rpc, const std::string& nqn);

// Exposes `volume` as a namespace of subsystem `nqn` (with volume.nsid when non-zero) and sets
// volume.nsid; success when it is already there. When the add fails, finds out why: NotFound "Invalid
// device handle" (no subsystem), NotFound "Volume could not be found" (no bdev, after waiting 1 s for it to
// appear), else retries once letting the target choose the nsid (the remembered one may be taken).
// Target errors become Internal "Failed to attach volume: ..." (TargetFailure).
absl::Status ExposeNamespace(const TargetRpc& rpc, const std::string& nqn, VolumeExposure& volume);
// Removes the namespace whose UUID is the volume's from `nqn`, found by UUID (never by a remembered nsid,
// which could name another namespace after out-of-band changes); success when it or the subsystem is
// absent.
absl::Status RemoveNamespace(const TargetRpc& rpc, const std::string& nqn, const VolumeExposure& volume);

// Creates the NVMe-oF transport `trtype` (e.g. "tcp") unless the target has it. Errors: as TargetFailure
// with `failure` as the message ("NVMe/TCP transport is unavailable").
absl::Status EnsureTransport(const TargetRpc& rpc, const char* trtype, absl::string_view failure);

}  // namespace smad::agent
