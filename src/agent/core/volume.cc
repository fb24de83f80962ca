#include "agent/core/volume.h"

#include <arpa/inet.h>

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/nqn.h"
#include "common/uuid.h"

namespace smad::agent {
namespace {

constexpr size_t kMaxEndpoints = 64;

absl::Status CheckNqn(const std::string& nqn, absl::string_view field) {
  if (nqn.empty()) return absl::OkStatus();
  absl::Status valid = ValidateNqn(nqn);
  if (!valid.ok()) return absl::InvalidArgumentError(absl::StrCat(field, ": ", valid.message()));
  return absl::OkStatus();
}

bool IsAscii(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
}

}  // namespace

absl::StatusOr<std::string> ParseVolumeId(const std::string& bytes) {
  auto uuid = Uuid::FromBytes(bytes);
  if (!uuid.ok()) return absl::InvalidArgumentError("Invalid volume ID");
  return uuid->ToString();
}

absl::StatusOr<VolumeRequest> ParseVolumeRequest(const sma::VolumeParameters& params) {
  VolumeRequest request;
  ASSIGN_OR_RETURN(request.volume_id, ParseVolumeId(params.volume_id()));
  const sma::nvmf::VolumeConnectionParameters& nvmf = params.nvmf();
  RETURN_IF_ERROR(CheckNqn(nvmf.subnqn(), "volume.nvmf.subnqn"));
  RETURN_IF_ERROR(CheckNqn(nvmf.hostnqn(), "volume.nvmf.hostnqn"));
  request.subnqn = nvmf.subnqn();
  request.hostnqn = nvmf.hostnqn();
  const auto& endpoints = nvmf.discovery().discovery_endpoints();
  if (static_cast<size_t>(endpoints.size()) > kMaxEndpoints) {
    return absl::InvalidArgumentError(
        absl::StrCat("volume.nvmf.discovery.discovery_endpoints: at most ", kMaxEndpoints, " endpoints"));
  }
  for (int i = 0; i < endpoints.size(); ++i) {
    const sma::nvmf::Address& a = endpoints[i];
    std::string field = absl::StrCat("volume.nvmf.discovery.discovery_endpoints[", i, "]");
    DiscoveryEndpoint ep;
    ep.trtype = absl::AsciiStrToLower(a.trtype());
    if (ep.trtype != "tcp" && ep.trtype != "rdma") {
      return absl::InvalidArgumentError(absl::StrCat(field, ".trtype: must be \"tcp\" or \"rdma\""));
    }
    unsigned char buf[sizeof(struct in6_addr)];
    if (a.traddr().size() <= 64 && inet_pton(AF_INET, a.traddr().c_str(), buf) == 1) {
      ep.adrfam = "ipv4";
    } else if (a.traddr().size() <= 64 && inet_pton(AF_INET6, a.traddr().c_str(), buf) == 1) {
      ep.adrfam = "ipv6";
    } else {
      return absl::InvalidArgumentError(absl::StrCat("Invalid traddr: ", field, ".traddr must be an IP address"));
    }
    ep.traddr = a.traddr();
    uint32_t port = 0;
    if (a.trsvcid().empty() || a.trsvcid().size() > 5 ||
        !std::all_of(a.trsvcid().begin(), a.trsvcid().end(), absl::ascii_isdigit) ||
        !absl::SimpleAtoi(a.trsvcid(), &port) || port == 0 || port > 65535) {
      return absl::InvalidArgumentError(absl::StrCat(field, ".trsvcid: must be a port number 1-65535"));
    }
    ep.trsvcid = std::to_string(port);
    if (std::find(request.endpoints.begin(), request.endpoints.end(), ep) == request.endpoints.end()) {
      request.endpoints.push_back(std::move(ep));
    }
  }
  if (params.has_crypto()) {
    const sma::VolumeCryptoParameters& c = params.crypto();
    if (!IsAscii(c.key()) || !IsAscii(c.key2())) return absl::InvalidArgumentError("Corrupted crypto key");
    CryptoParams crypto;
    crypto.key = c.key();
    crypto.key2 = c.key2();
    crypto.cipher = static_cast<int>(c.cipher());
    crypto.tweak_mode = static_cast<int>(c.tweak_mode());
    request.crypto = std::move(crypto);
  }
  return request;
}

namespace {

Json EndpointJson(const DiscoveryEndpoint& e) {
  return Json{{"trtype", e.trtype}, {"adrfam", e.adrfam}, {"traddr", e.traddr}, {"trsvcid", e.trsvcid}};
}

DiscoveryEndpoint EndpointFromJson(const Json& j) {
  return DiscoveryEndpoint{j.at("trtype").get<std::string>(), j.at("adrfam").get<std::string>(),
                           j.at("traddr").get<std::string>(), j.at("trsvcid").get<std::string>()};
}

}  // namespace

std::string SerializeVolume(const VolumeRecord& r) {
  Json j = {{"device", r.device_handle}, {"bdev", r.bdev}, {"nsid", r.nsid}};
  if (r.connecting) j["connecting"] = true;
  if (!r.endpoints.empty()) {
    Json endpoints = Json::array();
    for (const DiscoveryEndpoint& e : r.endpoints) endpoints.push_back(EndpointJson(e));
    j["endpoints"] = std::move(endpoints);
  }
  if (!r.subnqn.empty()) j["subnqn"] = r.subnqn;
  if (!r.discovery_services.empty()) j["discovery"] = r.discovery_services;
  if (!r.hostnqn.empty()) j["hostnqn"] = r.hostnqn;
  if (!r.crypto_engine.empty()) {
    j["crypto"] = {{"engine", r.crypto_engine}, {"bdev", r.crypto_bdev}, {"cipher", r.crypto_cipher},
                   {"tweak_mode", r.crypto_tweak_mode}};
    if (!r.crypto_sealed.empty()) j["crypto"]["sealed"] = r.crypto_sealed;
  }
  if (r.qos.has_value()) j["qos"] = QosJson(*r.qos);
  return j.dump();
}

absl::StatusOr<VolumeRecord> ParseVolumeRecord(const std::string& key, const std::string& json) {
  try {
    Json j = Json::parse(json);
    VolumeRecord r;
    r.volume_id = key;
    r.device_handle = j.at("device").get<std::string>();
    r.bdev = j.value("bdev", "");
    if (r.bdev.empty()) r.bdev = key;  // a local volume is exposed under its UUID
    r.nsid = j.value("nsid", 0u);
    r.connecting = j.value("connecting", false);
    if (j.contains("endpoints")) {
      for (const Json& e : j["endpoints"]) r.endpoints.push_back(EndpointFromJson(e));
    }
    r.subnqn = j.value("subnqn", "");
    if (j.contains("discovery")) r.discovery_services = j["discovery"].get<std::vector<std::string>>();
    r.hostnqn = j.value("hostnqn", "");
    if (j.contains("crypto")) {
      const Json& c = j["crypto"];
      r.crypto_engine = c.at("engine").get<std::string>();
      r.crypto_bdev = c.at("bdev").get<std::string>();
      r.crypto_cipher = c.value("cipher", 0);
      r.crypto_tweak_mode = c.value("tweak_mode", 0);
      r.crypto_sealed = c.value("sealed", "");
    }
    if (j.contains("qos")) r.qos = QosFromJson(j["qos"]);
    return r;
  } catch (const std::exception& e) {
    return absl::DataLossError(absl::StrCat("volume record ", key, ": ", e.what()));
  }
}

std::string SerializeDiscovery(const DiscoveryRecord& r) {
  Json j = EndpointJson(r.endpoint);
  j["hostnqn"] = r.hostnqn;
  return j.dump();
}

absl::StatusOr<DiscoveryRecord> ParseDiscoveryRecord(const std::string& key, const std::string& json) {
  try {
    Json j = Json::parse(json);
    return DiscoveryRecord{key, EndpointFromJson(j), j.value("hostnqn", "")};
  } catch (const std::exception& e) {
    return absl::DataLossError(absl::StrCat("discovery record ", key, ": ", e.what()));
  }
}

std::string SerializeDevice(const DeviceSpec& spec) {
  return Json{{"manager", spec.manager}, {"params", spec.params}}.dump();
}

absl::StatusOr<DeviceSpec> ParseDeviceRecord(const std::string& key, const std::string& json) {
  try {
    Json j = Json::parse(json);
    DeviceSpec spec;
    spec.handle = key;
    spec.manager = j.at("manager").get<std::string>();
    spec.params = j.at("params");
    return spec;
  } catch (const std::exception& e) {
    return absl::DataLossError(absl::StrCat("device record ", key, ": ", e.what()));
  }
}

Json QosJson(const QosLimits& q) {
  return Json{{"rw_ios_per_sec", q.rw_ios_per_sec},
              {"r_mbytes_per_sec", q.r_mbytes_per_sec},
              {"w_mbytes_per_sec", q.w_mbytes_per_sec},
              {"rw_mbytes_per_sec", q.rw_mbytes_per_sec}};
}

QosLimits QosFromJson(const Json& j) {
  auto field = [&j](const char* name) -> uint64_t {
    if (!j.is_object() || !j.contains(name) || !j[name].is_number_unsigned()) return 0;
    return j[name].get<uint64_t>();
  };
  return QosLimits{field("rw_ios_per_sec"), field("r_mbytes_per_sec"), field("w_mbytes_per_sec"),
                   field("rw_mbytes_per_sec")};
}

VolumeExposure ExposureOf(const VolumeRecord& record) {
  return VolumeExposure{record.volume_id, record.bdev, record.nsid};
}

}  // namespace smad::agent
