#include "agent/spdk/spdk_client.h"

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "agent/spdk/http_transport.h"
#include "agent/spdk/rpc_wire.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "jsonrpc/protocol.h"
#include "jsonrpc/server.h"
#include "reactor/reactor.h"
#include "spdlog/sinks/ostream_sink.h"
#include "spdlog/spdlog.h"
#include "support/temp_dir.h"
#include "support/tgt_process.h"

namespace smad::agent {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr uint64_t kNsPerMs = 1'000'000;
constexpr auto kLong = 10s;  // for calls expected to succeed: only a broken client waits this long

// Polls `condition` every 5 ms until it holds or `timeout` passes; returns its last value.
bool WaitFor(const std::function<bool()>& condition, std::chrono::milliseconds timeout = 10s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!condition()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

// The connection events a client reported through on_connection_change.
class ConnectionEvents {
 public:
  std::function<void(bool, uint64_t)> Callback() {
    return [this](bool up, uint64_t epoch) {
      absl::MutexLock lock(&mu_);
      events_.emplace_back(up, epoch);
    };
  }
  std::vector<std::pair<bool, uint64_t>> Get() {
    absl::MutexLock lock(&mu_);
    return events_;
  }

 private:
  absl::Mutex mu_;
  std::vector<std::pair<bool, uint64_t>> events_ ABSL_GUARDED_BY(mu_);
};

// ---- Errors and the wire format (no I/O) ----

TEST(SpdkErrorStatusTest, MapsCodesAndCarriesTheError) {
  const std::pair<int, absl::StatusCode> cases[] = {
      {-ENODEV, absl::StatusCode::kNotFound},
      {-ENOENT, absl::StatusCode::kNotFound},
      {-EEXIST, absl::StatusCode::kAlreadyExists},
      {-32602, absl::StatusCode::kInvalidArgument},
      {-EINVAL, absl::StatusCode::kInvalidArgument},
      {-32601, absl::StatusCode::kUnimplemented},
      {-EBUSY, absl::StatusCode::kUnavailable},
      {-EAGAIN, absl::StatusCode::kUnavailable},
      {-32603, absl::StatusCode::kInternal},
      {-EIO, absl::StatusCode::kInternal},
      {0, absl::StatusCode::kInternal},
      {42, absl::StatusCode::kInternal},
  };
  for (const auto& [code, expected] : cases) {
    absl::Status status = SpdkErrorStatus("bdev_x", SpdkError{code, "Something \"odd\"\n"});
    EXPECT_EQ(status.code(), expected) << code;
    EXPECT_EQ(status.message(), absl::StrCat("bdev_x: Something \"odd\"\n (code ", code, ")"));
    std::optional<SpdkError> error = SpdkErrorOf(status);
    ASSERT_TRUE(error.has_value()) << code;
    EXPECT_EQ(error->code, code);
    EXPECT_EQ(error->message, "Something \"odd\"\n");
  }
}

TEST(SpdkErrorStatusTest, OtherStatusesCarryNoError) {
  EXPECT_FALSE(SpdkErrorOf(absl::OkStatus()).has_value());
  EXPECT_FALSE(SpdkErrorOf(absl::NotFoundError("x: y (code -19)")).has_value());
  absl::Status forged = absl::InternalError("x");
  forged.SetPayload("type.smad.dev/smad.spdk.error", absl::Cord("not json"));
  EXPECT_FALSE(SpdkErrorOf(forged).has_value());
}

TEST(RpcWireTest, EncodesRequests) {
  EXPECT_EQ(EncodeRequest(7, "spdk_get_version", Json()),
            R"({"jsonrpc":"2.0","method":"spdk_get_version","id":7})");
  EXPECT_EQ(EncodeRequest(8, "m", Json::array({1})), R"({"jsonrpc":"2.0","method":"m","id":8,"params":[1]})");
  // Invalid UTF-8 is replaced rather than throwing.
  std::string request = EncodeRequest(9, "m", Json{{"k", std::string("\xff")}});
  EXPECT_EQ(Json::parse(request)["params"]["k"], "\xEF\xBF\xBD");
}

TEST(RpcWireTest, DecodesAnswerStreams) {
  AnswerStream stream(1 << 20);
  const std::string bytes =
      R"({"jsonrpc":"2.0","id":1,"result":{"a":[1,2]}})"
      "\n"
      R"({"jsonrpc":"2.0","id":2,"error":{"code":-19,"message":"No such device"}})"
      R"([{"id":3,"result":null},{"id":"x","result":1},{"id":4,"error":"text","result":5}])"
      "\n"
      R"({"id":5,"error":{"code":1e99,"message":{"m":1}}} {"id":null,"error":{"code":-32700,"message":"Parse error"}})";
  for (char c : bytes) stream.Append(&c, 1);  // byte by byte
  std::vector<SpdkAnswer> answers;
  while (true) {
    absl::StatusOr<std::optional<SpdkAnswer>> next = stream.Next();
    ASSERT_TRUE(next.ok()) << next.status();
    if (!next->has_value()) break;
    answers.push_back(**std::move(next));
  }
  ASSERT_EQ(answers.size(), 7u);
  EXPECT_EQ(answers[0].id, 1);
  EXPECT_EQ(answers[0].result, Json::parse(R"({"a":[1,2]})"));
  EXPECT_EQ(answers[1].error->code, -19);
  EXPECT_EQ(answers[1].error->message, "No such device");
  EXPECT_EQ(answers[2].id, 3);
  EXPECT_TRUE(answers[2].result.is_null());
  EXPECT_FALSE(answers[3].id.has_value());
  EXPECT_FALSE(answers[3].id_null);
  EXPECT_EQ(answers[4].error->message, R"("text")");  // error wins over result
  EXPECT_EQ(answers[5].error->code, -32603);          // not an int
  EXPECT_EQ(answers[5].error->message, R"({"m":1})");
  EXPECT_TRUE(answers[6].id_null);
  EXPECT_EQ(answers[6].error->code, -32700);
}

TEST(RpcWireTest, RejectsWhatIsNotAnAnswer) {
  for (const std::string& bytes :
       std::vector<std::string>{"nope\n", "{\"id\":1}\n", "[]\n", "42\n", "{\"result\":1}\n",
                                "[{\"id\":1,\"result\":1},2]", "}", std::string(100, '[')}) {
    AnswerStream stream(64);
    stream.Append(bytes.data(), bytes.size());
    absl::StatusOr<std::optional<SpdkAnswer>> next = stream.Next();
    if (next.ok() && !next->has_value()) continue;  // incomplete ('[' x 100 is over the size limit at 64)
    EXPECT_EQ(next.status().code(), absl::StatusCode::kDataLoss) << bytes;
    EXPECT_FALSE(stream.Next().ok()) << "errors are sticky";
  }
}

TEST(HttpResponseParserTest, Base64) {
  EXPECT_EQ(Base64Encode(""), "");
  EXPECT_EQ(Base64Encode("f"), "Zg==");
  EXPECT_EQ(Base64Encode("fo"), "Zm8=");
  EXPECT_EQ(Base64Encode("foo"), "Zm9v");
  EXPECT_EQ(Base64Encode("foobar"), "Zm9vYmFy");
  EXPECT_EQ(Base64Encode("admin:p@ss:w/rd"), "YWRtaW46cEBzczp3L3Jk");
  EXPECT_EQ(Base64Encode("\xff\xfe"), "//4=");
}

TEST(HttpResponseParserTest, ChunkedBodyByteByByteAfterAnInterimResponse) {
  const std::string bytes =
      "HTTP/1.1 100 Continue\r\n\r\n"
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
      "4;ext=1\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\nX-Trailer: y\r\n\r\n";
  HttpResponseParser parser(1024);
  for (char c : bytes) ASSERT_TRUE(parser.Append(&c, 1).ok());
  ASSERT_TRUE(parser.done());
  EXPECT_EQ(parser.response().status, 200);
  EXPECT_EQ(parser.response().status_line, "HTTP/1.1 200 OK");
  EXPECT_EQ(parser.response().body, "{\"a\":1}");
  EXPECT_TRUE(parser.response().keep_alive);
  EXPECT_FALSE(parser.trailing_bytes());
}

TEST(HttpResponseParserTest, BodyUntilCloseAndKeepAliveRules) {
  HttpResponseParser close_delimited(1024);
  const std::string head = "HTTP/1.0 200 OK\nContent-type: application/json\n\n{\"id\":1,";
  ASSERT_TRUE(close_delimited.Append(head.data(), head.size()).ok());
  EXPECT_FALSE(close_delimited.done());
  ASSERT_TRUE(close_delimited.Finish().ok());
  EXPECT_EQ(close_delimited.response().body, "{\"id\":1,");
  EXPECT_FALSE(close_delimited.response().keep_alive);

  HttpResponseParser closing(1024);
  const std::string bytes =
      "HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nContent-Length: 2\r\n\r\nnoEXTRA";
  ASSERT_TRUE(closing.Append(bytes.data(), bytes.size()).ok());
  ASSERT_TRUE(closing.done());
  EXPECT_EQ(closing.response().body, "no");
  EXPECT_FALSE(closing.response().keep_alive);
  EXPECT_TRUE(closing.trailing_bytes());

  HttpResponseParser truncated(1024);
  const std::string partial = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
  ASSERT_TRUE(truncated.Append(partial.data(), partial.size()).ok());
  EXPECT_EQ(truncated.Finish().code(), absl::StatusCode::kDataLoss);
}

TEST(HttpResponseParserTest, RejectsMalformedResponses) {
  for (const std::string& bytes : std::vector<std::string>{
           "HTTP/2 200 OK\r\n\r\n",
           "HTTP/1.1 2000 OK\r\n\r\n",
           "garbage\r\n\r\n",
           "HTTP/1.1 099 X\r\n\r\n",
           "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
           "HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n",
           "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
           "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
           "HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n",  // over the 1024 limit
           "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
           "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
           "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n",
           "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n401\r\n",
           "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
           "HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
           "HTTP/1.1 200 OK\r\n" + std::string(70000, 'x'),
       }) {
    HttpResponseParser parser(1024);
    absl::Status status = parser.Append(bytes.data(), bytes.size());
    EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << bytes.substr(0, 80);
    EXPECT_FALSE(parser.Append("x", 1).ok()) << "errors are sticky";
  }
}

// ---- Addresses and options ----

TEST(CreateJsonRpcClientTest, RejectsMalformedAddressesWithoutLeakingThePassword) {
  for (const std::string& address : std::vector<std::string>{
           "", "host:notaport", "host:0", "host:65536", ":5260", "[::1", "https://u:secret@host/",
           "ftp://host/x", "http://u:secret@[::1/", "http://u:secret%zz@host:80/",
           "http://u:secret@host:99999/", "http://u:secret@/", "http://u:secret@host/a path",
           std::string(200, 'a') + "/sock"}) {
    absl::StatusOr<SpdkClientPtr> client = CreateJsonRpcClient({.address = address});
    EXPECT_EQ(client.status().code(), absl::StatusCode::kInvalidArgument) << address;
    EXPECT_THAT(std::string(client.status().message()), Not(HasSubstr("secret"))) << address;
  }
  EXPECT_FALSE(CreateJsonRpcClient({.address = "/tmp/x.sock", .max_in_flight = 0}).ok());
  EXPECT_FALSE(CreateJsonRpcClient({.address = "/tmp/x.sock", .reconnect_min = 0ms}).ok());
  EXPECT_FALSE(
      CreateJsonRpcClient({.address = "/tmp/x.sock", .reconnect_min = 3s, .reconnect_max = 1s}).ok());
  EXPECT_FALSE(CreateJsonRpcClient({.address = "/tmp/x.sock", .max_response_size = 0}).ok());
  for (const char* address :
       {"spdk.sock", "/var/tmp/spdk.sock", "127.0.0.1:5260", "[::1]:5260", "localhost:1",
        "http://127.0.0.1:9009", "http://u:p@[::1]:80/rpc", "HTTP://h"}) {
    EXPECT_TRUE(CreateJsonRpcClient({.address = address}).ok()) << address;
  }
}

TEST(SpdkClientNoTargetTest, CallsFailFastWithUnavailable) {
  testing::TempDir dir;
  absl::StatusOr<SpdkClientPtr> client = CreateJsonRpcClient({.address = dir.File("missing.sock")});
  ASSERT_TRUE(client.ok()) << client.status();
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<Json> result = (*client)->Call("spdk_get_version", Json(), kLong);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable) << result.status();
  EXPECT_THAT(std::string(result.status().message()), HasSubstr("missing.sock"));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
  EXPECT_EQ((*client)->connection_epoch(), 0u);
}

// ---- Against a real smad::jsonrpc::Server ----

enum class Transport { kUnix, kTcp };

class SpdkClientServerTest : public ::testing::TestWithParam<Transport> {
 protected:
  void SetUp() override {
    ::signal(SIGPIPE, SIG_IGN);
    dispatcher_.Register("echo", [](const Json& params, jsonrpc::Responder r) { r.Reply(params); });
    dispatcher_.Register("fail", [](const Json& params, jsonrpc::Responder r) {
      r.Fail(params.at("code").get<int>(), params.at("message").get<std::string>());
    });
    // Keeps the Responder unanswered until the test releases it (see Release).
    dispatcher_.Register("hold", [this](const Json&, jsonrpc::Responder r) {
      held_.push_back(std::move(r));
      ++held_count_;
    });
    // {"ms": N, "value": V}: answers V after N ms, counting the calls outstanding at once.
    dispatcher_.Register("slow", [this](const Json& params, jsonrpc::Responder r) {
      int now = ++outstanding_;
      int seen = max_outstanding_.load();
      while (now > seen && !max_outstanding_.compare_exchange_weak(seen, now)) {
      }
      Reactor::Current()->RunAfter(params.at("ms").get<uint64_t>() * kNsPerMs,
                                   [this, r = std::move(r), value = params.at("value")]() mutable {
                                     --outstanding_;
                                     r.Reply(value);
                                   });
    });
    StartServer();
  }

