#include "agent/config/config.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace smad::agent {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using Json = nlohmann::json;
using std::chrono::milliseconds;

AgentConfig ParseOk(const std::string& yaml) {
  absl::StatusOr<AgentConfig> config = ParseConfig(yaml);
  EXPECT_TRUE(config.ok()) << config.status() << "\n" << yaml;
  return config.ok() ? *std::move(config) : AgentConfig();
}

std::string ParseError(const std::string& yaml) {
  absl::StatusOr<AgentConfig> config = ParseConfig(yaml);
  if (config.ok()) return "(parsed fine)";
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument) << config.status();
  EXPECT_EQ(std::string(config.status().message()).find('\n'), std::string::npos) << "not one line";
  return std::string(config.status().message());
}

TEST(ConfigTest, EmptyDocumentGivesDefaults) {
  for (const char* yaml : {"", "\n", "# nothing\n", "---\n", "~\n"}) {
    AgentConfig config = ParseOk(yaml);
    EXPECT_EQ(config.address, "localhost") << yaml;
    EXPECT_EQ(config.port, 8080);
    EXPECT_THAT(config.devices, IsEmpty());
    EXPECT_THAT(config.plugins, IsEmpty());
    EXPECT_EQ(config.crypto.name, "nop");
    EXPECT_EQ(config.crypto.params, Json::object());
    EXPECT_EQ(config.discovery_timeout, milliseconds(10000));
    EXPECT_EQ(config.volume_cleanup_period, milliseconds(60000));
    EXPECT_EQ(config.state_dir, "/var/lib/smad");
    EXPECT_TRUE(config.state_fsync);
    EXPECT_EQ(config.log_level, "info");
    EXPECT_EQ(config.target.socket, "");
    EXPECT_EQ(config.target.rpc_timeout, milliseconds(30000));
    EXPECT_EQ(config.target.startup_timeout, milliseconds(60000));
    EXPECT_EQ(config.target.health_interval, milliseconds(1000));
  }
}

// The configurations of SPDK's test/sma scripts.
TEST(ConfigTest, SpdkSmaNvmfTcp) {
  AgentConfig config = ParseOk("address: 127.0.0.1\nport: 8080\ndevices:\n  - name: 'nvmf_tcp'\n");
  EXPECT_EQ(config.address, "127.0.0.1");
  EXPECT_EQ(config.port, 8080);
  ASSERT_EQ(config.devices.size(), 1u);
  EXPECT_EQ(config.devices[0].name, "nvmf_tcp");
  EXPECT_TRUE(config.devices[0].params.is_null());
}

TEST(ConfigTest, SpdkSmaDiscovery) {
  AgentConfig config = ParseOk(R"(address: 127.0.0.1
port: 8080
discovery_timeout: 5
volume_cleanup_period: 1
devices:
  - name: 'nvmf_tcp'
)");
  EXPECT_EQ(config.discovery_timeout, milliseconds(5000));
  EXPECT_EQ(config.volume_cleanup_period, milliseconds(1000));
}

TEST(ConfigTest, SpdkSmaVhostBlkWithCrypto) {
  AgentConfig config = ParseOk(R"(address: 127.0.0.1
port: 8080
devices:
  - name: 'vhost_blk'
    params:
      buses:
      - name: 'pci.spdk.0'
        count: 32
      - name: 'pci.spdk.1'
        count: 32
      qmp_addr: 127.0.0.1
      qmp_port: 9090
crypto:
  name: 'bdev_crypto'
  params:
    driver: 'crypto_aesni_mb'
)");
  ASSERT_EQ(config.devices.size(), 1u);
  EXPECT_EQ(config.devices[0].name, "vhost_blk");
  EXPECT_EQ(config.devices[0].params, Json::parse(R"({
      "buses": [{"name": "pci.spdk.0", "count": 32}, {"name": "pci.spdk.1", "count": 32}],
      "qmp_addr": "127.0.0.1", "qmp_port": 9090})"));
  EXPECT_EQ(config.crypto.name, "bdev_crypto");
  EXPECT_EQ(config.crypto.params, Json::parse(R"({"driver": "crypto_aesni_mb"})"));
}

