#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "reactor/reactor.h"
#include "tgt/nvmf/listen_address.h"

namespace smad::tgt {

// nvmf_create_transport options for TCP, with SPDK's defaults.
struct TransportOptions {
  uint32_t max_queue_depth = 128;
  uint32_t max_io_qpairs_per_ctrlr = 127;
  uint32_t in_capsule_data_size = 4096;
  uint32_t max_io_size = 131072;
  uint32_t io_unit_size = 131072;
  uint32_t max_aq_depth = 128;
  bool c2h_success = true;
  uint32_t sock_priority = 0;
  uint32_t abort_timeout_sec = 1;

  // Reads SPDK's nvmf_create_transport parameters (trtype checked by the caller). Unknown keys are
  // refused; SPDK options that do not apply to this target (buffers, zcopy, ...) are accepted and
  // ignored. Errors: InvalidArgument naming the field.
  static absl::StatusOr<TransportOptions> FromJson(const nlohmann::json& params);
  // nvmf_get_transports entry.
  nlohmann::json ToJson() const;
  // nvmf_create_transport params that recreate these options.
  nlohmann::json ToConfigParams() const;
};

// The TCP transport: listening sockets, shared by every subsystem that listens on the same address
// (reference counted). Accepted connections are spread round-robin over the data reactors and handed
// to the connection handler, which runs the NVMe/TCP protocol on that reactor.
//
// Thread safety: control thread only, except the handler, which runs on the chosen data reactor.
class TcpTransport {
 public:
  // Takes ownership of `fd` (non-blocking, connected) on `reactor`.
  using ConnectionHandler = std::function<void(int fd, Reactor& reactor)>;

  TcpTransport(Reactor& control, ReactorSet& reactors, TransportOptions options);
  ~TcpTransport();
  TcpTransport(const TcpTransport&) = delete;
  TcpTransport& operator=(const TcpTransport&) = delete;

  const TransportOptions& options() const { return options_; }
  void SetConnectionHandler(ConnectionHandler handler) { handler_ = std::move(handler); }

  // Starts listening on `address`, or adds a reference to an existing listener. Errors (errno
  // payload): EADDRINUSE, EADDRNOTAVAIL and other bind/listen failures.
  absl::Status Listen(const ListenAddress& address);
  // Drops a reference; the socket closes with the last one.
  void StopListening(const ListenAddress& address);
  size_t listener_count() const { return listeners_.size(); }

 private:
  struct Listener {
    ListenAddress address;
    int fd = -1;
    int refs = 0;
  };
  void Accept(Listener& listener);

  Reactor& control_;
  ReactorSet& reactors_;
  TransportOptions options_;
  ConnectionHandler handler_;
  std::vector<std::unique_ptr<Listener>> listeners_;
  size_t next_reactor_ = 0;
};

}  // namespace smad::tgt
