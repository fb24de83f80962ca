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
  // True from the intent of a remote or encrypted volume's first connection until the call completes;
  // the reconciler finishes (or rolls back) such a connection.
  bool connecting = false;
  std::vector<DiscoveryEndpoint> endpoints;    // as requested (remote volumes)
  std::string subnqn;                          // as requested: the remote subsystem it must come from
  std::vector<std::string> discovery_services; // names of the discovery services it holds a reference on
  std::string hostnqn;                         // the discovery services' host NQN
  std::string crypto_engine;                   // engine that set up crypto ("" = none)
  std::string crypto_bdev;                     // the crypto bdev's name, recorded before it is created
  int crypto_cipher = 0;
  int crypto_tweak_mode = 0;
  std::string crypto_sealed;                   // key and key2, sealed by SecretBox ("" = not kept)
  std::optional<QosLimits> qos;                // limits set through SetQos
  bool remote() const { return !endpoints.empty(); }
};

// A discovery service smad started on the target (it stops only those). Its reference count is the
// number of volumes in the desired state that name it.
struct DiscoveryRecord {
  std::string name;
  DiscoveryEndpoint endpoint;
  std::string hostnqn;
};

// Parses 16 bytes into the canonical UUID. InvalidArgument "Invalid volume ID" otherwise.
absl::StatusOr<std::string> ParseVolumeId(const std::string& bytes);
// Validates sma.VolumeParameters: the id, NQNs, discovery endpoints (IP literal traddr, port trsvcid,
// at most 64 endpoints), crypto key bytes (ASCII). InvalidArgument naming the field.
absl::StatusOr<VolumeRequest> ParseVolumeRequest(const sma::VolumeParameters& params);

std::string SerializeVolume(const VolumeRecord& record);
absl::StatusOr<VolumeRecord> ParseVolumeRecord(const std::string& key, const std::string& json);
std::string SerializeDiscovery(const DiscoveryRecord& record);
absl::StatusOr<DiscoveryRecord> ParseDiscoveryRecord(const std::string& key, const std::string& json);
std::string SerializeDevice(const DeviceSpec& spec);
absl::StatusOr<DeviceSpec> ParseDeviceRecord(const std::string& key, const std::string& json);

inline constexpr char kDeviceKind[] = "device";
inline constexpr char kVolumeKind[] = "volume";
inline constexpr char kDiscoveryKind[] = "discovery";

VolumeExposure ExposureOf(const VolumeRecord& record);

// QoS limits as stored (SPDK's bdev_set_qos_limit parameter names); QosFromJson throws nothing and
// treats missing fields as 0.
Json QosJson(const QosLimits& limits);
QosLimits QosFromJson(const Json& json);

}  // namespace smad::agent
