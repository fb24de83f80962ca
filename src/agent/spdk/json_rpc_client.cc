#include "agent/spdk/json_rpc_client.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "agent/spdk/rpc_wire.h"
#include "common/status.h"
#include "spdlog/spdlog.h"

namespace smad::agent {
namespace {

// Bounds one background connect attempt (and so how long the destructor may wait for one).
constexpr std::chrono::seconds kBackgroundConnectTimeout(1);
constexpr size_t kReadChunk = 64 * 1024;
// Bytes read per wake-up before the I/O thread goes back to poll (so writes are not starved).
constexpr size_t kMaxReadPerWakeup = 1024 * 1024;

class StreamClient final : public SpdkClient {
 public:
  StreamClient(SpdkAddress address, JsonRpcClientOptions options, UniqueFd wake_fd);
  // Fails calls still waiting with Unavailable, closes the connection and joins the I/O thread (which
  // may take up to kBackgroundConnectTimeout when a TCP connect is in progress). No Call may start
  // once destruction began. on_connection_change is not called for this last close.
  ~StreamClient() override;
  StreamClient(const StreamClient&) = delete;
  StreamClient& operator=(const StreamClient&) = delete;

  absl::StatusOr<Json> Call(absl::string_view method, const Json& params,
                            std::chrono::milliseconds timeout) override;
  uint64_t connection_epoch() const override { return epoch_.load(std::memory_order_acquire); }

 private:
  // A caller blocked in Call, registered in waiters_ under its request id while its request is on the
  // connection. Every member is guarded by mu_.
  struct Waiter {
    std::string method;
    absl::CondVar done;
    std::optional<absl::StatusOr<Json>> outcome;
  };

  // Caller side.
  absl::Status WaitForConnectionAndSlot(absl::string_view method, Deadline deadline)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SendLocked(std::string request) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Waits for `waiter`'s answer until `deadline`, reading the socket itself while nobody else does.
  // False on timeout.
  bool AwaitAnswer(Waiter& waiter, Deadline deadline) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Gives the reader role to a waiting caller when nobody holds it.
  void HandOffReadingLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Wake();

  // I/O thread.
  void Run();
  void ConnectOrWait();
  void ServeConnection();
  // Takes the reader role (waiting for a caller holding it to finish) and returns with it.
  void TakeReadingLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Holder of the reader role only, without mu_: reads what the socket has and delivers the answers.
  // A non-OK status means the connection is over.
  absl::Status ReadAnswers();
  absl::Status DeliverLocked(SpdkAnswer answer) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status FlushLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Disconnect(const absl::Status& reason);
  void FailWaitersLocked(const absl::Status& reason) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ScheduleReconnectLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Waits until Wake() or `until`.
  void WaitForWake(Deadline until);
  void DrainWake();
  void Notify(bool up, uint64_t epoch);

  const SpdkAddress address_;
  const std::string target_;  // for messages: address_ without the password
  const JsonRpcClientOptions options_;
  const UniqueFd wake_fd_;  // eventfd: callers wake the I/O thread out of poll
  std::atomic<int64_t> next_id_{1};
  std::atomic<uint64_t> epoch_{0};  // written under mu_

  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // The connection (owned by conn_ on the I/O thread), -1 while disconnected. Only the I/O thread
  // changes it, so it may read it without the lock.
  int fd_ ABSL_GUARDED_BY(mu_) = -1;
  absl::flat_hash_map<int64_t, Waiter*> waiters_ ABSL_GUARDED_BY(mu_);
  absl::CondVar slot_freed_;
  // Request bytes the socket did not accept yet; the I/O thread writes them when it becomes writable.
  std::string out_ ABSL_GUARDED_BY(mu_);
  size_t out_offset_ ABSL_GUARDED_BY(mu_) = 0;
  // Request bytes given to the connection, and written to the socket, since it was established.
  uint64_t queued_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t written_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  // A caller's send or read failed: the connection is broken and the I/O thread drops it.
  absl::Status send_error_ ABSL_GUARDED_BY(mu_);
  // Someone (a caller, or the I/O thread on hang-up) is reading the socket; the fd stays open meanwhile.
  bool reading_ ABSL_GUARDED_BY(mu_) = false;
  absl::CondVar reading_done_;
  // Connection attempts: callers ask for one at once; otherwise the I/O thread retries at next_connect_.
  bool connect_requested_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t connect_attempts_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status last_connect_error_ ABSL_GUARDED_BY(mu_);
  absl::CondVar connect_done_;
  Deadline next_connect_ ABSL_GUARDED_BY(mu_);
  Clock::duration backoff_ ABSL_GUARDED_BY(mu_);

