// End-to-end tests of smad-tgt's NVMe/TCP data path. Every test starts its own real smad-tgt process,
// configures it over JSON-RPC and talks to it over loopback TCP: through the initiator library
// (SyncController for admin work, asynchronous QueuePairs on host reactors for queue depth), through raw
// sockets speaking hand-built PDUs (malformed input, peers that vanish mid-transfer, replays of SPDK
// captures), and through the smad-identify / smad-perf binaries under a tshark capture.
//
// Timing: waits are bounded polls with generous deadlines; the fixed sleeps are short (tens of ms).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nvme/host/commands.h"
#include "nvme/host/identify.h"
#include "nvme/host/queue_pair.h"
#include "nvme/host/sync_controller.h"
#include "nvme/host/transport_id.h"
#include "nvme/spec.h"
#include "nvme/tcp_pdu.h"
#include "reactor/reactor.h"
#include "support/net.h"
#include "support/temp_dir.h"
#include "support/tgt_process.h"

namespace smad {
namespace {

using ::testing::HasSubstr;
using jsonrpc::Json;
using nvme::Load16;
using nvme::Load32;
using nvme::Load64;
using nvme::host::Completion;
using nvme::host::QueuePair;
using nvme::host::SyncController;
using nvme::host::TransportId;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;
namespace tcp = nvme::tcp;

constexpr char kDiscoveryNqn[] = "nqn.2014-08.org.nvmexpress.discovery";
constexpr char kSubNqn[] = "nqn.2016-06.io.spdk:cnode1";
constexpr char kSubNqn2[] = "nqn.2016-06.io.spdk:cnode2";
constexpr char kHostNqn[] = "nqn.2014-08.org.nvmexpress:uuid:2f1d7c9e-4b1a-4f3e-9c55-6a7b8c9d0e1f";
constexpr char kOtherHostNqn[] = "nqn.2014-08.org.nvmexpress:uuid:9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";
constexpr char kThirdHostNqn[] = "nqn.2014-08.org.nvmexpress:uuid:11111111-2222-4333-8444-555555555555";
constexpr uint32_t kBlockSize = 512;

// ================================================================================================
// Target side: a smad-tgt process and its JSON-RPC connection.
// ================================================================================================

Json ListenAddress(const std::string& port) {
  return {{"trtype", "tcp"}, {"adrfam", "ipv4"}, {"traddr", "127.0.0.1"}, {"trsvcid", port}};
}

class Target {
 public:
  explicit Target(const testing::TempDir& dir, const std::string& name = "tgt") : process_(dir.path(), name) {}
  // Every test ends with a clean SIGTERM shutdown (after its hosts went away).
  ~Target() {
    if (process_.running()) Shutdown();
  }

  // Starts the binary and connects to its RPC socket; false (with a test failure) when that fails.
  bool Start(const std::string& cpumask = "0x1", const std::string& config_file = "") {
    testing::TgtProcess::Options options;
    options.cpumask = cpumask;
    options.config_file = config_file;
    absl::Status started = process_.Start(options);
    if (!started.ok()) {
      ADD_FAILURE() << "smad-tgt did not start: " << started;
      return false;
    }
    auto client = process_.Connect();
    if (!client.ok()) {
      ADD_FAILURE() << "cannot connect to smad-tgt's RPC socket: " << client.status();
      return false;
    }
    client_.emplace(std::move(client).value());
    return true;
  }

  absl::StatusOr<Json> TryCall(const std::string& method, const Json& params = Json()) {
    return client_->Call(method, params);
  }
  // The result; a test failure (and null) for an error answer.
  Json Call(const std::string& method, const Json& params = Json()) {
    auto result = TryCall(method, params);
    if (!result.ok()) {
      ADD_FAILURE() << method << " " << params.dump() << ": " << result.status();
      return Json();
    }
    return *result;
  }

  void CreateTransport(Json options = Json::object()) {
    options["trtype"] = "TCP";
    Call("nvmf_create_transport", options);
  }
  void CreateMalloc(const std::string& name, uint64_t blocks, uint32_t block_size = kBlockSize,
                    const std::string& uuid = "") {
    Json params = {{"name", name}, {"num_blocks", blocks}, {"block_size", block_size}};
    if (!uuid.empty()) params["uuid"] = uuid;
    Call("bdev_malloc_create", params);
  }
  void CreateSubsystem(const std::string& nqn, bool allow_any_host, const std::string& serial = "SMAD0000000001",
                       const std::string& model = "smad nvmf_tcp_test") {
    Call("nvmf_create_subsystem",
         {{"nqn", nqn}, {"serial_number", serial}, {"model_number", model}, {"allow_any_host", allow_any_host}});
  }
  void AddNamespace(const std::string& nqn, const std::string& bdev, uint32_t nsid = 0, const std::string& uuid = "") {
    Json ns = {{"bdev_name", bdev}};
    if (nsid != 0) ns["nsid"] = nsid;
    if (!uuid.empty()) ns["uuid"] = uuid;
    Call("nvmf_subsystem_add_ns", {{"nqn", nqn}, {"namespace", ns}});
  }
  void AddListener(const std::string& nqn, const std::string& port) {
    Call("nvmf_subsystem_add_listener", {{"nqn", nqn}, {"listen_address", ListenAddress(port)}});
  }
  void AddHost(const std::string& nqn, const std::string& host) {
    Call("nvmf_subsystem_add_host", {{"nqn", nqn}, {"host", host}});
  }

  // Polls `method` until `done(result)` holds; false after `timeout`.
  bool WaitFor(const std::string& method, const Json& params, const std::function<bool(const Json&)>& done,
               std::chrono::milliseconds timeout = 5s) {
    auto deadline = Clock::now() + timeout;
    while (true) {
      auto result = TryCall(method, params);
      if (result.ok() && done(*result)) return true;
      if (Clock::now() >= deadline) return false;
      std::this_thread::sleep_for(20ms);
    }
  }

  // nvmf_get_stats summed over the poll groups.
  std::map<std::string, uint64_t> StatsTotals() {
    std::map<std::string, uint64_t> totals;
    Json stats = Call("nvmf_get_stats");
    if (!stats.is_object()) return totals;
    for (const Json& group : stats["poll_groups"]) {
      for (const auto& [key, value] : group.items()) {
        if (value.is_number_unsigned()) totals[key] += value.get<uint64_t>();
      }
    }
    return totals;
  }

  // SIGTERM, then expects a clean exit within 20 s: status 0 and no sanitizer report in the log (the
  // sanitizer builds make any ASan, LSan or UBSan finding visible here). Returns the wait status.
  int Shutdown() {
    pid_t pid = process_.pid();
    kill(pid, SIGTERM);
    auto deadline = Clock::now() + 20s;
    while (Alive() && Clock::now() < deadline) std::this_thread::sleep_for(10ms);
    bool exited = !Alive();
    EXPECT_TRUE(exited) << "smad-tgt did not shut down within 20 s of SIGTERM\n" << Log();
    int status = process_.Stop(exited ? 0 : SIGKILL);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "smad-tgt exit status " << status << "\n"
                                                               << Log();
    std::string log = Log();
    for (const char* report : {"AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer", "runtime error:"}) {
      EXPECT_EQ(log.find(report), std::string::npos) << "sanitizer report in smad-tgt's log:\n" << log;
    }
    return status;
  }

  // The process is still running (not exited, not a zombie); does not reap it.
  bool Alive() const {
    if (!process_.running()) return false;
    siginfo_t info{};
    return waitid(P_PID, static_cast<id_t>(process_.pid()), &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
           info.si_pid == 0;
  }
  std::string Log() const { return process_.ReadLog(); }
  testing::TgtProcess& process() { return process_; }

 private:
  testing::TgtProcess process_;
  std::optional<jsonrpc::BlockingClient> client_;
};

// ================================================================================================
// Host side through the initiator library.
// ================================================================================================

TransportId Trid(const std::string& port, const std::string& subnqn, const std::string& hostnqn = kHostNqn) {
  auto trid = nvme::host::ParseTransportId(absl::StrCat("trtype:tcp adrfam:ipv4 traddr:127.0.0.1 trsvcid:", port,
                                                        " subnqn:", subnqn, " hostnqn:", hostnqn));
  EXPECT_TRUE(trid.ok()) << trid.status();
  return trid.ok() ? *trid : TransportId();
}

SyncController::Options HostOptions(bool digests = false, uint16_t io_queues = 1, uint32_t kato_ms = 10000) {
  SyncController::Options options;
  options.controller.hdgst = digests;
  options.controller.ddgst = digests;
  options.controller.num_io_queues = io_queues;
  options.controller.kato_ms = kato_ms;
  return options;
}

std::unique_ptr<SyncController> ConnectHost(Target& tgt, const TransportId& trid,
                                            const SyncController::Options& options = HostOptions()) {
  auto ctrl = SyncController::Connect(trid, options);
  if (!ctrl.ok()) {
    ADD_FAILURE() << "connect to " << trid.Describe() << " failed: " << ctrl.status() << "\n--- target log ---\n"
                  << tgt.Log();
    return nullptr;
  }
  return *std::move(ctrl);
}

// A data pattern that differs per block, per I/O and per run, so misplaced, stale or torn data never compares
// equal to what was expected.
uint64_t Mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return x;
}
void FillPattern(uint8_t* data, size_t length, uint64_t seed) {
  for (size_t i = 0; i + 8 <= length; i += 8) {
    uint64_t v = Mix(seed * 0x9e3779b97f4a7c15ull + i);
    std::memcpy(data + i, &v, 8);
  }
}
std::vector<uint8_t> Pattern(size_t length, uint64_t seed) {
  std::vector<uint8_t> data(length);
  FillPattern(data.data(), length, seed);
  return data;
}
// Index of the first differing byte, or -1.
int64_t FirstDifference(const uint8_t* a, const uint8_t* b, size_t length) {
  if (std::memcmp(a, b, length) == 0) return -1;
  for (size_t i = 0; i < length; ++i) {
    if (a[i] != b[i]) return static_cast<int64_t>(i);
  }
  return -1;
}

// A reactor thread on the host side for asynchronous queue pairs.
class HostReactor {
 public:
  explicit HostReactor(const std::string& name) : reactor_(MakeOptions(name)) { reactor_.Start(); }
  ~HostReactor() {
    reactor_.Stop();
    reactor_.Join();
  }
  Reactor& reactor() { return reactor_; }

  // Runs `fn` on the reactor thread and returns its result.
  template <typename F>
  auto Run(F fn) -> std::invoke_result_t<F&> {
    using R = std::invoke_result_t<F&>;
    auto promise = std::make_shared<std::promise<R>>();
    std::future<R> future = promise->get_future();
    reactor_.Post([promise, fn = std::move(fn)]() mutable {
      if constexpr (std::is_void_v<R>) {
        fn();
        promise->set_value();
      } else {
        promise->set_value(fn());
      }
    });
    return future.get();
  }

 private:
  static Reactor::Options MakeOptions(const std::string& name) {
    Reactor::Options options;
    options.name = name;
    return options;
  }
  Reactor reactor_;
};

// An I/O queue pair of a SyncController's controller, living on a HostReactor. Destroy it before the
// SyncController.
class AsyncQueue {
 public:
  static std::unique_ptr<AsyncQueue> Connect(SyncController& ctrl, HostReactor& host, uint16_t depth) {
    auto options = ctrl.AllocateIoQueue(depth);
    if (!options.ok()) {
      ADD_FAILURE() << "AllocateIoQueue: " << options.status();
      return nullptr;
    }
    std::unique_ptr<AsyncQueue> queue(new AsyncQueue(ctrl, host, options->qid));
    auto connected = std::make_shared<std::promise<absl::Status>>();
    std::future<absl::Status> future = connected->get_future();
    TransportId trid = ctrl.trid();
    host.Run([&queue, &host, trid, opts = *options, connected] {
      queue->qp_ = std::make_unique<QueuePair>(host.reactor(), trid, opts);
      queue->qp_->Connect([connected](absl::Status status) { connected->set_value(status); });
    });
    if (future.wait_for(20s) != std::future_status::ready) {
      ADD_FAILURE() << "I/O queue " << options->qid << " did not connect";
      return nullptr;
    }
    absl::Status status = future.get();
    if (!status.ok()) {
      ADD_FAILURE() << "I/O queue " << options->qid << " connect: " << status;
      return nullptr;
    }
    return queue;
  }

  ~AsyncQueue() {
    host_.Run([this] { qp_.reset(); });
    ctrl_.ReleaseIoQueue(qid_);
  }

  QueuePair& qp() { return *qp_; }
  HostReactor& host() { return host_; }

 private:
  AsyncQueue(SyncController& ctrl, HostReactor& host, uint16_t qid) : ctrl_(ctrl), host_(host), qid_(qid) {}
  SyncController& ctrl_;
  HostReactor& host_;
  uint16_t qid_;
  std::unique_ptr<QueuePair> qp_;  // touched on host_ only
};

// One I/O of a batch and its outcome.
struct IoRequest {
  bool write = false;
  uint32_t nsid = 1;
  uint64_t lba = 0;
  uint32_t nblocks = 0;
  uint8_t* buffer = nullptr;
  uint32_t length = 0;
  bool done = false;
  Completion completion;
};

// Runs a list of I/Os on an AsyncQueue keeping up to `depth` in flight (refilled from completion callbacks).
class IoBatch {
 public:
  IoBatch(AsyncQueue& queue, std::vector<IoRequest>& requests, uint32_t depth) : queue_(queue) {
    state_ = std::make_shared<State>();
    state_->qp = &queue.qp();
    state_->requests = &requests;
    state_->depth = depth;
    future_ = state_->finished.get_future();
  }
  void Start() {
    queue_.host().reactor().Post([state = state_] { Pump(state); });
  }
  // False (with a test failure) when the batch did not finish in `timeout`; the queue pair is then closed,
  // which completes what was left, so the requests may be freed afterwards.
  bool Wait(std::chrono::milliseconds timeout) {
    if (future_.wait_for(timeout) == std::future_status::ready) return true;
    ADD_FAILURE() << "I/O batch did not complete within " << timeout.count() << " ms";
    queue_.host().Run([this] { queue_.qp().Close(absl::DeadlineExceededError("test timeout")); });
    return false;
  }

 private:
  struct State {
    QueuePair* qp = nullptr;
    std::vector<IoRequest>* requests = nullptr;
    uint32_t depth = 1;
    size_t next = 0;
    size_t in_flight = 0;
    size_t completed = 0;
    bool signalled = false;
    std::promise<void> finished;
  };

  static void Pump(const std::shared_ptr<State>& s) {
    while (s->in_flight < s->depth && s->next < s->requests->size()) {
      size_t index = s->next++;
      IoRequest& r = (*s->requests)[index];
      uint8_t sqe[nvme::kSqeSize];
      if (r.write) {
        nvme::host::BuildWrite(sqe, r.nsid, r.lba, r.nblocks);
      } else {
        nvme::host::BuildRead(sqe, r.nsid, r.lba, r.nblocks);
      }
      QueuePair::CompletionCallback done = [s, index](const Completion& c) {
        IoRequest& req = (*s->requests)[index];
        req.completion = c;
        req.done = true;
        --s->in_flight;
        ++s->completed;
        Pump(s);
      };
      absl::Status submitted = r.write ? s->qp->SubmitWrite(sqe, r.buffer, r.length, std::move(done))
                                       : s->qp->SubmitRead(sqe, r.buffer, r.length, std::move(done));
      if (submitted.ok()) {
        ++s->in_flight;
      } else {
        r.completion.transport = submitted;
        r.done = true;
        ++s->completed;
      }
    }
    if (s->completed == s->requests->size() && !s->signalled) {
      s->signalled = true;
      s->finished.set_value();
    }
  }

