#include "agent/spdk/http_transport.h"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/cleanup/cleanup.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "agent/spdk/rpc_wire.h"
#include "common/status.h"
#include "spdlog/spdlog.h"

namespace smad::agent {
namespace {

constexpr size_t kMaxStatusLineChars = 200;
constexpr size_t kMaxIdleConnections = 8;
constexpr size_t kReadChunk = 64 * 1024;

std::string Printable(absl::string_view text) {
  std::string out(text.substr(0, kMaxStatusLineChars));
  for (char& c : out) {
    if (!absl::ascii_isprint(static_cast<unsigned char>(c))) c = '?';
  }
  return out;
}

// Calls `fn` with each comma-separated token of a header value, trimmed and lower-cased.
template <typename Fn>
void ForEachToken(absl::string_view value, Fn fn) {
  for (absl::string_view token : absl::StrSplit(value, ',')) {
    fn(absl::AsciiStrToLower(absl::StripAsciiWhitespace(token)));
  }
}

}  // namespace

std::string Base64Encode(absl::string_view data) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((data.size() + 2) / 3 * 4);
  for (size_t i = 0; i < data.size(); i += 3) {
    const size_t n = std::min<size_t>(3, data.size() - i);
    uint32_t group = static_cast<uint8_t>(data[i]) << 16;
    if (n > 1) group |= static_cast<uint8_t>(data[i + 1]) << 8;
    if (n > 2) group |= static_cast<uint8_t>(data[i + 2]);
    for (size_t k = 0; k < 4; ++k) out.push_back(k <= n ? kAlphabet[(group >> (18 - 6 * k)) & 0x3f] : '=');
  }
  return out;
}

// ---- HttpResponseParser ----

absl::Status HttpResponseParser::Append(const char* data, size_t size) {
  if (!error_.ok()) return error_;
  if (size == 0) return absl::OkStatus();
  if (state_ == State::kDone) {
    trailing_bytes_ = true;
    return absl::OkStatus();
  }
  if (state_ == State::kUntilClose) return error_ = AppendBody(data, size);
  buffer_.append(data, size);
  error_ = Parse();
  buffer_.erase(0, pos_);
  pos_ = 0;
  if (state_ == State::kDone && !buffer_.empty()) trailing_bytes_ = true;
  return error_;
}

absl::Status HttpResponseParser::Finish() {
  if (!error_.ok()) return error_;
  if (state_ == State::kUntilClose) state_ = State::kDone;
  if (state_ != State::kDone)
    error_ = absl::DataLossError("connection closed before the end of the HTTP response");
  return error_;
}

std::optional<absl::string_view> HttpResponseParser::NextLine() {
  size_t end = buffer_.find('\n', pos_);
  if (end == std::string::npos) return std::nullopt;
  absl::string_view line(buffer_.data() + pos_, end - pos_);
  pos_ = end + 1;
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  return line;
}

absl::Status HttpResponseParser::Parse() {
  while (true) {
    switch (state_) {
      case State::kBody:
      case State::kChunkData: {
        const size_t n = static_cast<size_t>(std::min<uint64_t>(remaining_, buffer_.size() - pos_));
        if (n == 0) return absl::OkStatus();
        RETURN_IF_ERROR(AppendBody(buffer_.data() + pos_, n));
        pos_ += n;
        remaining_ -= n;
        if (remaining_ == 0) state_ = state_ == State::kBody ? State::kDone : State::kChunkEnd;
        break;
      }
      case State::kUntilClose:
        RETURN_IF_ERROR(AppendBody(buffer_.data() + pos_, buffer_.size() - pos_));
        pos_ = buffer_.size();
        return absl::OkStatus();
      case State::kDone: return absl::OkStatus();
      default: {  // the line-oriented states
        std::optional<absl::string_view> line = NextLine();
        if (!line) {
          if (buffer_.size() - pos_ > kMaxHeadBytes)
            return absl::DataLossError("HTTP response line too long");
          return absl::OkStatus();
        }
        head_bytes_ += line->size() + 1;
        if (head_bytes_ > kMaxHeadBytes) return absl::DataLossError("HTTP response head too large");
        switch (state_) {
          case State::kStatusLine:
            if (!line->empty()) RETURN_IF_ERROR(OnStatusLine(*line));  // stray empty lines are skipped
            break;
          case State::kHeaders: RETURN_IF_ERROR(line->empty() ? OnHeadEnd() : OnHeader(*line)); break;
          case State::kChunkSize: RETURN_IF_ERROR(OnChunkSize(*line)); break;
          case State::kChunkEnd:
            if (!line->empty()) return absl::DataLossError("HTTP chunk not followed by a line end");
            state_ = State::kChunkSize;
            break;
          default:  // kTrailers: ignored up to the empty line
            if (line->empty()) state_ = State::kDone;
            break;
        }
      }
    }
  }
}