TEST(ConfigTest, SpdkSmaPlugins) {
  AgentConfig config = ParseOk(R"(address: 127.0.0.1
port: 8080
plugins:
  - 'plugin1'
  - 'plugin2'
devices:
  - name: 'plugin1-device1'
  - name: 'plugin2-device1'
crypto:
  name: 'crypto-plugin1'
)");
  EXPECT_THAT(config.plugins, ElementsAre("plugin1", "plugin2"));
  ASSERT_EQ(config.devices.size(), 2u);
  EXPECT_EQ(config.devices[1].name, "plugin2-device1");
  EXPECT_EQ(config.crypto.name, "crypto-plugin1");
  EXPECT_EQ(config.crypto.params, Json::object());
}

TEST(ConfigTest, SmadOwnSettings) {
  AgentConfig config = ParseOk(R"(
socket: /var/tmp/spdk.sock
state_dir: /tmp/smad-state
state_sync: normal
log_level: debug
discovery_timeout: 0.5
target:
  binary: /opt/smad/bin/smad-tgt
  cpumask: 0x3
  args: [--iova-mode, pa, ""]
  rpc_timeout: 2.5
  startup_timeout: 120
  health_interval: 0.25
)");
  EXPECT_EQ(config.target.socket, "/var/tmp/spdk.sock");
  EXPECT_EQ(config.state_dir, "/tmp/smad-state");
  EXPECT_FALSE(config.state_fsync);
  EXPECT_EQ(config.log_level, "debug");
  EXPECT_EQ(config.discovery_timeout, milliseconds(500));
  EXPECT_EQ(config.target.binary, "/opt/smad/bin/smad-tgt");
  EXPECT_EQ(config.target.cpumask, "0x3");
  EXPECT_THAT(config.target.args, ElementsAre("--iova-mode", "pa", ""));
  EXPECT_EQ(config.target.rpc_timeout, milliseconds(2500));
  EXPECT_EQ(config.target.startup_timeout, milliseconds(120000));
  EXPECT_EQ(config.target.health_interval, milliseconds(250));

  EXPECT_EQ(ParseOk("target:\n  socket: 127.0.0.1:5260\n").target.socket, "127.0.0.1:5260");
  EXPECT_TRUE(ParseOk("state_sync: full\n").state_fsync);
  EXPECT_EQ(ParseOk("---\nport: 1\n...\n").port, 1);
  EXPECT_EQ(ParseOk("port: 0\n").port, 0);
  EXPECT_EQ(ParseOk("port: 65535\n").port, 65535);
}

TEST(ConfigTest, ParamsScalarsFollowTheYamlCoreSchema) {
  AgentConfig config = ParseOk(R"(devices:
  - name: x
    params:
      int: 42
      negative: -7
      hex: 0x1f
      octal: 0o17
      big: 18446744073709551615
      huge: 123456789012345678901234567890
      float: 2.5
      exp: 1e3
      yes: true
      no: FALSE
      nothing: ~
      empty:
      quoted_int: "42"
      single_quoted_bool: 'true'
      tagged: !!str 7
      word: yes
      version: 1.2.3
      inf: .inf
      list: [1, two, 3.0, [false]]
      nested: {a: {b: null}}
)");
  ASSERT_EQ(config.devices.size(), 1u);
  const Json& params = config.devices[0].params;
  EXPECT_EQ(params["int"], 42);
  EXPECT_EQ(params["negative"], -7);
  EXPECT_EQ(params["hex"], 31);
  EXPECT_EQ(params["octal"], 15);
  EXPECT_EQ(params["big"], Json(uint64_t{18446744073709551615u}));
  EXPECT_EQ(params["huge"], "123456789012345678901234567890");
  EXPECT_EQ(params["float"], 2.5);
  EXPECT_EQ(params["exp"], 1000.0);
  EXPECT_EQ(params["yes"], true);
  EXPECT_EQ(params["no"], false);
  EXPECT_TRUE(params["nothing"].is_null());
  EXPECT_TRUE(params["empty"].is_null());
  EXPECT_EQ(params["quoted_int"], "42");
  EXPECT_EQ(params["single_quoted_bool"], "true");
  EXPECT_EQ(params["tagged"], "7");
  EXPECT_EQ(params["word"], "yes");  // YAML 1.1 booleans are plain strings in the core schema
  EXPECT_EQ(params["version"], "1.2.3");
  EXPECT_EQ(params["inf"], ".inf");
  EXPECT_EQ(params["list"], Json::parse(R"([1, "two", 3.0, [false]])"));
  EXPECT_EQ(params["nested"], Json::parse(R"({"a": {"b": null}})"));
}