  AsyncQueue& queue_;
  std::shared_ptr<State> state_;
  std::future<void> future_;
};

// ================================================================================================
// Host side through raw sockets: hand-built PDUs.
// ================================================================================================

// A PDU received from the controller, copied out of the reader.
struct RxPdu {
  uint8_t type = 0;
  uint8_t flags = 0;
  uint8_t hlen = 0;
  uint8_t pdo = 0;
  uint32_t plen = 0;
  std::vector<uint8_t> header;  // hlen bytes
  std::vector<uint8_t> data;
  bool data_digest_error = false;

  static RxPdu From(const tcp::Pdu& pdu) {
    RxPdu r;
    r.type = pdu.type;
    r.flags = pdu.flags;
    r.hlen = pdu.hlen;
    r.pdo = pdu.pdo;
    r.plen = pdu.plen;
    r.header.assign(pdu.header, pdu.header + pdu.hlen);
    if (pdu.data != nullptr) r.data.assign(pdu.data, pdu.data + pdu.data_length);
    r.data_digest_error = pdu.data_digest_error;
    return r;
  }
  // CapsuleResp.
  const uint8_t* cqe() const { return header.data() + tcp::kCommonHeaderSize; }
  uint16_t resp_cid() const { return Load16(cqe() + 12); }
  nvme::Status status() const { return nvme::Status::Decode(Load16(cqe() + 14)); }
  uint32_t cdw0() const { return Load32(cqe()); }
  uint32_t cdw1() const { return Load32(cqe() + 4); }
  // C2HData, R2T.
  uint16_t cccid() const { return Load16(header.data() + 8); }
  uint16_t ttag() const { return Load16(header.data() + 10); }
  uint32_t data_offset() const { return Load32(header.data() + 12); }
  uint32_t data_length_field() const { return Load32(header.data() + 16); }
  // TermReq.
  uint16_t fes() const { return Load16(header.data() + 8); }
  uint32_t fei() const { return Load32(header.data() + 10); }
  // The command this PDU belongs to (CapsuleResp, C2HData, R2T); -1 for others.
  int cid() const {
    if (type == tcp::kCapsuleResp) return resp_cid();
    if (type == tcp::kC2HData || type == tcp::kR2T) return cccid();
    return -1;
  }
  // Ends its command: a CapsuleResp, or a C2HData with SUCCESS.
  bool terminal() const {
    return type == tcp::kCapsuleResp || (type == tcp::kC2HData && (flags & tcp::kFlagSuccess));
  }
};

std::string Describe(const RxPdu& p) {
  std::string s = absl::StrCat(tcp::PduTypeName(p.type), " (type ", p.type, ", hlen ", p.hlen, ", plen ", p.plen);
  if (p.type == tcp::kCapsuleResp) {
    absl::StrAppend(&s, ", cid ", p.resp_cid(), ", ", nvme::host::DescribeStatus(p.status()));
  } else if (p.type == tcp::kC2HData || p.type == tcp::kR2T) {
    absl::StrAppend(&s, ", cccid ", p.cccid(), ", length ", p.data_length_field());
  } else if (p.type == tcp::kC2HTermReq) {
    absl::StrAppend(&s, ", FES ", p.fes(), ", FEI ", p.fei());
  }
  return s + ")";
}

// A blocking loopback TCP connection to the target that splits what it receives into PDUs with the
// host-role PduReader (which also validates the controller's PDUs).
class RawConnection {
 public:
  explicit RawConnection(const std::string& port) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(std::stoi(port)));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd_ < 0 || connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      ADD_FAILURE() << "connect to 127.0.0.1:" << port << ": " << strerror(errno);
      Close();
      return;
    }
    int one = 1;
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  }
  ~RawConnection() { Close(); }
  RawConnection(const RawConnection&) = delete;
  RawConnection& operator=(const RawConnection&) = delete;

  bool ok() const { return fd_ >= 0; }
  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

  bool Send(const uint8_t* data, size_t length) {
    size_t sent = 0;
    while (fd_ >= 0 && sent < length) {
      ssize_t n = send(fd_, data + sent, length - sent, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      sent += static_cast<size_t>(n);
    }
    return sent == length;
  }
  bool Send(const std::vector<uint8_t>& bytes) { return Send(bytes.data(), bytes.size()); }
  bool Send(const std::string& bytes) { return Send(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()); }

  // The next PDU from the controller; nullopt on timeout, end of stream (closed() turns true) or a
  // protocol violation by the controller (reader_error() says which).
  std::optional<RxPdu> Read(std::chrono::milliseconds timeout) {
    auto deadline = Clock::now() + timeout;
    while (true) {
      tcp::Pdu pdu;
      tcp::ProtocolError error;
      auto result = reader_.Next(&pdu, &error);
      if (result == tcp::PduReader::Result::kPdu) {
        RxPdu rx = RxPdu::From(pdu);
        if (rx.type == tcp::kIcResp) {
          tcp::IcFields ic = tcp::ParseIc(pdu);
          tcp::Params params;
          params.hdgst = ic.hdgst;
          params.ddgst = ic.ddgst;
          params.cpda = ic.pda;
          params.maxh2cdata = ic.limit;
          params_ = params;
          reader_.SetParams(params);
        }
        return rx;
      }
      if (result == tcp::PduReader::Result::kError) {
        reader_error_ = error.message;
        return std::nullopt;
      }
      if (closed_ || fd_ < 0) return std::nullopt;
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) return std::nullopt;
      pollfd p{fd_, POLLIN, 0};
      int ready = poll(&p, 1, static_cast<int>(left.count()));
      if (ready < 0 && errno == EINTR) continue;
      if (ready <= 0) return std::nullopt;
      size_t available = 0;
      uint8_t* space = reader_.WritableSpace(64 * 1024, &available);
      ssize_t n = recv(fd_, space, available, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        closed_ = true;  // EOF, or reset
        continue;        // parse what is buffered first
      }
      reader_.Commit(static_cast<size_t>(n));
    }
  }

  // Waits until the controller closes the connection; false on timeout or when it sends another PDU.
  bool WaitClosed(std::chrono::milliseconds timeout) {
    auto deadline = Clock::now() + timeout;
    while (!closed_) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) return false;
      std::optional<RxPdu> pdu = Read(left);
      if (pdu.has_value()) {
        ADD_FAILURE() << "unexpected PDU while waiting for the close: " << Describe(*pdu);
        return false;
      }
      if (!reader_error_.empty()) return false;
    }
    return true;
  }

  bool closed() const { return closed_; }
  const std::string& reader_error() const { return reader_error_; }
  const tcp::Params& params() const { return params_; }

 private:
  int fd_ = -1;
  bool closed_ = false;
  std::string reader_error_;
  tcp::PduReader reader_{tcp::PduReader::Role::kHost, 16u << 20};
  tcp::Params params_;
};

// A host built from raw PDUs, one command at a time: enough to reach states the library never produces.
class RawHost {
 public:
  explicit RawHost(const std::string& port) : conn_(port) {}

  RawConnection& conn() { return conn_; }
  // The next command gets command ID `cid` (deliberate reuse).
  void ReuseCid(uint16_t cid) { next_cid_ = cid; }

  // ICReq, then the ICResp.
  bool Initialize(bool hdgst = false, bool ddgst = false) {
    std::vector<uint8_t> out;
    tcp::AppendIcReq(out, 0, hdgst, ddgst, 0);
    if (!conn_.Send(out)) return false;
    std::optional<RxPdu> resp = conn_.Read(5s);
    if (!resp || resp->type != tcp::kIcResp) {
      ADD_FAILURE() << "no ICResp: " << (resp ? Describe(*resp) : conn_.reader_error());
      return false;
    }
    return true;
  }

  // A command capsule with optional in-capsule data (`sgl_length` describes a transport data block instead
  // when `data` is empty). Returns the CID used.
  uint16_t SendCommand(uint8_t* sqe, const std::vector<uint8_t>& data = {}, uint32_t sgl_length = 0) {
    uint16_t cid = next_cid_++;
    nvme::Store16(sqe + 2, cid);
    nvme::CommandBuilder::SetSgl(sqe, !data.empty(), data.empty() ? sgl_length : static_cast<uint32_t>(data.size()));
    std::vector<uint8_t> out;
    tcp::AppendCapsuleCmd(out, conn_.params(), sqe, data.empty() ? nullptr : data.data(),
                          static_cast<uint32_t>(data.size()));
    conn_.Send(out);
    return cid;
  }

  // Sends a command and waits for its CapsuleResp (C2HData is collected into `data_out`).
  std::optional<RxPdu> Command(uint8_t* sqe, const std::vector<uint8_t>& data = {}, uint32_t sgl_length = 0,
                               std::vector<uint8_t>* data_out = nullptr) {
    uint16_t cid = SendCommand(sqe, data, sgl_length);
    while (true) {
      std::optional<RxPdu> pdu = conn_.Read(5s);
      if (!pdu) {
        ADD_FAILURE() << "no response to command " << cid << ": " << conn_.reader_error();
        return std::nullopt;
      }
      if (pdu->type == tcp::kC2HData && data_out != nullptr) {
        data_out->insert(data_out->end(), pdu->data.begin(), pdu->data.end());
      }
      if (pdu->type == tcp::kCapsuleResp && pdu->resp_cid() == cid) {
        if (pdu->status().ok()) {
          EXPECT_FALSE(pdu->status().dnr) << "DNR set on a successful completion";
        }
        return pdu;
      }
      if (pdu->type == tcp::kC2HTermReq) {
        ADD_FAILURE() << "controller terminated the connection: " << Describe(*pdu);
        return std::nullopt;
      }
    }
  }

  // Fabrics Connect; the controller ID on success.
  std::optional<uint16_t> Connect(const std::string& subnqn, const std::string& hostnqn, uint16_t qid,
                                  uint16_t cntlid, uint32_t kato_ms, uint16_t entries = 32) {
    uint8_t sqe[nvme::kSqeSize];
    nvme::host::BuildConnect(sqe, qid, entries, kato_ms);
    std::vector<uint8_t> data(nvme::kConnectDataSize);
    auto trid = Trid("4420", subnqn, hostnqn);
    nvme::host::BuildConnectData(data.data(), trid.hostid.bytes().data(), cntlid, subnqn, hostnqn);
    std::optional<RxPdu> resp = Command(sqe, data);
    if (!resp) return std::nullopt;
    if (!resp->status().ok()) {
      ADD_FAILURE() << "Connect qid " << qid << ": " << nvme::host::DescribeStatus(resp->status());
      return std::nullopt;
    }
    return static_cast<uint16_t>(resp->cdw0() & 0xffff);
  }

  // Property Set CC.EN=1 and CSTS.RDY check.
  bool Enable() {
    uint8_t sqe[nvme::kSqeSize];
    nvme::host::BuildPropertySet(sqe, nvme::prop::kCc, false, nvme::host::kCcEnableValue);
    std::optional<RxPdu> resp = Command(sqe);
    if (!resp || !resp->status().ok()) return false;
    nvme::host::BuildPropertyGet(sqe, nvme::prop::kCsts, false);
    resp = Command(sqe);
    return resp && resp->status().ok() && (resp->cdw0() & nvme::kCstsReady);
  }

  // Admin queue: ICReq, Connect, CC.EN=1.
  std::optional<uint16_t> ConnectAdmin(const std::string& subnqn, const std::string& hostnqn, uint32_t kato_ms) {
    if (!Initialize()) return std::nullopt;
    std::optional<uint16_t> cntlid = Connect(subnqn, hostnqn, 0, 0xffff, kato_ms);
    if (!cntlid || !Enable()) return std::nullopt;
    return cntlid;
  }

 private:
  RawConnection conn_;
  uint16_t next_cid_ = 0;
};

struct CommandResult {
  int exit_code = -1;
  std::string output;
};

// Runs a shell command; `output` is its stdout, and its stderr too unless `with_stderr` is false (then
// stderr is discarded).
CommandResult RunCommand(const std::string& command, bool with_stderr = true) {
  CommandResult result;
  FILE* pipe = popen((command + (with_stderr ? " 2>&1" : " 2>/dev/null")).c_str(), "r");
  if (pipe == nullptr) return result;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) result.output.append(buffer, n);
  int status = pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// ================================================================================================
// 1. Data integrity: every I/O size, queue depth 1 and 128, with and without digests.
// ================================================================================================

class NvmfTcpDataTest : public ::testing::TestWithParam<bool> {};

TEST_P(NvmfTcpDataTest, WritesReadBackAtEverySizeAndDepth) {
  const bool digests = GetParam();
  testing::TempDir dir;
  Target tgt(dir);
  ASSERT_TRUE(tgt.Start("0x3"));
  const std::string port = testing::FreeTcpPort();
  tgt.CreateTransport({{"max_io_size", 1048576}, {"in_capsule_data_size", 4096}, {"max_queue_depth", 128}});
  constexpr uint64_t kBlocks = (64u << 20) / kBlockSize;  // 64 MiB
  tgt.CreateMalloc("Malloc0", kBlocks);
  tgt.CreateSubsystem(kSubNqn, true);
  tgt.AddNamespace(kSubNqn, "Malloc0");
  tgt.AddListener(kSubNqn, port);
  ASSERT_FALSE(::testing::Test::HasFailure());

  // Three I/O queues: two for the asynchronous queue pairs, one for the SyncController's own I/O.
  auto ctrl = ConnectHost(tgt, Trid(port, kSubNqn), HostOptions(digests, /*io_queues=*/3));
  ASSERT_NE(ctrl, nullptr);
  EXPECT_EQ(ctrl->max_transfer_bytes(), 1u << 20) << "MDTS must follow max_io_size";
  EXPECT_EQ(ctrl->controller_data().InCapsuleDataBytes(), 4096u) << "IOCCSZ must follow in_capsule_data_size";
  ASSERT_EQ(ctrl->io_queues_granted(), 3u);

  // Two queue pairs on two host threads; the target spreads the connections over its two reactors.
  HostReactor host_a("host_io_a"), host_b("host_io_b");
  auto queue_a = AsyncQueue::Connect(*ctrl, host_a, 128);
  auto queue_b = AsyncQueue::Connect(*ctrl, host_b, 128);
  ASSERT_NE(queue_a, nullptr);
  ASSERT_NE(queue_b, nullptr);
  ASSERT_EQ(queue_a->qp().params().hdgst, digests);
  ASSERT_EQ(queue_a->qp().params().ddgst, digests);
  Json qpairs = tgt.Call("nvmf_subsystem_get_qpairs", {{"nqn", kSubNqn}});
  std::set<std::string> threads;
  for (const Json& q : qpairs) threads.insert(q.value("thread", ""));
  EXPECT_EQ(threads.size(), 2u) << "the three qpairs should use both target reactors: " << qpairs.dump();

  struct Case {
    uint32_t size;
    uint32_t depth;
    uint32_t count;
  };
  // 4 KiB writes travel in-capsule (IOCCSZ allows 4096 bytes); larger ones are R2T + H2CData.
  const Case cases[] = {{4096, 1, 16},      {4096, 128, 1024},   {16384, 1, 8},    {16384, 128, 512},
                        {131072, 1, 4},     {131072, 128, 256},  {1u << 20, 1, 4}, {1u << 20, 32, 32}};
  uint64_t seed = digests ? 1000 : 0;
  for (const Case& c : cases) {
    SCOPED_TRACE(absl::StrCat("size ", c.size, " depth ", c.depth, " digests ", digests));
    const uint32_t nblocks = c.size / kBlockSize;
    ASSERT_LE(uint64_t{c.count} * nblocks, kBlocks);
    std::vector<uint8_t> written(size_t{c.count} * c.size);
    std::vector<uint8_t> read(written.size(), 0xee);
    ++seed;
    for (uint32_t i = 0; i < c.count; ++i) FillPattern(written.data() + size_t{i} * c.size, c.size, seed * 100000 + i);

    // Depth 1 runs on one queue; deeper cases split the I/Os over both queues, each at the full depth.
    auto run = [&](bool write) {
      std::vector<IoRequest> on_a, on_b;
      for (uint32_t i = 0; i < c.count; ++i) {
        IoRequest r;
        r.write = write;
        r.lba = uint64_t{i} * nblocks;
        r.nblocks = nblocks;
        r.buffer = (write ? written.data() : read.data()) + size_t{i} * c.size;
        r.length = c.size;
        (c.depth > 1 && i % 2 == 1 ? on_b : on_a).push_back(r);
      }
      IoBatch batch_a(*queue_a, on_a, c.depth);
      IoBatch batch_b(*queue_b, on_b, c.depth);
      batch_a.Start();
      batch_b.Start();
      bool finished = batch_a.Wait(60s);
      finished = batch_b.Wait(60s) && finished;
      if (!finished) return false;
      for (auto* list : {&on_a, &on_b}) {
        for (const IoRequest& r : *list) {
          if (!r.completion.ok()) {
            ADD_FAILURE() << (write ? "write" : "read") << " at LBA " << r.lba << ": "
                          << r.completion.ToStatus(write ? "Write" : "Read");
            return false;
          }
        }
      }
      return true;
    };
    ASSERT_TRUE(run(true));
    ASSERT_TRUE(run(false));
    for (uint32_t i = 0; i < c.count; ++i) {
      size_t offset = size_t{i} * c.size;
      int64_t diff = FirstDifference(written.data() + offset, read.data() + offset, c.size);
      ASSERT_EQ(diff, -1) << "I/O " << i << " (LBA " << uint64_t{i} * nblocks << ") differs at byte " << diff;
    }
  }

  // The namespace's last blocks and one past the end.
  std::vector<uint8_t> tail = Pattern(8 * kBlockSize, 77);
  ASSERT_TRUE(ctrl->Write(1, kBlocks - 8, 8, tail).ok());
  std::vector<uint8_t> back(tail.size());
  ASSERT_TRUE(ctrl->Read(1, kBlocks - 8, 8, absl::MakeSpan(back)).ok());
  EXPECT_EQ(back, tail);
  absl::Status beyond = ctrl->Read(1, kBlocks - 4, 8, absl::MakeSpan(back));
  EXPECT_THAT(std::string(beyond.message()), HasSubstr("SCT 0 SC 0x80"));

  queue_a.reset();
  queue_b.reset();
  EXPECT_TRUE(ctrl->Shutdown().ok());
  EXPECT_TRUE(tgt.Alive()) << tgt.Log();
}

