#include "jsonrpc/server.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "jsonrpc/blocking_client.h"

namespace smad::jsonrpc {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;

constexpr uint64_t kMs = 1'000'000;

// A raw Unix socket connection, for byte-exact protocol checks.
class RawSocket {
 public:
  explicit RawSocket(const std::string& path) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      ADD_FAILURE() << "connect " << path << ": " << std::strerror(errno);
    }
  }
  ~RawSocket() { Close(); }
  RawSocket(const RawSocket&) = delete;
  RawSocket& operator=(const RawSocket&) = delete;

  void Close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  // Returns false when the peer stopped reading (EPIPE/ECONNRESET).
  bool Send(const std::string& bytes) {
    size_t sent = 0;
    while (sent < bytes.size()) {
      ssize_t n = ::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      sent += static_cast<size_t>(n);
    }
    return true;
  }
  // Reads until `count` newline-terminated lines arrived or the peer closed; returns what was read.
  std::string ReadLines(size_t count, std::chrono::milliseconds timeout = 10s) {
    std::string data;
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (static_cast<size_t>(std::count(data.begin(), data.end(), '\n')) < count &&
           std::chrono::steady_clock::now() < deadline) {
      timeval tv{0, 100000};
      ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
      char buf[4096];
      ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
      if (n == 0) break;
      if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) continue;
        break;
      }
      data.append(buf, static_cast<size_t>(n));
    }
    return data;
  }
  // True when the peer closed the connection (EOF or reset) within `timeout`.
  bool WaitForClose(std::chrono::milliseconds timeout = 10s) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      timeval tv{0, 100000};
      ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
      char buf[4096];
      ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
      if (n == 0) return true;
      if (n < 0 && errno != EAGAIN && errno != EINTR) return true;
    }
    return false;
  }
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
};

std::string Request(const Json& id, const std::string& method, const Json& params = Json()) {
  Json request = {{"jsonrpc", "2.0"}, {"id", id}, {"method", method}};
  if (!params.is_null()) request["params"] = params;
  return request.dump();
}