absl::Status HttpResponseParser::OnStatusLine(absl::string_view line) {
  // HTTP/1.x SP 3DIGIT [SP reason]
  if (line.size() < 12 || !absl::StartsWith(line, "HTTP/1.") || (line[7] != '0' && line[7] != '1') ||
      line[8] != ' ' || !absl::ascii_isdigit(line[9]) || !absl::ascii_isdigit(line[10]) ||
      !absl::ascii_isdigit(line[11]) || (line.size() > 12 && line[12] != ' ')) {
    return absl::DataLossError("malformed HTTP status line: " + Printable(line));
  }
  http11_ = line[7] == '1';
  response_.status = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
  if (response_.status < 100) return absl::DataLossError("malformed HTTP status line: " + Printable(line));
  response_.status_line = Printable(line);
  state_ = State::kHeaders;
  return absl::OkStatus();
}

absl::Status HttpResponseParser::OnHeader(absl::string_view line) {
  if (line[0] == ' ' || line[0] == '\t') return absl::OkStatus();  // obsolete folding: ignored
  size_t colon = line.find(':');
  if (colon == absl::string_view::npos || colon == 0)
    return absl::DataLossError("malformed HTTP header line");
  const std::string name = absl::AsciiStrToLower(line.substr(0, colon));
  const absl::string_view value = absl::StripAsciiWhitespace(line.substr(colon + 1));
  if (name == "content-length") {
    uint64_t length = 0;
    if (value.empty() || !std::all_of(value.begin(), value.end(), absl::ascii_isdigit) ||
        !absl::SimpleAtoi(value, &length) || (content_length_ && *content_length_ != length)) {
      return absl::DataLossError("invalid HTTP Content-Length");
    }
    content_length_ = length;
  } else if (name == "transfer-encoding") {
    absl::Status status;
    ForEachToken(value, [&](const std::string& coding) {
      if (coding == "chunked") {
        chunked_ = true;
      } else if (coding != "identity" && !coding.empty()) {
        status = absl::DataLossError("unsupported HTTP transfer coding: " + Printable(coding));
      }
    });
    return status;
  } else if (name == "connection") {
    ForEachToken(value, [&](const std::string& option) {
      connection_close_ |= option == "close";
      connection_keep_alive_ |= option == "keep-alive";
    });
  }
  return absl::OkStatus();
}

absl::Status HttpResponseParser::OnHeadEnd() {
  if (response_.status < 200) {  // an interim response (100 Continue...): the real one follows
    response_ = HttpResponse();
    connection_close_ = connection_keep_alive_ = chunked_ = false;
    content_length_.reset();
    state_ = State::kStatusLine;
    return absl::OkStatus();
  }
  response_.keep_alive = http11_ ? !connection_close_ : connection_keep_alive_;
  if (response_.status == 204 || response_.status == 304) {
    state_ = State::kDone;
  } else if (chunked_) {
    state_ = State::kChunkSize;
  } else if (content_length_) {
    if (*content_length_ > max_body_size_) {
      return absl::DataLossError(
          absl::StrCat("HTTP response body of ", *content_length_, " bytes is over the limit"));
    }
    remaining_ = *content_length_;
    state_ = remaining_ == 0 ? State::kDone : State::kBody;
  } else {
    response_.keep_alive = false;
    state_ = State::kUntilClose;
  }
  return absl::OkStatus();
}

