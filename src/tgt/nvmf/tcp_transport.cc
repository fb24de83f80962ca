#include "tgt/nvmf/tcp_transport.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

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

}  // namespace

absl::StatusOr<TransportOptions> TransportOptions::FromJson(const Json& params) {
  TransportOptions o;
  static const char* kIgnored[] = {"num_shared_buffers", "buf_cache_size", "dif_insert_or_strip",
                                   "zcopy", "ack_timeout", "data_wr_pool_size", "control_msg_num",
                                   "disable_command_passthru", "kas", "min_kato", "iobuf_small_cache_size",
                                   "iobuf_large_cache_size", "num_cqe", "max_srq_depth", "no_srq",
                                   "acceptor_poll_rate"};
  static const char* kKnown[] = {"trtype", "max_queue_depth", "max_io_qpairs_per_ctrlr", "max_qpairs_per_ctrlr",
                                 "in_capsule_data_size", "max_io_size", "io_unit_size", "max_aq_depth",
                                 "c2h_success", "sock_priority", "abort_timeout_sec", "tgt_name"};
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
  RETURN_IF_ERROR(ReadU32(params, "sock_priority", o.sock_priority));
  RETURN_IF_ERROR(ReadU32(params, "abort_timeout_sec", o.abort_timeout_sec));
  if (params.contains("c2h_success")) {
    if (!params["c2h_success"].is_boolean()) return absl::InvalidArgumentError("c2h_success must be a boolean");
    o.c2h_success = params["c2h_success"].get<bool>();
  }
  if (o.max_queue_depth < 2 || o.max_queue_depth > 65536) {
    return absl::InvalidArgumentError("max_queue_depth must be in [2, 65536]");
  }
  if (o.max_aq_depth < 2 || o.max_aq_depth > 4096) return absl::InvalidArgumentError("max_aq_depth must be in [2, 4096]");
  if (o.max_io_size < 4096 || o.max_io_size > (16u << 20)) {
    return absl::InvalidArgumentError("max_io_size must be in [4096, 16 MiB]");
  }
  if (o.in_capsule_data_size > o.max_io_size || o.in_capsule_data_size % 16 != 0) {
    return absl::InvalidArgumentError("in_capsule_data_size must be a multiple of 16 not above max_io_size");
  }
  if (o.io_unit_size == 0) return absl::InvalidArgumentError("io_unit_size must be positive");
  if (o.max_io_qpairs_per_ctrlr == 0 || o.max_io_qpairs_per_ctrlr > 65535) {
    return absl::InvalidArgumentError("max_io_qpairs_per_ctrlr must be in [1, 65535]");
  }
  return o;
}

Json TransportOptions::ToJson() const {
  // What nvmf_get_transports shows: the configurable options plus SPDK's fixed fields.
  Json j = ToConfigParams();
  j.update(Json{{"iobuf_small_cache_size", 4294967295u},
                {"iobuf_large_cache_size", 4294967295u},
                {"dif_insert_or_strip", false},
                {"zcopy", false},
                {"ack_timeout", 0},
                {"data_wr_pool_size", 0},
                {"disable_command_passthru", false},
                {"kas", 100},
                {"min_kato", 10000}});
  return j;
}

Json TransportOptions::ToConfigParams() const {
  return Json{{"trtype", "TCP"},
              {"max_queue_depth", max_queue_depth},
              {"max_io_qpairs_per_ctrlr", max_io_qpairs_per_ctrlr},
              {"in_capsule_data_size", in_capsule_data_size},
              {"max_io_size", max_io_size},
              {"io_unit_size", io_unit_size},
              {"max_aq_depth", max_aq_depth},
              {"c2h_success", c2h_success},
              {"sock_priority", sock_priority},
              {"abort_timeout_sec", abort_timeout_sec}};
}

TcpTransport::TcpTransport(Reactor& control, ReactorSet& reactors, TransportOptions options)
    : control_(control), reactors_(reactors), options_(options) {}

TcpTransport::~TcpTransport() {
  for (auto& l : listeners_) {
    control_.UnwatchFd(l->fd);
    close(l->fd);
  }
}

absl::Status TcpTransport::Listen(const ListenAddress& address) {
  for (auto& l : listeners_) {
    if (l->address == address) {
      ++l->refs;
      return absl::OkStatus();
    }
  }
  bool v6 = address.adrfam == "IPv6";
  sockaddr_storage storage{};
  socklen_t len;
  if (v6) {
    auto* sa = reinterpret_cast<sockaddr_in6*>(&storage);
    sa->sin6_family = AF_INET6;
    sa->sin6_port = htons(address.port());
    inet_pton(AF_INET6, address.traddr.c_str(), &sa->sin6_addr);
    len = sizeof(*sa);
  } else {
    auto* sa = reinterpret_cast<sockaddr_in*>(&storage);
    sa->sin_family = AF_INET;
    sa->sin_port = htons(address.port());
    inet_pton(AF_INET, address.traddr.c_str(), &sa->sin_addr);
    len = sizeof(*sa);
  }
  int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return ErrnoStatus(errno);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (v6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
  if (bind(fd, reinterpret_cast<sockaddr*>(&storage), len) != 0 || listen(fd, 512) != 0) {
    int err = errno;
    close(fd);
    return ErrnoStatus(err, "cannot listen on " + address.ToString() + ": " + ErrnoString(err));
  }
  auto listener = std::make_unique<Listener>();
  listener->address = address;
  listener->fd = fd;
  listener->refs = 1;
  Listener* raw = listener.get();
  absl::Status watched = control_.WatchFd(fd, EPOLLIN, [this, raw](uint32_t) { Accept(*raw); });
  if (!watched.ok()) {
    close(fd);
    return watched;
  }
  listeners_.push_back(std::move(listener));
  spdlog::info("NVMe/TCP target listening on {}", address.ToString());
  return absl::OkStatus();
}

void TcpTransport::StopListening(const ListenAddress& address) {
  for (auto it = listeners_.begin(); it != listeners_.end(); ++it) {
    if ((*it)->address == address) {
      if (--(*it)->refs > 0) return;
      control_.UnwatchFd((*it)->fd);
      close((*it)->fd);
      spdlog::info("NVMe/TCP target stopped listening on {}", address.ToString());
      listeners_.erase(it);
      return;
    }
  }
}

void TcpTransport::Accept(Listener& listener) {
  for (int i = 0; i < 64; ++i) {
    int fd = accept4(listener.fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno != EAGAIN && errno != EINTR) {
        spdlog::warn("accept on {} failed: {}", listener.address.ToString(), ErrnoString(errno));
      }
      return;
    }
    if (!handler_) {
      // No NVMe/TCP protocol engine is installed in this build: refuse the connection.
      close(fd);
      continue;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    Reactor& reactor = reactors_.reactor(next_reactor_++ % reactors_.size());
    reactor.Post([handler = handler_, fd, &reactor] { handler(fd, reactor); });
  }
}

}  // namespace smad::tgt