INSTANTIATE_TEST_SUITE_P(Digests, NvmfTcpDataTest, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "HeaderAndDataDigests" : "NoDigests";
                         });

// ================================================================================================
// 2. A file-backed namespace keeps its data across a target restart from the saved configuration.
// ================================================================================================

TEST(NvmfTcpTest, AioNamespaceDataSurvivesRestartFromSavedConfig) {
  testing::TempDir dir;
  const std::string image = dir.File("aio0.img");
  const std::string config = dir.File("config.json");
  const std::string port = testing::FreeTcpPort();
  const std::string uuid = "3c1f0b8e-5a2d-4e6f-9b7a-0c1d2e3f4a5b";
  { std::ofstream(image).close(); }
  ASSERT_EQ(truncate(image.c_str(), 16 << 20), 0);

  struct Extent {
    uint64_t lba;
    uint32_t bytes;
  };
  // In-capsule (512, 4096) and R2T (65536, 131072) writes, including the file's last blocks.
  const Extent extents[] = {{0, 4096}, {9, 512}, {1000, 65536}, {5000, 131072}, {(16u << 20) / kBlockSize - 8, 4096}};
  std::vector<std::vector<uint8_t>> data;
  for (size_t i = 0; i < std::size(extents); ++i) data.push_back(Pattern(extents[i].bytes, 500 + i));

  {
    Target tgt(dir, "first");
    ASSERT_TRUE(tgt.Start("0x1"));
    tgt.CreateTransport();
    tgt.Call("bdev_aio_create", {{"name", "aio0"}, {"filename", image}, {"block_size", kBlockSize}});
    tgt.CreateSubsystem(kSubNqn, true, "SMADAIO0001");
    tgt.AddNamespace(kSubNqn, "aio0", 1, uuid);
    tgt.AddListener(kSubNqn, port);
    ASSERT_FALSE(::testing::Test::HasFailure());
    auto ctrl = ConnectHost(tgt, Trid(port, kSubNqn));
    ASSERT_NE(ctrl, nullptr);
    for (size_t i = 0; i < std::size(extents); ++i) {
      absl::Status written = ctrl->Write(1, extents[i].lba, extents[i].bytes / kBlockSize, data[i]);
      ASSERT_TRUE(written.ok()) << "extent " << i << ": " << written;
    }
    ASSERT_TRUE(ctrl->Flush(1).ok());
    ASSERT_TRUE(ctrl->Shutdown().ok());
    ctrl.reset();

    Json saved = tgt.Call("save_config");
    ASSERT_TRUE(saved.is_object());
    { std::ofstream(config) << saved.dump(2); }
    int status = tgt.Shutdown();
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }

  Target restarted(dir, "second");
  ASSERT_TRUE(restarted.Start("0x1", config));
  auto ctrl = ConnectHost(restarted, Trid(port, kSubNqn));
  ASSERT_NE(ctrl, nullptr);
  EXPECT_EQ(ctrl->controller_data().serial, "SMADAIO0001");
  auto namespaces = ctrl->Namespaces();
  ASSERT_TRUE(namespaces.ok()) << namespaces.status();
  ASSERT_EQ(namespaces->size(), 1u);
  ASSERT_TRUE((*namespaces)[0].uuid.has_value());
  EXPECT_EQ((*namespaces)[0].uuid->ToString(), uuid);
  EXPECT_EQ((*namespaces)[0].nsze, (16u << 20) / kBlockSize);
  for (size_t i = 0; i < std::size(extents); ++i) {
    std::vector<uint8_t> back(extents[i].bytes);
    ASSERT_TRUE(ctrl->Read(1, extents[i].lba, extents[i].bytes / kBlockSize, absl::MakeSpan(back)).ok()) << i;
    EXPECT_EQ(FirstDifference(back.data(), data[i].data(), back.size()), -1) << "extent " << i;
  }
  // Blocks never written read as zeroes (the file was sparse).
  std::vector<uint8_t> untouched(4096, 0xff);
  ASSERT_TRUE(ctrl->Read(1, 20000, 8, absl::MakeSpan(untouched)).ok());
  EXPECT_EQ(untouched, std::vector<uint8_t>(4096, 0));
}

// ================================================================================================
// 3. Host access control at Connect.
// ================================================================================================

TEST(NvmfTcpTest, HostNotInSubsystemIsRefusedWithConnectInvalidHost) {
  testing::TempDir dir;
  Target tgt(dir);
  ASSERT_TRUE(tgt.Start("0x1"));
  const std::string port = testing::FreeTcpPort();
  tgt.CreateTransport();
  tgt.CreateMalloc("Malloc0", 2048);
  tgt.CreateSubsystem(kSubNqn, false);
  tgt.AddNamespace(kSubNqn, "Malloc0");
  tgt.AddListener(kSubNqn, port);
  tgt.AddHost(kSubNqn, kHostNqn);
  ASSERT_FALSE(::testing::Test::HasFailure());

  auto denied = SyncController::Connect(Trid(port, kSubNqn, kOtherHostNqn), HostOptions());
  ASSERT_FALSE(denied.ok());
  EXPECT_EQ(denied.status().code(), absl::StatusCode::kPermissionDenied) << denied.status();
  EXPECT_THAT(std::string(denied.status().message()), HasSubstr("SCT 1 SC 0x84 (connect invalid host)"));

  // The same refusal on the wire: the Connect's CapsuleResp carries SCT 1 SC 84h, then the connection stays
  // usable for nothing but a new Connect.
  {
    RawHost raw(port);
    ASSERT_TRUE(raw.Initialize());
    uint8_t sqe[nvme::kSqeSize];
    nvme::host::BuildConnect(sqe, 0, 32, 0);
    std::vector<uint8_t> data(nvme::kConnectDataSize);
    nvme::host::BuildConnectData(data.data(), Trid(port, kSubNqn, kOtherHostNqn).hostid.bytes().data(), 0xffff,
                                 kSubNqn, kOtherHostNqn);
    std::optional<RxPdu> resp = raw.Command(sqe, data);
    ASSERT_TRUE(resp.has_value());
    EXPECT_EQ(resp->status().sct, nvme::kSctCommandSpecific);
    EXPECT_EQ(resp->status().sc, nvme::sc_specific::kConnectInvalidHost);
  }

  auto allowed = ConnectHost(tgt, Trid(port, kSubNqn, kHostNqn));
  ASSERT_NE(allowed, nullptr);
  std::vector<uint8_t> data = Pattern(4096, 3);
  EXPECT_TRUE(allowed->Write(1, 0, 8, data).ok());
  Json controllers = tgt.Call("nvmf_subsystem_get_controllers", {{"nqn", kSubNqn}});
  ASSERT_EQ(controllers.size(), 1u) << controllers.dump();
  EXPECT_EQ(controllers[0]["hostnqn"], kHostNqn);

  // Revoking the host closes its controller and refuses its next association; allow_any_host admits
  // everyone.
  tgt.Call("nvmf_subsystem_remove_host", {{"nqn", kSubNqn}, {"host", kHostNqn}});
  auto closed_deadline = Clock::now() + 5s;
  while (!tgt.Call("nvmf_subsystem_get_controllers", {{"nqn", kSubNqn}}).empty() && Clock::now() < closed_deadline) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(tgt.Call("nvmf_subsystem_get_controllers", {{"nqn", kSubNqn}}), Json::array());
  std::vector<uint8_t> after_revoke(4096);
  EXPECT_FALSE(allowed->Read(1, 0, 8, absl::MakeSpan(after_revoke)).ok()) << "a revoked host kept its access";
  auto revoked = SyncController::Connect(Trid(port, kSubNqn, kHostNqn), HostOptions());
  ASSERT_FALSE(revoked.ok());
  EXPECT_THAT(std::string(revoked.status().message()), HasSubstr("SCT 1 SC 0x84"));
  tgt.Call("nvmf_subsystem_allow_any_host", {{"nqn", kSubNqn}, {"allow_any_host", true}});
  auto anyone = ConnectHost(tgt, Trid(port, kSubNqn, kOtherHostNqn));
  ASSERT_NE(anyone, nullptr);
  std::vector<uint8_t> back(4096);
  EXPECT_TRUE(anyone->Read(1, 0, 8, absl::MakeSpan(back)).ok());
  EXPECT_EQ(back, data);
}

// ================================================================================================
// 4. Keep-alive timeout.
// ================================================================================================

TEST(NvmfTcpTest, KeepAliveTimeoutEndsASilentController) {
  testing::TempDir dir;
  Target tgt(dir);
  ASSERT_TRUE(tgt.Start("0x1"));
  const std::string port = testing::FreeTcpPort();
  tgt.CreateTransport();
  tgt.CreateMalloc("Malloc0", 2048);
  tgt.CreateSubsystem(kSubNqn, true);
  tgt.AddNamespace(kSubNqn, "Malloc0");
  tgt.AddListener(kSubNqn, port);
  ASSERT_FALSE(::testing::Test::HasFailure());
  constexpr uint32_t kKatoMs = 1000;

  // The silent host: an admin QueuePair alone (the library's Controller would send Keep Alive every
  // KATO/2; a bare QueuePair sends KATO in Connect and then nothing).
  HostReactor host("host_silent");
  QueuePair::Options options;
  options.qid = 0;
  options.cntlid = 0xffff;
  options.depth = 32;
  options.kato_ms = kKatoMs;
  std::unique_ptr<QueuePair> silent;
  // A QueuePair is destroyed on its reactor, also when an assertion ends the test early.
  struct DestroyOnReactor {
    HostReactor& host;
    std::unique_ptr<QueuePair>& qp;
    ~DestroyOnReactor() {
      host.Run([this] { qp.reset(); });
    }
  } destroy_silent{host, silent};
  auto connected = std::make_shared<std::promise<absl::Status>>();
  auto connected_future = connected->get_future();
  host.Run([&] {
    silent = std::make_unique<QueuePair>(host.reactor(), Trid(port, kSubNqn, kOtherHostNqn), options);
    silent->Connect([connected](absl::Status s) { connected->set_value(s); });
  });
  ASSERT_EQ(connected_future.wait_for(10s), std::future_status::ready);
  ASSERT_TRUE(connected_future.get().ok());
  const auto connected_at = Clock::now();
  const uint16_t silent_cntlid = host.Run([&] { return silent->cntlid(); });

  // A well-behaved host with the same KATO keeps its association.
  auto live = ConnectHost(tgt, Trid(port, kSubNqn, kHostNqn), HostOptions(false, 1, kKatoMs));
  ASSERT_NE(live, nullptr);
  Json controllers = tgt.Call("nvmf_subsystem_get_controllers", {{"nqn", kSubNqn}});
  ASSERT_EQ(controllers.size(), 2u) << controllers.dump();

  // The target must close the silent association after KATO, within about 2 x KATO.
  std::optional<std::chrono::milliseconds> closed_after;
  while (Clock::now() - connected_at < 4 * std::chrono::milliseconds(kKatoMs)) {
    if (host.Run([&] { return silent->state() == QueuePair::State::kClosed; })) {
      closed_after = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - connected_at);
      break;
    }
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_TRUE(closed_after.has_value()) << "the silent controller was never disconnected\n" << tgt.Log();
  EXPECT_GE(closed_after->count(), kKatoMs - 50) << "closed before KATO expired";
  EXPECT_LE(closed_after->count(), 2 * kKatoMs + 100) << "closed later than 2 x KATO";
  std::string reason(host.Run([&] { return std::string(silent->close_reason().message()); }));
  EXPECT_THAT(reason, HasSubstr("closed by the controller"));

  // Only the live controller remains.
  EXPECT_TRUE(tgt.WaitFor("nvmf_subsystem_get_controllers", {{"nqn", kSubNqn}}, [&](const Json& list) {
    return list.size() == 1 && list[0]["cntlid"] != silent_cntlid;
  }, 2s)) << tgt.Call("nvmf_subsystem_get_controllers", {{"nqn", kSubNqn}}).dump();
  EXPECT_THAT(tgt.Log(), HasSubstr("keep-alive timeout of 1000 ms expired"));

  // Past 2.5 x KATO the live host, which kept sending Keep Alive, still works.
  std::this_thread::sleep_until(connected_at + std::chrono::milliseconds(kKatoMs * 5 / 2));
  std::vector<uint8_t> data = Pattern(4096, 9), back(4096);
  EXPECT_TRUE(live->Write(1, 0, 8, data).ok());
  EXPECT_TRUE(live->Read(1, 0, 8, absl::MakeSpan(back)).ok());
  EXPECT_EQ(back, data);
  EXPECT_TRUE(live->KeepAlive().ok());
  EXPECT_TRUE(live->Shutdown().ok());
  live.reset();
  host.Run([&] { silent.reset(); });
  EXPECT_TRUE(tgt.WaitFor("nvmf_subsystem_get_controllers", {{"nqn", kSubNqn}},
                          [](const Json& list) { return list.empty(); }, 2s));
}