absl::Status HttpResponseParser::OnChunkSize(absl::string_view line) {
  absl::string_view digits = line.substr(0, line.find_first_of("; \t"));
  uint64_t size = 0;
  if (digits.empty() || digits.size() > 15) return absl::DataLossError("invalid HTTP chunk size");
  for (char c : digits) {
    if (!absl::ascii_isxdigit(c)) return absl::DataLossError("invalid HTTP chunk size");
    c = absl::ascii_tolower(c);
    size = size * 16 + (absl::ascii_isdigit(c) ? c - '0' : c - 'a' + 10);
  }
  if (size > max_body_size_ - response_.body.size())
    return absl::DataLossError("HTTP response body over the limit");
  remaining_ = size;
  state_ = size == 0 ? State::kTrailers : State::kChunkData;
  return absl::OkStatus();
}

absl::Status HttpResponseParser::AppendBody(const char* data, size_t size) {
  if (size > max_body_size_ - response_.body.size())
    return absl::DataLossError("HTTP response body over the limit");
  response_.body.append(data, size);
  return absl::OkStatus();
}

// ---- HttpClient ----

namespace {

class HttpClient final : public SpdkClient {
 public:
  HttpClient(SpdkAddress address, JsonRpcClientOptions options);
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  absl::StatusOr<Json> Call(absl::string_view method, const Json& params,
                            std::chrono::milliseconds timeout) override;
  uint64_t connection_epoch() const override { return epoch_.load(std::memory_order_acquire); }

 private:
  // Sends `request` on `fd` and reads the response. `send_failed` tells that the request was not
  // (completely) written, so it can be retried elsewhere. Errors: Unavailable, DeadlineExceeded, DataLoss.
  absl::StatusOr<HttpResponse> Exchange(int fd, const std::string& request, Deadline deadline,
                                        bool& send_failed);
  absl::StatusOr<Json> Interpret(absl::string_view method, int64_t id, HttpResponse& response);
  // A pooled connection the server has not closed, or an invalid fd.
  UniqueFd TakeIdle();
  void ReturnIdle(UniqueFd fd);
  void SetReachable(bool reachable);

  const SpdkAddress address_;
  const std::string target_;  // for messages: no password
  const JsonRpcClientOptions options_;
  const std::string request_head_;  // up to "Content-Length: "; holds the credentials: never logged
  std::atomic<int64_t> next_id_{1};
  std::atomic<uint64_t> epoch_{0};

  absl::Mutex mu_;
  size_t in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  absl::CondVar slot_freed_;
  std::vector<UniqueFd> idle_ ABSL_GUARDED_BY(mu_);