TEST(ConfigTest, ErrorsNameTheKeyAndTheProblem) {
  struct Case {
    const char* yaml;
    const char* error;
  };
  const Case cases[] = {
      {"port: abc\n", R"(port: expected an integer in 0..65535, got "abc")"},
      {"port: 65536\n", R"(port: expected an integer in 0..65535, got "65536")"},
      {"port: -1\n", R"(port: expected an integer in 0..65535, got "-1")"},
      {"port: 80.5\n", R"(port: expected an integer in 0..65535, got "80.5")"},
      {"port: [1]\n", "port: expected an integer in 0..65535, got a sequence"},
      {"port:\n", "port: expected an integer in 0..65535, got null"},
      {"prot: 8080\n", R"(unknown key "prot")"},
      {"port: 1\nport: 2\n", R"(duplicate key "port")"},
      {"address: {a: 1}\n", "address: expected a string, got a mapping"},
      {"address: ''\n", "address: empty"},
      {"devices: nvmf_tcp\n", R"(devices: expected a sequence, got "nvmf_tcp")"},
      {"devices:\n  - nvmf_tcp\n", R"(devices[0]: expected a mapping, got "nvmf_tcp")"},
      {"devices:\n  - name: a\n  - params: {}\n", "devices[1].name: missing"},
      {"devices:\n  - name: a\n  - name: b\n  - name: a\n", R"(devices[2].name: duplicate "a")"},
      {"devices:\n  - name: a\n    parms: {}\n", R"(devices[0]: unknown key "parms")"},
      {"devices:\n  - name: a\n    params: [1]\n", "devices[0].params: expected a mapping, got a sequence"},
      {"devices:\n  - name: a\n    params: {x: {y: 1, y: 2}}\n", R"(devices[0].params.x: duplicate key "y")"},
      {"devices:\n  - name: [a]\n", "devices[0].name: expected a string, got a sequence"},
      {"plugins: libfoo.so\n", R"(plugins: expected a sequence, got "libfoo.so")"},
      {"plugins: [a, [b]]\n", "plugins[1]: expected a string, got a sequence"},
      {"plugins: [a, '']\n", "plugins[1]: empty"},
      {"crypto: {params: {}}\n", "crypto.name: missing"},
      {"crypto: bdev_crypto\n", R"(crypto: expected a mapping, got "bdev_crypto")"},
      {"crypto: {name: c, params: 1}\n", R"(crypto.params: expected a mapping, got "1")"},
      {"crypto: {name: c, key: k}\n", R"(crypto: unknown key "key")"},
      {"discovery_timeout: 0\n", R"(discovery_timeout: expected a number of seconds > 0, got "0")"},
      {"discovery_timeout: -1\n", R"(discovery_timeout: expected a number of seconds > 0, got "-1")"},
      {"discovery_timeout: soon\n", R"(discovery_timeout: expected a number of seconds > 0, got "soon")"},
      {"discovery_timeout: .inf\n", R"(discovery_timeout: expected a number of seconds > 0, got ".inf")"},
      {"volume_cleanup_period: 1e12\n", R"(volume_cleanup_period: expected at most 1e+09 seconds, got "1e12")"},
      {"volume_cleanup_period: 0.0001\n", R"(volume_cleanup_period: expected at least 0.001 seconds, got "0.0001")"},
      {"state_sync: sometimes\n", R"(state_sync: expected one of full, normal, got "sometimes")"},
      {"log_level: verbose\n", R"(log_level: expected one of trace, debug, info, warn, error, got "verbose")"},
      {"state_dir: ''\n", "state_dir: empty"},
      {"target: /var/tmp/spdk.sock\n", R"(target: expected a mapping, got "/var/tmp/spdk.sock")"},
      {"target: {sock: x}\n", R"(target: unknown key "sock")"},
      {"target: {args: -m}\n", R"(target.args: expected a sequence, got "-m")"},
      {"target: {health_interval: 0}\n", R"(target.health_interval: expected a number of seconds > 0, got "0")"},
      {"socket: a\ntarget: {socket: b}\n", "target.socket: conflicts with the top-level socket (give one)"},
      {"- port\n", "expected a mapping of settings, got a sequence"},
      {"just text\n", R"(expected a mapping of settings, got "just text")"},
      {"[1]: x\n", "expected string keys, got a sequence"},
      {"a: 1\n---\nb: 2\n", "expected a single YAML document"},
      {"{port: 1},\n", "expected a single YAML document"},  // made yaml-cpp's LoadAll loop forever
      {"port: [1, 2\n", "line 2, column 1: end of sequence flow not found"},
      {"port: 1\n  address: x\n", "line 2, column 10: illegal map value"},
      {"port: *nowhere\n", "line 1, column 7: the referenced anchor is not defined"},
  };
  for (const Case& c : cases) EXPECT_EQ(ParseError(c.yaml), c.error) << c.yaml;
}