// ================================================================================================
// 5. Namespace removal under load, asynchronous event and changed namespace list.
// ================================================================================================

// Keeps `depth` random 4-16 KiB reads and writes in flight against one namespace until stopped, and
// classifies every completion by whether it was submitted before or after the removal was marked.
class Load {
 public:
  struct Stats {
    uint64_t ok_before = 0, ok_after = 0;
    uint64_t invalid_ns_before = 0, invalid_ns_after = 0;
    uint64_t other_status = 0, transport_errors = 0;
    std::string first_unexpected;
  };

  Load(AsyncQueue& queue, uint32_t nsid, uint32_t depth, uint64_t blocks)
      : queue_(queue), nsid_(nsid), depth_(depth), blocks_(blocks) {
    buffers_.resize(depth);
    for (auto& b : buffers_) b = Pattern(16384, depth);
  }

  ~Load() {
    if (!stopped_) {
      Stats stats;
      Stop(10s, &stats);
    }
  }

  void Start() {
    queue_.host().reactor().Post([this] {
      for (uint32_t slot = 0; slot < depth_; ++slot) Submit(slot);
    });
  }
  void MarkRemoved() { removed_ = true; }
  uint64_t completed() const { return completed_; }

  // Stops resubmitting and waits for every outstanding I/O; false if some never completed.
  bool Stop(std::chrono::milliseconds timeout, Stats* stats) {
    stopped_ = true;
    auto drained = std::make_shared<std::promise<void>>();
    auto future = drained->get_future();
    queue_.host().Run([this, drained] {
      stopping_ = true;
      drained_ = drained;
      MaybeDrained();
    });
    bool ok = future.wait_for(timeout) == std::future_status::ready;
    if (!ok) queue_.host().Run([this] { queue_.qp().Close(absl::DeadlineExceededError("test timeout")); });
    *stats = queue_.host().Run([this] { return stats_; });
    return ok;
  }

 private:
  void Submit(uint32_t slot) {
    if (stopping_) return;
    uint32_t nblocks = (4096u << (rng_() % 3)) / kBlockSize;
    uint64_t lba = rng_() % (blocks_ - nblocks);
    bool write = rng_() % 2 == 0;
    bool after = removed_.load();
    uint8_t sqe[nvme::kSqeSize];
    if (write) {
      nvme::host::BuildWrite(sqe, nsid_, lba, nblocks);
    } else {
      nvme::host::BuildRead(sqe, nsid_, lba, nblocks);
    }
    QueuePair::CompletionCallback done = [this, slot, after](const Completion& c) { OnDone(slot, after, c); };
    uint8_t* buffer = buffers_[slot].data();
    uint32_t length = nblocks * kBlockSize;
    absl::Status s = write ? queue_.qp().SubmitWrite(sqe, buffer, length, std::move(done))
                           : queue_.qp().SubmitRead(sqe, buffer, length, std::move(done));
    if (s.ok()) {
      ++in_flight_;
    } else {
      ++stats_.transport_errors;
      if (stats_.first_unexpected.empty()) stats_.first_unexpected = s.ToString();
    }
  }

  void OnDone(uint32_t slot, bool after, const Completion& c) {
    --in_flight_;
    ++completed_;
    if (!c.transport.ok()) {
      ++stats_.transport_errors;
      if (stats_.first_unexpected.empty()) stats_.first_unexpected = c.transport.ToString();
    } else if (c.status.ok()) {
      ++(after ? stats_.ok_after : stats_.ok_before);
    } else if (c.status.sct == nvme::kSctGeneric && c.status.sc == nvme::sc::kInvalidNamespaceOrFormat) {
      ++(after ? stats_.invalid_ns_after : stats_.invalid_ns_before);
    } else {
      ++stats_.other_status;
      if (stats_.first_unexpected.empty()) stats_.first_unexpected = nvme::host::DescribeStatus(c.status);
    }
    if (c.transport.ok()) Submit(slot);
    MaybeDrained();
  }

  void MaybeDrained() {
    if (stopping_ && in_flight_ == 0 && drained_) {
      drained_->set_value();
      drained_.reset();
    }
  }

  AsyncQueue& queue_;
  const uint32_t nsid_;
  const uint32_t depth_;
  const uint64_t blocks_;
  std::vector<std::vector<uint8_t>> buffers_;
  std::mt19937_64 rng_{42};
  std::atomic<bool> removed_{false};
  std::atomic<uint64_t> completed_{0};
  bool stopped_ = false;  // test thread
  // On the host reactor only:
  bool stopping_ = false;
  uint32_t in_flight_ = 0;
  Stats stats_;
  std::shared_ptr<std::promise<void>> drained_;
};

// Submits an Asynchronous Event Request on the controller's admin queue (the library has no AER API; the
// admin QueuePair is reachable on the SyncController's reactor).
std::future<Completion> SubmitAer(SyncController& ctrl) {
  auto promise = std::make_shared<std::promise<Completion>>();
  std::future<Completion> future = promise->get_future();
  ctrl.reactor().Post([&ctrl, promise] {
    uint8_t sqe[nvme::kSqeSize] = {};
    sqe[0] = nvme::admin::kAsyncEventRequest;
    QueuePair* admin = ctrl.async_controller().admin_queue();
    absl::Status s = absl::FailedPreconditionError("no admin queue");
    if (admin != nullptr) {
      QueuePair::CompletionCallback done = [promise](const Completion& c) { promise->set_value(c); };
      s = admin->Submit(sqe, std::move(done));
    }
    if (!s.ok()) {
      Completion c;
      c.transport = s;
      promise->set_value(c);
    }
  });
  return future;
}

// Checks an AER completion: a notice (type 2), namespace attribute changed (0), log page 04h.
void ExpectNamespaceAttributeNotice(std::future<Completion>& aer) {
  ASSERT_EQ(aer.wait_for(5s), std::future_status::ready) << "no Asynchronous Event reached the host";
  Completion c = aer.get();
  ASSERT_TRUE(c.ok()) << c.ToStatus("Asynchronous Event Request");
  EXPECT_EQ(c.cdw0 & 0x7, 0x2u) << "event type: notice";
  EXPECT_EQ((c.cdw0 >> 8) & 0xff, 0x0u) << "event information: namespace attribute changed";
  EXPECT_EQ((c.cdw0 >> 16) & 0xff, nvme::log_page::kChangedNamespaceList) << "log page";
}

std::vector<uint32_t> ChangedNamespaces(SyncController& ctrl) {
  auto log = ctrl.GetLogPage(nvme::log_page::kChangedNamespaceList, 0xffffffff, 0, 4096);
  EXPECT_TRUE(log.ok()) << log.status();
  std::vector<uint32_t> nsids;
  if (!log.ok()) return nsids;
  for (size_t i = 0; i + 4 <= log->size(); i += 4) {
    uint32_t nsid = Load32(log->data() + i);
    if (nsid == 0) break;
    nsids.push_back(nsid);
  }
  return nsids;
}

TEST(NvmfTcpTest, NamespaceRemovalUnderLoadFailsCleanlyAndRaisesAnEvent) {
  testing::TempDir dir;
  Target tgt(dir);
  ASSERT_TRUE(tgt.Start("0x3"));
  const std::string port = testing::FreeTcpPort();
  constexpr uint64_t kBlocks = 8192;
  tgt.CreateTransport();
  tgt.CreateMalloc("Malloc0", kBlocks);
  tgt.CreateMalloc("Malloc1", kBlocks);
  tgt.CreateSubsystem(kSubNqn, true);
  tgt.AddNamespace(kSubNqn, "Malloc0", 1);
  tgt.AddNamespace(kSubNqn, "Malloc1", 2);
  tgt.AddListener(kSubNqn, port);
  ASSERT_FALSE(::testing::Test::HasFailure());

  auto ctrl = ConnectHost(tgt, Trid(port, kSubNqn), HostOptions(false, 2));
  ASSERT_NE(ctrl, nullptr);
  // A second host that did not enable namespace attribute notices must get no event.
  auto quiet = ConnectHost(tgt, Trid(port, kSubNqn, kOtherHostNqn), HostOptions());
  ASSERT_NE(quiet, nullptr);
  EXPECT_TRUE(ctrl->controller_data().oaes & (1u << 8)) << "OAES must advertise namespace attribute notices";
  auto aec = ctrl->SetFeatures(nvme::feature::kAsyncEventConfiguration, 1u << 8);
  ASSERT_TRUE(aec.ok()) << aec.status();
  auto aec_back = ctrl->GetFeatures(nvme::feature::kAsyncEventConfiguration);
  ASSERT_TRUE(aec_back.ok());
  EXPECT_EQ(*aec_back, 1u << 8);
  std::future<Completion> aer = SubmitAer(*ctrl);
  std::future<Completion> quiet_aer = SubmitAer(*quiet);

  HostReactor host("host_load");
  auto queue = AsyncQueue::Connect(*ctrl, host, 32);
  ASSERT_NE(queue, nullptr);

  // Phase 1: nvmf_subsystem_remove_ns of namespace 1 under QD 32.
  {
    Load load(*queue, 1, 32, kBlocks);
    load.Start();
    auto deadline = Clock::now() + 10s;
    while (load.completed() < 500 && Clock::now() < deadline) std::this_thread::sleep_for(5ms);
    ASSERT_GE(load.completed(), 500u) << "no I/O progress before the removal";
    tgt.Call("nvmf_subsystem_remove_ns", {{"nqn", kSubNqn}, {"nsid", 1}});
    load.MarkRemoved();
    uint64_t at_removal = load.completed();
    while (load.completed() < at_removal + 200 && Clock::now() < deadline) std::this_thread::sleep_for(5ms);
    Load::Stats stats;
    ASSERT_TRUE(load.Stop(10s, &stats)) << "outstanding I/O never completed\n" << tgt.Log();
    EXPECT_GT(stats.ok_before, 0u);
    EXPECT_EQ(stats.ok_after, 0u) << "I/O to a removed namespace succeeded";
    EXPECT_GT(stats.invalid_ns_after, 0u);
    EXPECT_EQ(stats.other_status, 0u) << stats.first_unexpected;
    EXPECT_EQ(stats.transport_errors, 0u) << stats.first_unexpected;
  }
  ExpectNamespaceAttributeNotice(aer);
  EXPECT_THAT(ChangedNamespaces(*ctrl), ::testing::ElementsAre(1u));
  EXPECT_THAT(ChangedNamespaces(*ctrl), ::testing::IsEmpty()) << "reading the log without RAE clears it";
  auto active = ctrl->ActiveNamespaces();
  ASSERT_TRUE(active.ok());
  EXPECT_THAT(*active, ::testing::ElementsAre(2u));
  EXPECT_TRUE(absl::IsNotFound(ctrl->IdentifyNamespace(1).status()));
  std::vector<uint8_t> buffer(4096);
  absl::Status gone = ctrl->Read(1, 0, 8, absl::MakeSpan(buffer));
  EXPECT_THAT(std::string(gone.message()), HasSubstr("SCT 0 SC 0x0b")) << gone;
  EXPECT_TRUE(ctrl->Read(2, 0, 8, absl::MakeSpan(buffer)).ok());

  // Phase 2: the bdev of namespace 2 is deleted under load (hot remove).
  aer = SubmitAer(*ctrl);
  {
    Load load(*queue, 2, 32, kBlocks);
    load.Start();
    auto deadline = Clock::now() + 10s;
    while (load.completed() < 500 && Clock::now() < deadline) std::this_thread::sleep_for(5ms);
    ASSERT_GE(load.completed(), 500u);
    tgt.Call("bdev_malloc_delete", {{"name", "Malloc1"}});
    // The RPC answers once the bdev is gone, which needs the namespace detached first.
    load.MarkRemoved();
    uint64_t at_removal = load.completed();
    while (load.completed() < at_removal + 200 && Clock::now() < deadline) std::this_thread::sleep_for(5ms);
    Load::Stats stats;
    ASSERT_TRUE(load.Stop(10s, &stats)) << "outstanding I/O never completed\n" << tgt.Log();
    EXPECT_GT(stats.ok_before, 0u);
    EXPECT_EQ(stats.ok_after, 0u);
    EXPECT_GT(stats.invalid_ns_after, 0u);
    EXPECT_EQ(stats.other_status, 0u) << stats.first_unexpected;
    EXPECT_EQ(stats.transport_errors, 0u) << stats.first_unexpected;
  }
  ExpectNamespaceAttributeNotice(aer);
  EXPECT_THAT(ChangedNamespaces(*ctrl), ::testing::ElementsAre(2u));
  active = ctrl->ActiveNamespaces();
  ASSERT_TRUE(active.ok());
  EXPECT_THAT(*active, ::testing::IsEmpty());

  EXPECT_EQ(quiet_aer.wait_for(0s), std::future_status::timeout)
      << "a host without AEC bit 8 got a namespace attribute notice";
  queue.reset();
  EXPECT_TRUE(tgt.Alive()) << tgt.Log();
  auto totals = tgt.StatsTotals();
  EXPECT_EQ(totals["pending_bdev_io"], 0u);
  EXPECT_TRUE(ctrl->Shutdown().ok());
  EXPECT_TRUE(quiet->Shutdown().ok());
}

// ================================================================================================
// 6. The discovery log shows what the host may reach.
// ================================================================================================