  void TearDown() override { StopServer(); }

  void StartServer() {
    reactor_ = std::make_unique<Reactor>(Reactor::Options{.name = "spdk_client_test"});
    server_ = std::make_unique<jsonrpc::Server>(*reactor_, dispatcher_);
    if (GetParam() == Transport::kUnix) {
      absl::Status status = server_->ListenUnix(dir_.File("rpc.sock"));
      ASSERT_TRUE(status.ok()) << status;
    } else {
      absl::Status status = server_->ListenTcp("127.0.0.1", tcp_port_);
      ASSERT_TRUE(status.ok()) << status;
      tcp_port_ = server_->tcp_port();
    }
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

  template <typename Fn>
  void RunOnReactor(Fn fn) {
    std::promise<void> done;
    reactor_->Post([&] {
      fn();
      done.set_value();
    });
    done.get_future().wait();
  }

  // Answers every held call with `value`.
  void Release(const Json& value) {
    RunOnReactor([&] {
      for (jsonrpc::Responder& r : held_) r.Reply(value);
      held_.clear();
    });
  }

  std::string Address() const {
    return GetParam() == Transport::kUnix ? dir_.File("rpc.sock") : absl::StrCat("127.0.0.1:", tcp_port_);
  }

  SpdkClientPtr MakeClient(JsonRpcClientOptions options = {}) {
    options.address = Address();
    options.on_connection_change = events_.Callback();
    absl::StatusOr<SpdkClientPtr> client = CreateJsonRpcClient(std::move(options));
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? *std::move(client) : nullptr;
  }

  testing::TempDir dir_;
  uint16_t tcp_port_ = 0;
  jsonrpc::Dispatcher dispatcher_;
  std::unique_ptr<Reactor> reactor_;
  std::unique_ptr<jsonrpc::Server> server_;
  std::vector<jsonrpc::Responder> held_;  // reactor thread only
  std::atomic<int> held_count_{0};
  std::atomic<int> outstanding_{0};
  std::atomic<int> max_outstanding_{0};
  ConnectionEvents events_;
};

INSTANTIATE_TEST_SUITE_P(Transports, SpdkClientServerTest,
                         ::testing::Values(Transport::kUnix, Transport::kTcp),
                         [](const auto& info) { return info.param == Transport::kUnix ? "Unix" : "Tcp"; });

TEST_P(SpdkClientServerTest, CallReturnsTheResult) {
  SpdkClientPtr client = MakeClient();
  const Json object = {{"name", "Malloc0"}, {"nested", {{"list", {1, 2, 3}}}}};
  absl::StatusOr<Json> result = client->Call("echo", object, kLong);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(*result, object);
  result = client->Call("echo", Json::array({"a", nullptr}), kLong);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(*result, Json::array({"a", nullptr}));
  result = client->Call("echo", Json(), kLong);  // no params: the handler sees null
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(result->is_null());
  EXPECT_EQ(client->connection_epoch(), 1u);
  EXPECT_EQ(client->Call("echo", Json(5), kLong).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client->Call("echo", Json("text"), kLong).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_P(SpdkClientServerTest, ConcurrentPipelinedCallersGetTheirOwnAnswers) {
  SpdkClientPtr client = MakeClient({.max_in_flight = 16});
  constexpr int kThreads = 4;
  constexpr int kCalls = 250;
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kCalls; ++i) {
        const Json params = {{"thread", t}, {"call", i}, {"pad", std::string(i % 7 * 100, 'x')}};
        absl::StatusOr<Json> result = client->Call("echo", params, kLong);
        if (!result.ok() || *result != params) ++wrong;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(client->connection_epoch(), 1u);
}

TEST_P(SpdkClientServerTest, ErrorAnswersMapToStatusCodes) {
  SpdkClientPtr client = MakeClient();
  const std::pair<int, absl::StatusCode> cases[] = {
      {-19, absl::StatusCode::kNotFound},        {-2, absl::StatusCode::kNotFound},
      {-17, absl::StatusCode::kAlreadyExists},   {-32602, absl::StatusCode::kInvalidArgument},
      {-22, absl::StatusCode::kInvalidArgument}, {-16, absl::StatusCode::kUnavailable},
      {-5, absl::StatusCode::kInternal},         {-32603, absl::StatusCode::kInternal},
  };
  for (const auto& [code, expected] : cases) {
    absl::StatusOr<Json> result = client->Call("fail", {{"code", code}, {"message", "it failed"}}, kLong);
    EXPECT_EQ(result.status().code(), expected) << code;
    EXPECT_EQ(result.status().message(), absl::StrCat("fail: it failed (code ", code, ")"));
    std::optional<SpdkError> error = SpdkErrorOf(result.status());
    ASSERT_TRUE(error.has_value());
    EXPECT_EQ(error->code, code);
    EXPECT_EQ(error->message, "it failed");
  }
  absl::StatusOr<Json> unknown = client->Call("no_such_method", Json(), kLong);
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kUnimplemented) << unknown.status();
  EXPECT_EQ(SpdkErrorOf(unknown.status())->code, -32601);
  EXPECT_EQ(client->connection_epoch(), 1u) << "error answers keep the connection";
}

TEST_P(SpdkClientServerTest, TimeoutGivesDeadlineExceededAndLaterCallsWork) {
  SpdkClientPtr client = MakeClient();
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<Json> result = client->Call("hold", Json(), 100ms);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kDeadlineExceeded) << result.status();
  EXPECT_GE(std::chrono::steady_clock::now() - start, 100ms);
  // smad's server answers a connection's requests in order: the late answer must come first, and the
  // client must drop it rather than give it to the next caller.
  Release("late");
  for (int i = 0; i < 3; ++i) {
    result = client->Call("echo", {{"i", i}}, kLong);
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(*result, Json({{"i", i}}));
  }
  EXPECT_EQ(client->connection_epoch(), 1u);
}

TEST_P(SpdkClientServerTest, MaxInFlightBoundsOutstandingRequests) {
  SpdkClientPtr client = MakeClient({.max_in_flight = 3});
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 5; ++i) {
        absl::StatusOr<Json> result = client->Call("slow", {{"ms", 10}, {"value", t * 100 + i}}, kLong);
        if (!result.ok() || *result != t * 100 + i) ++failures;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_LE(max_outstanding_.load(), 3);
  EXPECT_GE(max_outstanding_.load(), 2);
}

TEST_P(SpdkClientServerTest, WaitingForASlotRespectsTheTimeout) {
  SpdkClientPtr client = MakeClient({.max_in_flight = 1});
  auto held = std::async(std::launch::async, [&] { return client->Call("hold", Json(), kLong); });
  ASSERT_TRUE(WaitFor([&] { return held_count_.load() == 1; }));
  absl::StatusOr<Json> result = client->Call("echo", Json::object(), 100ms);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kDeadlineExceeded) << result.status();
  EXPECT_THAT(std::string(result.status().message()), HasSubstr("in flight"));
  Release("done");
  absl::StatusOr<Json> first = held.get();
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(*first, "done");
  EXPECT_TRUE(client->Call("echo", Json::object(), kLong).ok());
}

TEST_P(SpdkClientServerTest, ServerShutdownFailsCallsWithUnavailable) {
  SpdkClientPtr client = MakeClient();
  auto held = std::async(std::launch::async, [&] { return client->Call("hold", Json(), kLong); });
  ASSERT_TRUE(WaitFor([&] { return held_count_.load() == 1; }));
  const auto start = std::chrono::steady_clock::now();
  StopServer();
  absl::StatusOr<Json> result = held.get();
  EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable) << result.status();
  EXPECT_THAT(std::string(result.status().message()), HasSubstr("hold: "));
  result = client->Call("echo", Json(), kLong);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable) << result.status();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s) << "fails at once, not at the timeout";
}

