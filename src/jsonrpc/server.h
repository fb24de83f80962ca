#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "jsonrpc/protocol.h"
#include "reactor/reactor.h"

namespace smad::jsonrpc {

class Connection;
class ResponseSlot;

// The answer slot of one request. Move-only; Reply or Fail exactly once, on the server's reactor. When
// dropped unanswered it answers -32603 "Internal error" so the client never hangs. If the connection
// closed meanwhile (or the server shut down), answering is a no-op. Answers on one connection are written
// in request order: an answer waits until every earlier request of its connection is answered.
// Answering twice, or answering a default-constructed Responder, is a no-op.
// Thread safety: reactor thread only, including destruction of a Responder that is still unanswered.
class Responder {
 public:
  Responder() = default;
  explicit Responder(std::shared_ptr<ResponseSlot> slot);
  Responder(Responder&&) noexcept = default;
  // Answers the overwritten slot with -32603 if it was still unanswered.
  Responder& operator=(Responder&&) noexcept;
  Responder(const Responder&) = delete;
  Responder& operator=(const Responder&) = delete;
  ~Responder();

  void Reply(Json result);
  void Fail(int code, const std::string& message);
  void Fail(const Error& error) { Fail(error.code, error.message); }
  bool answered() const { return slot_ == nullptr; }

 private:
  std::shared_ptr<ResponseSlot> slot_;
};

// A method implementation. Runs on the server's reactor; may keep the Responder and answer later.
// `params` is null when the request had none, otherwise an object or an array; it is only valid during
// the call. A handler that throws gets -32603 (the exception is logged, never propagated).
using Handler = std::function<void(const Json& params, Responder responder)>;

// Method table. Thread compatible: register everything before serving.
class Dispatcher {
 public:
  // Registers (or replaces) the handler of `method`.
  void Register(const std::string& method, Handler handler);
  bool Has(const std::string& method) const { return handlers_.contains(method); }
  std::vector<std::string> Methods() const;  // sorted
  // Runs `method` or answers -32601 "Method not found".
  void Dispatch(const std::string& method, const Json& params, Responder responder) const;
  // Runs `method` in-process (e.g. to replay a saved configuration): `on_answer` receives the whole
  // response object ({"jsonrpc","id":0,"result"|"error"}), possibly later, on the calling reactor.
  void Call(const std::string& method, const Json& params, std::function<void(const Json& response)> on_answer) const;

 private:
  absl::flat_hash_map<std::string, Handler> handlers_;
};

// JSON-RPC server on Unix and TCP stream sockets, driven by one reactor (the control thread).
//
// Per connection: requests may be pipelined and batched; answers are written in request order; a
// malformed byte stream (invalid JSON, a value over max_message_size, nesting deeper than
// kMaxNestingDepth) gets one error answer and then that connection, and only it, is closed. Reading from
// a connection pauses while it has much unsent output or many unanswered requests (backpressure), so a
// peer that never reads costs bounded memory. Connections beyond max_connections are accepted and closed
// at once.
//
// Thread safety: every method, including the destructor, must be called on `reactor`'s thread, or while
// the reactor is not running. `dispatcher` must outlive the server.
class Server {
 public:
  struct Options {
    size_t max_message_size = kDefaultMaxMessageSize;
    size_t max_connections = 4096;
  };

  Server(Reactor& reactor, const Dispatcher& dispatcher, Options options);
  Server(Reactor& reactor, const Dispatcher& dispatcher) : Server(reactor, dispatcher, Options()) {}
  // Shuts down.
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Listens on a Unix socket. A stale socket file (nobody accepting) is replaced; a socket another
  // process is serving gives AlreadyExists; an existing file that is not a socket gives AlreadyExists and
  // is left alone. One Unix socket per server (a second call gives FailedPrecondition). The file is
  // removed by Shutdown(). Other errors carry the errno (see ErrnoStatus).
  absl::Status ListenUnix(const std::string& path);
  // Listens on TCP `host` (a name or numeric address; empty for all addresses) and `port` (0 picks one;
  // see tcp_port()). SO_REUSEADDR is set.
  absl::Status ListenTcp(const std::string& host, uint16_t port);
  // The port of the last successful ListenTcp, 0 before.
  uint16_t tcp_port() const { return tcp_port_; }

  // Closes listeners and every connection and removes the Unix socket file. Answers still pending are
  // dropped (their Responders become no-ops). Idempotent.
  void Shutdown();

  size_t connection_count() const { return connections_.size(); }

 private:
  friend class Connection;
  void Accept(int listen_fd);
  void PauseAccepting();
  void CloseConnection(uint64_t id);

  Reactor& reactor_;
  const Dispatcher& dispatcher_;
  Options options_;
  std::vector<int> listen_fds_;
  std::string unix_path_;
  uint16_t tcp_port_ = 0;
  uint64_t next_connection_id_ = 1;
  uint64_t accept_retry_timer_ = 0;  // set while accepting is paused after EMFILE/ENFILE
  absl::flat_hash_map<uint64_t, std::shared_ptr<Connection>> connections_;
};

}  // namespace smad::jsonrpc
