#include "agent/core/volume.h"

#include "gtest/gtest.h"

namespace smad::agent {
namespace {

TEST(VolumeRecordTest, RemoteEncryptedVolumeRoundTrips) {
  VolumeRecord r;
  r.volume_id = "7b2b4a6e-0c1d-4c53-9d0a-3f1e2a9b8c03";
  r.device_handle = "nvmf-tcp:nqn.2016-06.io.spdk:cnode0";
  r.bdev = "b7c1f8c2-0000-4000-8000-000000000001";
  r.nsid = 3;
  r.connecting = true;
  r.endpoints = {{"tcp", "ipv4", "127.0.0.1", "8009"}, {"tcp", "ipv6", "::1", "8010"}};
  r.subnqn = "nqn.2016-06.io.spdk:node1";
  r.hostnqn = "nqn.2016-06.io.spdk:host0";
  r.discovery_services = {"a", "b"};
  r.crypto_engine = "bdev_crypto";
  r.crypto_bdev = r.bdev;
  r.crypto_cipher = 1;
  r.crypto_sealed = "c2VhbGVk";
  r.qos = QosLimits{1000, 0, 8, 6};
  auto parsed = ParseVolumeRecord(r.volume_id, SerializeVolume(r));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->endpoints, r.endpoints);
  EXPECT_EQ(parsed->subnqn, r.subnqn);
  EXPECT_EQ(parsed->hostnqn, r.hostnqn);
  EXPECT_EQ(parsed->discovery_services, r.discovery_services);
  EXPECT_TRUE(parsed->connecting);
  EXPECT_EQ(parsed->crypto_bdev, r.crypto_bdev);
  EXPECT_EQ(parsed->crypto_cipher, 1);
  EXPECT_EQ(parsed->crypto_sealed, r.crypto_sealed);
  EXPECT_EQ(parsed->qos, r.qos);
  EXPECT_EQ(parsed->nsid, 3u);
}

TEST(VolumeRecordTest, OlderRecordsWithoutNewFieldsStillParse) {
  auto parsed = ParseVolumeRecord("7b2b4a6e-0c1d-4c53-9d0a-3f1e2a9b8c03",
                                  R"({"device":"nvmf-tcp:x","bdev":"","nsid":1,"crypto":{"engine":"e","bdev":"c"}})");
  ASSERT_TRUE(parsed.ok());
  EXPECT_FALSE(parsed->connecting);
  EXPECT_TRUE(parsed->endpoints.empty());
  EXPECT_EQ(parsed->crypto_sealed, "");
  EXPECT_TRUE(absl::IsDataLoss(ParseVolumeRecord("x", R"({"device":"d","endpoints":[{"trtype":1}]})").status()));
}

TEST(VolumeRecordTest, DiscoveryRecordRoundTrips) {
  DiscoveryRecord d{"0d3e1f7a-1111-4222-8333-944455556666", {"tcp", "ipv4", "127.0.0.1", "8009"}, "nqn.h"};
  auto parsed = ParseDiscoveryRecord(d.name, SerializeDiscovery(d));
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(parsed->endpoint, d.endpoint);
  EXPECT_EQ(parsed->hostnqn, "nqn.h");
  EXPECT_TRUE(absl::IsDataLoss(ParseDiscoveryRecord("x", "{").status()));
}

}  // namespace
}  // namespace smad::agent