TEST_P(SpdkClientServerTest, ReconnectsAfterARestartAndCountsEpochs) {
  SpdkClientPtr client = MakeClient({.reconnect_min = 10ms, .reconnect_max = 40ms});
  ASSERT_TRUE(client->Call("echo", Json(), kLong).ok());
  EXPECT_EQ(client->connection_epoch(), 1u);
  StopServer();
  ASSERT_TRUE(WaitFor([&] { return events_.Get().size() == 2; }));
  StartServer();
  // The background reconnects by itself, within the backoff bound.
  EXPECT_TRUE(WaitFor([&] { return client->connection_epoch() == 2; }, 5s));
  absl::StatusOr<Json> result = client->Call("echo", {{"after", "restart"}}, kLong);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(client->connection_epoch(), 2u);
  EXPECT_THAT(events_.Get(),
              ::testing::ElementsAre(std::pair(true, 1u), std::pair(false, 1u), std::pair(true, 2u)));
}

TEST_P(SpdkClientServerTest, CallWhileDisconnectedConnectsAtOnce) {
  // A backoff far longer than the test: only the call's own immediate attempt can reconnect.
  SpdkClientPtr client = MakeClient({.reconnect_min = 60s, .reconnect_max = 60s});
  ASSERT_TRUE(client->Call("echo", Json(), kLong).ok());
  StopServer();
  ASSERT_TRUE(WaitFor([&] { return events_.Get().size() == 2; }));
  StartServer();
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<Json> result = client->Call("echo", {{"x", 1}}, kLong);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  EXPECT_EQ(client->connection_epoch(), 2u);
}