  // Serialises reachability changes and their notifications.
  absl::Mutex reachable_mu_ ABSL_ACQUIRED_AFTER(mu_);
  bool reachable_ ABSL_GUARDED_BY(reachable_mu_) = false;
};

std::string RequestHead(const SpdkAddress& address) {
  std::string head = absl::StrCat("POST ", address.path, " HTTP/1.1\r\nHost: ", address.HostPort(), "\r\n");
  if (address.has_credentials) {
    absl::StrAppend(&head, "Authorization: Basic ",
                    Base64Encode(absl::StrCat(address.user, ":", address.password)), "\r\n");
  }
  absl::StrAppend(&head, "Content-Type: application/json\r\nAccept: application/json\r\nContent-Length: ");
  return head;
}

HttpClient::HttpClient(SpdkAddress address, JsonRpcClientOptions options)
    : address_(std::move(address)),
      target_(address_.Redacted()),
      options_(std::move(options)),
      request_head_(RequestHead(address_)) {}

absl::StatusOr<Json> HttpClient::Call(absl::string_view method, const Json& params,
                                      std::chrono::milliseconds timeout) {
  if (!params.is_null() && !params.is_object() && !params.is_array()) {
    return absl::InvalidArgumentError(
        absl::StrCat(method, ": params must be null, an object or an array, not ", params.type_name()));
  }
  const Clock::time_point start = Clock::now();
  const Deadline deadline = start + timeout;
  const int64_t id = next_id_.fetch_add(1, std::memory_order_relaxed);
  const std::string body = EncodeRequest(id, method, params);
  const std::string request = absl::StrCat(request_head_, body.size(), "\r\n\r\n", body);
  {
    absl::MutexLock lock(&mu_);
    while (in_flight_ >= options_.max_in_flight) {
      if (!WaitWithDeadline(slot_freed_, mu_, deadline)) {
        return absl::DeadlineExceededError(absl::StrCat(method, ": not sent: ", options_.max_in_flight,
                                                        " calls to ", target_,
                                                        " in flight until the timeout"));
      }
    }
    ++in_flight_;
  }
  absl::Cleanup release_slot = [this] {
    absl::MutexLock lock(&mu_);
    --in_flight_;
    slot_freed_.Signal();
  };
  spdlog::debug("spdk rpc {}: -> id {} {} ({} bytes)", target_, id, std::string(method), body.size());

  absl::StatusOr<HttpResponse> response;
  for (int attempt = 0;; ++attempt) {
    UniqueFd fd = TakeIdle();
    const bool reused = fd.valid();
    if (!reused) {
      absl::StatusOr<UniqueFd> connected = ConnectStream(address_, deadline);
      if (!connected.ok()) {
        SetReachable(false);
        return absl::UnavailableError(absl::StrCat(method, ": ", connected.status().message()));
      }
      fd = *std::move(connected);
    }
    bool send_failed = false;
    response = Exchange(fd.get(), request, deadline, send_failed);
    if (!response.ok() && reused && send_failed && attempt == 0) continue;  // the server closed it meanwhile
    if (response.ok() && response->keep_alive) ReturnIdle(std::move(fd));
    break;
  }
  if (!response.ok()) {
    if (response.status().code() == absl::StatusCode::kUnavailable) SetReachable(false);
    return absl::Status(response.status().code(), absl::StrCat(method, ": ", response.status().message()));
  }
  const int status = response->status;
  SetReachable(status != 502 && status != 503 && status != 504);
  absl::StatusOr<Json> result = Interpret(method, id, *response);
  const auto elapsed = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start);
  spdlog::debug("spdk rpc {}: <- id {} {}: HTTP {}, {} in {} us", target_, id, std::string(method), status,
                result.ok() ? "ok" : absl::StatusCodeToString(result.status().code()), elapsed.count());
  return result;
}

absl::StatusOr<HttpResponse> HttpClient::Exchange(int fd, const std::string& request, Deadline deadline,
                                                  bool& send_failed) {
  const std::string timeout_message = absl::StrCat("no answer from ", target_, " in time");
  size_t sent = 0;
  while (sent < request.size()) {
    ssize_t n = ::send(fd, request.data() + sent, request.size() - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
      pollfd pfd{fd, POLLOUT, 0};
      if (::poll(&pfd, 1, PollTimeoutMs(deadline)) == 0 && PollTimeoutMs(deadline) == 0) {
        return absl::DeadlineExceededError(timeout_message);
      }
    } else {
      send_failed = true;
      return absl::UnavailableError(
          absl::StrCat("connection to ", target_, " lost: send: ", ErrnoString(errno)));
    }
  }
  HttpResponseParser parser(options_.max_response_size);
  std::vector<char> buffer(kReadChunk);
  while (!parser.done()) {
    pollfd pfd{fd, POLLIN, 0};
    int ready = ::poll(&pfd, 1, PollTimeoutMs(deadline));
    if (ready == 0) {
      if (PollTimeoutMs(deadline) == 0) return absl::DeadlineExceededError(timeout_message);
      continue;
    }
    ssize_t n = ::recv(fd, buffer.data(), buffer.size(), MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) continue;
    if (n < 0)
      return absl::UnavailableError(
          absl::StrCat("connection to ", target_, " lost: recv: ", ErrnoString(errno)));
    if (n == 0) {
      if (!parser.Finish().ok()) {
        return absl::UnavailableError(
            absl::StrCat("connection to ", target_, " closed before the end of the answer"));
      }
      break;
    }
    absl::Status status = parser.Append(buffer.data(), static_cast<size_t>(n));
    if (!status.ok())
      return absl::DataLossError(absl::StrCat("bad HTTP answer from ", target_, ": ", status.message()));
  }
  HttpResponse response = std::move(parser.response());
  if (parser.trailing_bytes()) response.keep_alive = false;
  return response;
}