  // I/O thread only.
  UniqueFd conn_;
  bool connect_failure_logged_ = false;
  // The holder of the reader role only (the I/O thread resets them while disconnected, when nobody
  // can hold it).
  AnswerStream answers_;
  std::vector<char> read_buffer_;

  std::thread thread_;  // last: starts once everything above is initialised
};

StreamClient::StreamClient(SpdkAddress address, JsonRpcClientOptions options, UniqueFd wake_fd)
    : address_(std::move(address)),
      target_(address_.Redacted()),
      options_(std::move(options)),
      wake_fd_(std::move(wake_fd)),
      next_connect_(Clock::now()),
      backoff_(options_.reconnect_min),
      answers_(options_.max_response_size),
      read_buffer_(kReadChunk),
      thread_([this] { Run(); }) {}

StreamClient::~StreamClient() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    FailWaitersLocked(absl::UnavailableError("the client is shutting down"));
    connect_done_.SignalAll();
  }
  Wake();
  thread_.join();
}

absl::StatusOr<Json> StreamClient::Call(absl::string_view method, const Json& params,
                                        std::chrono::milliseconds timeout) {
  if (!params.is_null() && !params.is_object() && !params.is_array()) {
    return absl::InvalidArgumentError(
        absl::StrCat(method, ": params must be null, an object or an array, not ", params.type_name()));
  }
  const Clock::time_point start = Clock::now();
  const Deadline deadline = start + timeout;
  const int64_t id = next_id_.fetch_add(1, std::memory_order_relaxed);
  std::string request = EncodeRequest(id, method, params);

  Waiter waiter{std::string(method), {}, std::nullopt};
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(WaitForConnectionAndSlot(method, deadline));
  waiters_.emplace(id, &waiter);
  spdlog::debug("spdk rpc {}: -> id {} {} ({} bytes)", target_, id, waiter.method, request.size());
  SendLocked(std::move(request));
  const uint64_t request_end = queued_bytes_;
  while (!waiter.outcome.has_value()) {
    if (!AwaitAnswer(waiter, deadline)) {
      waiters_.erase(id);  // a late answer will find no waiter and be dropped
      slot_freed_.SignalAll();
      HandOffReadingLocked();
      if (written_bytes_ < request_end && send_error_.ok()) {
        // The target did not even read the request: a partly written request cannot be withdrawn, and
        // keeping the connection would let unsent bytes pile up. Start afresh.
        send_error_ = absl::UnavailableError(
            absl::StrCat("connection to ", target_, " reset: the target did not read a request in time"));
        Wake();
      }
      spdlog::debug("spdk rpc {}: id {} {} timed out", target_, id, waiter.method);
      return absl::DeadlineExceededError(
          absl::StrCat(method, ": no answer from ", target_, " within ", timeout.count(), " ms"));
    }
  }
  HandOffReadingLocked();
  const auto elapsed = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start);
  spdlog::debug("spdk rpc {}: <- id {} {}: {} in {} us", target_, id, waiter.method,
                waiter.outcome->ok() ? "ok" : absl::StatusCodeToString(waiter.outcome->status().code()),
                elapsed.count());
  return *std::move(waiter.outcome);
}