TEST_P(SpdkClientServerTest, OversizedAnswerIsDataLossThenRecovers) {
  SpdkClientPtr client = MakeClient({.reconnect_min = 10ms, .max_response_size = 1024});
  absl::StatusOr<Json> result = client->Call("echo", {{"big", std::string(4096, 'b')}}, kLong);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kDataLoss) << result.status();
  result = client->Call("echo", {{"small", 1}}, kLong);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(client->connection_epoch(), 2u);
}

// ---- Against a fake peer: answers a real target would not give ----

// A Unix socket the test accepts on and talks to byte by byte. One connection at a time.
class FakePeer {
 public:
  explicit FakePeer(const std::string& path) {
    listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
    EXPECT_EQ(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0)
        << std::strerror(errno);
    EXPECT_EQ(::listen(listen_fd_, 8), 0);
  }
  ~FakePeer() {
    CloseConnection();
    ::close(listen_fd_);
  }

  // Accepts the client's next connection (replacing the current one).
  void Accept() {
    CloseConnection();
    timeval tv{10, 0};
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    fd_ = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    ASSERT_GE(fd_, 0) << std::strerror(errno);
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    framer_ = jsonrpc::StreamFramer();
  }
  // The next request the client sent.
  Json ReadRequest() {
    while (true) {
      absl::StatusOr<std::optional<std::string>> next = framer_.Next();
      if (!next.ok()) return Json();
      if (next->has_value()) return Json::parse(**next);
      char buffer[4096];
      ssize_t n = ::recv(fd_, buffer, sizeof(buffer), 0);
      if (n <= 0) return Json();
      framer_.Append(buffer, static_cast<size_t>(n));
    }
  }
  void Send(const std::string& bytes) {
    ASSERT_EQ(::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL), static_cast<ssize_t>(bytes.size()));
  }
  void CloseConnection() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int listen_fd_ = -1;
  int fd_ = -1;
  jsonrpc::StreamFramer framer_;
};

