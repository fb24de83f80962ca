#pragma once

// Volumes in requests and in the desired state, and their (de)serialisation.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "agent/core/crypto_engine.h"
#include "agent/devices/device_manager.h"
#include "common/status.h"
#include "sma.pb.h"

namespace smad::agent {

// A discovery endpoint of a remote volume, validated.
struct DiscoveryEndpoint {
  std::string trtype;  // "tcp" or "rdma" (lowercase)
  std::string adrfam;  // "ipv4" or "ipv6", from the address
  std::string traddr;
  std::string trsvcid;
  bool operator==(const DiscoveryEndpoint&) const = default;
};

// sma.VolumeParameters, validated.
struct VolumeRequest {
  std::string volume_id;  // canonical lowercase UUID
  std::string subnqn;     // optional check of the remote subsystem
  std::string hostnqn;
  std::vector<DiscoveryEndpoint> endpoints;  // empty: a local bdev named by its UUID
  std::optional<CryptoParams> crypto;
};

// A volume in the desired state.
struct VolumeRecord {
  std::string volume_id;
  std::string device_handle;                   // the device exposing it
  std::string bdev;                            // the bdev exposed (volume UUID or crypto bdev)
  uint32_t nsid = 0;                           // where it is exposed (0: not yet)
  std::vector<std::string> discovery_services; // names of the discovery services it holds a reference on
  std::string hostnqn;                         // the discovery services' host NQN
  std::string crypto_engine;                   // engine that set up crypto ("" = none)
  std::string crypto_bdev;
  std::optional<QosLimits> qos;                // limits set through SetQos
};

// Parses 16 bytes into the canonical UUID. InvalidArgument "Invalid volume ID" otherwise.
absl::StatusOr<std::string> ParseVolumeId(const std::string& bytes);
// Validates sma.VolumeParameters: the id, NQNs, discovery endpoints (IP literal traddr, port trsvcid,
// at most 64 endpoints), crypto key bytes (ASCII). InvalidArgument naming the field.
absl::StatusOr<VolumeRequest> ParseVolumeRequest(const sma::VolumeParameters& params);

std::string SerializeVolume(const VolumeRecord& record);
absl::StatusOr<VolumeRecord> ParseVolumeRecord(const std::string& key, const std::string& json);
std::string SerializeDevice(const DeviceSpec& spec);
absl::StatusOr<DeviceSpec> ParseDeviceRecord(const std::string& key, const std::string& json);

inline constexpr char kDeviceKind[] = "device";
inline constexpr char kVolumeKind[] = "volume";

VolumeExposure ExposureOf(const VolumeRecord& record);

// QoS limits as stored (SPDK's bdev_set_qos_limit parameter names); QosFromJson throws nothing and
// treats missing fields as 0.
Json QosJson(const QosLimits& limits);
QosLimits QosFromJson(const Json& json);

}  // namespace smad::agent