absl::Status StreamClient::WaitForConnectionAndSlot(absl::string_view method, Deadline deadline) {
  bool connect_tried = false;
  while (true) {
    if (stopping_) return absl::UnavailableError(absl::StrCat(method, ": the client is shutting down"));
    if (fd_ < 0) {
      if (connect_tried) {
        return absl::UnavailableError(
            absl::StrCat(method, ": not connected to ", target_, ": ",
                         last_connect_error_.ok() ? "connection lost" : last_connect_error_.message()));
      }
      // One immediate attempt by the I/O thread, whatever the backoff says.
      connect_tried = true;
      const uint64_t attempts = connect_attempts_;
      connect_requested_ = true;
      Wake();
      while (fd_ < 0 && connect_attempts_ == attempts && !stopping_) {
        if (!WaitWithDeadline(connect_done_, mu_, deadline)) {
          return absl::UnavailableError(absl::StrCat(method, ": could not connect to ", target_, " in time"));
        }
      }
      continue;
    }
    if (waiters_.size() < options_.max_in_flight) return absl::OkStatus();
    if (!WaitWithDeadline(slot_freed_, mu_, deadline)) {
      return absl::DeadlineExceededError(absl::StrCat(method, ": not sent: ", options_.max_in_flight,
                                                      " calls to ", target_, " in flight until the timeout"));
    }
  }
}

void StreamClient::SendLocked(std::string request) {
  if (!send_error_.ok()) return;  // the I/O thread is about to drop the connection and fail the waiter
  if (out_offset_ < out_.size()) {
    queued_bytes_ += request.size();
    out_.append(request);  // behind earlier bytes; the I/O thread is already waiting for POLLOUT
    return;
  }
  out_.clear();
  out_offset_ = 0;
  queued_bytes_ += request.size();
  size_t sent = 0;
  while (sent < request.size()) {
    ssize_t n = ::send(fd_, request.data() + sent, request.size() - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      break;
    } else {
      send_error_ = absl::UnavailableError(
          absl::StrCat("connection to ", target_, " lost: send: ", ErrnoString(errno)));
      Wake();
      return;
    }
  }
  written_bytes_ += sent;
  if (sent < request.size()) {
    out_.assign(request, sent);
    Wake();  // to poll for POLLOUT
  }
}

bool StreamClient::AwaitAnswer(Waiter& waiter, Deadline deadline) {
  if (reading_ || fd_ < 0 || !send_error_.ok()) return WaitWithDeadline(waiter.done, mu_, deadline);
  if (Clock::now() >= deadline) return false;
  reading_ = true;
  const int fd = fd_;
  mu_.Unlock();
  pollfd pfd{fd, POLLIN, 0};
  absl::Status status;
  int ready = ::poll(&pfd, 1, PollTimeoutMs(deadline));
  if (ready > 0) {
    status = ReadAnswers();
  } else if (ready < 0 && errno != EINTR) {
    status = absl::UnavailableError(absl::StrCat("poll: ", ErrnoString(errno)));
  }
  mu_.Lock();
  reading_ = false;
  reading_done_.SignalAll();
  if (!status.ok() && send_error_.ok()) {
    send_error_ = status;
    Wake();  // the I/O thread drops the connection and fails the waiters
  }
  return true;  // the caller loop re-checks its outcome and the deadline
}

void StreamClient::HandOffReadingLocked() {
  if (reading_) return;
  for (auto& [id, waiter] : waiters_) {
    if (waiter->outcome.has_value()) continue;
    waiter->done.Signal();
    return;
  }
}

void StreamClient::TakeReadingLocked() {
  while (reading_) reading_done_.Wait(&mu_);
  reading_ = true;
}

void StreamClient::Wake() {
  const uint64_t one = 1;
  // EAGAIN (counter saturated) still leaves the eventfd readable: nothing to do.
  [[maybe_unused]] ssize_t n = ::write(wake_fd_.get(), &one, sizeof(one));
}

void StreamClient::Run() {
  while (true) {
    bool connected = false;
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) break;
      connected = fd_ >= 0;
    }
    if (connected) {
      ServeConnection();
    } else {
      ConnectOrWait();
    }
  }
  absl::MutexLock lock(&mu_);
  if (fd_ >= 0) ::shutdown(fd_, SHUT_RDWR);  // wakes a caller reading it
  while (reading_) reading_done_.Wait(&mu_);
  fd_ = -1;
  conn_.Reset();
}