TEST(NvmfTcpTest, DiscoveryLogListsOnlyWhatTheHostMaySee) {
  testing::TempDir dir;
  Target tgt(dir);
  ASSERT_TRUE(tgt.Start("0x1"));
  const std::string discovery_port = testing::FreeTcpPort();
  const std::string port_a = testing::FreeTcpPort();
  const std::string port_b = testing::FreeTcpPort();
  tgt.CreateTransport();
  tgt.CreateMalloc("Malloc0", 1024);
  tgt.CreateMalloc("Malloc1", 1024);
  tgt.CreateSubsystem(kSubNqn, false);  // allows kHostNqn
  tgt.AddNamespace(kSubNqn, "Malloc0");
  tgt.AddHost(kSubNqn, kHostNqn);
  tgt.AddListener(kSubNqn, port_a);
  tgt.CreateSubsystem(kSubNqn2, false);  // allows kOtherHostNqn only
  tgt.AddNamespace(kSubNqn2, "Malloc1");
  tgt.AddHost(kSubNqn2, kOtherHostNqn);
  tgt.AddListener(kSubNqn2, port_b);
  tgt.AddListener(kDiscoveryNqn, discovery_port);
  ASSERT_FALSE(::testing::Test::HasFailure());

  // (subtype, subnqn, trsvcid) of every record, after checking the fields that do not vary.
  auto records = [&](const nvme::host::DiscoveryLog& log) {
    std::multiset<std::tuple<int, std::string, std::string>> out;
    EXPECT_EQ(log.numrec, log.entries.size());
    for (const auto& e : log.entries) {
      EXPECT_EQ(e.trtype, nvme::kTrtypeTcp);
      EXPECT_EQ(e.adrfam, nvme::kAdrfamIpv4);
      EXPECT_EQ(e.traddr, "127.0.0.1");
      EXPECT_EQ(e.cntlid, 0xffff);
      out.insert({e.subtype, e.subnqn, e.trsvcid});
    }
    return out;
  };
  using Records = std::multiset<std::tuple<int, std::string, std::string>>;
  const std::tuple<int, std::string, std::string> self{nvme::kSubtypeCurrentDiscovery, kDiscoveryNqn, discovery_port};

  auto host = ConnectHost(tgt, Trid(discovery_port, kDiscoveryNqn, kHostNqn));
  ASSERT_NE(host, nullptr);
  EXPECT_TRUE(host->is_discovery());
  auto log = host->GetDiscoveryLog();
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_EQ(records(*log), (Records{self, {nvme::kSubtypeNvm, kSubNqn, port_a}}));
  const uint64_t genctr = log->genctr;

  auto other = ConnectHost(tgt, Trid(discovery_port, kDiscoveryNqn, kOtherHostNqn));
  ASSERT_NE(other, nullptr);
  auto other_log = other->GetDiscoveryLog();
  ASSERT_TRUE(other_log.ok());
  EXPECT_EQ(records(*other_log), (Records{self, {nvme::kSubtypeNvm, kSubNqn2, port_b}}));

  auto stranger = ConnectHost(tgt, Trid(discovery_port, kDiscoveryNqn, kThirdHostNqn));
  ASSERT_NE(stranger, nullptr);
  auto stranger_log = stranger->GetDiscoveryLog();
  ASSERT_TRUE(stranger_log.ok());
  EXPECT_EQ(records(*stranger_log), (Records{self}));

  // A new listener shows up with a higher generation counter.
  const std::string port_a2 = testing::FreeTcpPort();
  tgt.AddListener(kSubNqn, port_a2);
  log = host->GetDiscoveryLog();
  ASSERT_TRUE(log.ok());
  EXPECT_GT(log->genctr, genctr);
  EXPECT_EQ(records(*log),
            (Records{self, {nvme::kSubtypeNvm, kSubNqn, port_a}, {nvme::kSubtypeNvm, kSubNqn, port_a2}}));
  // The records' contents are what a host needs to connect: the advertised address works.
  auto via_log = ConnectHost(tgt, Trid(port_a2, kSubNqn, kHostNqn));
  ASSERT_NE(via_log, nullptr);
  EXPECT_EQ(via_log->controller_data().subnqn, kSubNqn);

  // Removing the host's access removes the subsystem from its log (and bumps the counter again).
  tgt.Call("nvmf_subsystem_remove_host", {{"nqn", kSubNqn}, {"host", kHostNqn}});
  auto after = host->GetDiscoveryLog();
  ASSERT_TRUE(after.ok());
  EXPECT_GT(after->genctr, log->genctr);
  EXPECT_EQ(records(*after), (Records{self}));
}

// ================================================================================================
// 7. Malformed input on one connection does not disturb the others.
// ================================================================================================

// A host doing verified I/O in a loop on its own thread.
class BackgroundIo {
 public:
  explicit BackgroundIo(SyncController& ctrl) : ctrl_(ctrl), thread_([this] { Run(); }) {}
  ~BackgroundIo() { Stop(); }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  uint64_t rounds() const { return rounds_; }
  uint64_t errors() const { return errors_; }
  std::string first_error() {
    std::lock_guard<std::mutex> lock(mu_);
    return first_error_;
  }

 private:
  void Run() {
    uint64_t seed = 0;
    while (!stop_) {
      uint32_t size = seed % 2 == 0 ? 4096 : 65536;  // in-capsule and R2T
      uint64_t lba = (seed % 64) * 128;
      std::vector<uint8_t> data = Pattern(size, ++seed), back(size);
      absl::Status s = ctrl_.Write(1, lba, size / kBlockSize, data);
      if (s.ok()) s = ctrl_.Read(1, lba, size / kBlockSize, absl::MakeSpan(back));
      if (s.ok() && back != data) s = absl::DataLossError("read back differs");
      if (!s.ok()) {
        ++errors_;
        std::lock_guard<std::mutex> lock(mu_);
        if (first_error_.empty()) first_error_ = s.ToString();
      }
      ++rounds_;
    }
  }

  SyncController& ctrl_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> rounds_{0};
  std::atomic<uint64_t> errors_{0};
  std::mutex mu_;
  std::string first_error_;
  std::thread thread_;
};

TEST(NvmfTcpTest, MalformedInputGetsTermReqAndDoesNotDisturbOtherHosts) {
  testing::TempDir dir;
  Target tgt(dir);
  ASSERT_TRUE(tgt.Start("0x3"));
  const std::string port = testing::FreeTcpPort();
  tgt.CreateTransport();
  tgt.CreateMalloc("Malloc0", 16384);
  tgt.CreateSubsystem(kSubNqn, true);
  tgt.AddNamespace(kSubNqn, "Malloc0");
  tgt.AddListener(kSubNqn, port);
  ASSERT_FALSE(::testing::Test::HasFailure());

  auto good = ConnectHost(tgt, Trid(port, kSubNqn));
  ASSERT_NE(good, nullptr);
  BackgroundIo io(*good);

  struct Case {
    const char* name;
    std::function<std::vector<uint8_t>(RawConnection&)> setup;  // sent after connecting; returns the bad bytes
    uint16_t fes;
    std::optional<uint32_t> fei;
  };
  auto icreq = [](bool hdgst = false) {
    std::vector<uint8_t> out;
    tcp::AppendIcReq(out, 0, hdgst, false, 0);
    return out;
  };
  auto initialize = [&](RawConnection& c, bool hdgst = false) {
    EXPECT_TRUE(c.Send(icreq(hdgst)));
    std::optional<RxPdu> resp = c.Read(5s);
    EXPECT_TRUE(resp && resp->type == tcp::kIcResp);
  };
  auto capsule = [](const tcp::Params& params) {
    uint8_t sqe[nvme::kSqeSize];
    nvme::host::BuildPropertyGet(sqe, nvme::prop::kCap, true);
    nvme::CommandBuilder::SetSgl(sqe, false, 0);
    std::vector<uint8_t> out;
    tcp::AppendCapsuleCmd(out, params, sqe, nullptr, 0);
    return out;
  };
  const std::vector<Case> cases = {
      {"garbage instead of a PDU",
       [](RawConnection&) {
         std::string http = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
         return std::vector<uint8_t>(http.begin(), http.end());
       },
       tcp::kFesInvalidHeaderField, 0u},
      {"ICReq with a wrong hlen",
       [&](RawConnection&) {
         std::vector<uint8_t> bad = icreq();
         bad[2] = 64;
         return bad;
       },
       tcp::kFesInvalidHeaderField, 2u},
      {"CapsuleCmd before ICReq", [&](RawConnection&) { return capsule(tcp::Params()); }, tcp::kFesPduSequenceError,
       std::nullopt},
      {"second ICReq",
       [&](RawConnection& c) {
         initialize(c);
         return icreq();
       },
       tcp::kFesPduSequenceError, std::nullopt},
      {"H2CData for an unknown transfer tag",
       [&](RawConnection& c) {
         initialize(c);
         std::vector<uint8_t> payload(512, 0x5a), out;
         tcp::AppendH2CData(out, c.params(), 5, 77, 0, payload.data(), 512, true);
         return out;
       },
       tcp::kFesInvalidHeaderField, 10u},
      {"CapsuleCmd larger than the data limit",
       [&](RawConnection& c) {
         initialize(c);
         std::vector<uint8_t> out = capsule(c.params());
         nvme::Store32(out.data() + 4, 72 + (4u << 20));  // plen: 4 MiB of in-capsule data announced
         out[3] = 72;                                     // pdo
         return out;
       },
       tcp::kFesDataLimitExceeded, std::nullopt},
      {"CapsuleCmd with a bad header digest",
       [&](RawConnection& c) {
         initialize(c, /*hdgst=*/true);
         std::vector<uint8_t> out = capsule(c.params());
         out[tcp::kCapsuleCmdHeaderSize] ^= 0xff;  // the digest follows the 72-byte header
         return out;
       },
       tcp::kFesHeaderDigestError, std::nullopt},
  };

  uint64_t rounds_before = io.rounds();
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    RawConnection conn(port);
    ASSERT_TRUE(conn.ok());
    std::vector<uint8_t> bad = c.setup(conn);
    ASSERT_TRUE(conn.Send(bad));
    std::optional<RxPdu> term = conn.Read(5s);
    ASSERT_TRUE(term.has_value()) << "no C2HTermReq; " << conn.reader_error() << (conn.closed() ? " (closed)" : "");
    EXPECT_EQ(term->type, tcp::kC2HTermReq) << Describe(*term);
    EXPECT_EQ(term->hlen, tcp::kTermReqHeaderSize);
    EXPECT_GE(term->plen, tcp::kTermReqHeaderSize);
    EXPECT_LE(term->plen, tcp::kMaxTermReqSize);
    EXPECT_EQ(term->fes(), c.fes) << Describe(*term);
    if (c.fei) {
      EXPECT_EQ(term->fei(), *c.fei) << Describe(*term);
    }
    // The echoed header is a prefix of what we sent.
    size_t echoed = std::min(term->data.size(), bad.size());
    EXPECT_GT(echoed, 0u);
    EXPECT_TRUE(std::equal(term->data.begin(), term->data.begin() + static_cast<ptrdiff_t>(echoed), bad.begin()));
    EXPECT_TRUE(conn.WaitClosed(5s)) << "the target did not close the connection";
  }

  // H2CData outside the range its R2T asked for, on an established I/O queue: FES 04h, and the
  // association's admin queue is unaffected.
  {
    RawHost admin(port);
    std::optional<uint16_t> cntlid = admin.ConnectAdmin(kSubNqn, kThirdHostNqn, 0);
    ASSERT_TRUE(cntlid.has_value());
    RawHost io_queue(port);
    ASSERT_TRUE(io_queue.Initialize());
    ASSERT_TRUE(io_queue.Connect(kSubNqn, kThirdHostNqn, 1, *cntlid, 0).has_value());
    uint8_t sqe[nvme::kSqeSize];
    nvme::host::BuildWrite(sqe, 1, 0, 65536 / kBlockSize);
    uint16_t cid = io_queue.SendCommand(sqe, {}, 65536);
    std::optional<RxPdu> r2t = io_queue.conn().Read(5s);
    ASSERT_TRUE(r2t.has_value() && r2t->type == tcp::kR2T);
    std::vector<uint8_t> payload = Pattern(4096, 5), out;
    tcp::AppendH2CData(out, io_queue.conn().params(), cid, r2t->ttag(), 8192, payload.data(), 4096, false);
    ASSERT_TRUE(io_queue.conn().Send(out));
    std::optional<RxPdu> term = io_queue.conn().Read(5s);
    ASSERT_TRUE(term.has_value());
    EXPECT_EQ(term->type, tcp::kC2HTermReq) << Describe(*term);
    EXPECT_EQ(term->fes(), tcp::kFesDataOutOfRange) << Describe(*term);
    EXPECT_TRUE(io_queue.conn().WaitClosed(5s));
    nvme::host::BuildPropertyGet(sqe, nvme::prop::kCsts, false);
    std::optional<RxPdu> csts = admin.Command(sqe);
    ASSERT_TRUE(csts.has_value());
    EXPECT_TRUE(csts->status().ok());
  }

  // Command ID reuse. The ID of an outstanding Asynchronous Event Request may be reused: SPDK's host
  // completes its AERs itself when it detaches and reuses their IDs for the shutdown sequence. The ID of
  // a command still waiting for its data may not: a termination request pointing at the CID.
  {
    RawHost admin(port);
    std::optional<uint16_t> cntlid = admin.ConnectAdmin(kSubNqn, kThirdHostNqn, 0);
    ASSERT_TRUE(cntlid.has_value());
    uint8_t sqe[nvme::kSqeSize] = {};
    sqe[0] = nvme::admin::kAsyncEventRequest;
    uint16_t aer_cid = admin.SendCommand(sqe);
    admin.ReuseCid(aer_cid);
    nvme::host::BuildPropertyGet(sqe, nvme::prop::kCsts, false);
    std::optional<RxPdu> csts = admin.Command(sqe);
    ASSERT_TRUE(csts.has_value()) << "a command reusing an abandoned AER's ID was not answered";
    EXPECT_TRUE(csts->status().ok());
    EXPECT_FALSE(admin.conn().Read(100ms).has_value()) << "the retired AER completed after all";

    RawHost io_queue(port);
    ASSERT_TRUE(io_queue.Initialize());
    ASSERT_TRUE(io_queue.Connect(kSubNqn, kThirdHostNqn, 1, *cntlid, 0).has_value());
    nvme::host::BuildWrite(sqe, 1, 0, 65536 / kBlockSize);
    uint16_t write_cid = io_queue.SendCommand(sqe, {}, 65536);
    std::optional<RxPdu> r2t = io_queue.conn().Read(5s);
    ASSERT_TRUE(r2t.has_value() && r2t->type == tcp::kR2T);
    io_queue.ReuseCid(write_cid);
    nvme::host::BuildRead(sqe, 1, 0, 8);
    io_queue.SendCommand(sqe, {}, 4096);
    std::optional<RxPdu> term = io_queue.conn().Read(5s);
    ASSERT_TRUE(term.has_value());
    EXPECT_EQ(term->type, tcp::kC2HTermReq) << Describe(*term);
    EXPECT_EQ(term->fes(), tcp::kFesInvalidHeaderField);
    EXPECT_EQ(term->fei(), tcp::kCommonHeaderSize + 2) << "FEI: the CID field of the capsule";
    EXPECT_TRUE(io_queue.conn().WaitClosed(5s));
  }

  // The good host kept working throughout, and keeps working.
  auto deadline = Clock::now() + 10s;
  uint64_t rounds_after = io.rounds();
  while (io.rounds() < rounds_after + 20 && Clock::now() < deadline) std::this_thread::sleep_for(5ms);
  io.Stop();
  EXPECT_GT(rounds_after, rounds_before) << "no I/O completed while the malformed connections were handled";
  EXPECT_GE(io.rounds(), rounds_after + 20);
  EXPECT_EQ(io.errors(), 0u) << io.first_error();
  EXPECT_TRUE(tgt.Alive()) << tgt.Log();
  EXPECT_TRUE(tgt.WaitFor("nvmf_get_stats", Json(), [&](const Json&) {
    auto t = tgt.StatsTotals();
    return t["current_unassociated_qpairs"] == 0 && t["current_admin_qpairs"] == 1 && t["current_io_qpairs"] == 1;
  })) << tgt.Call("nvmf_get_stats").dump();
  EXPECT_TRUE(good->Shutdown().ok());
}

// ================================================================================================
// 8. Peers that stall or vanish mid-transfer.
// ================================================================================================

