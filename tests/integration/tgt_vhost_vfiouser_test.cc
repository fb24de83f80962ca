// Integration tests of smad-tgt's vhost-blk and vfio-user control planes: the real binary, driven over
// JSON-RPC, checked against SPDK's parameters, result shapes and error codes, and against the Unix
// sockets it must create and remove.
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <optional>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "support/rpc_expect.h"
#include "support/temp_dir.h"
#include "support/tgt_process.h"

namespace smad {
namespace {

using jsonrpc::BlockingClient;
using jsonrpc::Json;
using testing::TempDir;
using testing::TgtProcess;

constexpr char kNqn[] = "nqn.2016-06.io.spdk:vfiouser-0";

bool IsSocket(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode);
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

// A connected Unix stream socket, or -1.
int ConnectUnix(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  timeval timeout{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  return fd;
}

// Sends a vhost-user request with an empty payload.
bool SendVhostUser(int fd, uint32_t request) {
  uint32_t header[3] = {request, 0x1, 0};
  return ::send(fd, header, sizeof(header), MSG_NOSIGNAL) == sizeof(header);
}

// Reads a vhost-user reply carrying a u64; nullopt on EOF or a malformed reply.
std::optional<uint64_t> ReadVhostUserU64(int fd, uint32_t request) {
  char buffer[20];
  size_t got = 0;
  while (got < sizeof(buffer)) {
    ssize_t n = ::recv(fd, buffer + got, sizeof(buffer) - got, 0);
    if (n <= 0) return std::nullopt;
    got += static_cast<size_t>(n);
  }
  uint32_t header[3];
  uint64_t value;
  std::memcpy(header, buffer, sizeof(header));
  std::memcpy(&value, buffer + 12, sizeof(value));
  if (header[0] != request || header[1] != 0x5 || header[2] != 8) return std::nullopt;
  return value;
}

// True when the peer closed the connection (recv returns 0) within the socket's timeout.
bool ClosedByPeer(int fd) {
  char c;
  return ::recv(fd, &c, 1, 0) == 0;
}

class TgtVhostVfioUserTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(::mkdir(vhost_dir_.c_str(), 0755), 0);
    StartTarget();
  }

  void StartTarget(const std::string& config_file = "") {
    client_.reset();
    TgtProcess::Options options;
    options.config_file = config_file;
    options.extra_args = {"-S", vhost_dir_};
    ASSERT_TRUE(tgt_.Start(options).ok()) << tgt_.ReadLog();
    auto client = tgt_.Connect();
    ASSERT_TRUE(client.ok());
    client_.emplace(std::move(client).value());
  }

  Json Call(const std::string& method, const Json& params = nullptr) { return client_->Response(method, params); }
  Json Result(const std::string& method, const Json& params = nullptr) { return client_->Result(method, params); }
  // The error object of a call that must fail.
  Json Error(const std::string& method, const Json& params = nullptr) { return client_->Error(method, params); }
  int ErrorCode(const std::string& method, const Json& params = nullptr) {
    return Error(method, params).value("code", 0);
  }
  // "code message" of a failed call, for matching SPDK's code and strerror text at once.
  std::string ErrorText(const std::string& method, const Json& params = nullptr) {
    Json error = Error(method, params);
    return std::to_string(error.value("code", 0)) + " " + error.value("message", "");
  }

  // SIGTERM: the target must shut down cleanly (exit 0; sanitizer builds also fail on leaks).
  void ExpectCleanExit() {
    client_.reset();
    int status = tgt_.Stop(SIGTERM);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status << "\n" << tgt_.ReadLog();
  }