absl::StatusOr<Json> HttpClient::Interpret(absl::string_view method, int64_t id, HttpResponse& response) {
  const int status = response.status;
  if (status == 401 || status == 403) {
    return absl::PermissionDeniedError(
        absl::StrCat(method, ": ", target_, " refused the credentials: ", response.status_line));
  }
  if (status < 200 || status > 299) {
    const bool unavailable = status == 502 || status == 503 || status == 504;
    return absl::Status(unavailable ? absl::StatusCode::kUnavailable : absl::StatusCode::kInternal,
                        absl::StrCat(method, ": ", target_, " answered ", response.status_line));
  }
  const std::string bad_answer = absl::StrCat(method, ": bad answer from ", target_, ": ");
  AnswerStream answers(options_.max_response_size);
  answers.Append(response.body.data(), response.body.size());
  absl::StatusOr<std::optional<SpdkAnswer>> answer = answers.Next();
  if (!answer.ok()) return absl::DataLossError(bad_answer + std::string(answer.status().message()));
  if (!answer->has_value()) return absl::DataLossError(bad_answer + "no JSON-RPC answer in the HTTP body");
  absl::StatusOr<std::optional<SpdkAnswer>> extra = answers.Next();
  if (!extra.ok() || extra->has_value() || answers.buffered() != 0) {
    return absl::DataLossError(bad_answer + "more than one JSON-RPC answer in the HTTP body");
  }
  SpdkAnswer& value = **answer;
  if (!value.id_null && value.id != id)
    return absl::DataLossError(bad_answer + "the answer is for another request");
  if (value.error) return SpdkErrorStatus(method, *value.error);
  return std::move(value.result);
}

UniqueFd HttpClient::TakeIdle() {
  absl::MutexLock lock(&mu_);
  while (!idle_.empty()) {
    UniqueFd fd = std::move(idle_.back());
    idle_.pop_back();
    // An idle connection has nothing to read; if it has, the server closed it (or misbehaved).
    pollfd pfd{fd.get(), POLLIN, 0};
    if (::poll(&pfd, 1, 0) == 0) return fd;
  }
  return UniqueFd();
}

void HttpClient::ReturnIdle(UniqueFd fd) {
  absl::MutexLock lock(&mu_);
  if (idle_.size() < std::min(kMaxIdleConnections, options_.max_in_flight)) idle_.push_back(std::move(fd));
}

void HttpClient::SetReachable(bool reachable) {
  absl::MutexLock lock(&reachable_mu_);
  if (reachable_ == reachable) return;
  reachable_ = reachable;
  uint64_t epoch = epoch_.load(std::memory_order_acquire);
  if (reachable) {
    epoch = epoch_.fetch_add(1, std::memory_order_acq_rel) + 1;
    spdlog::info("spdk rpc: {} reachable (epoch {})", target_, epoch);
  } else {
    spdlog::warn("spdk rpc: {} unreachable", target_);
  }
  if (options_.on_connection_change) options_.on_connection_change(reachable, epoch);
}

}  // namespace

absl::StatusOr<SpdkClientPtr> NewHttpClient(SpdkAddress address, JsonRpcClientOptions options) {
  return std::make_unique<HttpClient>(std::move(address), std::move(options));
}

}  // namespace smad::agent
