#include "tgt/nvmf/vfio_user_transport.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>

#include "common/status.h"
#include "spdlog/spdlog.h"

namespace smad::tgt {
namespace {

using Json = nlohmann::json;

absl::Status ReadU32(const Json& params, const char* key, uint32_t& out) {
  if (!params.contains(key)) return absl::OkStatus();
  const Json& v = params[key];
  if (!v.is_number_unsigned() || v.get<uint64_t>() > UINT32_MAX) {
    return absl::InvalidArgumentError(std::string(key) + " must be an unsigned 32-bit integer");
  }
  out = v.get<uint32_t>();
  return absl::OkStatus();
}

absl::Status ReadBool(const Json& params, const char* key, bool& out) {
  if (!params.contains(key)) return absl::OkStatus();
  if (!params[key].is_boolean()) return absl::InvalidArgumentError(std::string(key) + " must be a boolean");
  out = params[key].get<bool>();
  return absl::OkStatus();
}

bool IsPowerOfTwo(uint32_t v) { return v != 0 && (v & (v - 1)) == 0; }

}  // namespace

absl::StatusOr<VfioUserTransportOptions> VfioUserTransportOptions::FromJson(const Json& params) {
  VfioUserTransportOptions o;
  static const char* kIgnored[] = {"num_shared_buffers", "buf_cache_size", "dif_insert_or_strip", "zcopy",
                                   "ack_timeout", "data_wr_pool_size", "disable_command_passthru", "kas",
                                   "min_kato", "iobuf_small_cache_size", "iobuf_large_cache_size",
                                   "acceptor_poll_rate", "association_timeout"};
  static const char* kKnown[] = {"trtype", "tgt_name", "max_queue_depth", "max_io_qpairs_per_ctrlr",
                                 "in_capsule_data_size", "max_io_size", "io_unit_size", "max_aq_depth",
                                 "abort_timeout_sec", "disable_mappable_bar0", "disable_adaptive_irq",
                                 "disable_shadow_doorbells", "enable_intr_mode_sq_spreading"};
  if (!params.is_object()) return absl::InvalidArgumentError("params must be an object");
  for (const auto& [key, value] : params.items()) {
    bool ok = false;
    for (const char* k : kKnown) ok |= key == k;
    for (const char* k : kIgnored) ok |= key == k;
    if (!ok) return absl::InvalidArgumentError("unknown parameter '" + key + "'");
  }
  RETURN_IF_ERROR(ReadU32(params, "max_queue_depth", o.max_queue_depth));
  RETURN_IF_ERROR(ReadU32(params, "max_io_qpairs_per_ctrlr", o.max_io_qpairs_per_ctrlr));
  RETURN_IF_ERROR(ReadU32(params, "in_capsule_data_size", o.in_capsule_data_size));
  RETURN_IF_ERROR(ReadU32(params, "max_io_size", o.max_io_size));
  RETURN_IF_ERROR(ReadU32(params, "io_unit_size", o.io_unit_size));
  RETURN_IF_ERROR(ReadU32(params, "max_aq_depth", o.max_aq_depth));
  RETURN_IF_ERROR(ReadU32(params, "abort_timeout_sec", o.abort_timeout_sec));
  RETURN_IF_ERROR(ReadBool(params, "disable_mappable_bar0", o.disable_mappable_bar0));
  RETURN_IF_ERROR(ReadBool(params, "disable_adaptive_irq", o.disable_adaptive_irq));
  RETURN_IF_ERROR(ReadBool(params, "disable_shadow_doorbells", o.disable_shadow_doorbells));
  RETURN_IF_ERROR(ReadBool(params, "enable_intr_mode_sq_spreading", o.enable_intr_mode_sq_spreading));
  if (o.max_queue_depth < 2 || o.max_queue_depth > 65536) {
    return absl::InvalidArgumentError("max_queue_depth must be in [2, 65536]");
  }
  if (o.max_aq_depth < 2 || o.max_aq_depth > 4096) return absl::InvalidArgumentError("max_aq_depth must be in [2, 4096]");
  // SPDK's generic check, and vfio-user's limit of 512 queue pairs per controller (admin included).
  if (!IsPowerOfTwo(o.max_io_size) || o.max_io_size < 8192) {
    return absl::InvalidArgumentError("max_io_size must be a power of 2 and at least 8 KiB");
  }
  if (o.io_unit_size == 0) return absl::InvalidArgumentError("io_unit_size must be positive");
  if (o.max_io_qpairs_per_ctrlr == 0 || o.max_io_qpairs_per_ctrlr > 511) {
    return absl::InvalidArgumentError("max_io_qpairs_per_ctrlr must be in [1, 511] for vfio-user");
  }
  return o;
}

Json VfioUserTransportOptions::ToJson() const {
  return Json{{"trtype", kTrtypeVfioUser},
              {"max_queue_depth", max_queue_depth},
              {"max_io_qpairs_per_ctrlr", max_io_qpairs_per_ctrlr},
              {"in_capsule_data_size", in_capsule_data_size},
              {"max_io_size", max_io_size},
              {"max_aq_depth", max_aq_depth},
              {"iobuf_small_cache_size", 0},
              {"iobuf_large_cache_size", 0},
              {"dif_insert_or_strip", false},
              {"zcopy", false},
              {"abort_timeout_sec", abort_timeout_sec},
              {"ack_timeout", 0},
              {"data_wr_pool_size", 0},
              {"disable_command_passthru", false},
              {"kas", 100},
              {"min_kato", 10000}};
}

Json VfioUserTransportOptions::ToConfigParams() const {
  Json j = {{"trtype", kTrtypeVfioUser},
            {"max_queue_depth", max_queue_depth},
            {"max_io_qpairs_per_ctrlr", max_io_qpairs_per_ctrlr},
            {"in_capsule_data_size", in_capsule_data_size},
            {"max_io_size", max_io_size},
            {"io_unit_size", io_unit_size},
            {"max_aq_depth", max_aq_depth},
            {"abort_timeout_sec", abort_timeout_sec}};
  if (disable_mappable_bar0) j["disable_mappable_bar0"] = true;
  if (disable_adaptive_irq) j["disable_adaptive_irq"] = true;
  if (disable_shadow_doorbells) j["disable_shadow_doorbells"] = true;
  if (enable_intr_mode_sq_spreading) j["enable_intr_mode_sq_spreading"] = true;
  return j;
}

VfioUserTransport::VfioUserTransport(Reactor& control, VfioUserTransportOptions options)
    : control_(control), options_(options) {}

VfioUserTransport::~VfioUserTransport() = default;

absl::Status VfioUserTransport::Listen(const ListenAddress& address, const std::string& nqn) {
  for (const Endpoint& e : endpoints_) {
    if (e.traddr == address.traddr) {
      return ErrnoStatus(EEXIST, "vfio-user directory " + address.traddr + " is already used by " + e.nqn);
    }
  }
  struct stat st;
  if (::stat(address.traddr.c_str(), &st) != 0) {
    int err = errno;
    return ErrnoStatus(err, "vfio-user directory " + address.traddr + ": " + ErrnoString(err));
  }
  if (!S_ISDIR(st.st_mode)) {
    return ErrnoStatus(ENOTDIR, "vfio-user traddr " + address.traddr + " is not a directory");
  }
  std::string path = SocketPath(address.traddr);
  auto listener = UnixListener::Create(control_, path, [path](int fd) {
    // No vfio-user protocol engine: the client learns at once that nobody will serve it.
    spdlog::warn("vfio-user connection on {} closed: smad-tgt implements the vfio-user control plane only", path);
    ::close(fd);
  });
  if (!listener.ok()) return listener.status();
  endpoints_.push_back(Endpoint{address.traddr, nqn, std::move(listener).value()});
  spdlog::info("vfio-user endpoint {} listening for {}", path, nqn);
  return absl::OkStatus();
}

void VfioUserTransport::StopListening(const ListenAddress& address) {
  auto it = std::find_if(endpoints_.begin(), endpoints_.end(),
                         [&](const Endpoint& e) { return e.traddr == address.traddr; });
  if (it == endpoints_.end()) return;
  spdlog::info("vfio-user endpoint {} closed", it->listener->path());
  endpoints_.erase(it);
}

}  // namespace smad::tgt