  // Waits up to 5 s for `predicate`.
  template <typename F>
  bool Eventually(F predicate) {
    for (int i = 0; i < 500; ++i) {
      if (predicate()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }

  std::string Socket(const std::string& ctrlr) const { return vhost_dir_ + "/" + ctrlr; }

  TempDir dir_;
  std::string vhost_dir_ = dir_.File("vhost");
  TgtProcess tgt_{dir_.path()};
  std::optional<testing::RpcExpect> client_;
};

TEST_F(TgtVhostVfioUserTest, VhostBlkControllerLifecycle) {
  ASSERT_EQ(Result("bdev_null_create", {{"name", "null0"}, {"num_blocks", 25600}, {"block_size", 4096}}), "null0");
  EXPECT_EQ(Result("vhost_get_controllers"), Json::array());

  EXPECT_EQ(Result("vhost_create_blk_controller", {{"ctrlr", "sma-0"}, {"dev_name", "null0"}}), true);
  EXPECT_TRUE(IsSocket(Socket("sma-0")));
  // SPDK answers a duplicate name with -EEXIST, after checking the bdev.
  EXPECT_THAT(ErrorText("vhost_create_blk_controller", {{"ctrlr", "sma-0"}, {"dev_name", "null0"}}),
              ::testing::StartsWith("-32602 File exists"));
  EXPECT_THAT(ErrorText("vhost_create_blk_controller", {{"ctrlr", "sma-0"}, {"dev_name", "nope"}}),
              ::testing::StartsWith("-32602 No such device"));

  Json expected = Json::array({{{"ctrlr", "sma-0"},
                                {"cpumask", "0x1"},
                                {"delay_base_us", 0},
                                {"iops_threshold", 60000},
                                {"socket", Socket("sma-0")},
                                {"sessions", Json::array()},
                                {"backend_specific",
                                 {{"block", {{"readonly", false}, {"bdev", "null0"}, {"transport", "vhost_user_blk"}}}}}}});
  EXPECT_EQ(Result("vhost_get_controllers"), expected);
  EXPECT_EQ(Result("vhost_get_controllers", {{"name", "sma-0"}}), expected);
  EXPECT_THAT(ErrorText("vhost_get_controllers", {{"name", "sma-9"}}), ::testing::StartsWith("-32603 No such device"));

  // Listed by name, as SPDK's tree does.
  EXPECT_EQ(Result("vhost_create_blk_controller", {{"ctrlr", "a-first"}, {"dev_name", "null0"}}), true);
  Json all = Result("vhost_get_controllers");
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0]["ctrlr"], "a-first");
  EXPECT_EQ(all[1]["ctrlr"], "sma-0");

  EXPECT_EQ(Result("vhost_delete_controller", {{"ctrlr", "sma-0"}}), true);
  EXPECT_FALSE(Exists(Socket("sma-0")));
  EXPECT_TRUE(IsSocket(Socket("a-first")));
  EXPECT_THAT(ErrorText("vhost_delete_controller", {{"ctrlr", "sma-0"}}), ::testing::StartsWith("-32602 No such device"));
  EXPECT_EQ(Result("vhost_delete_controller", {{"ctrlr", "a-first"}}), true);
  EXPECT_EQ(Result("vhost_get_controllers"), Json::array());
  EXPECT_FALSE(Exists(Socket("a-first")));
  // The bdev is free again.
  EXPECT_EQ(Result("bdev_null_delete", {{"name", "null0"}}), true);