void StreamClient::ConnectOrWait() {
  std::optional<Deadline> wait_until;
  {
    absl::MutexLock lock(&mu_);
    if (!connect_requested_ && Clock::now() < next_connect_) wait_until = next_connect_;
  }
  if (wait_until) return WaitForWake(*wait_until);

  absl::StatusOr<UniqueFd> fd = ConnectStream(address_, Clock::now() + kBackgroundConnectTimeout);
  uint64_t epoch = 0;
  {
    absl::MutexLock lock(&mu_);
    connect_requested_ = false;
    ++connect_attempts_;
    connect_done_.SignalAll();
    if (fd.ok()) {
      answers_ = AnswerStream(options_.max_response_size);  // before callers can read the new connection
      conn_ = *std::move(fd);
      fd_ = conn_.get();
      epoch = epoch_.fetch_add(1, std::memory_order_acq_rel) + 1;
      backoff_ = options_.reconnect_min;
      last_connect_error_ = absl::OkStatus();
    } else {
      last_connect_error_ = fd.status();
      ScheduleReconnectLocked();
    }
  }
  if (!fd.ok()) {
    if (!connect_failure_logged_) {
      spdlog::warn("spdk rpc: {} (retrying in the background)", StatusMessage(fd.status()));
      connect_failure_logged_ = true;
    } else {
      spdlog::debug("spdk rpc: {}", StatusMessage(fd.status()));
    }
    return;
  }
  connect_failure_logged_ = false;
  spdlog::info("spdk rpc: connected to {} (epoch {})", target_, epoch);
  Notify(true, epoch);
}

void StreamClient::ServeConnection() {
  // Not POLLIN: callers read the answers, and an arriving answer must not wake this thread too. A
  // poll for POLLRDHUP alone is still woken when the target hangs up.
  short events = POLLRDHUP;
  absl::Status broken;
  {
    absl::MutexLock lock(&mu_);
    broken = send_error_;
    if (out_offset_ < out_.size()) events |= POLLOUT;
  }
  if (!broken.ok()) return Disconnect(broken);

  pollfd fds[2] = {{wake_fd_.get(), POLLIN, 0}, {conn_.get(), events, 0}};
  if (::poll(fds, 2, -1) < 0) {
    if (errno != EINTR) Disconnect(absl::UnavailableError(absl::StrCat("poll: ", ErrnoString(errno))));
    return;
  }
  if (fds[0].revents != 0) DrainWake();
  if (fds[1].revents & POLLOUT) {
    absl::Status status;
    {
      absl::MutexLock lock(&mu_);
      status = FlushLocked();
    }
    if (!status.ok()) return Disconnect(status);
  }
  if (fds[1].revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) {
    // The target hung up: deliver the answers it sent before, then drop the connection.
    {
      absl::MutexLock lock(&mu_);
      TakeReadingLocked();
    }
    absl::Status status = ReadAnswers();
    {
      absl::MutexLock lock(&mu_);
      reading_ = false;
      reading_done_.SignalAll();
    }
    Disconnect(status.ok() ? absl::UnavailableError(absl::StrCat("connection to ", target_, " closed by the target"))
                           : status);
  }
}

absl::Status StreamClient::ReadAnswers() {
  std::vector<SpdkAnswer> ready;
  absl::Status status;
  size_t total = 0;
  while (status.ok() && total < kMaxReadPerWakeup) {
    ssize_t n = ::recv(conn_.get(), read_buffer_.data(), read_buffer_.size(), MSG_DONTWAIT);
    if (n == 0) {
      status = absl::UnavailableError(absl::StrCat("connection to ", target_, " closed by the target"));
    } else if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      status = absl::UnavailableError(
          absl::StrCat("connection to ", target_, " lost: recv: ", ErrnoString(errno)));
    } else {
      total += static_cast<size_t>(n);
      answers_.Append(read_buffer_.data(), static_cast<size_t>(n));
      while (true) {
        absl::StatusOr<std::optional<SpdkAnswer>> answer = answers_.Next();
        if (!answer.ok()) {
          status =
              absl::DataLossError(absl::StrCat("bad answer from ", target_, ": ", answer.status().message()));
          break;
        }
        if (!answer->has_value()) break;
        ready.push_back(**std::move(answer));
      }
    }
  }
  if (ready.empty()) return status;
  absl::MutexLock lock(&mu_);
  for (SpdkAnswer& answer : ready) {
    absl::Status delivered = DeliverLocked(std::move(answer));
    if (!delivered.ok()) return delivered;
  }
  return status;
}