std::string Answer(const Json& id, const Json& result) {
  return Json({{"jsonrpc", "2.0"}, {"id", id}, {"result", result}}).dump() + "\n";
}

class SpdkClientFakePeerTest : public ::testing::Test {
 protected:
  void SetUp() override { ::signal(SIGPIPE, SIG_IGN); }

  SpdkClientPtr MakeClient(JsonRpcClientOptions options = {}) {
    options.address = dir_.File("peer.sock");
    options.on_connection_change = events_.Callback();
    absl::StatusOr<SpdkClientPtr> client = CreateJsonRpcClient(std::move(options));
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? *std::move(client) : nullptr;
  }

  testing::TempDir dir_;
  FakePeer peer_{dir_.File("peer.sock")};
  ConnectionEvents events_;
};

TEST_F(SpdkClientFakePeerTest, GarbageGivesDataLossThenTheClientRecovers) {
  // No background reconnects during the test: each call's own immediate attempt reconnects, so epochs
  // are deterministic.
  SpdkClientPtr client = MakeClient({.reconnect_min = 60s, .reconnect_max = 60s});
  const std::vector<std::function<std::string(const Json& id)>> garbage = {
      [](const Json&) { return std::string("\x01\x02 not json at all }\n"); },
      [](const Json& id) {
        return Json({{"id", id}}).dump() + "\n";
      },  // neither result nor error
      [](const Json&) { return std::string("[]\n"); },
      [](const Json&) { return std::string("42\n"); },
      [](const Json& id) { return "{\"id\":" + id.dump() + ",\"result\":tru}\n"; },
      [](const Json&) {
        return std::string(R"({"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}})");
      },
  };
  uint64_t epoch = 0;
  for (size_t i = 0; i < garbage.size(); ++i) {
    auto call = std::async(std::launch::async, [&] { return client->Call("bdev_get_bdevs", Json(), kLong); });
    peer_.Accept();
    Json request = peer_.ReadRequest();
    ASSERT_EQ(request["method"], "bdev_get_bdevs");
    peer_.Send(garbage[i](request["id"]));
    absl::StatusOr<Json> result = call.get();
    EXPECT_EQ(result.status().code(), absl::StatusCode::kDataLoss) << i << ": " << result.status();
    EXPECT_THAT(std::string(result.status().message()), HasSubstr("bdev_get_bdevs: ")) << i;
    EXPECT_EQ(client->connection_epoch(), ++epoch);
    EXPECT_TRUE(WaitFor([&] { return events_.Get().back() == std::pair(false, epoch); })) << i;
  }

  // The next connection works.
  auto call = std::async(std::launch::async, [&] { return client->Call("echo", Json::object(), kLong); });
  peer_.Accept();
  Json request = peer_.ReadRequest();
  peer_.Send(Answer(request["id"], "fine"));
  absl::StatusOr<Json> result = call.get();
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(*result, "fine");
  EXPECT_EQ(client->connection_epoch(), epoch + 1);
}

TEST_F(SpdkClientFakePeerTest, AnswersAreMatchedByIdWhateverTheirOrder) {
  SpdkClientPtr client = MakeClient();
  std::vector<std::future<absl::StatusOr<Json>>> calls;
  peer_.Accept();  // (the client's first connect happens in the background at once)
  for (int i = 0; i < 3; ++i) {
    calls.push_back(std::async(std::launch::async, [&, i] {
      return client->Call("echo", {{"i", i}}, kLong);
    }));
  }
  std::map<int, Json> ids;  // call index -> request id
  for (int i = 0; i < 3; ++i) {
    Json request = peer_.ReadRequest();
    ASSERT_TRUE(request.is_object());
    ids[request["params"]["i"].get<int>()] = request["id"];
  }
  // An answer nobody waits for is ignored; then the answers in reverse order: one byte by byte, two as a
  // batch.
  peer_.Send(Answer(987654, "stray") + Answer("text-id", "stray"));
  for (char c : Answer(ids[2], "two")) peer_.Send(std::string(1, c));
  peer_.Send("[" + Answer(ids[1], "one") + "," + Answer(ids[0], "zero") + "]");
  const char* expected[] = {"zero", "one", "two"};
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<Json> result = calls[i].get();
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(*result, expected[i]);
  }
  EXPECT_EQ(client->connection_epoch(), 1u);
}