  Json methods = Result("rpc_get_methods");
  for (const char* m : {"vhost_create_blk_controller", "vhost_get_controllers", "vhost_delete_controller",
                        "vhost_controller_set_coalescing", "virtio_blk_get_transports"}) {
    EXPECT_NE(std::find(methods.begin(), methods.end(), m), methods.end()) << m;
  }
}

TEST_F(TgtVhostVfioUserTest, VhostBlkParametersAndErrors) {
  ASSERT_EQ(Result("bdev_malloc_create", {{"name", "Malloc0"}, {"num_blocks", 2048}, {"block_size", 512},
                                          {"uuid", "0c2b4a6e-0c1d-4c53-9d0a-3f1e2a9b8c01"}}),
            "Malloc0");
  // Decoding: SPDK answers -32602 strerror(EINVAL) for a missing or mistyped field, and ignores unknown
  // keys (relaxed decoding: the params also reach the transport).
  EXPECT_THAT(ErrorText("vhost_create_blk_controller", {{"ctrlr", "c"}}), ::testing::StartsWith("-32602 Invalid argument"));
  EXPECT_THAT(ErrorText("vhost_create_blk_controller", {{"ctrlr", "c"}, {"dev_name", nullptr}}),
              ::testing::StartsWith("-32602 Invalid argument"));
  EXPECT_THAT(ErrorText("vhost_create_blk_controller", {{"ctrlr", "c"}, {"dev_name", "Malloc0"}, {"readonly", "yes"}}),
              ::testing::StartsWith("-32602 Invalid argument"));
  EXPECT_THAT(ErrorText("vhost_create_blk_controller", nullptr), ::testing::StartsWith("-32602 Invalid argument"));
  EXPECT_THAT(ErrorText("vhost_create_blk_controller", {{"ctrlr", "c"}, {"dev_name", "Malloc0"}, {"transport", "vfio"}}),
              ::testing::StartsWith("-32602 Invalid argument"));
  EXPECT_THAT(ErrorText("vhost_create_blk_controller", {{"ctrlr", "c"}, {"dev_name", "Malloc0"}, {"cpumask", "0x2"}}),
              ::testing::StartsWith("-32602 Invalid argument"));
  EXPECT_THAT(ErrorText("vhost_create_blk_controller", {{"ctrlr", "c"}, {"dev_name", "Malloc0"}, {"cpumask", "zz"}}),
              ::testing::StartsWith("-32602 Invalid argument"));
  // A path that does not fit a Unix socket address.
  EXPECT_THAT(ErrorText("vhost_create_blk_controller", {{"ctrlr", std::string(120, 'x')}, {"dev_name", "Malloc0"}}),
              ::testing::StartsWith("-32602 Invalid argument"));
  // A file that is not a socket is left alone: SPDK reports -EIO.
  { std::ofstream(Socket("blocker")) << "keep me"; }
  EXPECT_THAT(ErrorText("vhost_create_blk_controller", {{"ctrlr", "blocker"}, {"dev_name", "Malloc0"}}),
              ::testing::StartsWith("-32602 Input/output error"));
  EXPECT_TRUE(Exists(Socket("blocker")));
  EXPECT_FALSE(IsSocket(Socket("blocker")));
  EXPECT_EQ(Result("vhost_get_controllers"), Json::array());

  // By UUID alias, with every option and an unknown key; the controller reports the bdev's name.
  EXPECT_EQ(Result("vhost_create_blk_controller", {{"ctrlr", "ro"},
                                                   {"dev_name", "0c2b4a6e-0c1d-4c53-9d0a-3f1e2a9b8c01"},
                                                   {"readonly", true},
                                                   {"packed_ring", true},
                                                   {"cpumask", "[0]"},
                                                   {"transport", "VHOST_USER_BLK"},
                                                   {"delay", false}}),
            true);
  Json c = Result("vhost_get_controllers", {{"name", "ro"}})[0];
  EXPECT_EQ(c["cpumask"], "0x1");
  EXPECT_EQ(c["backend_specific"]["block"], Json({{"readonly", true}, {"bdev", "Malloc0"}, {"transport", "vhost_user_blk"}}));

  // vhost_get_controllers decodes strictly and answers -32603.
  EXPECT_THAT(ErrorText("vhost_get_controllers", {{"ctrlr", "ro"}}), ::testing::StartsWith("-32603 Invalid argument"));
  EXPECT_THAT(ErrorText("vhost_delete_controller", {{"name", "ro"}}), ::testing::StartsWith("-32602 Invalid argument"));

  // Coalescing.
  EXPECT_EQ(Result("vhost_controller_set_coalescing", {{"ctrlr", "ro"}, {"delay_base_us", 20}, {"iops_threshold", 1000}}),
            true);
  c = Result("vhost_get_controllers", {{"name", "ro"}})[0];
  EXPECT_EQ(c["delay_base_us"], 20);
  EXPECT_EQ(c["iops_threshold"], 1000);
  EXPECT_THAT(ErrorText("vhost_controller_set_coalescing", {{"ctrlr", "ro"}, {"delay_base_us", 20}, {"iops_threshold", 50}}),
              ::testing::StartsWith("-32602 Invalid argument"));
  EXPECT_THAT(ErrorText("vhost_controller_set_coalescing", {{"ctrlr", "ro"}, {"delay_base_us", 20}}),
              ::testing::StartsWith("-32602 Invalid argument"));
  EXPECT_THAT(ErrorText("vhost_controller_set_coalescing", {{"ctrlr", "x"}, {"delay_base_us", 1}, {"iops_threshold", 1000}}),
              ::testing::StartsWith("-32602 No such device"));

  // The built-in virtio-blk transport.
  EXPECT_EQ(Result("virtio_blk_get_transports"), Json::array({{{"name", "vhost_user_blk"}}}));
  EXPECT_EQ(Result("virtio_blk_get_transports", {{"name", "vhost_user_blk"}}).size(), 1u);
  EXPECT_EQ(ErrorCode("virtio_blk_get_transports", {{"name", "other"}}), -19);
  EXPECT_EQ(ErrorCode("virtio_blk_create_transport", {{"name", "vhost_user_blk"}}), -17);
  EXPECT_EQ(ErrorCode("virtio_blk_create_transport", {{"name", "other"}}), -2);
  EXPECT_EQ(ErrorCode("virtio_blk_create_transport", nullptr), -22);
}

TEST_F(TgtVhostVfioUserTest, VhostBdevClaimsAndHotRemove) {
  ASSERT_EQ(Result("bdev_malloc_create", {{"name", "Malloc0"}, {"num_blocks", 2048}, {"block_size", 512}}), "Malloc0");
  ASSERT_EQ(Result("bdev_null_create", {{"name", "null0"}, {"num_blocks", 1024}, {"block_size", 512}}), "null0");
  ASSERT_EQ(Result("nvmf_create_subsystem", {{"nqn", "nqn.2016-06.io.spdk:cnode1"}, {"allow_any_host", true}}), true);
  ASSERT_EQ(Result("nvmf_subsystem_add_ns", {{"nqn", "nqn.2016-06.io.spdk:cnode1"}, {"namespace", {{"bdev_name", "Malloc0"}}}}),
            1);

  // A bdev claimed by the NVMe-oF target cannot be opened for writing: SPDK's -EPERM.
  EXPECT_THAT(ErrorText("vhost_create_blk_controller", {{"ctrlr", "sma-0"}, {"dev_name", "Malloc0"}}),
              ::testing::StartsWith("-32602 Operation not permitted"));
  EXPECT_FALSE(Exists(Socket("sma-0")));

  // SPDK's vhost-blk opens its bdev without claiming it: two controllers may share one, and the bdev
  // shows as unclaimed.
  EXPECT_EQ(Result("vhost_create_blk_controller", {{"ctrlr", "sma-0"}, {"dev_name", "null0"}}), true);
  EXPECT_EQ(Result("vhost_create_blk_controller", {{"ctrlr", "sma-1"}, {"dev_name", "null0"}}), true);
  EXPECT_EQ(Result("bdev_get_bdevs", {{"name", "null0"}})[0]["claimed"], false);

  // Deleting the bdev hot-removes it: the controllers stay, without bdev, and are no longer saved.
  EXPECT_EQ(Result("bdev_null_delete", {{"name", "null0"}}), true);
  Json all = Result("vhost_get_controllers");
  ASSERT_EQ(all.size(), 2u);
  EXPECT_TRUE(all[0]["backend_specific"]["block"]["bdev"].is_null());
  EXPECT_TRUE(all[1]["backend_specific"]["block"]["bdev"].is_null());
  EXPECT_EQ(Result("framework_get_config", {{"name", "vhost_blk"}}), Json::array());
  EXPECT_TRUE(IsSocket(Socket("sma-0")));
  EXPECT_EQ(Result("vhost_delete_controller", {{"ctrlr", "sma-0"}}), true);
  EXPECT_EQ(Result("vhost_delete_controller", {{"ctrlr", "sma-1"}}), true);

  // After its namespace is removed, Malloc0 can back a controller.
  ASSERT_EQ(Result("nvmf_subsystem_remove_ns", {{"nqn", "nqn.2016-06.io.spdk:cnode1"}, {"nsid", 1}}), true);
  EXPECT_EQ(Result("vhost_create_blk_controller", {{"ctrlr", "sma-2"}, {"dev_name", "Malloc0"}}), true);
  // Deleting a bdev in use by a controller completes at once (as SPDK's hot-remove).
  EXPECT_EQ(Result("bdev_malloc_delete", {{"name", "Malloc0"}}), true);
  EXPECT_EQ(Result("bdev_get_bdevs"), Json::array());
  // Shutting down with a controller whose bdev is gone.
  ExpectCleanExit();
  EXPECT_FALSE(Exists(Socket("sma-2")));
}

TEST_F(TgtVhostVfioUserTest, VhostSocketAnswersTheVhostUserHandshake) {
  ASSERT_EQ(Result("bdev_malloc_create", {{"name", "Malloc0"}, {"num_blocks", 2048}, {"block_size", 512}}), "Malloc0");
  ASSERT_EQ(Result("vhost_create_blk_controller", {{"ctrlr", "vm1"}, {"dev_name", "Malloc0"}, {"readonly", true}}),
            true);
  int fd = ConnectUnix(Socket("vm1"));
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(SendVhostUser(fd, 1));  // VHOST_USER_GET_FEATURES
  auto features = ReadVhostUserU64(fd, 1);
  ASSERT_TRUE(features.has_value());
  EXPECT_TRUE(*features >> 32 & 1) << "VIRTIO_F_VERSION_1";
  EXPECT_TRUE(*features >> 30 & 1) << "VHOST_USER_F_PROTOCOL_FEATURES";
  EXPECT_TRUE(*features >> 5 & 1) << "VIRTIO_BLK_F_RO";
  ASSERT_TRUE(SendVhostUser(fd, 3));   // SET_OWNER: no reply
  ASSERT_TRUE(SendVhostUser(fd, 15));  // GET_PROTOCOL_FEATURES
  EXPECT_EQ(ReadVhostUserU64(fd, 15), 0u);

  // The connection is a session of the controller.
  Json sessions = Result("vhost_get_controllers", {{"name", "vm1"}})[0]["sessions"];
  ASSERT_EQ(sessions.size(), 1u);
  EXPECT_EQ(sessions[0]["started"], false);
  EXPECT_TRUE(sessions[0]["vid"].is_number());
  EXPECT_THAT(sessions[0]["name"].get<std::string>(), ::testing::StartsWith("vm1s"));

  // Anything past the handshake (here VHOST_USER_SET_MEM_TABLE) ends the session.
  ASSERT_TRUE(SendVhostUser(fd, 5));
  EXPECT_TRUE(ClosedByPeer(fd));
  ::close(fd);
  EXPECT_TRUE(Eventually([&] { return Result("vhost_get_controllers", {{"name", "vm1"}})[0]["sessions"].empty(); }));

  // Deleting a controller closes its sessions and removes the socket.
  fd = ConnectUnix(Socket("vm1"));
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(Eventually([&] { return Result("vhost_get_controllers", {{"name", "vm1"}})[0]["sessions"].size() == 1; }));
  EXPECT_EQ(Result("vhost_delete_controller", {{"ctrlr", "vm1"}}), true);
  EXPECT_TRUE(ClosedByPeer(fd));
  ::close(fd);
  EXPECT_FALSE(Exists(Socket("vm1")));
  EXPECT_LT(ConnectUnix(Socket("vm1")), 0);

  // A stale socket file (left by a crashed process) is replaced.
  {
    int stale = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, Socket("vm2").c_str(), sizeof(addr.sun_path) - 1);
    ASSERT_EQ(::bind(stale, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    ::close(stale);
  }
  EXPECT_EQ(Result("vhost_create_blk_controller", {{"ctrlr", "vm2"}, {"dev_name", "Malloc0"}}), true);
  fd = ConnectUnix(Socket("vm2"));
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(Eventually([&] { return Result("vhost_get_controllers", {{"name", "vm2"}})[0]["sessions"].size() == 1; }));

  // Shutting down with a session connected closes it and removes the socket.
  ExpectCleanExit();
  EXPECT_TRUE(ClosedByPeer(fd));
  ::close(fd);
  EXPECT_FALSE(Exists(Socket("vm2")));
}

TEST_F(TgtVhostVfioUserTest, VfioUserTransportAndListenerSockets) {
  std::string dir = dir_.File("vfiouser-0");
  ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0);
  std::string cntrl = dir + "/cntrl";
  Json vfio_address = {{"trtype", "vfiouser"}, {"traddr", dir}};
  ASSERT_EQ(Result("nvmf_create_subsystem", {{"nqn", kNqn}, {"allow_any_host", true}}), true);

  // No transport yet: SPDK answers "Invalid parameters".
  EXPECT_EQ(ErrorCode("nvmf_subsystem_add_listener", {{"nqn", kNqn}, {"listen_address", vfio_address}}), -32602);
  EXPECT_EQ(Result("nvmf_get_transports"), Json::array());
  EXPECT_EQ(ErrorCode("nvmf_get_transports", {{"trtype", "vfiouser"}}), -19);

  EXPECT_EQ(Result("nvmf_create_transport", {{"trtype", "vfiouser"}}), true);
  EXPECT_THAT(ErrorText("nvmf_create_transport", {{"trtype", "VFIOUSER"}}),
              ::testing::StartsWith("-32603 Transport type 'VFIOUSER' already exists"));
  EXPECT_EQ(ErrorCode("nvmf_create_transport", {{"trtype", "VFIOUSER"}, {"bogus", 1}}), -32602);
  EXPECT_EQ(Result("nvmf_create_transport", {{"trtype", "TCP"}}), true);
  Json transports = Result("nvmf_get_transports");
  ASSERT_EQ(transports.size(), 2u);
  EXPECT_EQ(transports[0]["trtype"], "VFIOUSER");
  EXPECT_EQ(transports[0]["max_queue_depth"], 256);
  EXPECT_EQ(transports[0]["max_io_qpairs_per_ctrlr"], 127);
  EXPECT_EQ(transports[0]["in_capsule_data_size"], 0);
  EXPECT_EQ(transports[0]["max_io_size"], 131072);
  EXPECT_EQ(transports[0]["max_aq_depth"], 32);
  EXPECT_EQ(transports[1]["trtype"], "TCP");
  for (const char* key : {"iobuf_small_cache_size", "iobuf_large_cache_size", "dif_insert_or_strip", "zcopy",
                          "abort_timeout_sec", "ack_timeout", "data_wr_pool_size", "disable_command_passthru", "kas",
                          "min_kato"}) {
    EXPECT_TRUE(transports[0].contains(key)) << key;
  }
  Json one = Result("nvmf_get_transports", {{"trtype", "vfiouser"}});
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0]["trtype"], "VFIOUSER");
  EXPECT_EQ(ErrorCode("nvmf_get_transports", {{"trtype", "rdma"}}), -19);

  // The directory must exist; the listener then is `<dir>/cntrl`.
  EXPECT_EQ(ErrorCode("nvmf_subsystem_add_listener",
                      {{"nqn", kNqn}, {"listen_address", {{"trtype", "vfiouser"}, {"traddr", dir + "-missing"}}}}),
            -32602);
  EXPECT_FALSE(Exists(dir + "-missing"));
  EXPECT_EQ(Result("nvmf_subsystem_add_listener", {{"nqn", kNqn}, {"listen_address", vfio_address}}), true);
  EXPECT_TRUE(IsSocket(cntrl));
  EXPECT_EQ(ErrorCode("nvmf_subsystem_add_listener", {{"nqn", kNqn}, {"listen_address", vfio_address}}), -32602);
  ASSERT_EQ(Result("nvmf_create_subsystem", {{"nqn", "nqn.2016-06.io.spdk:other"}}), true);
  EXPECT_EQ(ErrorCode("nvmf_subsystem_add_listener",
                      {{"nqn", "nqn.2016-06.io.spdk:other"}, {"listen_address", vfio_address}}),
            -32602)
      << "one vfio-user directory serves one subsystem";

  // Listed as SPDK lists a vfio-user trid: upper-case trtype, adrfam "unknown", empty trsvcid.
  Json address = {{"trtype", "VFIOUSER"}, {"adrfam", "unknown"}, {"traddr", dir}, {"trsvcid", ""}};
  EXPECT_EQ(Result("nvmf_subsystem_get_listeners", {{"nqn", kNqn}}), Json::array({{{"address", address}}}));
  EXPECT_EQ(Result("nvmf_get_subsystems", {{"nqn", kNqn}})[0]["listen_addresses"], Json::array({address}));

  // A namespace can be attached (control plane only).
  ASSERT_EQ(Result("bdev_malloc_create", {{"name", "Malloc0"}, {"num_blocks", 2048}, {"block_size", 512}}), "Malloc0");
  EXPECT_EQ(Result("nvmf_subsystem_add_ns", {{"nqn", kNqn}, {"namespace", {{"bdev_name", "Malloc0"}}}}), 1);

  // The socket accepts a connection and closes it: there is no vfio-user protocol engine.
  int fd = ConnectUnix(cntrl);
  ASSERT_GE(fd, 0);
  EXPECT_TRUE(ClosedByPeer(fd));
  ::close(fd);

  // Removing the listener (named the way SMA names it, or with SPDK's reported fields) removes the socket.
  EXPECT_EQ(Result("nvmf_subsystem_remove_listener", {{"nqn", kNqn}, {"listen_address", address}}), true);
  EXPECT_FALSE(Exists(cntrl));
  EXPECT_EQ(ErrorCode("nvmf_subsystem_remove_listener", {{"nqn", kNqn}, {"listen_address", vfio_address}}), -32602);
  EXPECT_EQ(Result("nvmf_subsystem_get_listeners", {{"nqn", kNqn}}), Json::array());

  // Deleting the subsystem removes its socket too.
  EXPECT_EQ(Result("nvmf_subsystem_add_listener", {{"nqn", kNqn}, {"listen_address", vfio_address}}), true);
  EXPECT_TRUE(IsSocket(cntrl));
  EXPECT_EQ(Result("nvmf_delete_subsystem", {{"nqn", kNqn}}), true);
  EXPECT_FALSE(Exists(cntrl));
  EXPECT_TRUE(Exists(dir)) << "the directory belongs to the caller";

  // A listener on the discovery subsystem goes away with the target.
  EXPECT_EQ(Result("nvmf_subsystem_add_listener",
                   {{"nqn", "nqn.2014-08.org.nvmexpress.discovery"}, {"listen_address", vfio_address}}),
            true);
  EXPECT_TRUE(IsSocket(cntrl));
  ExpectCleanExit();
  EXPECT_FALSE(Exists(cntrl));
}

