#include "jsonrpc/server.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <deque>
#include <exception>
#include <utility>

#include "common/status.h"
#include "spdlog/spdlog.h"

namespace smad::jsonrpc {
namespace {

constexpr size_t kReadChunk = 64 * 1024;
// Bytes read per readiness event before yielding to other connections (level triggered: the rest is
// read on the next loop iteration).
constexpr size_t kReadBudget = 1024 * 1024;
// Backpressure: stop reading once this much output is unsent, resume below the low-water mark.
constexpr size_t kOutputHighWater = 1024 * 1024;
constexpr size_t kOutputLowWater = 256 * 1024;
// Backpressure: stop reading while this many requests (or batches) wait for their answers.
constexpr size_t kMaxInFlight = 1024;
// Written output is dropped from the front of the buffer once this much of it accumulates.
constexpr size_t kOutputCompactThreshold = 1024 * 1024;
// How long a connection that got a fatal error may take to flush its answers before it is cut.
constexpr uint64_t kLingerNs = 5'000'000'000ull;
// After EMFILE/ENFILE, accepting pauses this long (the listener would otherwise stay readable).
constexpr uint64_t kAcceptRetryNs = 100'000'000ull;
constexpr int kAcceptBatch = 64;

}  // namespace

// One request, or one batch, whose answers are written together once all are in. Lives in the
// connection's queue and in the slots of its requests.
struct ResponseEntry {
  bool is_batch = false;
  std::vector<Json> answers;  // one per request that expects an answer, in request order
  size_t remaining = 0;       // answers still missing
};

// The connection side of a Responder: where the answer of one request goes.
class ResponseSlot {
 public:
  // `entry` is null for a notification, whose answer is dropped.
  ResponseSlot(std::weak_ptr<Connection> connection, std::shared_ptr<ResponseEntry> entry, size_t index,
               Json id)
      : connection_(std::move(connection)), entry_(std::move(entry)), index_(index), id_(std::move(id)) {}
  // An in-process call: the response object goes to `callback` instead of a connection.
  explicit ResponseSlot(std::function<void(const Json&)> callback) : index_(0), id_(0), callback_(std::move(callback)) {}

  const Json& id() const { return id_; }
  bool notification() const { return entry_ == nullptr && !callback_; }
  // Records `response`; writes the completed head entries of the connection. No-op once it closed.
  void Answer(Json response);

 private:
  std::weak_ptr<Connection> connection_;
  std::shared_ptr<ResponseEntry> entry_;
  size_t index_;
  Json id_;
  std::function<void(const Json&)> callback_;
};

// One accepted socket. Owned by Server::connections_; callbacks reach it through weak pointers, and
// every entry point holds a strong reference while it runs, since Close() removes it from the server.
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(Server& server, uint64_t id, int fd)
      : server_(&server),
        reactor_(server.reactor_),
        id_(id),
        fd_(fd),
        framer_(server.options_.max_message_size) {}
  ~Connection() {
    if (fd_ >= 0) ::close(fd_);
  }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  absl::Status Start() {
    std::weak_ptr<Connection> weak = weak_from_this();
    events_ = EPOLLIN;
    return reactor_.WatchFd(fd_, events_, [weak](uint32_t events) {
      if (auto self = weak.lock()) self->OnEvents(events);
    });
  }

  bool closed() const { return closed_; }

  // Stops watching and closes the socket; pending answers are dropped. The caller must hold a strong
  // reference (the server's is released here).
  void Close() {
    if (closed_) return;
    closed_ = true;
    if (linger_timer_ != 0) reactor_.CancelTimer(linger_timer_);
    linger_timer_ = 0;
    reactor_.UnwatchFd(fd_);
    ::close(fd_);
    fd_ = -1;
    pending_.clear();
    std::string().swap(out_);
    out_pos_ = 0;
    Server* server = server_;
    server_ = nullptr;
    server->CloseConnection(id_);
  }

  // Called by a slot when `entry` got its last answer.
  void OnEntryComplete() {
    while (!pending_.empty() && pending_.front()->remaining == 0) {
      ResponseEntry& entry = *pending_.front();
      if (entry.is_batch) {
        out_ += Serialize(Json(std::move(entry.answers)));
      } else {
        out_ += Serialize(entry.answers.front());
      }
      pending_.pop_front();
    }
    ScheduleFlush();
  }

 private:
  size_t unsent() const { return out_.size() - out_pos_; }