std::string Notification(const std::string& method, const Json& params = Json()) {
  Json request = {{"jsonrpc", "2.0"}, {"method", method}};
  if (!params.is_null()) request["params"] = params;
  return request.dump();
}

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ::signal(SIGPIPE, SIG_IGN);
    char dir_template[] = "/tmp/jsonrpc_test.XXXXXX";
    ASSERT_NE(::mkdtemp(dir_template), nullptr);
    dir_ = dir_template;
    path_ = dir_ + "/rpc.sock";
    RegisterHandlers();
  }

  void TearDown() override {
    StopServer();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  void RegisterHandlers() {
    dispatcher_.Register("echo", [](const Json& params, Responder r) { r.Reply(params); });
    dispatcher_.Register("params_type",
                         [](const Json& params, Responder r) { r.Reply(params.type_name()); });
    // {"ms": delay, "value": v}: answers v after the delay, recording the completion order.
    dispatcher_.Register("delay", [this](const Json& params, Responder r) {
      uint64_t ms = params.value("ms", 0);
      Json value = params.value("value", Json());
      Reactor::Current()->RunAfter(ms * kMs, [this, r = std::move(r), value]() mutable {
        completion_order_.push_back(value);
        r.Reply(value);
      });
    });
    dispatcher_.Register("fail", [](const Json&, Responder r) { r.Fail(-22, "Invalid argument"); });
    dispatcher_.Register("drop", [](const Json&, Responder) {});
    dispatcher_.Register("throw", [](const Json& params, Responder) {
      throw std::runtime_error("boom");
    });
    dispatcher_.Register("hold", [this](const Json&, Responder r) { held_.push_back(std::move(r)); });
    dispatcher_.Register("count", [this](const Json&, Responder r) {
      ++count_calls_;
      r.Reply(count_calls_.load());
    });
    dispatcher_.Register("big", [this](const Json& params, Responder r) {
      ++big_calls_;
      r.Reply(std::string(params.at("size").get<size_t>(), 'b'));
    });
    dispatcher_.Register("shutdown", [this](const Json&, Responder r) {
      server_->Shutdown();
      r.Reply(true);
    });
  }

  void StartServer(Server::Options options = Server::Options()) {
    Reactor::Options reactor_options;
    reactor_options.name = "jsonrpc_test";
    reactor_ = std::make_unique<Reactor>(reactor_options);
    server_ = std::make_unique<Server>(*reactor_, dispatcher_, options);
    absl::Status status = server_->ListenUnix(path_);
    ASSERT_TRUE(status.ok()) << status;
    status = server_->ListenTcp("127.0.0.1", 0);
    ASSERT_TRUE(status.ok()) << status;
    reactor_->Start();
  }

  void StopServer() {
    if (!reactor_) return;
    RunOnReactor([this] {
      server_->Shutdown();
      held_.clear();
    });
    reactor_->Stop();
    reactor_->Join();
    server_.reset();
    reactor_.reset();
  }

  // Runs `fn` on the reactor thread and returns its result.
  template <typename Fn>
  auto RunOnReactor(Fn fn) -> decltype(fn()) {
    using Result = decltype(fn());
    auto promise = std::make_shared<std::promise<Result>>();
    auto future = promise->get_future();
    reactor_->Post([promise, fn = std::move(fn)]() mutable {
      if constexpr (std::is_void_v<Result>) {
        fn();
        promise->set_value();
      } else {
        promise->set_value(fn());
      }
    });
    return future.get();
  }

  size_t ConnectionCount() {
    return RunOnReactor([this] { return server_->connection_count(); });
  }

  // Polls until the server has `count` connections; returns the last count seen.
  size_t WaitForConnectionCount(size_t count, std::chrono::milliseconds timeout = 10s) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    size_t seen = ConnectionCount();
    while (seen != count && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(5ms);
      seen = ConnectionCount();
    }
    return seen;
  }

  BlockingClient Connect(const std::string& address) {
    auto client = BlockingClient::Connect(address);
    EXPECT_TRUE(client.ok()) << client.status();
    return std::move(*client);
  }
  BlockingClient Connect() { return Connect(path_); }

  std::string dir_;
  std::string path_;
  Dispatcher dispatcher_;
  std::unique_ptr<Reactor> reactor_;
  std::unique_ptr<Server> server_;
  // Reactor thread only.
  std::vector<Json> completion_order_;
  std::vector<Responder> held_;
  std::atomic<int> count_calls_{0};
  std::atomic<int> big_calls_{0};
};

TEST_F(ServerTest, CallsOverUnixAndTcp) {
  StartServer();
  ASSERT_NE(server_->tcp_port(), 0);
  BlockingClient unix_client = Connect();
  auto result = unix_client.Call("echo", Json{{"a", 1}});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(*result, (Json{{"a", 1}}));

  BlockingClient tcp_client = Connect("127.0.0.1:" + std::to_string(server_->tcp_port()));
  result = tcp_client.Call("echo", Json::array({1, "two"}));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(*result, Json::array({1, "two"}));

  auto raw = tcp_client.CallRaw("echo", Json::array({3}));
  ASSERT_TRUE(raw.ok()) << raw.status();
  EXPECT_EQ(*raw, (Json{{"jsonrpc", "2.0"}, {"id", 2}, {"result", Json::array({3})}}));
  EXPECT_EQ(WaitForConnectionCount(2), 2u);
}

TEST_F(ServerTest, ParamsAbsentArePassedAsNull) {
  StartServer();
  BlockingClient client = Connect();
  EXPECT_EQ(*client.Call("params_type"), "null");
  EXPECT_EQ(*client.Call("params_type", Json::array()), "array");
  EXPECT_EQ(*client.Call("params_type", Json::object()), "object");
}