TEST_F(TgtVhostVfioUserTest, ConfigSurvivesRestart) {
  std::string dir = dir_.File("vfiouser-1");
  ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0);
  ASSERT_EQ(Result("bdev_malloc_create", {{"name", "Malloc0"}, {"num_blocks", 2048}, {"block_size", 512}}), "Malloc0");
  ASSERT_EQ(Result("bdev_malloc_create", {{"name", "Malloc1"}, {"num_blocks", 2048}, {"block_size", 512}}), "Malloc1");
  ASSERT_EQ(Result("vhost_create_blk_controller",
                   {{"ctrlr", "sma-0"}, {"dev_name", "Malloc0"}, {"readonly", true}, {"cpumask", "0x1"},
                    {"packed_ring", true}}),
            true);
  ASSERT_EQ(Result("vhost_controller_set_coalescing", {{"ctrlr", "sma-0"}, {"delay_base_us", 15}, {"iops_threshold", 2000}}),
            true);
  ASSERT_EQ(Result("nvmf_create_transport", {{"trtype", "VFIOUSER"}, {"max_queue_depth", 64}}), true);
  ASSERT_EQ(Result("nvmf_create_subsystem", {{"nqn", "nqn.2016-06.io.spdk:vfiouser-1"}, {"allow_any_host", true}}), true);
  ASSERT_EQ(Result("nvmf_subsystem_add_listener", {{"nqn", "nqn.2016-06.io.spdk:vfiouser-1"},
                                                   {"listen_address", {{"trtype", "vfiouser"}, {"traddr", dir}}}}),
            true);
  ASSERT_EQ(Result("nvmf_subsystem_add_ns",
                   {{"nqn", "nqn.2016-06.io.spdk:vfiouser-1"}, {"namespace", {{"bdev_name", "Malloc1"}}}}),
            1);

  Json subsystems = Result("framework_get_subsystems");
  EXPECT_NE(std::find_if(subsystems.begin(), subsystems.end(),
                         [](const Json& s) { return s["subsystem"] == "vhost_blk"; }),
            subsystems.end());
  Json vhost_config = Result("framework_get_config", {{"name", "vhost_blk"}});
  ASSERT_EQ(vhost_config.size(), 2u);
  EXPECT_EQ(vhost_config[0], Json({{"method", "vhost_create_blk_controller"},
                                   {"params",
                                    {{"ctrlr", "sma-0"},
                                     {"dev_name", "Malloc0"},
                                     {"cpumask", "1"},
                                     {"readonly", true},
                                     {"transport", "vhost_user_blk"},
                                     {"packed_ring", true}}}}));
  EXPECT_EQ(vhost_config[1]["method"], "vhost_controller_set_coalescing");

  Json saved = Result("save_config");
  std::string config_file = dir_.File("config.json");
  { std::ofstream(config_file) << saved.dump(2); }
  Json controllers = Result("vhost_get_controllers");
  Json listeners = Result("nvmf_subsystem_get_listeners", {{"nqn", "nqn.2016-06.io.spdk:vfiouser-1"}});
  Json transports = Result("nvmf_get_transports");

  // A clean shutdown removes every socket.
  ExpectCleanExit();
  EXPECT_FALSE(Exists(Socket("sma-0")));
  EXPECT_FALSE(Exists(dir + "/cntrl"));

  StartTarget(config_file);
  EXPECT_EQ(Result("save_config"), saved);
  EXPECT_EQ(Result("vhost_get_controllers"), controllers);
  EXPECT_EQ(Result("nvmf_subsystem_get_listeners", {{"nqn", "nqn.2016-06.io.spdk:vfiouser-1"}}), listeners);
  EXPECT_EQ(Result("nvmf_get_transports"), transports);
  EXPECT_TRUE(IsSocket(Socket("sma-0")));
  EXPECT_TRUE(IsSocket(dir + "/cntrl"));
}