TEST_F(SpdkClientFakePeerTest, APeerThatNeverReadsCannotBlockCallsForever) {
  SpdkClientPtr client = MakeClient();
  peer_.Accept();
  const Json big = {{"data", std::string(1 << 20, 'd')}};  // far more than the socket buffers hold
  for (int i = 0; i < 3; ++i) {
    const auto start = std::chrono::steady_clock::now();
    absl::StatusOr<Json> result = client->Call("bdev_write", big, 200ms);
    EXPECT_EQ(result.status().code(), absl::StatusCode::kDeadlineExceeded) << result.status();
    EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  }
  // A request the target never read cannot be withdrawn: the client resets the connection rather than
  // pile up unsent bytes.
  EXPECT_TRUE(WaitFor([&] {
    std::vector<std::pair<bool, uint64_t>> events = events_.Get();
    return events.size() >= 2 && events[1] == std::pair(false, uint64_t{1});
  }));
}

TEST_F(SpdkClientFakePeerTest, ClientDestructionWithCallsOutstandingIsClean) {
  SpdkClientPtr client = MakeClient();
  auto call = std::async(std::launch::async, [&] { return client->Call("echo", Json(), 200ms); });
  peer_.Accept();
  peer_.ReadRequest();
  EXPECT_EQ(call.get().status().code(), absl::StatusCode::kDeadlineExceeded);
  client.reset();  // joins the I/O thread
  EXPECT_EQ(events_.Get().size(), 1u) << "no 'down' event for the client's own close";
}

// ---- HTTP (SPDK's rpc_http_proxy) against an in-test server ----

struct HttpRequest {
  std::string request_line;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
};

// A tiny HTTP/1.1 server on 127.0.0.1: one thread per connection, keep-alive unless the response says
// otherwise. `handler` returns the raw response bytes; an empty string closes the connection unanswered.
class HttpTestServer {
 public:
  using Handler = std::function<std::string(const HttpRequest&)>;

  explicit HttpTestServer(Handler handler) : handler_(std::move(handler)) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    socklen_t length = sizeof(addr);
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &length);
    port_ = ntohs(addr.sin_port);
    EXPECT_EQ(::listen(listen_fd_, 16), 0);
    acceptor_ = std::thread([this] { AcceptLoop(); });
  }
  ~HttpTestServer() {
    stop_ = true;
    ::shutdown(listen_fd_, SHUT_RDWR);
    acceptor_.join();
    ::close(listen_fd_);
    std::vector<std::thread> connections;
    {
      absl::MutexLock lock(&mu_);
      for (int fd : open_) ::shutdown(fd, SHUT_RDWR);
      connections.swap(connections_);
    }
    for (std::thread& thread : connections) thread.join();
    absl::MutexLock lock(&mu_);
    for (int fd : open_) ::close(fd);
  }

  uint16_t port() const { return port_; }
  int connections() const { return accepted_.load(); }

 private:
  void AcceptLoop() {
    while (!stop_) {
      int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      ++accepted_;
      absl::MutexLock lock(&mu_);
      open_.push_back(fd);
      connections_.emplace_back([this, fd] { Serve(fd); });
    }
  }

  void Serve(int fd) {
    std::string buffer;
    while (true) {
      size_t head_end;
      while ((head_end = buffer.find("\r\n\r\n")) == std::string::npos) {
        if (!Read(fd, buffer)) return Close(fd);
      }
      HttpRequest request;
      std::istringstream head(buffer.substr(0, head_end));
      std::getline(head, request.request_line);
      for (std::string line; std::getline(head, line);) {
        size_t colon = line.find(':');
        if (colon == std::string::npos) continue;
        request.headers[absl::AsciiStrToLower(line.substr(0, colon))] =
            std::string(absl::StripAsciiWhitespace(line.substr(colon + 1)));
      }
      size_t length = 0;
      EXPECT_TRUE(absl::SimpleAtoi(request.headers["content-length"], &length));
      buffer.erase(0, head_end + 4);
      while (buffer.size() < length) {
        if (!Read(fd, buffer)) return Close(fd);
      }
      request.body = buffer.substr(0, length);
      buffer.erase(0, length);
      std::string response = handler_(request);
      if (response.empty()) return Close(fd);
      if (::send(fd, response.data(), response.size(), MSG_NOSIGNAL) < 0) return Close(fd);
      if (absl::StrContains(response, "Connection: close") || absl::StartsWith(response, "HTTP/1.0"))
        return Close(fd);
    }
  }

  static bool Read(int fd, std::string& buffer) {
    char chunk[4096];
    ssize_t n = ::recv(fd, chunk, sizeof(chunk), 0);
    if (n <= 0) return false;
    buffer.append(chunk, static_cast<size_t>(n));
    return true;
  }

  void Close(int fd) { ::shutdown(fd, SHUT_RDWR); }  // closed by the destructor (no fd reuse races)

  Handler handler_;
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> accepted_{0};
  std::thread acceptor_;
  absl::Mutex mu_;
  std::vector<int> open_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> connections_ ABSL_GUARDED_BY(mu_);
};

constexpr char kUser[] = "admin";
constexpr char kPassword[] = "p@ss:w/rd";
constexpr char kEscapedPassword[] = "p%40ss%3Aw%2Frd";
constexpr char kAuthorization[] = "Basic YWRtaW46cEBzczp3L3Jk";  // base64("admin:p@ss:w/rd"), computed apart