TEST_F(ServerTest, ResponsesAreCompactObjectsEndingWithNewline) {
  StartServer();
  RawSocket socket(path_);
  ASSERT_TRUE(socket.Send(R"({"jsonrpc":"2.0","id":7,"method":"echo","params":[1,"x",{"k":null}]})"));
  EXPECT_EQ(socket.ReadLines(1), "{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":[1,\"x\",{\"k\":null}]}\n");
  ASSERT_TRUE(socket.Send(R"({"jsonrpc":"2.0","id":8,"method":"fail"})"));
  EXPECT_EQ(socket.ReadLines(1),
            "{\"jsonrpc\":\"2.0\",\"id\":8,\"error\":{\"code\":-22,\"message\":\"Invalid argument\"}}\n");
}

TEST_F(ServerTest, ErrorAnswers) {
  StartServer();
  BlockingClient client = Connect();
  auto result = client.Call("no_such_method");
  EXPECT_EQ(result.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(result.status().message(), "-32601: Method not found");
  EXPECT_EQ(ErrorCodeOf(result.status()), kMethodNotFound);

  result = client.Call("fail");
  EXPECT_EQ(result.status().message(), "-22: Invalid argument");
  EXPECT_EQ(ErrorCodeOf(result.status()), -22);
  // The code is also recovered from the message alone.
  EXPECT_EQ(ErrorCodeOf(absl::FailedPreconditionError("-19: No such device")), -19);
  EXPECT_EQ(ErrorCodeOf(absl::UnavailableError("-19: x")), std::nullopt);

  result = client.Call("drop");
  EXPECT_EQ(result.status().message(), "-32603: Internal error");
  result = client.Call("throw");
  EXPECT_EQ(result.status().message(), "-32603: Internal error");
  // The connection survives all of them.
  EXPECT_EQ(*client.Call("echo", Json::array({1})), Json::array({1}));
}

TEST_F(ServerTest, PipelinedRequestsAreAnsweredInOrderWhenCompletedOutOfOrder) {
  StartServer();
  BlockingClient client = Connect();
  std::string batch;
  const int delays[] = {60, 40, 20, -1, 0, 10};  // -1: answered synchronously
  for (int i = 0; i < 6; ++i) {
    if (delays[i] < 0) {
      batch += Request(i + 1, "echo", Json::array({i + 1}));
    } else {
      batch += Request(i + 1, "delay", Json{{"ms", delays[i]}, {"value", i + 1}});
    }
    if (i == 2) batch += "\n \t";  // whitespace between some values, none between others
  }
  ASSERT_TRUE(client.SendRaw(batch).ok());
  for (int i = 0; i < 6; ++i) {
    auto value = client.ReadValue(10s);
    ASSERT_TRUE(value.ok()) << value.status();
    EXPECT_EQ((*value)["id"], i + 1);
    if (delays[i] < 0) {
      EXPECT_EQ((*value)["result"], Json::array({i + 1}));
    } else {
      EXPECT_EQ((*value)["result"], i + 1);
    }
  }
  // The handlers really completed out of order.
  auto order = RunOnReactor([this] { return completion_order_; });
  EXPECT_EQ(order, (std::vector<Json>{5, 6, 3, 2, 1}));
}

TEST_F(ServerTest, RequestsSentOneByteAtATime) {
  StartServer();
  RawSocket socket(path_);
  std::string stream = "  " + Request(1, "echo", Json::array({"a{[\"}"})) + "\n" + Request("two", "echo") +
                       Request(3, "count");
  for (char c : stream) ASSERT_TRUE(socket.Send(std::string(1, c)));
  std::string lines = socket.ReadLines(3);
  EXPECT_EQ(lines,
            "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":[\"a{[\\\"}\"]}\n"
            "{\"jsonrpc\":\"2.0\",\"id\":\"two\",\"result\":null}\n"
            "{\"jsonrpc\":\"2.0\",\"id\":3,\"result\":1}\n");
}

TEST_F(ServerTest, IdsAreEchoedExactly) {
  StartServer();
  BlockingClient client = Connect();
  for (const char* id : {"\"abc-1\"", "\"\"", "-3", "0", "18446744073709551615", "2.5", "null"}) {
    SCOPED_TRACE(id);
    ASSERT_TRUE(client.SendRaw(std::string(R"({"jsonrpc":"2.0","id":)") + id + R"(,"method":"echo"})").ok());
    auto value = client.ReadValue(10s);
    ASSERT_TRUE(value.ok()) << value.status();
    EXPECT_EQ((*value)["id"], Json::parse(id));
    EXPECT_TRUE((*value)["result"].is_null());
  }
}

TEST_F(ServerTest, NotificationsGetNoAnswer) {
  StartServer();
  BlockingClient client = Connect();
  std::string stream = Notification("count") + Notification("no_such_method") + Notification("fail") +
                       Notification("drop") + Notification("delay", Json{{"ms", 5}}) +
                       Request(9, "count");
  ASSERT_TRUE(client.SendRaw(stream).ok());
  auto value = client.ReadValue(10s);
  ASSERT_TRUE(value.ok()) << value.status();
  EXPECT_EQ((*value)["id"], 9);
  EXPECT_EQ((*value)["result"], 2);  // the notification ran too
  // Nothing else arrives.
  EXPECT_EQ(client.ReadValue(200ms).status().code(), absl::StatusCode::kDeadlineExceeded);
}

TEST_F(ServerTest, Batches) {
  StartServer();
  BlockingClient client = Connect();
  std::string batch = "[" + Request(1, "delay", Json{{"ms", 30}, {"value", "slow"}}) + "," +
                      Notification("count") + "," + Request(2, "echo", Json::array({2})) + "," +
                      R"({"foo":1})" + "," + Request("x", "no_such_method") + "]";
  ASSERT_TRUE(client.SendRaw(batch).ok());
  auto value = client.ReadValue(10s);
  ASSERT_TRUE(value.ok()) << value.status();
  ASSERT_TRUE(value->is_array()) << value->dump();
  ASSERT_EQ(value->size(), 4u);
  EXPECT_EQ((*value)[0], MakeResult(1, "slow"));
  EXPECT_EQ((*value)[1], MakeResult(2, Json::array({2})));
  EXPECT_EQ((*value)[2], MakeError(nullptr, kInvalidRequest, "Invalid request"));
  EXPECT_EQ((*value)[3], MakeError("x", kMethodNotFound, "Method not found"));

  // An empty batch is one error object; a batch of notifications gets nothing.
  ASSERT_TRUE(client.SendRaw("[]").ok());
  value = client.ReadValue(10s);
  ASSERT_TRUE(value.ok()) << value.status();
  EXPECT_EQ(*value, MakeError(nullptr, kInvalidRequest, "Invalid request"));
  ASSERT_TRUE(client.SendRaw("[" + Notification("count") + "," + Notification("count") + "]").ok());
  ASSERT_TRUE(client.SendRaw(Request(3, "count")).ok());
  value = client.ReadValue(10s);
  ASSERT_TRUE(value.ok()) << value.status();
  EXPECT_EQ(*value, MakeResult(3, 4));
}

TEST_F(ServerTest, InvalidRequestsKeepTheConnection) {
  StartServer();
  BlockingClient client = Connect();
  ASSERT_TRUE(client.SendRaw(R"({"jsonrpc":"2.0","id":1} 42 {"jsonrpc":"2.0","id":2,"method":"echo","params":"s"})")
                  .ok());
  auto value = client.ReadValue(10s);
  ASSERT_TRUE(value.ok());
  EXPECT_EQ(*value, MakeError(1, kInvalidRequest, "Invalid request"));
  value = client.ReadValue(10s);
  ASSERT_TRUE(value.ok());
  EXPECT_EQ(*value, MakeError(nullptr, kInvalidRequest, "Invalid request"));
  value = client.ReadValue(10s);
  ASSERT_TRUE(value.ok());
  EXPECT_EQ(*value, MakeError(2, kInvalidRequest, "Invalid request"));
  EXPECT_EQ(*client.Call("echo", Json::array({5})), Json::array({5}));
}

TEST_F(ServerTest, ParseErrorClosesOnlyThatConnection) {
  StartServer();
  BlockingClient good = Connect();
  ASSERT_TRUE(good.Call("echo").ok());

  BlockingClient bad = Connect();
  // An earlier, slower request is still answered first, then the parse error, then the connection closes.
  ASSERT_TRUE(bad.SendRaw(Request(1, "delay", Json{{"ms", 30}, {"value", 1}}) + "{not json} " +
                          Request(2, "echo"))
                  .ok());
  auto value = bad.ReadValue(10s);
  ASSERT_TRUE(value.ok()) << value.status();
  EXPECT_EQ(*value, MakeResult(1, 1));
  value = bad.ReadValue(10s);
  ASSERT_TRUE(value.ok()) << value.status();
  EXPECT_EQ(*value, MakeError(nullptr, kParseError, "Parse error"));
  EXPECT_EQ(bad.ReadValue(10s).status().code(), absl::StatusCode::kUnavailable);

  // A byte that cannot start a value is a framing error: same treatment.
  RawSocket raw(path_);
  ASSERT_TRUE(raw.Send("}"));
  EXPECT_EQ(raw.ReadLines(1),
            "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32700,\"message\":\"Parse error\"}}\n");
  EXPECT_TRUE(raw.WaitForClose());

  EXPECT_EQ(*good.Call("echo", Json::array({1})), Json::array({1}));
  EXPECT_EQ(WaitForConnectionCount(1), 1u);
}

TEST_F(ServerTest, TooDeepNestingClosesTheConnection) {
  StartServer();
  RawSocket raw(path_);
  ASSERT_TRUE(raw.Send(R"({"jsonrpc":"2.0","id":1,"method":"echo","params":)" + std::string(5000, '[')));
  EXPECT_TRUE(raw.WaitForClose());
  EXPECT_EQ(WaitForConnectionCount(0), 0u);
}

TEST_F(ServerTest, OversizedMessageClosesTheConnection) {
  StartServer();
  BlockingClient good = Connect();
  // A large message under the limit is served (and makes a large answer).
  std::string payload(2u << 20, 'a');
  auto result = good.Call("echo", Json::array({payload}), 30s);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ((*result)[0].get<std::string>().size(), payload.size());

  // Over the limit: the connection is closed, possibly after a -32600 "Request too large" answer.
  RawSocket raw(path_);
  std::string huge = R"({"jsonrpc":"2.0","id":1,"method":"echo","params":[")" +
                     std::string(kDefaultMaxMessageSize + 1024, 'a') + "\"]}";
  std::thread sender([&] { raw.Send(huge); });  // fails with EPIPE once the server closes
  std::string answer = raw.ReadLines(1, 30s);
  if (!answer.empty()) {
    EXPECT_EQ(answer,
              "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32600,\"message\":\"Request too large\"}}\n");
  }
  EXPECT_TRUE(raw.WaitForClose(30s));
  sender.join();
  EXPECT_EQ(WaitForConnectionCount(1), 1u);
  EXPECT_TRUE(good.Call("echo").ok());
}

TEST_F(ServerTest, MaxMessageSizeOptionIsExact) {
  Server::Options options;
  options.max_message_size = 100;
  StartServer(options);
  std::string at_limit = R"({"jsonrpc":"2.0","id":1,"method":"echo","params":[")";
  at_limit += std::string(100 - at_limit.size() - 3, 'x') + "\"]}";
  ASSERT_EQ(at_limit.size(), 100u);
  BlockingClient client = Connect();
  ASSERT_TRUE(client.SendRaw(at_limit).ok());
  auto value = client.ReadValue(10s);
  ASSERT_TRUE(value.ok()) << value.status();
  EXPECT_EQ((*value)["id"], 1);

  std::string over = at_limit;
  over.insert(over.size() - 3, "x");
  ASSERT_TRUE(client.SendRaw(over).ok());
  value = client.ReadValue(10s);
  ASSERT_TRUE(value.ok()) << value.status();
  EXPECT_EQ(*value, MakeError(nullptr, kInvalidRequest, "Request too large"));
  EXPECT_EQ(client.ReadValue(10s).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(WaitForConnectionCount(0), 0u);
}

TEST_F(ServerTest, HalfRequestThenDisconnectFreesTheConnection) {
  StartServer();
  {
    RawSocket raw(path_);
    ASSERT_TRUE(raw.Send(R"({"jsonrpc":"2.0","id":1,"method":"ec)"));
    EXPECT_EQ(WaitForConnectionCount(1), 1u);
  }
  EXPECT_EQ(WaitForConnectionCount(0), 0u);
  // Same over TCP.
  {
    BlockingClient tcp = Connect("127.0.0.1:" + std::to_string(server_->tcp_port()));
    ASSERT_TRUE(tcp.SendRaw(R"([{"jsonrpc":"2.0","id":1,"method":"echo"},{"jsonrpc")").ok());
    EXPECT_EQ(WaitForConnectionCount(1), 1u);
  }
  EXPECT_EQ(WaitForConnectionCount(0), 0u);
}

TEST_F(ServerTest, ClientThatShutsDownWritingStillGetsItsAnswers) {
  StartServer();
  RawSocket raw(path_);
  ASSERT_TRUE(raw.Send(Request(1, "delay", Json{{"ms", 30}, {"value", "late"}}) + Request(2, "echo")));
  ASSERT_EQ(::shutdown(raw.fd(), SHUT_WR), 0);
  EXPECT_EQ(raw.ReadLines(2),
            "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":\"late\"}\n"
            "{\"jsonrpc\":\"2.0\",\"id\":2,\"result\":null}\n");
  EXPECT_TRUE(raw.WaitForClose());
  EXPECT_EQ(WaitForConnectionCount(0), 0u);
}

TEST_F(ServerTest, AnsweringAfterTheConnectionClosedIsANoOp) {
  StartServer();
  {
    BlockingClient client = Connect();
    ASSERT_TRUE(client.SendRaw(Request(1, "hold") + Request(2, "hold")).ok());
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (RunOnReactor([this] { return held_.size(); }) < 2 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(5ms);
    }
  }
  EXPECT_EQ(WaitForConnectionCount(0), 0u);
  RunOnReactor([this] {
    ASSERT_EQ(held_.size(), 2u);
    EXPECT_FALSE(held_[0].answered());
    held_[0].Reply(1);
    EXPECT_TRUE(held_[0].answered());
    held_[0].Reply(2);  // twice: ignored
    held_[1].Fail(-1, "x");
    held_.clear();
  });
  EXPECT_TRUE(Connect().Call("echo").ok());
}

TEST_F(ServerTest, RespondersOutliveShutdown) {
  StartServer();
  BlockingClient client = Connect();
  ASSERT_TRUE(client.SendRaw(Request(1, "hold") + Request(2, "delay", Json{{"ms", 50}})).ok());
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (RunOnReactor([this] { return held_.size(); }) < 1 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  RunOnReactor([this] { server_->Shutdown(); });
  EXPECT_FALSE(std::filesystem::exists(path_));
  EXPECT_EQ(client.ReadValue(5s).status().code(), absl::StatusCode::kUnavailable);
  std::this_thread::sleep_for(100ms);  // the delayed answer fires after shutdown
  RunOnReactor([this] {
    held_[0].Reply(true);
    EXPECT_EQ(server_->connection_count(), 0u);
  });
}

TEST_F(ServerTest, ShutdownFromInsideAHandler) {
  StartServer();
  BlockingClient client = Connect();
  BlockingClient other = Connect();
  ASSERT_TRUE(other.Call("echo").ok());
  auto result = client.Call("shutdown");
  EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(other.ReadValue(5s).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(std::filesystem::exists(path_));
  EXPECT_EQ(ConnectionCount(), 0u);
}

TEST_F(ServerTest, StaleSocketFileIsReplaced) {
  // A socket file left by a crashed process: bound, never unlinked, nobody listening.
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path_.c_str(), sizeof(addr.sun_path) - 1);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ::close(fd);
  ASSERT_TRUE(std::filesystem::is_socket(path_));

  StartServer();
  EXPECT_EQ(*Connect().Call("echo", Json::array({1})), Json::array({1}));
  StopServer();
  EXPECT_FALSE(std::filesystem::exists(path_));
}

TEST_F(ServerTest, SocketInUseByAnotherServerIsRefused) {
  StartServer();
  Reactor::Options options;
  options.name = "second";
  Reactor second_reactor(options);
  Server second(second_reactor, dispatcher_);
  absl::Status status = second.ListenUnix(path_);
  EXPECT_EQ(status.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(status.message(), "socket " + path_ + " is in use by another process");
  second.Shutdown();
  // The first server's socket is untouched.
  EXPECT_TRUE(std::filesystem::is_socket(path_));
  EXPECT_TRUE(Connect().Call("echo").ok());
}

TEST_F(ServerTest, ExistingNonSocketFileIsLeftAlone) {
  { std::ofstream(path_) << "precious"; }
  Reactor reactor(Reactor::Options{});
  Server server(reactor, dispatcher_);
  absl::Status status = server.ListenUnix(path_);
  EXPECT_EQ(status.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(std::string(status.message()), HasSubstr("not a socket"));
  std::ifstream in(path_);
  std::string content;
  in >> content;
  EXPECT_EQ(content, "precious");
}

TEST_F(ServerTest, ListenErrors) {
  Reactor reactor(Reactor::Options{});
  Server server(reactor, dispatcher_);
  EXPECT_EQ(server.ListenUnix(std::string(200, 'x')).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(server.ListenUnix(dir_ + "/missing_dir/rpc.sock").ok());
  ASSERT_TRUE(server.ListenUnix(path_).ok());
  EXPECT_EQ(server.ListenUnix(dir_ + "/second.sock").code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(server.ListenTcp("127.0.0.1", 0).ok());
  uint16_t port = server.tcp_port();
  Server other(reactor, dispatcher_);
  EXPECT_FALSE(other.ListenTcp("127.0.0.1", port).ok());  // in use
  server.Shutdown();
  EXPECT_FALSE(std::filesystem::exists(path_));
}

TEST_F(ServerTest, BlockingClientConnectErrors) {
  auto client = BlockingClient::Connect(dir_ + "/nobody.sock");
  EXPECT_EQ(client.status().code(), absl::StatusCode::kUnavailable);
  client = BlockingClient::Connect("127.0.0.1:notaport");
  EXPECT_EQ(client.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(ServerTest, ConnectionsBeyondTheLimitAreClosed) {
  Server::Options options;
  options.max_connections = 2;
  StartServer(options);
  BlockingClient first = Connect();
  BlockingClient second = Connect();
  ASSERT_TRUE(first.Call("echo").ok());
  ASSERT_TRUE(second.Call("echo").ok());
  BlockingClient third = Connect();
  EXPECT_EQ(third.Call("echo", Json(), 5s).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(ConnectionCount(), 2u);
  // A slot frees up when a client leaves.
  { BlockingClient gone = std::move(first); }
  EXPECT_EQ(WaitForConnectionCount(1), 1u);
  EXPECT_TRUE(Connect().Call("echo").ok());
}

TEST_F(ServerTest, PeerThatDoesNotReadIsThrottled) {
  StartServer();
  constexpr int kRequests = 200;
  constexpr size_t kAnswerSize = 64 * 1024;  // 12.5 MiB of answers in total
  RawSocket raw(path_);
  std::string requests;
  for (int i = 1; i <= kRequests; ++i) requests += Request(i, "big", Json{{"size", kAnswerSize}});
  std::thread sender([&] { EXPECT_TRUE(raw.Send(requests)); });
  std::this_thread::sleep_for(300ms);
  // The server stopped running requests while their answers pile up unread.
  int calls = big_calls_.load();
  EXPECT_GT(calls, 0);
  EXPECT_LT(calls, 100);

  // Reading everything lets it finish, in order.
  timeval tv{20, 0};
  ::setsockopt(raw.fd(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  StreamFramer framer(kDefaultMaxMessageSize);
  int next_id = 1;
  char buf[65536];
  auto deadline = std::chrono::steady_clock::now() + 60s;
  while (next_id <= kRequests && std::chrono::steady_clock::now() < deadline) {
    ssize_t n = ::recv(raw.fd(), buf, sizeof(buf), 0);
    ASSERT_GT(n, 0);
    framer.Append(buf, static_cast<size_t>(n));
    while (true) {
      auto next = framer.Next();
      ASSERT_TRUE(next.ok());
      if (!next->has_value()) break;
      Json value = Json::parse(**next);
      ASSERT_EQ(value["id"], next_id);
      ASSERT_EQ(value["result"].get<std::string>().size(), kAnswerSize);
      ++next_id;
    }
  }
  sender.join();
  EXPECT_EQ(next_id, kRequests + 1);
  EXPECT_EQ(big_calls_.load(), kRequests);
}

TEST_F(ServerTest, ManyPipelinedAsyncRequestsBeyondTheInFlightLimit) {
  StartServer();
  constexpr int kRequests = 3000;
  BlockingClient client = Connect();
  std::string requests;
  for (int i = 1; i <= kRequests; ++i) {
    requests += Request(i, "delay", Json{{"ms", i % 3}, {"value", i}});
  }
  std::thread sender([&] { EXPECT_TRUE(client.SendRaw(requests).ok()); });
  for (int i = 1; i <= kRequests; ++i) {
    auto value = client.ReadValue(20s);
    ASSERT_TRUE(value.ok()) << value.status() << " at " << i;
    ASSERT_EQ(*value, MakeResult(i, i));
  }
  sender.join();
}

TEST_F(ServerTest, ThousandConcurrentConnections) {
  constexpr int kClients = 1000;
  rlimit limit{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &limit), 0);
  limit.rlim_cur = limit.rlim_max;
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &limit), 0);
  if (limit.rlim_cur < 2 * kClients + 100) GTEST_SKIP() << "RLIMIT_NOFILE hard limit too low";

  StartServer();
  std::vector<BlockingClient> clients;
  clients.reserve(kClients);
  for (int i = 0; i < kClients; ++i) {
    auto client = BlockingClient::Connect(i % 2 == 0 ? path_
                                                     : "127.0.0.1:" + std::to_string(server_->tcp_port()));
    ASSERT_TRUE(client.ok()) << client.status() << " client " << i;
    clients.push_back(std::move(*client));
  }
  EXPECT_EQ(WaitForConnectionCount(kClients), static_cast<size_t>(kClients));
  // Every client has a request in flight at the same time.
  for (int i = 0; i < kClients; ++i) {
    ASSERT_TRUE(clients[i].SendRaw(Request(i, "delay", Json{{"ms", 5}, {"value", i}})).ok());
  }
  for (int i = 0; i < kClients; ++i) {
    auto value = clients[i].ReadValue(30s);
    ASSERT_TRUE(value.ok()) << value.status() << " client " << i;
    EXPECT_EQ(*value, MakeResult(i, i));
  }
  clients.clear();
  EXPECT_EQ(WaitForConnectionCount(0), 0u);
}

}  // namespace
}  // namespace smad::jsonrpc