  // Whether framed input may be dispatched now (false under backpressure or once closing).
  bool CanProcess() {
    size_t unsent_bytes = unsent();
    if (unsent_bytes >= kOutputHighWater) {
      output_paused_ = true;
    } else if (unsent_bytes <= kOutputLowWater) {
      output_paused_ = false;
    }
    return !closed_ && !closing_ && !output_paused_ && pending_.size() < kMaxInFlight;
  }
  bool ReadAllowed() { return !read_eof_ && CanProcess(); }

  void OnEvents(uint32_t events) {
    auto self = shared_from_this();
    if (closed_) return;
    if (events & EPOLLERR) {
      Close();
      return;
    }
    if (events & EPOLLOUT) {
      Flush();
      if (closed_) return;
    }
    if (events & EPOLLHUP) {
      // The peer is gone in both directions: run what it sent (answers cannot be delivered), then close.
      if (ReadAllowed()) ReadInput(/*until_eof=*/true);
      Close();
      return;
    }
    if (events & EPOLLIN) ReadInput(/*until_eof=*/false);
    AfterStateChange();
  }

  void ReadInput(bool until_eof) {
    static thread_local std::array<char, kReadChunk> buffer;
    size_t budget = kReadBudget;
    while (ReadAllowed() && (until_eof || budget > 0)) {
      ssize_t n = ::recv(fd_, buffer.data(), buffer.size(), 0);
      if (n > 0) {
        budget -= std::min(budget, static_cast<size_t>(n));
        framer_.Append(buffer.data(), static_cast<size_t>(n));
        ProcessInput();
        continue;
      }
      if (n == 0) {
        read_eof_ = true;
        break;
      }
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      spdlog::debug("jsonrpc connection {}: read failed: {}", id_, ErrnoString(errno));
      Close();
      return;
    }
  }

  // Dispatches the complete values buffered in the framer, as far as backpressure allows.
  void ProcessInput() {
    while (CanProcess()) {
      auto next = framer_.Next();
      if (!next.ok()) {
        spdlog::warn("jsonrpc connection {}: closing: {}", id_, StatusMessage(next.status()));
        if (next.status().code() == absl::StatusCode::kResourceExhausted) {
          FailConnection(MakeError(nullptr, kInvalidRequest, "Request too large"));
        } else {
          FailConnection(MakeError(nullptr, kParseError, "Parse error"));
        }
        return;
      }
      if (!next->has_value()) return;
      HandleText(**next);
    }
  }

  void HandleText(const std::string& text) {
    Decoded decoded = DecodeRequestText(text);
    if (decoded.parse_error) {
      spdlog::warn("jsonrpc connection {}: closing: request is not valid JSON", id_);
      FailConnection(std::move(*decoded.items.front().error_response));
      return;
    }
    size_t expected = 0;
    for (const Decoded::Item& item : decoded.items) {
      if (item.error_response || item.request->has_id) ++expected;
    }
    std::shared_ptr<ResponseEntry> entry;
    if (expected > 0) {
      entry = std::make_shared<ResponseEntry>();
      entry->is_batch = decoded.is_batch;
      entry->answers.resize(expected);
      entry->remaining = expected;
      pending_.push_back(entry);
    }
    std::weak_ptr<Connection> weak = weak_from_this();
    size_t index = 0;
    for (Decoded::Item& item : decoded.items) {
      if (closed_) return;  // a handler shut the server down
      if (item.error_response) {
        ResponseSlot(weak, entry, index++, Json()).Answer(std::move(*item.error_response));
        continue;
      }
      Request& request = *item.request;
      auto slot = request.has_id ? std::make_shared<ResponseSlot>(weak, entry, index++, request.id)
                                 : std::make_shared<ResponseSlot>(weak, nullptr, 0, Json());
      server_->dispatcher_.Dispatch(request.method, request.params, Responder(std::move(slot)));
    }
  }

  // Answers `error_response` after every earlier answer, then closes: the stream cannot be trusted.
  void FailConnection(Json error_response) {
    closing_ = true;
    auto entry = std::make_shared<ResponseEntry>();
    entry->answers.push_back(std::move(error_response));
    pending_.push_back(std::move(entry));
    OnEntryComplete();
    std::weak_ptr<Connection> weak = weak_from_this();
    linger_timer_ = reactor_.RunAfter(kLingerNs, [weak] {
      if (auto self = weak.lock()) {
        self->linger_timer_ = 0;
        self->Close();
      }
    });
  }

