#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "reactor/reactor.h"
#include "tgt/net/unix_listener.h"
#include "tgt/nvmf/listen_address.h"

namespace smad::tgt {

// nvmf_create_transport options for VFIOUSER, with SPDK's defaults (its vfio-user opts_init).
struct VfioUserTransportOptions {
  uint32_t max_queue_depth = 256;
  uint32_t max_io_qpairs_per_ctrlr = 127;
  uint32_t in_capsule_data_size = 0;
  uint32_t max_io_size = 131072;
  uint32_t io_unit_size = 131072;
  uint32_t max_aq_depth = 32;
  uint32_t abort_timeout_sec = 0;
  // The vfio-user transport's own options: recorded and saved, without effect (no data path).
  bool disable_mappable_bar0 = false;
  bool disable_adaptive_irq = false;
  bool disable_shadow_doorbells = false;
  bool enable_intr_mode_sq_spreading = false;

  // Reads SPDK's nvmf_create_transport parameters (trtype checked by the caller). Unknown keys are
  // refused; generic SPDK options that do not apply (buffers, zcopy, ...) are accepted and ignored.
  // Errors: InvalidArgument naming the field.
  static absl::StatusOr<VfioUserTransportOptions> FromJson(const nlohmann::json& params);
  // nvmf_get_transports entry: SPDK's generic transport fields (vfio-user adds none).
  nlohmann::json ToJson() const;
  // nvmf_create_transport params that recreate these options.
  nlohmann::json ToConfigParams() const;
};

// The vfio-user transport, control plane only: each listener is a Unix socket `<traddr>/cntrl` that a
// vfio-user client (QEMU's vfio-user-pci) can find. There is no vfio-user protocol engine: an accepted
// connection is closed at once. One directory serves one subsystem.
//
// Thread safety: control thread only.
class VfioUserTransport {
 public:
  static constexpr char kSocketName[] = "cntrl";

  VfioUserTransport(Reactor& control, VfioUserTransportOptions options);
  ~VfioUserTransport();  // closes every socket and removes its file
  VfioUserTransport(const VfioUserTransport&) = delete;
  VfioUserTransport& operator=(const VfioUserTransport&) = delete;

  const VfioUserTransportOptions& options() const { return options_; }

  // Creates and listens on `<address.traddr>/cntrl` for subsystem `nqn`. Errors (errno payload):
  // EEXIST when another subsystem listens on that directory, ENOENT / ENOTDIR when traddr is not an
  // existing directory, and what UnixListener::Create reports (ENAMETOOLONG, EADDRINUSE, EACCES, ...).
  absl::Status Listen(const ListenAddress& address, const std::string& nqn);
  // Closes the socket and removes its file; a no-op for an unknown address.
  void StopListening(const ListenAddress& address);
  size_t listener_count() const { return endpoints_.size(); }

  static std::string SocketPath(const std::string& traddr) { return traddr + "/" + kSocketName; }

 private:
  struct Endpoint {
    std::string traddr;
    std::string nqn;
    std::unique_ptr<UnixListener> listener;
  };

  Reactor& control_;
  VfioUserTransportOptions options_;
  std::vector<Endpoint> endpoints_;
};

}  // namespace smad::tgt