absl::Status StreamClient::DeliverLocked(SpdkAnswer answer) {
  if (answer.id_null) {
    return absl::DataLossError(absl::StrCat(target_, " could not read a request: ", answer.error->message,
                                            " (code ", answer.error->code, ")"));
  }
  auto it = answer.id ? waiters_.find(*answer.id) : waiters_.end();
  if (it == waiters_.end()) {
    spdlog::debug("spdk rpc {}: ignoring an answer for id {} (timed out or unknown)", target_,
                  answer.id ? std::to_string(*answer.id) : "(not an integer)");
    return absl::OkStatus();
  }
  Waiter* waiter = it->second;
  waiters_.erase(it);
  if (answer.error) {
    waiter->outcome = SpdkErrorStatus(waiter->method, *answer.error);
  } else {
    waiter->outcome = std::move(answer.result);
  }
  waiter->done.Signal();
  slot_freed_.SignalAll();
  return absl::OkStatus();
}

absl::Status StreamClient::FlushLocked() {
  while (out_offset_ < out_.size()) {
    ssize_t n =
        ::send(fd_, out_.data() + out_offset_, out_.size() - out_offset_, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      out_offset_ += static_cast<size_t>(n);
      written_bytes_ += static_cast<uint64_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return absl::OkStatus();
    } else {
      return absl::UnavailableError(
          absl::StrCat("connection to ", target_, " lost: send: ", ErrnoString(errno)));
    }
  }
  out_.clear();
  out_offset_ = 0;
  return absl::OkStatus();
}

void StreamClient::Disconnect(const absl::Status& reason) {
  const uint64_t epoch = epoch_.load(std::memory_order_acquire);
  {
    absl::MutexLock lock(&mu_);
    ::shutdown(fd_, SHUT_RDWR);  // wakes a caller reading it
    while (reading_) reading_done_.Wait(&mu_);
    fd_ = -1;
    out_.clear();
    out_offset_ = 0;
    queued_bytes_ = written_bytes_ = 0;
    send_error_ = absl::OkStatus();
    FailWaitersLocked(reason);
    ScheduleReconnectLocked();
  }
  conn_.Reset();
  spdlog::warn("spdk rpc: {}", StatusMessage(reason));
  Notify(false, epoch);
}

void StreamClient::FailWaitersLocked(const absl::Status& reason) {
  for (auto& [id, waiter] : waiters_) {
    waiter->outcome = absl::Status(reason.code(), absl::StrCat(waiter->method, ": ", reason.message()));
    waiter->done.Signal();
  }
  waiters_.clear();
  slot_freed_.SignalAll();
}

void StreamClient::ScheduleReconnectLocked() {
  next_connect_ = Clock::now() + backoff_;
  backoff_ = std::min<Clock::duration>(backoff_ * 2, options_.reconnect_max);
}

void StreamClient::WaitForWake(Deadline until) {
  pollfd pfd{wake_fd_.get(), POLLIN, 0};
  if (::poll(&pfd, 1, PollTimeoutMs(until)) > 0) DrainWake();
}

void StreamClient::DrainWake() {
  uint64_t count = 0;
  [[maybe_unused]] ssize_t n = ::read(wake_fd_.get(), &count, sizeof(count));
}

void StreamClient::Notify(bool up, uint64_t epoch) {
  if (options_.on_connection_change) options_.on_connection_change(up, epoch);
}

}  // namespace

absl::StatusOr<SpdkClientPtr> NewStreamClient(SpdkAddress address, JsonRpcClientOptions options) {
  UniqueFd wake_fd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!wake_fd.valid()) return absl::InternalError("eventfd: " + ErrnoString(errno));
  return std::make_unique<StreamClient>(std::move(address), std::move(options), std::move(wake_fd));
}

}  // namespace smad::agent