TEST(ConfigTest, UnreadableOrHostileInputIsRefused) {
  EXPECT_EQ(ParseError("devices:\n  - name: a\n    params: {k: \"\xff\"}\n"), "devices[0].params.k: not valid UTF-8");
  EXPECT_EQ(ParseError(std::string(100, '[')), "line 1: nested more than 64 levels deep");
  std::string deep_block;
  for (int i = 0; i < 100; ++i) deep_block += std::string(i, ' ') + "k:\n";
  EXPECT_EQ(ParseError(deep_block), "line 66: nested more than 64 levels deep");
  EXPECT_THAT(ParseError(std::string(2 << 20, ' ')), ::testing::HasSubstr("larger than"));
  // An alias cycle, and "billion laughs": aliases that expand exponentially.
  EXPECT_THAT(ParseError("devices:\n  - name: a\n    params: &p {x: *p}\n"), ::testing::HasSubstr("nested more than"));
  std::string laughs = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n";
  for (int i = 1; i < 9; ++i) {
    laughs += "a" + std::to_string(i) + ": &a" + std::to_string(i) + " [";
    for (int j = 0; j < 10; ++j) laughs += (j ? ", *a" : "*a") + std::to_string(i - 1);
    laughs += "]\n";
  }
  std::string laughs_config = "devices:\n  - name: a\n    params:\n";
  for (const auto& line : absl::StrSplit(laughs, '\n')) {
    if (!line.empty()) laughs_config += "      " + std::string(line) + "\n";
  }
  EXPECT_THAT(ParseError(laughs_config), ::testing::HasSubstr("values (aliases expanded)"));
}

TEST(ConfigTest, LoadConfigFile) {
  char dir_template[] = "/tmp/smad-config-test-XXXXXX";
  ASSERT_NE(mkdtemp(dir_template), nullptr);
  const std::string dir = dir_template;
  const std::string path = dir + "/sma.yaml";
  std::ofstream(path) << "port: 9000\ndevices:\n  - name: nvmf_tcp\n";
  absl::StatusOr<AgentConfig> config = LoadConfigFile(path);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->port, 9000);

  std::ofstream(path) << "port: x\n";
  EXPECT_EQ(LoadConfigFile(path).status().message(), path + R"(: port: expected an integer in 0..65535, got "x")");

  absl::Status missing = LoadConfigFile(dir + "/missing.yaml").status();
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.message()), ::testing::HasSubstr(dir + "/missing.yaml"));
  if (geteuid() != 0) {  // root reads anything
    chmod(path.c_str(), 0);
    EXPECT_EQ(LoadConfigFile(path).status().code(), absl::StatusCode::kPermissionDenied);
  }
  EXPECT_FALSE(LoadConfigFile(dir).ok());  // a directory
  std::remove(path.c_str());
  rmdir(dir.c_str());
}

TEST(ConfigTest, AppendEnvPlugins) {
  AgentConfig config = ParseOk("plugins: [a]\n");
  AppendEnvPlugins(config, nullptr);
  AppendEnvPlugins(config, "");
  EXPECT_THAT(config.plugins, ElementsAre("a"));
  AppendEnvPlugins(config, "b::/usr/lib/c.so:");
  EXPECT_THAT(config.plugins, ElementsAre("a", "b", "/usr/lib/c.so"));
}

}  // namespace
}  // namespace smad::agent