TEST(NvmfTcpTest, PeersThatStallOrDisconnectMidTransferLeaveNoTrace) {
  testing::TempDir dir;
  Target tgt(dir);
  ASSERT_TRUE(tgt.Start("0x3"));
  const std::string port = testing::FreeTcpPort();
  tgt.CreateTransport();
  tgt.CreateMalloc("Malloc0", 16384);
  tgt.CreateSubsystem(kSubNqn, true);
  tgt.AddNamespace(kSubNqn, "Malloc0");
  tgt.AddListener(kSubNqn, port);
  ASSERT_FALSE(::testing::Test::HasFailure());

  // An admin + I/O association made of raw PDUs, with a 64 KiB write (beyond in-capsule: R2T) started.
  struct Association {
    std::unique_ptr<RawHost> admin, io;
    uint16_t cid = 0;
    RxPdu r2t;
  };
  auto start_write = [&](Association& a) {
    a.admin = std::make_unique<RawHost>(port);
    std::optional<uint16_t> cntlid = a.admin->ConnectAdmin(kSubNqn, kHostNqn, 0);
    ASSERT_TRUE(cntlid.has_value());
    a.io = std::make_unique<RawHost>(port);
    ASSERT_TRUE(a.io->Initialize());
    ASSERT_TRUE(a.io->Connect(kSubNqn, kHostNqn, 1, *cntlid, 0).has_value());
    uint8_t sqe[nvme::kSqeSize];
    nvme::host::BuildWrite(sqe, 1, 0, 65536 / kBlockSize);
    a.cid = a.io->SendCommand(sqe, {}, 65536);
    std::optional<RxPdu> r2t = a.io->conn().Read(5s);
    ASSERT_TRUE(r2t.has_value());
    ASSERT_EQ(r2t->type, tcp::kR2T) << Describe(*r2t);
    EXPECT_EQ(r2t->cccid(), a.cid);
    EXPECT_EQ(r2t->data_offset(), 0u);
    EXPECT_EQ(r2t->data_length_field(), 65536u);
    a.r2t = *r2t;
  };

  // a) The host closes right after the R2T.
  {
    Association a;
    start_write(a);
    ASSERT_FALSE(::testing::Test::HasFatalFailure());
    a.io.reset();
    a.admin.reset();
  }
  // b) The host sends half of the H2CData PDU, then closes.
  {
    Association a;
    start_write(a);
    ASSERT_FALSE(::testing::Test::HasFatalFailure());
    std::vector<uint8_t> payload = Pattern(65536, 1), out;
    tcp::AppendH2CData(out, a.io->conn().params(), a.cid, a.r2t.ttag(), 0, payload.data(), 65536, true);
    ASSERT_TRUE(a.io->conn().Send(out.data(), out.size() / 2));
    std::this_thread::sleep_for(20ms);
    a.io.reset();
    a.admin.reset();
  }
  // c) Half a command capsule, then close; d) ICReq only, then close; e) half an ICReq, then close.
  {
    RawHost h(port);
    ASSERT_TRUE(h.Initialize());
    uint8_t sqe[nvme::kSqeSize];
    nvme::host::BuildConnect(sqe, 0, 32, 0);
    std::vector<uint8_t> data(nvme::kConnectDataSize), out;
    nvme::CommandBuilder::SetSgl(sqe, true, nvme::kConnectDataSize);
    tcp::AppendCapsuleCmd(out, h.conn().params(), sqe, data.data(), nvme::kConnectDataSize);
    ASSERT_TRUE(h.conn().Send(out.data(), 40));
  }
  {
    RawHost h(port);
    ASSERT_TRUE(h.Initialize());
  }
  {
    RawConnection c(port);
    std::vector<uint8_t> out;
    tcp::AppendIcReq(out, 0, false, false, 0);
    ASSERT_TRUE(c.Send(out.data(), 60));
  }
  // f) Stalled peers that stay connected: one mid-H2CData (with its admin queue), one mid-PDU before Connect.
  Association stalled;
  start_write(stalled);
  ASSERT_FALSE(::testing::Test::HasFatalFailure());
  {
    std::vector<uint8_t> payload = Pattern(65536, 2), out;
    tcp::AppendH2CData(out, stalled.io->conn().params(), stalled.cid, stalled.r2t.ttag(), 0, payload.data(), 65536,
                       true);
    ASSERT_TRUE(stalled.io->conn().Send(out.data(), 1000));
  }
  RawConnection stalled_ic(port);
  {
    std::vector<uint8_t> out;
    tcp::AppendIcReq(out, 0, false, false, 0);
    ASSERT_TRUE(stalled_ic.Send(out.data(), 100));
  }

  // g) A host that stops reading: 128 reads of 128 KiB (16 MiB of C2HData, more than the target buffers
  // before it stops reading commands) that it never takes off the socket.
  Association deaf;
  deaf.admin = std::make_unique<RawHost>(port);
  std::optional<uint16_t> deaf_cntlid = deaf.admin->ConnectAdmin(kSubNqn, kHostNqn, 0);
  ASSERT_TRUE(deaf_cntlid.has_value());
  deaf.io = std::make_unique<RawHost>(port);
  ASSERT_TRUE(deaf.io->Initialize());
  ASSERT_TRUE(deaf.io->Connect(kSubNqn, kHostNqn, 1, *deaf_cntlid, 0, /*entries=*/128).has_value());
  for (int i = 0; i < 128; ++i) {
    uint8_t sqe[nvme::kSqeSize];
    nvme::host::BuildRead(sqe, 1, (i % 32) * 256, 256);
    deaf.io->SendCommand(sqe, {}, 131072);
  }

  // Meanwhile a new host connects and does I/O.
  auto fresh = ConnectHost(tgt, Trid(port, kSubNqn, kOtherHostNqn));
  ASSERT_NE(fresh, nullptr);
  std::vector<uint8_t> data = Pattern(65536, 3), back(65536);
  ASSERT_TRUE(fresh->Write(1, 256, 128, data).ok());
  ASSERT_TRUE(fresh->Read(1, 256, 128, absl::MakeSpan(back)).ok());
  EXPECT_EQ(back, data);

  // Exactly the live qpairs remain: the fresh host's admin + I/O and the stalled and deaf associations'.
  auto qpairs_are = [&](size_t n) {
    return tgt.WaitFor("nvmf_subsystem_get_qpairs", {{"nqn", kSubNqn}},
                       [n](const Json& list) { return list.size() == n; }, 5s);
  };
  EXPECT_TRUE(qpairs_are(6)) << tgt.Call("nvmf_subsystem_get_qpairs", {{"nqn", kSubNqn}}).dump();
  auto stats_are = [&](uint64_t admin, uint64_t io, uint64_t unassociated) {
    return tgt.WaitFor("nvmf_get_stats", Json(), [&](const Json&) {
      auto t = tgt.StatsTotals();
      return t["current_admin_qpairs"] == admin && t["current_io_qpairs"] == io &&
             t["current_unassociated_qpairs"] == unassociated && t["pending_bdev_io"] == 0;
    });
  };
  EXPECT_TRUE(stats_are(3, 3, 1)) << tgt.Call("nvmf_get_stats").dump();
  auto totals = tgt.StatsTotals();
  EXPECT_GE(totals["admin_qpairs"], 5u);  // a, b, stalled, deaf, fresh
  EXPECT_GE(totals["io_qpairs"], 5u);
  EXPECT_GE(totals["completed_nvme_io"], 128u + 2);  // the deaf host's reads, the fresh host's I/O

  // The stalled peers go away: everything of theirs is released.
  stalled.io.reset();
  stalled.admin.reset();
  stalled_ic.Close();
  deaf.io.reset();
  deaf.admin.reset();
  EXPECT_TRUE(qpairs_are(2)) << tgt.Call("nvmf_subsystem_get_qpairs", {{"nqn", kSubNqn}}).dump();
  EXPECT_TRUE(stats_are(1, 1, 0)) << tgt.Call("nvmf_get_stats").dump();
  Json controllers = tgt.Call("nvmf_subsystem_get_controllers", {{"nqn", kSubNqn}});
  ASSERT_EQ(controllers.size(), 1u) << controllers.dump();
  EXPECT_EQ(controllers[0]["hostnqn"], kOtherHostNqn);

  // The data the vanished hosts half-sent never reached the namespace.
  std::vector<uint8_t> first(65536);
  ASSERT_TRUE(fresh->Read(1, 0, 128, absl::MakeSpan(first)).ok());
  EXPECT_EQ(first, std::vector<uint8_t>(65536, 0));
  EXPECT_TRUE(fresh->Shutdown().ok());
  fresh.reset();
  EXPECT_TRUE(qpairs_are(0));
  EXPECT_TRUE(stats_are(0, 0, 0)) << tgt.Call("nvmf_get_stats").dump();
  EXPECT_TRUE(tgt.Alive()) << tgt.Log();
}

// ================================================================================================
// 9. tshark decodes our own traffic without malformed packets or NVMe/TCP expert warnings.
// ================================================================================================

// Expert info rows (severity "Errors"/"Warns") from `tshark -z expert`, as "group protocol: summary".
// Note: Wireshark 4.0's NVMe dissector has a bug decoding the completion of Get Features Arbitration
// (FID 01h): it reports "Dissector bug ... Unregistered hf!" as a Malformed error, even on SPDK's own
// traffic (identify.pcap, frame 57). Neither smad-identify nor smad-perf sends that command; if a tool
// starts to, this check will flag it and the finding is the dissector's, not ours.
std::vector<std::string> ExpertProblems(const std::string& text, std::vector<std::string>* other_warnings) {
  std::vector<std::string> problems;
  std::istringstream in(text);
  std::string line;
  bool in_problem_section = false;
  static const std::regex kRow(R"(^\s*(\d+)\s+(\S+)\s+(\S+)\s+(.*)$)");
  while (std::getline(in, line)) {
    if (absl::StartsWith(line, "Errors (") || absl::StartsWith(line, "Warns (")) {
      in_problem_section = true;
      continue;
    }
    if (absl::StartsWith(line, "Notes (") || absl::StartsWith(line, "Chats (") ||
        absl::StartsWith(line, "Comments (")) {
      in_problem_section = false;
      continue;
    }
    std::smatch m;
    if (!in_problem_section || !std::regex_match(line, m, kRow)) continue;
    std::string group = m[2], protocol = m[3];
    std::string row = group + " " + protocol + ": " + std::string(m[4]);
    if (group == "Malformed" || protocol == "NVMe/TCP" || protocol == "NVMe") {
      problems.push_back(row);
    } else {
      other_warnings->push_back(row);
    }
  }
  return problems;
}