  void ScheduleFlush() {
    if (flush_scheduled_) return;
    flush_scheduled_ = true;
    std::weak_ptr<Connection> weak = weak_from_this();
    // Deferred so that answers produced in one loop iteration go out in one send().
    reactor_.Defer([weak] {
      auto self = weak.lock();
      if (!self || self->closed_) return;
      self->flush_scheduled_ = false;
      self->Flush();
      self->AfterStateChange();
    });
  }

  void ScheduleProcess() {
    if (process_scheduled_) return;
    process_scheduled_ = true;
    std::weak_ptr<Connection> weak = weak_from_this();
    reactor_.Defer([weak] {
      auto self = weak.lock();
      if (!self || self->closed_) return;
      self->process_scheduled_ = false;
      self->ProcessInput();
      self->AfterStateChange();
    });
  }

  void Flush() {
    while (unsent() > 0) {
      ssize_t n = ::send(fd_, out_.data() + out_pos_, unsent(), MSG_NOSIGNAL);
      if (n > 0) {
        out_pos_ += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      spdlog::debug("jsonrpc connection {}: write failed: {}", id_, ErrnoString(errno));
      Close();
      return;
    }
    if (out_pos_ == out_.size()) {
      if (out_.capacity() > kOutputCompactThreshold) {
        std::string().swap(out_);
      } else {
        out_.clear();
      }
      out_pos_ = 0;
    } else if (out_pos_ >= kOutputCompactThreshold && out_pos_ >= out_.size() / 2) {
      out_.erase(0, out_pos_);
      out_pos_ = 0;
    }
  }

  // Closes a connection that has nothing left to do, else updates its epoll interest.
  void AfterStateChange() {
    MaybeFinish();
    if (!closed_) UpdateInterest();
  }

  void MaybeFinish() {
    if (closed_ || (!closing_ && !read_eof_)) return;
    if (!closing_) {
      // The peer stopped sending: run what is still buffered, then close once everything is answered.
      if (!CanProcess()) return;
      ProcessInput();
      if (closed_) return;
      if (!closing_ && !CanProcess()) return;
    }
    if (pending_.empty() && unsent() == 0) Close();
  }

  void UpdateInterest() {
    bool can_process = CanProcess();
    uint32_t events = 0;
    if (can_process && !read_eof_) events |= EPOLLIN;
    if (unsent() > 0) events |= EPOLLOUT;
    if (events != events_) {
      absl::Status status = reactor_.ModifyFd(fd_, events);
      if (!status.ok()) {
        spdlog::error("jsonrpc connection {}: {}", id_, StatusMessage(status));
        Close();
        return;
      }
      events_ = events;
    }
    // Backpressure released: values may already sit in the framer, with no readiness event to come.
    if (can_process && !could_process_) ScheduleProcess();
    could_process_ = can_process;
  }

  Server* server_;  // null once closed
  Reactor& reactor_;
  const uint64_t id_;
  int fd_;
  StreamFramer framer_;
  std::deque<std::shared_ptr<ResponseEntry>> pending_;  // in request order
  std::string out_;
  size_t out_pos_ = 0;  // bytes of out_ already sent
  uint32_t events_ = 0;
  uint64_t linger_timer_ = 0;
  bool closed_ = false;
  bool closing_ = false;   // a fatal error was answered; close once it is flushed
  bool read_eof_ = false;  // the peer shut down its sending side
  bool output_paused_ = false;
  bool could_process_ = true;
  bool flush_scheduled_ = false;
  bool process_scheduled_ = false;
};

void ResponseSlot::Answer(Json response) {
  if (callback_) {
    auto callback = std::move(callback_);
    callback_ = nullptr;
    callback(response);
    return;
  }
  if (entry_ == nullptr) return;
  auto connection = connection_.lock();
  if (!connection || connection->closed()) return;
  if (entry_->remaining == 0) return;  // defensive: answered twice
  entry_->answers[index_] = std::move(response);
  if (--entry_->remaining == 0) connection->OnEntryComplete();
}

// --- Responder ---------------------------------------------------------------------------------------

Responder::Responder(std::shared_ptr<ResponseSlot> slot) : slot_(std::move(slot)) {}

Responder& Responder::operator=(Responder&& other) noexcept {
  if (this != &other) {
    if (slot_ != nullptr) Fail(kInternalError, "Internal error");
    slot_ = std::move(other.slot_);
  }
  return *this;
}

Responder::~Responder() {
  if (slot_ != nullptr) {
    if (!slot_->notification()) spdlog::debug("jsonrpc: request dropped without an answer");
    Fail(kInternalError, "Internal error");
  }
}

void Responder::Reply(Json result) {
  if (slot_ == nullptr) return;
  std::shared_ptr<ResponseSlot> slot = std::move(slot_);
  slot_ = nullptr;
  if (slot->notification()) return;
  slot->Answer(MakeResult(slot->id(), std::move(result)));
}

void Responder::Fail(int code, const std::string& message) {
  if (slot_ == nullptr) return;
  std::shared_ptr<ResponseSlot> slot = std::move(slot_);
  slot_ = nullptr;
  if (slot->notification()) return;
  slot->Answer(MakeError(slot->id(), code, message));
}

// --- Dispatcher --------------------------------------------------------------------------------------

void Dispatcher::Call(const std::string& method, const Json& params,
                      std::function<void(const Json& response)> on_answer) const {
  Dispatch(method, params, Responder(std::make_shared<ResponseSlot>(std::move(on_answer))));
}

void Dispatcher::Register(const std::string& method, Handler handler) {
  handlers_.insert_or_assign(method, std::move(handler));
}

std::vector<std::string> Dispatcher::Methods() const {
  std::vector<std::string> methods;
  methods.reserve(handlers_.size());
  for (const auto& [name, handler] : handlers_) methods.push_back(name);
  std::sort(methods.begin(), methods.end());
  return methods;
}

void Dispatcher::Dispatch(const std::string& method, const Json& params, Responder responder) const {
  auto it = handlers_.find(method);
  if (it == handlers_.end()) {
    responder.Fail(kMethodNotFound, "Method not found");
    return;
  }
  try {
    it->second(params, std::move(responder));
  } catch (const std::exception& e) {
    // The responder went out of scope during unwinding, which answered -32603.
    spdlog::error("jsonrpc: method {} threw: {}", method, e.what());
  } catch (...) {
    spdlog::error("jsonrpc: method {} threw a non-standard exception", method);
  }
}

// --- Server ------------------------------------------------------------------------------------------

Server::Server(Reactor& reactor, const Dispatcher& dispatcher, Options options)
    : reactor_(reactor), dispatcher_(dispatcher), options_(options) {}

Server::~Server() { Shutdown(); }

namespace {

// Probes an existing socket file. OK when nobody accepts on it (the file was removed); AlreadyExists
// when a process serves it.
absl::Status RemoveStaleSocket(const std::string& path, const sockaddr_un& addr) {
  int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (probe < 0) return ErrnoStatus(errno, "socket(AF_UNIX) failed: " + ErrnoString(errno));
  int rc = ::connect(probe, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
  int err = rc == 0 ? 0 : errno;
  ::close(probe);
  if (rc == 0 || err == EAGAIN || err == EINPROGRESS) {
    return absl::AlreadyExistsError("socket " + path + " is in use by another process");
  }
  if (err == ENOENT) return absl::OkStatus();  // removed meanwhile
  if (err != ECONNREFUSED) {
    return ErrnoStatus(err, "cannot probe existing socket " + path + ": " + ErrnoString(err));
  }
  spdlog::info("jsonrpc: removing stale socket {}", path);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return ErrnoStatus(errno, "cannot remove stale socket " + path + ": " + ErrnoString(errno));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status Server::ListenUnix(const std::string& path) {
  if (!unix_path_.empty()) {
    return absl::FailedPreconditionError("already listening on unix socket " + unix_path_);
  }
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError("invalid unix socket path '" + path + "' (empty or too long)");
  }
  std::memcpy(addr.sun_path, path.data(), path.size());

  struct stat st;
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return absl::AlreadyExistsError(path + " exists and is not a socket; not replacing it");
    }
    RETURN_IF_ERROR(RemoveStaleSocket(path, addr));
  } else if (errno != ENOENT) {
    return ErrnoStatus(errno, "cannot stat " + path + ": " + ErrnoString(errno));
  }

  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return ErrnoStatus(errno, "socket(AF_UNIX) failed: " + ErrnoString(errno));
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    int err = errno;
    ::close(fd);
    return ErrnoStatus(err, "cannot bind " + path + ": " + ErrnoString(err));
  }
  absl::Status status;
  if (::listen(fd, SOMAXCONN) != 0) {
    status = ErrnoStatus(errno, "cannot listen on " + path + ": " + ErrnoString(errno));
  } else {
    status = reactor_.WatchFd(fd, EPOLLIN, [this, fd](uint32_t) { Accept(fd); });
  }
  if (!status.ok()) {
    ::close(fd);
    ::unlink(path.c_str());
    return status;
  }
  listen_fds_.push_back(fd);
  unix_path_ = path;
  spdlog::info("jsonrpc: listening on {}", path);
  return absl::OkStatus();
}