std::string HttpResponseText(int status, const std::string& reason, const std::string& body,
                             const std::string& extra_headers = "") {
  return absl::StrCat("HTTP/1.1 ", status, " ", reason,
                      "\r\nContent-Type: application/json\r\nContent-Length: ", body.size(), "\r\n",
                      extra_headers, "\r\n", body);
}

// rpc_http_proxy's behaviour: 401 without the right credentials, else the target's answer as the body.
// The "method" picks the answer: "echo" echoes params; "fail" answers -19; "chunked", "http10" and
// "status" vary the HTTP framing; "sleep" answers after 500 ms.
std::string ProxyHandler(const HttpRequest& request) {
  EXPECT_EQ(request.request_line, "POST /rpc HTTP/1.1\r");
  if (request.headers.count("authorization") == 0 || request.headers.at("authorization") != kAuthorization) {
    return "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"spdk\"\r\nContent-Length: 0\r\n\r\n";
  }
  Json call = Json::parse(request.body);
  const std::string method = call["method"];
  const Json params = call.value("params", Json());
  const std::string answer = Answer(call["id"], params);
  if (method == "fail") {
    return HttpResponseText(200, "OK",
                            Json({{"jsonrpc", "2.0"},
                                  {"id", call["id"]},
                                  {"error", {{"code", -19}, {"message", "No such device"}}}})
                                .dump());
  }
  if (method == "chunked") {
    std::string body = absl::StrCat("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (size_t i = 0; i < answer.size(); i += 5) {
      std::string piece = answer.substr(i, 5);
      absl::StrAppend(&body, absl::Hex(piece.size()), "\r\n", piece, "\r\n");
    }
    return body + "0\r\n\r\n";
  }
  if (method == "http10") return "HTTP/1.0 200 OK\r\nContent-type: application/json\r\n\r\n" + answer;
  if (method == "status") {
    int status = params.at("status").get<int>();
    return HttpResponseText(status, "Reason Phrase", "{}");
  }
  if (method == "sleep") std::this_thread::sleep_for(500ms);
  return HttpResponseText(200, "OK", answer);
}

class SpdkClientHttpTest : public ::testing::Test {
 protected:
  SpdkClientPtr MakeClient(const std::string& password, JsonRpcClientOptions options = {}) {
    options.address = absl::StrCat("http://", kUser, ":", password, "@127.0.0.1:", server_.port(), "/rpc");
    options.on_connection_change = events_.Callback();
    absl::StatusOr<SpdkClientPtr> client = CreateJsonRpcClient(std::move(options));
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? *std::move(client) : nullptr;
  }

  HttpTestServer server_{ProxyHandler};
  ConnectionEvents events_;
};

TEST_F(SpdkClientHttpTest, CallsWithBasicAuthOnOneKeepAliveConnection) {
  SpdkClientPtr client = MakeClient(kEscapedPassword);
  for (int i = 0; i < 5; ++i) {
    absl::StatusOr<Json> result = client->Call("echo", {{"i", i}}, kLong);
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(*result, Json({{"i", i}}));
  }
  EXPECT_EQ(server_.connections(), 1);
  EXPECT_EQ(client->connection_epoch(), 1u);
  EXPECT_THAT(events_.Get(), ::testing::ElementsAre(std::pair(true, 1u)));
}

TEST_F(SpdkClientHttpTest, WrongPasswordIsPermissionDenied) {
  SpdkClientPtr client = MakeClient("wrong-password");
  absl::StatusOr<Json> result = client->Call("echo", Json(), kLong);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kPermissionDenied) << result.status();
  EXPECT_THAT(std::string(result.status().message()), HasSubstr("401 Unauthorized"));
  EXPECT_THAT(std::string(result.status().message()), Not(HasSubstr("wrong-password")));
}

TEST_F(SpdkClientHttpTest, ChunkedAndCloseDelimitedBodies) {
  SpdkClientPtr client = MakeClient(kEscapedPassword);
  for (const char* method : {"chunked", "http10", "chunked", "http10"}) {
    absl::StatusOr<Json> result = client->Call(method, {{"m", method}}, kLong);
    ASSERT_TRUE(result.ok()) << method << ": " << result.status();
    EXPECT_EQ(*result, Json({{"m", method}}));
  }
}

TEST_F(SpdkClientHttpTest, HttpStatusesAndErrorAnswersMapToCodes) {
  SpdkClientPtr client = MakeClient(kEscapedPassword);
  ASSERT_TRUE(client->Call("echo", Json(), kLong).ok());
  EXPECT_EQ(client->connection_epoch(), 1u);
  const std::pair<int, absl::StatusCode> cases[] = {{503, absl::StatusCode::kUnavailable},
                                                    {502, absl::StatusCode::kUnavailable},
                                                    {500, absl::StatusCode::kInternal},
                                                    {404, absl::StatusCode::kInternal},
                                                    {403, absl::StatusCode::kPermissionDenied}};
  for (const auto& [status, code] : cases) {
    absl::StatusOr<Json> result = client->Call("status", {{"status", status}}, kLong);
    EXPECT_EQ(result.status().code(), code) << status;
    EXPECT_THAT(std::string(result.status().message()),
                HasSubstr(absl::StrCat("HTTP/1.1 ", status, " Reason Phrase")));
  }
  absl::StatusOr<Json> result = client->Call("fail", Json(), kLong);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kNotFound) << result.status();
  EXPECT_EQ(SpdkErrorOf(result.status())->code, -19);
  // 503 made the target unreachable, the next answer reachable again: a new epoch.
  EXPECT_EQ(client->connection_epoch(), 2u);
  EXPECT_THAT(events_.Get(),
              ::testing::ElementsAre(std::pair(true, 1u), std::pair(false, 1u), std::pair(true, 2u)));
}

TEST_F(SpdkClientHttpTest, ConcurrentCallsShareABoundedPool) {
  SpdkClientPtr client = MakeClient(kEscapedPassword, {.max_in_flight = 2});
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i) {
        const Json params = {{"t", t}, {"i", i}};
        absl::StatusOr<Json> result = client->Call("echo", params, kLong);
        if (!result.ok() || *result != params) ++wrong;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_LE(server_.connections(), 2);
}