TEST(NvmfTcpTest, TsharkFindsNoMalformedNvmeTcpInOurTraffic) {
  if (RunCommand("tshark --version").exit_code != 0) GTEST_SKIP() << "tshark is not installed (scripts/setup)";
  testing::TempDir dir;
  Target tgt(dir);
  ASSERT_TRUE(tgt.Start("0x3"));
  const std::string port = testing::FreeTcpPort();
  const std::string discovery_port = testing::FreeTcpPort();
  tgt.CreateTransport();
  tgt.CreateMalloc("Malloc0", 32768, kBlockSize, "6a0f3b2c-1d4e-4f5a-8b6c-7d8e9f0a1b2c");
  tgt.CreateSubsystem(kSubNqn, true, "SMADTSHARK01");
  tgt.AddNamespace(kSubNqn, "Malloc0");
  tgt.AddListener(kSubNqn, port);
  tgt.AddListener(kDiscoveryNqn, discovery_port);
  ASSERT_FALSE(::testing::Test::HasFailure());

  const std::string pcap = dir.File("nvme-tcp.pcap");
  const std::string capture_log = dir.File("tshark-capture.log");
  const std::string filter = "tcp port " + port + " or tcp port " + discovery_port;
  pid_t capture = fork();
  ASSERT_GE(capture, 0);
  if (capture == 0) {
    int fd = open(capture_log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    execlp("tshark", "tshark", "-i", "lo", "-f", filter.c_str(), "-B", "64", "-a", "duration:120", "-w",
           pcap.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  auto stop_capture = [&] {
    if (capture <= 0) return;
    kill(capture, SIGINT);
    for (int i = 0; i < 500; ++i) {
      if (waitpid(capture, nullptr, WNOHANG) == capture) {
        capture = -1;
        return;
      }
      std::this_thread::sleep_for(10ms);
    }
    kill(capture, SIGKILL);
    waitpid(capture, nullptr, 0);
    capture = -1;
  };
  // Ready once dumpcap reports the capture started; a permission problem ends tshark before that.
  auto deadline = Clock::now() + 15s;
  bool capturing = false;
  while (Clock::now() < deadline) {
    if (ReadFile(capture_log).find("Capturing on") != std::string::npos) {
      capturing = true;
      break;
    }
    if (waitpid(capture, nullptr, WNOHANG) == capture) {
      capture = -1;
      break;
    }
    std::this_thread::sleep_for(20ms);
  }
  if (!capturing) {
    stop_capture();
    GTEST_SKIP() << "cannot capture on lo (needs root or CAP_NET_RAW/CAP_NET_ADMIN): " << ReadFile(capture_log);
  }
  std::this_thread::sleep_for(200ms);  // the filter is installed before "Capturing on"; a margin anyway

  auto trid_text = [&](const std::string& p, const std::string& nqn) {
    return absl::StrCat("'trtype:tcp adrfam:ipv4 traddr:127.0.0.1 trsvcid:", p, " subnqn:", nqn,
                        " hostnqn:", kHostNqn, "'");
  };
  const std::string identify = SMAD_IDENTIFY_BINARY;
  const std::string perf = SMAD_PERF_BINARY;
  const std::vector<std::string> commands = {
      identify + " " + trid_text(port, kSubNqn),
      identify + " " + trid_text(port, kSubNqn) + " --hdgst --ddgst",
      identify + " " + trid_text(discovery_port, kDiscoveryNqn),
      // Short runs: a few thousand I/Os keep the capture (and its decoding) small.
      perf + " -r " + trid_text(port, kSubNqn) + " -q 2 -o 4k -w randrw -M 50 -t 0.1 --no-busy-poll",
      perf + " -r " + trid_text(port, kSubNqn) + " -q 2 -o 16k -w randrw -M 50 -t 0.1 --no-busy-poll --verify",
      perf + " -r " + trid_text(port, kSubNqn) + " -q 2 -o 16k -w randrw -M 50 -t 0.1 --no-busy-poll --hdgst --ddgst",
  };
  for (const std::string& command : commands) {
    CommandResult r = RunCommand(command);
    EXPECT_EQ(r.exit_code, 0) << command << "\n" << r.output;
  }
  std::this_thread::sleep_for(300ms);  // let dumpcap write the last packets
  stop_capture();
  if (const char* keep = getenv("SMAD_TEST_KEEP_PCAP")) {  // for a look with Wireshark
    std::ofstream(keep, std::ios::binary) << ReadFile(pcap);
    std::cout << "capture kept in " << keep << " (ports " << port << ", " << discovery_port << ")\n";
  }
  ASSERT_FALSE(::testing::Test::HasFailure());

  const std::string decode = "-d tcp.port==" + port + ",nvme-tcp -d tcp.port==" + discovery_port +
                             ",nvme-tcp -o nvme-tcp.check_hdgst:TRUE -o nvme-tcp.check_ddgst:TRUE";
  // What was decoded: every PDU type our traffic should contain, and digests on some PDUs.
  CommandResult types = RunCommand("tshark -r " + pcap + " " + decode +
                                   " -Y nvme-tcp -T fields -e nvme-tcp.type -e nvme-tcp.hdgst.status "
                                   "-e nvme-tcp.ddgst.status",
                                   /*with_stderr=*/false);
  ASSERT_EQ(types.exit_code, 0) << types.output;
  std::set<int> seen_types;
  std::map<std::string, int> hdgst_status, ddgst_status;
  {
    std::istringstream in(types.output);
    std::string line;
    while (std::getline(in, line)) {
      std::vector<std::string> columns = absl::StrSplit(line, '\t');
      if (columns.empty()) continue;
      for (absl::string_view t : absl::StrSplit(columns[0], ',', absl::SkipEmpty())) {
        seen_types.insert(std::atoi(std::string(t).c_str()));
      }
      if (columns.size() > 1) {
        for (absl::string_view s : absl::StrSplit(columns[1], ',', absl::SkipEmpty())) ++hdgst_status[std::string(s)];
      }
      if (columns.size() > 2) {
        for (absl::string_view s : absl::StrSplit(columns[2], ',', absl::SkipEmpty())) ++ddgst_status[std::string(s)];
      }
    }
  }
  for (int type : {tcp::kIcReq, tcp::kIcResp, tcp::kCapsuleCmd, tcp::kCapsuleResp, tcp::kH2CData, tcp::kC2HData,
                   tcp::kR2T}) {
    EXPECT_TRUE(seen_types.count(type)) << "no " << tcp::PduTypeName(static_cast<uint8_t>(type))
                                        << " PDU decoded; the capture or the decode-as failed";
  }
  // tshark verified every digest (status 1 "Good"; a mismatch is 2 "Bad") in both directions.
  EXPECT_GT(hdgst_status["1"], 0) << "no header digest was checked";
  EXPECT_GT(ddgst_status["1"], 0) << "no data digest was checked";
  EXPECT_EQ(hdgst_status.size(), 1u) << "header digests not all good";
  EXPECT_EQ(ddgst_status.size(), 1u) << "data digests not all good";
  CommandResult c2h_digests = RunCommand("tshark -r " + pcap + " " + decode + " -Y 'tcp.srcport==" + port +
                                             " && nvme-tcp.ddgst.status == 1' -T fields -e frame.number",
                                         /*with_stderr=*/false);
  EXPECT_FALSE(c2h_digests.output.empty()) << "no controller-to-host data digest was checked";

  // Any malformed packet, or an expert error, with its full decode.
  CommandResult malformed = RunCommand("tshark -r " + pcap + " " + decode +
                                       " -V -Y '_ws.malformed || _ws.expert.severity >= 0x00800000'",
                                       /*with_stderr=*/false);
  EXPECT_EQ(malformed.exit_code, 0);
  EXPECT_TRUE(malformed.output.empty()) << "malformed packets or expert errors:\n"
                                        << malformed.output.substr(0, 8000);
  // Expert warnings and errors of the NVMe/TCP and NVMe dissectors (digest mismatches, bad fields...).
  CommandResult expert = RunCommand("tshark -r " + pcap + " " + decode + " -q -z expert,warn", /*with_stderr=*/false);
  EXPECT_EQ(expert.exit_code, 0) << expert.output;
  std::vector<std::string> other_warnings;
  std::vector<std::string> problems = ExpertProblems(expert.output, &other_warnings);
  EXPECT_THAT(problems, ::testing::IsEmpty()) << expert.output;
  for (const std::string& w : other_warnings) std::cout << "[tshark, not NVMe/TCP] " << w << "\n";
}

// ================================================================================================
// 10. Interop: replays of SPDK initiator streams against smad-tgt, compared with SPDK's answers.
// ================================================================================================
//
// The captures (/work/shared/interop/nvme-tcp/*.pcap, extracted into tests/data/nvme-tcp/) are an SPDK
// host talking to an SPDK target: subsystem nqn.2016-06.io.spdk:remote0 on 127.0.0.1:4421 (serial
// SPDKREMOTE0, model "SPDK bdev Controller", two namespaces of 8192 x 4 KiB with UUIDs ...8c03 and ...8c04,
// any host allowed), nqn.2016-06.io.spdk:restricted on the same port (the denied host not allowed), the
// discovery subsystem on 127.0.0.1:8010. smad-tgt gets the same configuration on free ports; the replay
// maps 4421/8010 to them where they appear in answers (discovery log TRSVCID).
//
// Comparison, per host PDU: the same controller PDU types in the same order, the same header lengths, the
// same data lengths, the same NVMe status for each completion; selected completion values (CAP, CSTS, KATO,
// Number of Queues); and the fields of Identify, namespace and discovery data that matter to a host.
//
// Legitimate differences, not compared:
// - Identify Controller: VID/SSVID, SN/MN of the discovery controller (SPDK: zeroes), FR, IEEE OUI, CNTLID,
//   VER and the VS property (SPDK 2.0, smad-tgt 1.3), RAB/ACL/FRMW/LPA/ELPE/KAS (SPDK KAS is 10 s, smad-tgt
//   1 s), OAES bit 31 (SPDK's discovery log change notices, not implemented), ONCS beyond DSM and Write
//   Zeroes (SPDK: compare, reservations, copy), FUSES, VWC flush-broadcast bits, SGLS beyond bit 0 (SGLs) and
//   bit 20 (offsets): SPDK sets bit 2 (keyed, an RDMA facility), smad-tgt bit 21 (transport data blocks,
//   which NVMe/TCP uses).
// - Connect's CDW0 (the controller ID) and the discovery log's GENCTR and PORTID values.
// - CAP.CRMS (bits 60:59): SPDK sets CRWMS, an NVMe 2.0 capability.
// - DNR of error completions: smad-tgt sets it where a retry cannot succeed (e.g. Connect Invalid Host),
//   SPDK leaves it clear. Successful completions must have it clear (checked).
// - Two commands the SPDK host sends only because of what the SPDK target advertised (a live host asking
//   smad-tgt would not send them; smad-tgt answers them with a documented error, checked exactly):
//   Identify CNS 06h (I/O command set specific controller data, NVMe 2.0; reserved for smad-tgt's 1.3) ->
//   Invalid Field; Get Log Page 05h (Commands Supported and Effects, advertised by SPDK's LPA bit 1 only)
//   -> Invalid Log Page.

struct KnownDifference {
  uint8_t opcode;
  uint8_t selector;  // Identify: CNS; Get Log Page: LID
  nvme::Status status;
};
const KnownDifference kKnownDifferences[] = {
    {nvme::admin::kIdentify, 0x06, nvme::Generic(nvme::sc::kInvalidField)},
    {nvme::admin::kGetLogPage, 0x05, nvme::Specific(nvme::sc_specific::kInvalidLogPage)},
};

std::vector<uint8_t> ReadBinary(const std::string& path) {
  std::string s = ReadFile(path);
  return std::vector<uint8_t>(s.begin(), s.end());
}

// Splits a recorded stream into PDUs with the reader of the receiving role. Each entry is the raw bytes of
// one PDU (as sent) and its parsed form. Stops at the first incomplete PDU.
struct RecordedPdu {
  std::vector<uint8_t> raw;
  RxPdu pdu;
};
std::vector<RecordedPdu> SplitStream(const std::vector<uint8_t>& bytes, tcp::PduReader::Role role) {
  std::vector<RecordedPdu> out;
  tcp::PduReader reader(role, 16u << 20);
  size_t available = 0;
  uint8_t* space = reader.WritableSpace(bytes.size(), &available);
  std::memcpy(space, bytes.data(), bytes.size());
  reader.Commit(bytes.size());
  while (true) {
    tcp::Pdu pdu;
    tcp::ProtocolError error;
    auto result = reader.Next(&pdu, &error);
    if (result == tcp::PduReader::Result::kNeedMore) break;
    if (result == tcp::PduReader::Result::kError) {
      ADD_FAILURE() << "recorded stream does not parse: " << error.message;
      break;
    }
    RecordedPdu r;
    r.raw.assign(pdu.header, pdu.header + pdu.plen);
    r.pdu = RxPdu::From(pdu);
    if (pdu.type == tcp::kIcReq || pdu.type == tcp::kIcResp) {
      tcp::IcFields ic = tcp::ParseIc(pdu);
      tcp::Params params;
      params.hdgst = ic.hdgst;
      params.ddgst = ic.ddgst;
      if (pdu.type == tcp::kIcResp) params.cpda = ic.pda;
      reader.SetParams(params);
    }
    out.push_back(std::move(r));
  }
  return out;
}

// One host PDU with the controller PDUs answering it, recorded and replayed.
struct Exchange {
  RecordedPdu request;
  std::vector<RxPdu> expected;
  std::vector<RxPdu> actual;
  const nvme::Command* command() const {
    return request.pdu.type == tcp::kCapsuleCmd
               ? reinterpret_cast<const nvme::Command*>(request.pdu.header.data() + tcp::kCommonHeaderSize)
               : nullptr;
  }
  std::string Name() const {
    const nvme::Command* cmd = command();
    if (cmd == nullptr) return tcp::PduTypeName(request.pdu.type);
    return absl::StrCat("opcode 0x", absl::Hex(cmd->opcode()),
                        cmd->opcode() == nvme::kFabricsOpcode ? absl::StrCat(" fctype 0x", absl::Hex(cmd->fctype()))
                                                              : "",
                        " cdw10 0x", absl::Hex(cmd->cdw(10)), " cid ", cmd->cid());
  }
};

// Pairs every recorded host PDU with the controller PDUs that answer it: the ICResp answers the ICReq;
// a command's answers are the PDUs carrying its CID up to its completion (CIDs are reused only after it).
std::vector<Exchange> PairStreams(const std::vector<RecordedPdu>& h2c, const std::vector<RecordedPdu>& c2h) {
  std::map<int, std::vector<std::vector<RxPdu>>> groups;  // cid -> answers of each use, in order
  std::map<int, std::vector<RxPdu>> open;
  std::vector<RxPdu> ic;
  for (const RecordedPdu& r : c2h) {
    if (r.pdu.type == tcp::kIcResp) {
      ic.push_back(r.pdu);
      continue;
    }
    int cid = r.pdu.cid();
    EXPECT_GE(cid, 0) << "unexpected recorded controller PDU " << Describe(r.pdu);
    EXPECT_NE(r.pdu.type, tcp::kR2T) << "the replay does not drive R2T transfers";
    open[cid].push_back(r.pdu);
    if (r.pdu.terminal()) {
      groups[cid].push_back(std::move(open[cid]));
      open.erase(cid);
    }
  }
  for (auto& [cid, rest] : open) groups[cid].push_back(std::move(rest));  // cut off at the end of the capture
  std::vector<Exchange> exchanges;
  std::map<int, size_t> uses;
  for (const RecordedPdu& r : h2c) {
    Exchange e;
    e.request = r;
    if (const nvme::Command* cmd = e.command()) ++uses[cmd->cid()];
    exchanges.push_back(std::move(e));
  }
  // A CID with fewer answers than uses had commands never answered: Asynchronous Event Requests the host
  // abandoned (SPDK's host completes them itself when it detaches, and reuses their CIDs), latest first.
  std::set<size_t> unanswered;
  for (auto& [cid, count] : uses) {
    size_t deficit = count > groups[cid].size() ? count - groups[cid].size() : 0;
    for (bool aers_only : {true, false}) {
      for (size_t i = exchanges.size(); i-- > 0 && deficit > 0;) {
        const nvme::Command* cmd = exchanges[i].command();
        if (cmd == nullptr || cmd->cid() != cid || unanswered.count(i)) continue;
        if (aers_only && cmd->opcode() != nvme::admin::kAsyncEventRequest) continue;
        unanswered.insert(i);
        --deficit;
      }
    }
  }
  std::map<int, size_t> used;
  for (size_t i = 0; i < exchanges.size(); ++i) {
    Exchange& e = exchanges[i];
    if (e.request.pdu.type == tcp::kIcReq) {
      e.expected = ic;
    } else if (const nvme::Command* cmd = e.command(); cmd != nullptr && !unanswered.count(i)) {
      e.expected = groups[cmd->cid()][used[cmd->cid()]++];
    }
  }
  return exchanges;
}

// Sends each host PDU and reads smad-tgt's answers: until the command's completion, or as many PDUs as the
// recording has when the recording has no completion; nothing for commands SPDK never answered.
void Replay(const std::string& port, std::vector<Exchange>& exchanges) {
  RawConnection conn(port);
  ASSERT_TRUE(conn.ok());
  for (Exchange& e : exchanges) {
    ASSERT_TRUE(conn.Send(e.request.raw)) << e.Name();
    if (e.expected.empty()) continue;
    const nvme::Command* cmd = e.command();
    while (true) {
      std::optional<RxPdu> pdu = conn.Read(5s);
      ASSERT_TRUE(pdu.has_value()) << "no answer to " << e.Name() << ": " << conn.reader_error()
                                   << (conn.closed() ? " (connection closed)" : "");
      ASSERT_NE(pdu->type, tcp::kC2HTermReq) << e.Name() << ": " << Describe(*pdu);
      if (cmd != nullptr) {
        ASSERT_EQ(pdu->cid(), cmd->cid()) << "answer to another command: " << Describe(*pdu);
      }
      e.actual.push_back(*pdu);
      if (pdu->terminal() || (cmd == nullptr && e.actual.size() == e.expected.size())) break;
      if (!e.expected.back().terminal() && e.actual.size() == e.expected.size()) break;
    }
  }
  // Commands left outstanding (AERs) stay quiet.
  std::optional<RxPdu> extra = conn.Read(100ms);
  EXPECT_FALSE(extra.has_value()) << "unexpected PDU after the replay: " << Describe(*extra);
}

const KnownDifference* FindKnownDifference(const nvme::Command& cmd) {
  for (const KnownDifference& k : kKnownDifferences) {
    uint8_t selector = static_cast<uint8_t>(cmd.cdw(10) & 0xff);
    if (cmd.opcode() == k.opcode && selector == k.selector) return &k;
  }
  return nullptr;
}

// The C2HData payload of an exchange.
std::vector<uint8_t> DataOf(const std::vector<RxPdu>& pdus) {
  std::vector<uint8_t> data;
  for (const RxPdu& p : pdus) {
    if (p.type == tcp::kC2HData) data.insert(data.end(), p.data.begin(), p.data.end());
  }
  return data;
}
const RxPdu* ResponseOf(const std::vector<RxPdu>& pdus) {
  for (const RxPdu& p : pdus) {
    if (p.type == tcp::kCapsuleResp) return &p;
  }
  return nullptr;
}

void CompareIdentifyController(const std::vector<uint8_t>& spdk, const std::vector<uint8_t>& ours) {
  using namespace nvme::id_ctrl;
  ASSERT_EQ(spdk.size(), nvme::kIdentifySize);
  ASSERT_EQ(ours.size(), nvme::kIdentifySize);
  bool discovery = spdk[kCntrltype] == 2;
  SCOPED_TRACE(discovery ? "Identify Controller (discovery)" : "Identify Controller");
  EXPECT_EQ(ours[kCntrltype], spdk[kCntrltype]) << "CNTRLTYPE";
  EXPECT_EQ(ours[kMdts], spdk[kMdts]) << "MDTS";
  EXPECT_EQ(nvme::GetPadded(&ours[kSubnqn], 256), nvme::GetPadded(&spdk[kSubnqn], 256)) << "SUBNQN";
  EXPECT_EQ(Load32(&ours[kNn]), Load32(&spdk[kNn])) << "NN";
  EXPECT_EQ(Load32(&ours[kSgls]) & 1, Load32(&spdk[kSgls]) & 1) << "SGLS bit 0 (SGLs supported)";
  EXPECT_EQ(Load32(&ours[kSgls]) & (1u << 20), Load32(&spdk[kSgls]) & (1u << 20)) << "SGLS bit 20 (offsets)";
  EXPECT_EQ(ours[kAerl], spdk[kAerl]) << "AERL";
  EXPECT_EQ(Load16(&ours[kMaxcmd]), Load16(&spdk[kMaxcmd])) << "MAXCMD";
  EXPECT_EQ(ours[kSqes], spdk[kSqes]) << "SQES";
  EXPECT_EQ(ours[kCqes], spdk[kCqes]) << "CQES";
  EXPECT_EQ(Load32(&ours[kIoccsz]), Load32(&spdk[kIoccsz])) << "IOCCSZ";
  EXPECT_EQ(Load32(&ours[kIorcsz]), Load32(&spdk[kIorcsz])) << "IORCSZ";
  EXPECT_EQ(Load16(&ours[kIcdoff]), Load16(&spdk[kIcdoff])) << "ICDOFF";
  EXPECT_EQ(ours[kMsdbd], spdk[kMsdbd]) << "MSDBD";
  if (!discovery) {
    EXPECT_EQ(nvme::GetPadded(&ours[kSn], 20), nvme::GetPadded(&spdk[kSn], 20)) << "SN (configured alike)";
    EXPECT_EQ(nvme::GetPadded(&ours[kMn], 40), nvme::GetPadded(&spdk[kMn], 40)) << "MN (configured alike)";
    EXPECT_EQ(ours[kCmic], spdk[kCmic]) << "CMIC";
    EXPECT_EQ(Load32(&ours[kOaes]) & (1u << 8), Load32(&spdk[kOaes]) & (1u << 8)) << "OAES namespace notices";
    EXPECT_EQ(Load32(&ours[kCtratt]) & 1, Load32(&spdk[kCtratt]) & 1) << "CTRATT 128-bit host ID";
    EXPECT_EQ(Load16(&ours[kOncs]) & 0xc, Load16(&spdk[kOncs]) & 0xc) << "ONCS DSM and Write Zeroes";
    EXPECT_EQ(ours[kVwc] & 1, spdk[kVwc] & 1) << "VWC present";
    EXPECT_NE(Load16(&ours[kKas]), 0) << "KAS: Keep Alive supported";
  }
}

void CompareIdentifyNamespace(uint32_t nsid, const std::vector<uint8_t>& spdk, const std::vector<uint8_t>& ours) {
  using namespace nvme::id_ns;
  SCOPED_TRACE(absl::StrCat("Identify Namespace ", nsid));
  ASSERT_EQ(ours.size(), spdk.size());
  EXPECT_EQ(Load64(&ours[kNsze]), Load64(&spdk[kNsze])) << "NSZE";
  EXPECT_EQ(Load64(&ours[kNcap]), Load64(&spdk[kNcap])) << "NCAP";
  EXPECT_EQ(Load64(&ours[kNuse]), Load64(&spdk[kNuse])) << "NUSE";
  EXPECT_EQ(ours[kNlbaf], spdk[kNlbaf]) << "NLBAF";
  EXPECT_EQ(ours[kFlbas], spdk[kFlbas]) << "FLBAS";
  EXPECT_EQ(ours[kNmic], spdk[kNmic]) << "NMIC";
  EXPECT_EQ(ours[kLbaf0 + 2], spdk[kLbaf0 + 2]) << "LBAF0 LBADS";
  EXPECT_EQ(Load16(&ours[kLbaf0]), Load16(&spdk[kLbaf0])) << "LBAF0 MS";
  EXPECT_TRUE(std::equal(&ours[kNguid], &ours[kNguid] + 16, &spdk[kNguid])) << "NGUID";
}

// Namespace identification descriptors as type -> value.
std::map<int, std::vector<uint8_t>> Descriptors(const std::vector<uint8_t>& data) {
  std::map<int, std::vector<uint8_t>> out;
  for (size_t pos = 0; pos + 4 <= data.size() && data[pos] != 0;) {
    size_t length = data[pos + 1];
    if (pos + 4 + length > data.size()) break;
    out[data[pos]].assign(&data[pos + 4], &data[pos + 4] + length);
    pos += 4 + length;
  }
  return out;
}

void CompareDiscoveryLog(const std::vector<uint8_t>& spdk, const std::vector<uint8_t>& ours,
                         const std::map<std::string, std::string>& ports) {
  SCOPED_TRACE("discovery log");
  ASSERT_EQ(ours.size(), spdk.size());
  if (spdk.size() < nvme::kDiscoveryHeaderSize) {
    return;  // the generation counter alone: its value differs
  }
  auto spdk_header = nvme::host::ParseDiscoveryHeader(spdk);
  auto our_header = nvme::host::ParseDiscoveryHeader(ours);
  ASSERT_TRUE(spdk_header.ok() && our_header.ok());
  EXPECT_EQ(our_header->numrec, spdk_header->numrec) << "NUMREC";
  EXPECT_EQ(our_header->recfmt, spdk_header->recfmt) << "RECFMT";
  for (size_t offset = nvme::kDiscoveryHeaderSize; offset + nvme::kDiscoveryEntrySize <= spdk.size();
       offset += nvme::kDiscoveryEntrySize) {
    SCOPED_TRACE(absl::StrCat("entry at ", offset));
    auto a = nvme::host::ParseDiscoveryEntry(absl::MakeConstSpan(spdk).subspan(offset, nvme::kDiscoveryEntrySize));
    auto b = nvme::host::ParseDiscoveryEntry(absl::MakeConstSpan(ours).subspan(offset, nvme::kDiscoveryEntrySize));
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_EQ(b->trtype, a->trtype);
    EXPECT_EQ(b->adrfam, a->adrfam);
    EXPECT_EQ(b->subtype, a->subtype);
    EXPECT_EQ(b->treq, a->treq);
    EXPECT_EQ(b->cntlid, a->cntlid);
    EXPECT_EQ(b->asqsz, a->asqsz);
    EXPECT_EQ(b->eflags, a->eflags);
    EXPECT_EQ(b->subnqn, a->subnqn);
    EXPECT_EQ(b->traddr, a->traddr);
    auto mapped = ports.find(a->trsvcid);
    ASSERT_NE(mapped, ports.end()) << "recorded TRSVCID " << a->trsvcid;
    EXPECT_EQ(b->trsvcid, mapped->second);
  }
}

// How many answers of each kind had their contents compared.
struct Compared {
  int exchanges = 0, known_differences = 0, identify_controller = 0, identify_namespace = 0, descriptors = 0,
      discovery_log = 0, properties = 0;
};

Compared CompareExchanges(const std::vector<Exchange>& exchanges, const std::map<std::string, std::string>& ports) {
  Compared counts;
  int& compared = counts.exchanges;
  int& known = counts.known_differences;
  for (const Exchange& e : exchanges) {
    SCOPED_TRACE(e.Name());
    if (e.expected.empty()) continue;
    const nvme::Command* cmd = e.command();
    if (cmd == nullptr) {
      // ICResp: identical bytes (PFV 0, CPDA 0, digests as asked, MAXH2CDATA 128 KiB).
      EXPECT_EQ(e.actual.size(), 1u);
      if (e.actual.size() != 1) continue;
      EXPECT_EQ(e.actual[0].header, e.expected[0].header) << "ICResp differs";
      ++compared;
      continue;
    }
    const RxPdu* spdk_resp = ResponseOf(e.expected);
    const RxPdu* our_resp = ResponseOf(e.actual);
    EXPECT_NE(our_resp, nullptr);
    if (our_resp == nullptr) continue;
    if (const KnownDifference* k = FindKnownDifference(*cmd)) {
      EXPECT_EQ(our_resp->status().sct, k->status.sct);
      EXPECT_EQ(our_resp->status().sc, k->status.sc);
      ++known;
      continue;
    }
    // PDU types, header lengths, data lengths and flags, in order.
    EXPECT_EQ(e.actual.size(), e.expected.size());
    if (e.actual.size() != e.expected.size()) continue;
    for (size_t i = 0; i < e.actual.size(); ++i) {
      const RxPdu& a = e.actual[i];
      const RxPdu& x = e.expected[i];
      EXPECT_EQ(a.type, x.type) << "PDU " << i << ": " << Describe(a) << " vs SPDK " << Describe(x);
      EXPECT_EQ(a.hlen, x.hlen) << "PDU " << i;
      EXPECT_EQ(a.plen, x.plen) << "PDU " << i;
      EXPECT_EQ(a.flags, x.flags) << "PDU " << i;
      if (a.type == tcp::kC2HData && x.type == tcp::kC2HData) {
        EXPECT_EQ(a.data_offset(), x.data_offset());
        EXPECT_EQ(a.data_length_field(), x.data_length_field());
      }
    }
    EXPECT_NE(spdk_resp, nullptr);
    if (spdk_resp == nullptr) continue;
    EXPECT_EQ(our_resp->status().sct, spdk_resp->status().sct) << nvme::host::DescribeStatus(our_resp->status());
    EXPECT_EQ(our_resp->status().sc, spdk_resp->status().sc) << nvme::host::DescribeStatus(our_resp->status());
    if (spdk_resp->status().ok()) {
      EXPECT_FALSE(our_resp->status().dnr) << "DNR set on a successful completion";
    }
    ++compared;

    // Values.
    std::vector<uint8_t> spdk_data = DataOf(e.expected), our_data = DataOf(e.actual);
    uint8_t opcode = cmd->opcode();
    uint8_t cns_or_fid = static_cast<uint8_t>(cmd->cdw(10) & 0xff);
    if (opcode == nvme::kFabricsOpcode && cmd->fctype() == nvme::fabrics::kPropertyGet) {
      uint32_t offset = Load32(cmd->raw + nvme::property_cmd::kOffset);
      ++counts.properties;
      if (offset == nvme::prop::kCap) {
        // MQES, CQR, AMS, TO, DSTRD, NSSRS; then CSS and MPSMIN/MPSMAX (bits 37-44, 48-55). Not CRMS
        // (bits 59-60): SPDK sets CRWMS, an NVMe 2.0 capability.
        EXPECT_EQ(our_resp->cdw0(), spdk_resp->cdw0()) << "CAP bits 31:0";
        EXPECT_EQ(our_resp->cdw1() & 0x00ff1fe0, spdk_resp->cdw1() & 0x00ff1fe0) << "CAP CSS, MPSMIN, MPSMAX";
      } else if (offset == nvme::prop::kCsts || offset == nvme::prop::kCc) {
        EXPECT_EQ(our_resp->cdw0(), spdk_resp->cdw0()) << absl::StrCat("property 0x", absl::Hex(offset));
      }
    } else if (opcode == nvme::admin::kGetFeatures &&
               (cns_or_fid == nvme::feature::kKeepAliveTimer || cns_or_fid == nvme::feature::kNumberOfQueues)) {
      EXPECT_EQ(our_resp->cdw0(), spdk_resp->cdw0()) << absl::StrCat("Get Features 0x", absl::Hex(cns_or_fid));
    } else if (opcode == nvme::admin::kSetFeatures && cns_or_fid == nvme::feature::kNumberOfQueues) {
      EXPECT_EQ(our_resp->cdw0(), spdk_resp->cdw0()) << "Set Features Number of Queues";
    } else if (opcode == nvme::admin::kIdentify && cns_or_fid == nvme::cns::kController) {
      CompareIdentifyController(spdk_data, our_data);
      ++counts.identify_controller;
    } else if (opcode == nvme::admin::kIdentify && cns_or_fid == nvme::cns::kNamespace) {
      CompareIdentifyNamespace(cmd->nsid(), spdk_data, our_data);
      ++counts.identify_namespace;
    } else if (opcode == nvme::admin::kIdentify && cns_or_fid == nvme::cns::kActiveNamespaceList) {
      EXPECT_EQ(nvme::host::ParseNamespaceList(our_data), nvme::host::ParseNamespaceList(spdk_data));
    } else if (opcode == nvme::admin::kIdentify && cns_or_fid == nvme::cns::kNamespaceIdDescriptors) {
      auto a = Descriptors(spdk_data), b = Descriptors(our_data);
      EXPECT_EQ(b[nvme::kNidtUuid], a[nvme::kNidtUuid]) << "UUID descriptor";
      EXPECT_EQ(b[nvme::kNidtNguid], a[nvme::kNidtNguid]) << "NGUID descriptor";
      EXPECT_FALSE(a[nvme::kNidtUuid].empty());
      ++counts.descriptors;
    } else if (opcode == nvme::admin::kGetLogPage && cns_or_fid == nvme::log_page::kDiscovery) {
      CompareDiscoveryLog(spdk_data, our_data, ports);
      if (spdk_data.size() > nvme::kDiscoveryHeaderSize) ++counts.discovery_log;
    }
  }
  EXPECT_GT(compared, 0);
  std::cout << "[interop] " << compared << " exchanges compared, " << known << " known differences\n";
  return counts;
}

TEST(NvmfTcpTest, ReplaysOfSpdkInitiatorStreamsGetEquivalentAnswers) {
  constexpr char kRemote0[] = "nqn.2016-06.io.spdk:remote0";
  constexpr char kRestricted[] = "nqn.2016-06.io.spdk:restricted";
  testing::TempDir dir;
  Target tgt(dir);
  ASSERT_TRUE(tgt.Start("0x1"));
  const std::string port = testing::FreeTcpPort();
  const std::string discovery_port = testing::FreeTcpPort();
  tgt.CreateTransport();
  tgt.CreateMalloc("Malloc0", 8192, 4096, "7b2b4a6e-0c1d-4c53-9d0a-3f1e2a9b8c03");
  tgt.CreateMalloc("Malloc1", 8192, 4096, "7b2b4a6e-0c1d-4c53-9d0a-3f1e2a9b8c04");
  tgt.CreateMalloc("Malloc2", 1024, 512);
  tgt.CreateSubsystem(kRemote0, true, "SPDKREMOTE0", "SPDK bdev Controller");
  tgt.AddNamespace(kRemote0, "Malloc0", 1);
  tgt.AddNamespace(kRemote0, "Malloc1", 2);
  tgt.AddListener(kRemote0, port);
  tgt.CreateSubsystem(kRestricted, false, "SPDKRESTRICTED", "SPDK bdev Controller");
  tgt.AddNamespace(kRestricted, "Malloc2", 1);
  tgt.AddHost(kRestricted, "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-000000000001");
  tgt.AddListener(kRestricted, port);
  tgt.AddListener(kDiscoveryNqn, discovery_port);
  ASSERT_FALSE(::testing::Test::HasFailure());
  const std::map<std::string, std::string> ports = {{"4421", port}, {"8010", discovery_port}};

  const std::string data_dir = std::string(SMAD_SOURCE_DIR) + "/tests/data/nvme-tcp/";
  struct Capture {
    const char* name;
    const std::string* port;
  };
  for (const Capture& capture : {Capture{"identify", &port}, Capture{"discover", &discovery_port},
                                 Capture{"host-denied", &port}}) {
    SCOPED_TRACE(capture.name);
    std::vector<RecordedPdu> h2c =
        SplitStream(ReadBinary(data_dir + capture.name + ".0.h2c.bin"), tcp::PduReader::Role::kController);
    std::vector<RecordedPdu> c2h =
        SplitStream(ReadBinary(data_dir + capture.name + ".0.c2h.bin"), tcp::PduReader::Role::kHost);
    ASSERT_FALSE(h2c.empty());
    ASSERT_FALSE(c2h.empty());
    std::vector<Exchange> exchanges = PairStreams(h2c, c2h);
    Replay(*capture.port, exchanges);
    ASSERT_FALSE(::testing::Test::HasFatalFailure()) << tgt.Log();
    Compared counts = CompareExchanges(exchanges, ports);
    // Every stream had its answers' contents checked, not only their shapes.
    if (std::string(capture.name) == "identify") {
      EXPECT_EQ(counts.exchanges + counts.known_differences, 32);  // ICReq + 35 commands - 4 abandoned AERs
      EXPECT_EQ(counts.known_differences, 2);
      EXPECT_EQ(counts.identify_controller, 1);
      EXPECT_EQ(counts.identify_namespace, 2);
      EXPECT_EQ(counts.descriptors, 2);
      EXPECT_GE(counts.properties, 6);
    } else if (std::string(capture.name) == "discover") {
      EXPECT_EQ(counts.exchanges, 19);
      EXPECT_EQ(counts.identify_controller, 2);
      EXPECT_EQ(counts.discovery_log, 1);
    } else {
      EXPECT_EQ(counts.exchanges, 2);  // ICReq, Connect refused with SCT 1 SC 84h
    }
  }
  EXPECT_TRUE(tgt.Alive()) << tgt.Log();
}

}  // namespace
}  // namespace smad