absl::Status Server::ListenTcp(const std::string& host, uint16_t port) {
  std::string name = host;
  if (name.size() >= 2 && name.front() == '[' && name.back() == ']') name = name.substr(1, name.size() - 2);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* results = nullptr;
  std::string service = std::to_string(port);
  int rc = ::getaddrinfo(name.empty() ? nullptr : name.c_str(), service.c_str(), &hints, &results);
  if (rc != 0) {
    return absl::InvalidArgumentError("cannot resolve '" + host + "': " + ::gai_strerror(rc));
  }
  int fd = -1;
  absl::Status status = absl::UnavailableError("no address to listen on for '" + host + "'");
  for (addrinfo* ai = results; ai != nullptr && fd < 0; ai = ai->ai_next) {
    int candidate = ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (candidate < 0) {
      status = ErrnoStatus(errno, "socket() failed: " + ErrnoString(errno));
      continue;
    }
    int one = 1;
    ::setsockopt(candidate, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(candidate, ai->ai_addr, ai->ai_addrlen) != 0 || ::listen(candidate, SOMAXCONN) != 0) {
      int err = errno;
      status = ErrnoStatus(err, "cannot listen on " + host + ":" + service + ": " + ErrnoString(err));
      ::close(candidate);
      continue;
    }
    fd = candidate;
  }
  ::freeaddrinfo(results);
  if (fd < 0) return status;

  sockaddr_storage bound{};
  socklen_t len = sizeof(bound);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len) != 0) {
    int err = errno;
    ::close(fd);
    return ErrnoStatus(err, "getsockname failed: " + ErrnoString(err));
  }
  uint16_t bound_port = bound.ss_family == AF_INET6
                            ? ntohs(reinterpret_cast<const sockaddr_in6*>(&bound)->sin6_port)
                            : ntohs(reinterpret_cast<const sockaddr_in*>(&bound)->sin_port);
  status = reactor_.WatchFd(fd, EPOLLIN, [this, fd](uint32_t) { Accept(fd); });
  if (!status.ok()) {
    ::close(fd);
    return status;
  }
  listen_fds_.push_back(fd);
  tcp_port_ = bound_port;
  spdlog::info("jsonrpc: listening on {}:{}", host, bound_port);
  return absl::OkStatus();
}