TEST_F(SpdkClientHttpTest, TimeoutThenANewConnection) {
  SpdkClientPtr client = MakeClient(kEscapedPassword);
  absl::StatusOr<Json> result = client->Call("sleep", Json(), 100ms);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kDeadlineExceeded) << result.status();
  result = client->Call("echo", {{"after", "timeout"}}, kLong);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(*result, Json({{"after", "timeout"}}));
}

TEST(SpdkClientHttpNoServerTest, TargetDownIsUnavailable) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);  // a port nobody listens on: bound, never listening
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t length = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &length);
  absl::StatusOr<SpdkClientPtr> client =
      CreateJsonRpcClient({.address = absl::StrCat("http://u:pw@127.0.0.1:", ntohs(addr.sin_port))});
  ASSERT_TRUE(client.ok());
  absl::StatusOr<Json> result = (*client)->Call("echo", Json(), kLong);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable) << result.status();
  EXPECT_EQ((*client)->connection_epoch(), 0u);
  ::close(fd);
}

TEST_F(SpdkClientHttpTest, ThePasswordIsNeverLogged) {
  std::ostringstream log;
  auto previous = spdlog::default_logger();
  auto logger =
      std::make_shared<spdlog::logger>("capture", std::make_shared<spdlog::sinks::ostream_sink_mt>(log));
  logger->set_level(spdlog::level::trace);
  spdlog::set_default_logger(logger);
  {
    SpdkClientPtr good = MakeClient(kEscapedPassword);
    EXPECT_TRUE(good->Call("echo", Json(), kLong).ok());
    EXPECT_FALSE(good->Call("status", {{"status", 503}}, kLong).ok());
    EXPECT_TRUE(good->Call("echo", Json(), kLong).ok());
    SpdkClientPtr bad = MakeClient("wrong-password");
    EXPECT_FALSE(bad->Call("echo", Json(), kLong).ok());
  }
  spdlog::set_default_logger(previous);
  const std::string text = log.str();
  EXPECT_THAT(text, HasSubstr("spdk rpc"));  // the capture works
  for (const char* secret : {kPassword, kEscapedPassword, "wrong-password", "YWRtaW46cEBzczp3L3Jk"}) {
    EXPECT_THAT(text, Not(HasSubstr(secret)));
  }
}

// ---- Against the real smad-tgt ----

TEST(SpdkClientTgtTest, TalksToSmadTgt) {
  ::signal(SIGPIPE, SIG_IGN);
  testing::TempDir dir;
  testing::TgtProcess tgt(dir.path());
  absl::Status started = tgt.Start();
  ASSERT_TRUE(started.ok()) << started;
  absl::StatusOr<SpdkClientPtr> created =
      CreateJsonRpcClient({.address = tgt.socket(), .reconnect_min = 10ms});
  ASSERT_TRUE(created.ok()) << created.status();
  SpdkClient& client = **created;

  absl::StatusOr<Json> version = client.Call("spdk_get_version", Json(), kLong);
  ASSERT_TRUE(version.ok()) << version.status();
  EXPECT_TRUE((*version)["version"].is_string());
  EXPECT_TRUE((*version)["fields"]["major"].is_number_integer());

  absl::StatusOr<Json> bdevs = client.Call("bdev_get_bdevs", Json(), kLong);
  ASSERT_TRUE(bdevs.ok()) << bdevs.status();
  EXPECT_EQ(*bdevs, Json::array());
  absl::StatusOr<Json> created_bdev = client.Call(
      "bdev_malloc_create", {{"name", "Malloc0"}, {"num_blocks", 256}, {"block_size", 512}}, kLong);
  ASSERT_TRUE(created_bdev.ok()) << created_bdev.status();
  EXPECT_EQ(*created_bdev, "Malloc0");
  bdevs = client.Call("bdev_get_bdevs", {{"name", "Malloc0"}}, kLong);
  ASSERT_TRUE(bdevs.ok()) << bdevs.status();
  ASSERT_EQ(bdevs->size(), 1u);
  EXPECT_EQ((*bdevs)[0]["name"], "Malloc0");
  EXPECT_EQ((*bdevs)[0]["num_blocks"], 256);

  absl::StatusOr<Json> missing = client.Call("bdev_get_bdevs", {{"name", "nope"}}, kLong);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound) << missing.status();
  EXPECT_EQ(SpdkErrorOf(missing.status())->code, -ENODEV);
  absl::StatusOr<Json> duplicate = client.Call(
      "bdev_malloc_create", {{"name", "Malloc0"}, {"num_blocks", 256}, {"block_size", 512}}, kLong);
  EXPECT_EQ(duplicate.status().code(), absl::StatusCode::kAlreadyExists) << duplicate.status();
  absl::StatusOr<Json> bad_params = client.Call("bdev_get_bdevs", {{"bogus", 1}}, kLong);
  EXPECT_EQ(bad_params.status().code(), absl::StatusCode::kInternal)
      << bad_params.status();  // as SPDK: -32603
  EXPECT_EQ(SpdkErrorOf(bad_params.status())->code, -32603);
  EXPECT_EQ(client.connection_epoch(), 1u);

  // A restarted target: Unavailable while it is down, a new epoch (and no Malloc0) after.
  tgt.Stop(SIGTERM);
  EXPECT_EQ(client.Call("spdk_get_version", Json(), kLong).status().code(), absl::StatusCode::kUnavailable);
  started = tgt.Start();
  ASSERT_TRUE(started.ok()) << started;
  bdevs = client.Call("bdev_get_bdevs", Json(), kLong);
  ASSERT_TRUE(bdevs.ok()) << bdevs.status();
  EXPECT_EQ(*bdevs, Json::array());
  EXPECT_EQ(client.connection_epoch(), 2u);
}

}  // namespace
}  // namespace smad::agent
