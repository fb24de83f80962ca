#include "agent/devices/qemu_device.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <cerrno>
#include <cmath>
#include <optional>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "agent/spdk/target_rpc.h"
#include "spdlog/spdlog.h"

namespace smad::agent {
namespace {

constexpr uint32_t kSlotsPerBus = 32;  // PCI device numbers are 5 bits
constexpr double kMaxQmpTimeoutSeconds = 600;

absl::Status KeyError(absl::string_view key, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat(key, ": ", problem));
}

// QEMU ids: a letter, then letters, digits, '-', '.', '_' (qemu's id_wellformed).
bool IsQemuId(const std::string& id) {
  if (id.empty() || id.size() > 128 || !absl::ascii_isalpha(static_cast<unsigned char>(id[0]))) return false;
  for (char c : id) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.' && c != '_') return false;
  }
  return true;
}

// An integer value that fits int64_t; nullopt for anything else.
std::optional<int64_t> IntegerOf(const Json& value) {
  if (value.is_number_unsigned()) {
    uint64_t u = value.get<uint64_t>();
    if (u > static_cast<uint64_t>(INT64_MAX)) return std::nullopt;
    return static_cast<int64_t>(u);
  }
  if (value.is_number_integer()) return value.get<int64_t>();
  return std::nullopt;
}

bool IsIpLiteral(const std::string& address) {
  unsigned char buffer[sizeof(in6_addr)];
  return inet_pton(AF_INET, address.c_str(), buffer) == 1 || inet_pton(AF_INET6, address.c_str(), buffer) == 1;
}

absl::StatusOr<std::vector<PciBus>> ParseBuses(const Json& value) {
  std::vector<PciBus> buses;
  if (value.is_null()) return buses;
  if (!value.is_array()) return KeyError("buses", "must be a list of {name, count}");
  absl::flat_hash_set<std::string> names;
  for (size_t i = 0; i < value.size(); ++i) {
    const Json& entry = value[i];
    const std::string key = absl::StrCat("buses[", i, "]");
    if (!entry.is_object()) return KeyError(key, "must be a mapping {name, count}");
    PciBus bus;
    auto name = entry.find("name");
    if (name == entry.end() || name->is_null()) return KeyError(key + ".name", "missing");
    if (!name->is_string() || !IsQemuId(name->get<std::string>())) {
      return KeyError(key + ".name", "must be a QEMU device id (a letter, then letters, digits, '-', '.', '_')");
    }
    bus.name = name->get<std::string>();
    if (!names.insert(bus.name).second) return KeyError(key + ".name", "duplicate");
    auto count = entry.find("count");
    if (count != entry.end() && !count->is_null()) {
      std::optional<int64_t> n = IntegerOf(*count);
      if (!n.has_value()) return KeyError(key + ".count", "must be an integer");
      if (*n < 0) return KeyError(key + ".count", "must not be negative");
      if (*n > kSlotsPerBus) {
        return KeyError(key + ".count", absl::StrCat("at most ", kSlotsPerBus, " (the slots of a PCI bus)"));
      }
      bus.count = static_cast<uint32_t>(*n);
    }
    for (const auto& [k, v] : entry.items()) {
      if (k != "name" && k != "count") spdlog::warn("devices params: ignoring unknown key {}.{}", key, k);
    }
    buses.push_back(std::move(bus));
  }
  return buses;
}

}  // namespace

std::string PciSlot::Addr() const { return absl::StrFormat("0x%x", slot); }

absl::StatusOr<QemuDeviceConfig> ParseQemuDeviceConfig(const Json& params, size_t max_name,
                                                       absl::string_view manager) {
  if (params.is_null()) return KeyError("params", "missing (buses, qmp_port...)");
  if (!params.is_object()) return KeyError("params", "must be a mapping");
  QemuDeviceConfig config;
  ASSIGN_OR_RETURN(config.buses, ParseBuses(params.value("buses", Json())));

  const Json addr = params.value("qmp_addr", Json());
  if (!addr.is_null()) {
    if (!addr.is_string() || (addr.get<std::string>() != "localhost" && !IsIpLiteral(addr.get<std::string>()))) {
      return KeyError("qmp_addr", "must be an IPv4 or IPv6 address (or localhost)");
    }
    config.qmp.address = addr.get<std::string>();
  }
  const Json port = params.value("qmp_port", Json());
  if (port.is_null()) return KeyError("qmp_port", "missing");
  std::optional<int64_t> port_number = IntegerOf(port);
  if (!port_number.has_value() || *port_number < 1 || *port_number > 65535) {
    return KeyError("qmp_port", "must be a port number 1-65535");
  }
  config.qmp.port = static_cast<uint16_t>(*port_number);

  const Json timeout = params.value("qmp_timeout", Json());
  if (!timeout.is_null()) {
    if (!timeout.is_number() || !(timeout.get<double>() > 0) || timeout.get<double>() > kMaxQmpTimeoutSeconds) {
      return KeyError("qmp_timeout", absl::StrCat("must be a number of seconds in (0, ", kMaxQmpTimeoutSeconds, "]"));
    }
    config.qmp.timeout = std::chrono::milliseconds(
        std::max<int64_t>(1, static_cast<int64_t>(std::llround(timeout.get<double>() * 1000))));
  }

  const Json sock = params.value("sock_path", Json());
  std::string path = "/var/tmp/";
  if (!sock.is_null()) {
    if (!sock.is_string()) return KeyError("sock_path", "must be a path");
    path = sock.get<std::string>();
  }
  if (path.empty() || path[0] != '/') return KeyError("sock_path", "must be an absolute path");
  if (path.find('\0') != std::string::npos) return KeyError("sock_path", "must not contain NUL");
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  const size_t max_path = sizeof(sockaddr_un::sun_path) - 1;  // room for the terminating NUL
  const size_t joined = (path == "/" ? 0 : path.size()) + 1 + max_name;
  if (joined > max_path) {
    return KeyError("sock_path", absl::StrCat("too long: the socket paths under it must fit in ", max_path,
                                              " bytes (at most ", max_path - 1 - max_name, " bytes)"));
  }
  config.sock_path = std::move(path);

  for (const auto& [k, v] : params.items()) {
    if (k != "buses" && k != "qmp_addr" && k != "qmp_port" && k != "sock_path" && k != "qmp_timeout") {
      spdlog::warn("{}: ignoring unknown params key '{}'", std::string(manager), k);
    }
  }
  return config;
}