void Server::Accept(int listen_fd) {
  for (int i = 0; i < kAcceptBatch; ++i) {
    int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      int err = errno;
      if (err == EINTR || err == ECONNABORTED || err == EPROTO) continue;
      if (err == EAGAIN || err == EWOULDBLOCK) return;
      spdlog::warn("jsonrpc: accept failed: {}", ErrnoString(err));
      if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) PauseAccepting();
      return;
    }
    if (connections_.size() >= options_.max_connections) {
      spdlog::warn("jsonrpc: refusing connection: {} connections already open", connections_.size());
      ::close(fd);
      continue;
    }
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));  // fails harmlessly on Unix sockets
    uint64_t id = next_connection_id_++;
    auto connection = std::make_shared<Connection>(*this, id, fd);
    absl::Status status = connection->Start();
    if (!status.ok()) {
      spdlog::error("jsonrpc: cannot watch connection: {}", StatusMessage(status));
      continue;  // the connection's destructor closes fd
    }
    connections_.emplace(id, std::move(connection));
  }
}

void Server::PauseAccepting() {
  if (accept_retry_timer_ != 0) return;
  for (int fd : listen_fds_) reactor_.ModifyFd(fd, 0).IgnoreError();
  accept_retry_timer_ = reactor_.RunAfter(kAcceptRetryNs, [this] {
    accept_retry_timer_ = 0;
    for (int fd : listen_fds_) reactor_.ModifyFd(fd, EPOLLIN).IgnoreError();
  });
}

void Server::CloseConnection(uint64_t id) { connections_.erase(id); }

void Server::Shutdown() {
  if (accept_retry_timer_ != 0) reactor_.CancelTimer(accept_retry_timer_);
  accept_retry_timer_ = 0;
  for (int fd : listen_fds_) {
    reactor_.UnwatchFd(fd);
    ::close(fd);
  }
  listen_fds_.clear();
  if (!unix_path_.empty()) {
    ::unlink(unix_path_.c_str());
    unix_path_.clear();
  }
  auto connections = std::move(connections_);
  connections_.clear();
  for (auto& [id, connection] : connections) connection->Close();
}

}  // namespace smad::jsonrpc