TEST_F(TgtVhostVfioUserTest, VhostSocketDirectoryDefaultsToTheWorkingDirectory) {
  // Without -S the socket is the controller's name, relative to smad-tgt's working directory (SPDK).
  client_.reset();
  tgt_.Stop(SIGTERM);
  std::string cwd = dir_.File("cwd");
  ASSERT_EQ(::mkdir(cwd.c_str(), 0755), 0);
  char previous[4096];
  ASSERT_NE(getcwd(previous, sizeof(previous)), nullptr);
  ASSERT_EQ(chdir(cwd.c_str()), 0);  // inherited by the child
  TgtProcess tgt(dir_.path(), "tgt2");
  absl::Status started = tgt.Start();
  ASSERT_EQ(chdir(previous), 0);
  ASSERT_TRUE(started.ok()) << tgt.ReadLog();
  auto client = tgt.Connect();
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE(client->Call("bdev_null_create", {{"name", "n"}, {"num_blocks", 8}, {"block_size", 512}}).ok());
  ASSERT_TRUE(client->Call("vhost_create_blk_controller", {{"ctrlr", "c0"}, {"dev_name", "n"}}).ok());
  auto controllers = client->Call("vhost_get_controllers", nullptr);
  ASSERT_TRUE(controllers.ok());
  EXPECT_EQ((*controllers)[0]["socket"], "c0");
  EXPECT_TRUE(IsSocket(cwd + "/c0"));
}

}  // namespace
}  // namespace smad