absl::StatusOr<PciSlot> PlacePhysicalId(const std::vector<PciBus>& buses, uint32_t physical_id) {
  uint64_t rest = physical_id;
  for (const PciBus& bus : buses) {
    if (rest < bus.count) return PciSlot{bus.name, static_cast<uint32_t>(rest)};
    rest -= bus.count;
  }
  return absl::InvalidArgumentError("Invalid physical_id");
}

absl::StatusOr<PciSlot> SlotForDevice(const std::vector<PciBus>& buses, uint32_t physical_id,
                                      const DeviceSpec* previous) {
  if (previous != nullptr) {
    auto bus = SpecString(*previous, "bus");
    auto slot = SpecNumber(*previous, "slot");
    if (bus.ok() && slot.ok()) return PciSlot{*bus, *slot};
  }
  return PlacePhysicalId(buses, physical_id);
}

absl::StatusOr<DeviceSpec> SpecFromNumberedHandle(absl::string_view handle, absl::string_view prefix,
                                                  const std::string& manager) {
  std::optional<uint32_t> id = ParseHandleNumber(handle, prefix);
  if (!id.has_value()) return absl::NotFoundError("Invalid device handle");
  return DeviceSpec{std::string(handle), manager, Json{{"physical_id", *id}}};
}

std::optional<uint32_t> ParseHandleNumber(absl::string_view handle, absl::string_view prefix) {
  if (!absl::ConsumePrefix(&handle, prefix)) return std::nullopt;
  if (handle.empty() || handle.size() > 10 || (handle.size() > 1 && handle[0] == '0')) return std::nullopt;
  uint64_t value = 0;
  for (char c : handle) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + static_cast<uint64_t>(c - '0');
  }
  if (value > UINT32_MAX) return std::nullopt;
  return static_cast<uint32_t>(value);
}

std::string JoinPath(const std::string& dir, absl::string_view name) {
  return dir == "/" ? absl::StrCat("/", name) : absl::StrCat(dir, "/", name);
}

absl::Status QemuFailure(const absl::Status& cause, absl::string_view what) {
  if (absl::IsUnavailable(cause)) {
    return absl::Status(cause.code(), absl::StrCat(what, ": QEMU unreachable: ", cause.message()));
  }
  if (absl::IsDeadlineExceeded(cause)) {
    return absl::Status(cause.code(), absl::StrCat(what, ": QEMU timed out: ", cause.message()));
  }
  return absl::InternalError(absl::StrCat(what, ": ", cause.message()));
}

absl::StatusOr<uint32_t> SpecNumber(const DeviceSpec& spec, const char* key) {
  if (spec.params.is_object()) {
    auto it = spec.params.find(key);
    if (it != spec.params.end() && it->is_number_unsigned() && it->get<uint64_t>() <= UINT32_MAX) {
      return static_cast<uint32_t>(it->get<uint64_t>());
    }
    if (it != spec.params.end() && it->is_number_integer() && it->get<int64_t>() >= 0 &&
        it->get<int64_t>() <= UINT32_MAX) {
      return static_cast<uint32_t>(it->get<int64_t>());
    }
  }
  return absl::InternalError(absl::StrCat("device ", spec.handle, ": its stored spec has no valid ", key));
}

absl::StatusOr<std::string> SpecString(const DeviceSpec& spec, const char* key) {
  if (spec.params.is_object()) {
    auto it = spec.params.find(key);
    if (it != spec.params.end() && it->is_string()) return it->get<std::string>();
  }
  return absl::InternalError(absl::StrCat("device ", spec.handle, ": its stored spec has no valid ", key));
}

bool IsAbsentAnswer(const absl::Status& status) {
  auto error = SpdkErrorOf(status);
  if (!error.has_value()) return false;
  // vhost_get_controllers {name} answers -32603 "No such device" for an unknown controller (SPDK's
  // vhost_rpc.c); lookups by NQN answer -32602.
  if (error->code == -32603) return error->message.find("No such device") != std::string::npos;
  return error->code == -ENODEV || error->code == -ENOENT || error->code == -32602;
}

}  // namespace smad::agent
