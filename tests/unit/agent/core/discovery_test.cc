#include "agent/core/discovery.h"

#include "gtest/gtest.h"

namespace smad::agent {
namespace {

// The shape of SPDK's bdev_nvme_get_discovery_info (shared/interop/spdk-jsonrpc/30-bdev-nvme.jsonl).
Json TwoServices() {
  return Json::parse(R"([
    {"name": "disc0",
     "trid": {"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": "8010",
              "subnqn": "nqn.2014-08.org.nvmexpress.discovery"},
     "referrals": [{"trid": {"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": "8010",
                             "subnqn": "nqn.2014-08.org.nvmexpress.discovery"}},
                   {"trid": {"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": "8011",
                             "subnqn": "nqn.2014-08.org.nvmexpress.discovery"}}]},
    {"name": "disc1",
     "trid": {"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": "8011",
              "subnqn": "nqn.2014-08.org.nvmexpress.discovery"},
     "referrals": []},
    {"name": 7}, {"trid": {}}, "garbage"
  ])");
}

TEST(DiscoveryTest, ParsesServicesAndSkipsMalformedEntries) {
  auto services = ParseDiscoveryInfo(TwoServices());
  ASSERT_EQ(services.size(), 2u);
  EXPECT_EQ(services[0].name, "disc0");
  EXPECT_EQ(services[0].trid, (DiscoveryEndpoint{"tcp", "ipv4", "127.0.0.1", "8010"}));
  ASSERT_EQ(services[0].referrals.size(), 2u);
  EXPECT_EQ(services[0].referrals[1].trsvcid, "8011");
  EXPECT_TRUE(ParseDiscoveryInfo(Json::object()).empty());
  EXPECT_TRUE(ParseDiscoveryInfo(Json()).empty());
}

TEST(DiscoveryTest, MatchesByAddressFirstThenByReferral) {
  auto services = ParseDiscoveryInfo(TwoServices());
  // 8011 is disc1's own address and a referral of disc0: the address wins.
  EXPECT_EQ(FindDiscoveryService(services, {"tcp", "ipv4", "127.0.0.1", "8011"}), "disc1");
  EXPECT_EQ(FindDiscoveryService(services, {"TCP", "IPv4", "127.0.0.1", "8010"}), "disc0");
  services.pop_back();
  EXPECT_EQ(FindDiscoveryService(services, {"tcp", "ipv4", "127.0.0.1", "8011"}), "disc0");
  EXPECT_EQ(FindDiscoveryService(services, {"tcp", "ipv4", "127.0.0.1", "8012"}), std::nullopt);
  EXPECT_EQ(FindDiscoveryService(services, {"tcp", "ipv4", "127.0.0.2", "8010"}), std::nullopt);
  EXPECT_EQ(FindDiscoveryService(services, {"rdma", "ipv4", "127.0.0.1", "8010"}), std::nullopt);
}

}  // namespace
}  // namespace smad::agent
