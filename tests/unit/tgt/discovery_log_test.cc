// The pure half of the discovery service: entry validation, log classification and round planning.
#include "tgt/bdev_nvme/discovery_log.h"

#include <cstring>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nvme/spec.h"

namespace smad::tgt {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using nvme::host::DiscoveryLog;
using nvme::host::DiscoveryLogEntry;

DiscoveryLogEntry Entry(uint8_t subtype, std::string subnqn, std::string trsvcid = "4420",
                        std::string traddr = "127.0.0.1") {
  DiscoveryLogEntry e;
  e.trtype = nvme::kTrtypeTcp;
  e.adrfam = nvme::kAdrfamIpv4;
  e.subtype = subtype;
  e.trsvcid = std::move(trsvcid);
  e.traddr = std::move(traddr);
  e.subnqn = std::move(subnqn);
  return e;
}
DiscoveryLogEntry Nvm(std::string subnqn, std::string port = "4420") {
  return Entry(nvme::kSubtypeNvm, std::move(subnqn), std::move(port));
}

DiscoveryPath Path(std::string subnqn, std::string port = "4420") {
  return {false, "127.0.0.1", std::move(port), std::move(subnqn)};
}

TEST(DiscoveryEntryTest, AcceptsWellFormedEntries) {
  EXPECT_TRUE(ValidateDiscoveryEntry(Nvm("nqn.2016-06.io.spdk:cnode1")).ok());
  EXPECT_TRUE(ValidateDiscoveryEntry(Entry(nvme::kSubtypeCurrentDiscovery, "nqn.2014-08.org.nvmexpress.discovery")).ok());
  EXPECT_TRUE(ValidateDiscoveryEntry(Entry(nvme::kSubtypeDiscoveryReferral, "nqn.2014-08.org.nvmexpress.discovery")).ok());
  DiscoveryLogEntry v6 = Nvm("nqn.2016-06.io.spdk:cnode1");
  v6.adrfam = nvme::kAdrfamIpv6;
  v6.traddr = "::1";
  EXPECT_TRUE(ValidateDiscoveryEntry(v6).ok());
}

TEST(DiscoveryEntryTest, RejectsEachBrokenRule) {
  auto reason = [](DiscoveryLogEntry e) { return std::string(ValidateDiscoveryEntry(e).message()); };
  DiscoveryLogEntry e = Nvm("nqn.2016-06.io.spdk:cnode1");
  e.trtype = 1;
  EXPECT_THAT(reason(e), HasSubstr("not TCP"));
  e = Nvm("nqn.2016-06.io.spdk:cnode1");
  e.subtype = 9;
  EXPECT_THAT(reason(e), HasSubstr("subtype"));
  e = Nvm("nqn.2016-06.io.spdk:cnode1");
  e.adrfam = 3;
  EXPECT_THAT(reason(e), HasSubstr("address family"));
  e = Nvm("nqn.2016-06.io.spdk:cnode1");
  e.padding_ok = false;
  EXPECT_THAT(reason(e), HasSubstr("padding"));
  for (const char* addr : {"", "localhost", "127.0.0.1 ", "::1", "1.2.3.4\n", "999.1.1.1"}) {
    e = Nvm("nqn.2016-06.io.spdk:cnode1");
    e.traddr = addr;
    EXPECT_THAT(reason(e), HasSubstr("TRADDR")) << addr;
  }
  e = Nvm("nqn.2016-06.io.spdk:cnode1");
  e.adrfam = nvme::kAdrfamIpv6;
  EXPECT_THAT(reason(e), HasSubstr("IPv6"));  // an IPv4 address under IPv6
  for (const char* port : {"", "0", "65536", "44 20", "-1", "+80", "0x10", "123456"}) {
    e = Nvm("nqn.2016-06.io.spdk:cnode1", port);
    EXPECT_THAT(reason(e), HasSubstr("TRSVCID")) << port;
  }
  for (const char* nqn : {"", "cnode1", "nqn.2016-06.io.spdk:\x01", "nqn.bad"}) {
    e = Nvm(nqn);
    EXPECT_THAT(reason(e), HasSubstr("SUBNQN")) << nqn;
  }
  EXPECT_THAT(reason(Nvm("nqn.2014-08.org.nvmexpress.discovery")), HasSubstr("discovery NQN"));
}

TEST(DiscoveryEntryTest, ParserFlagsBytesAfterPadding) {
  std::vector<uint8_t> raw(nvme::kDiscoveryEntrySize, 0);
  raw[nvme::disc_entry::kTrtype] = nvme::kTrtypeTcp;
  std::memcpy(&raw[nvme::disc_entry::kTrsvcid], "4420", 4);
  std::memset(&raw[nvme::disc_entry::kTrsvcid + 4], ' ', 28);
  std::memcpy(&raw[nvme::disc_entry::kTraddr], "127.0.0.1", 9);
  auto clean = nvme::host::ParseDiscoveryEntry(raw);
  ASSERT_TRUE(clean.ok());
  EXPECT_TRUE(clean->padding_ok);
  EXPECT_EQ(clean->trsvcid, "4420");
  raw[nvme::disc_entry::kTraddr + 20] = 'x';  // "127.0.0.1\0...x"
  auto dirty = nvme::host::ParseDiscoveryEntry(raw);
  ASSERT_TRUE(dirty.ok());
  EXPECT_EQ(dirty->traddr, "127.0.0.1");
  EXPECT_FALSE(dirty->padding_ok);
}

TEST(DiscoveryLogTest, ClassifiesDeduplicatesAndCountsInvalid) {
  DiscoveryLog log;
  log.entries = {Nvm("nqn.2016-06.io.spdk:a"),
                 Entry(nvme::kSubtypeCurrentDiscovery, "nqn.2014-08.org.nvmexpress.discovery", "8009"),
                 Nvm("nqn.2016-06.io.spdk:a"),  // duplicate
                 Nvm("nqn.2016-06.io.spdk:b", "bad"),
                 Nvm("nqn.2016-06.io.spdk:a", "4421"),
                 Entry(nvme::kSubtypeDiscoveryReferral, "nqn.2014-08.org.nvmexpress.discovery", "8010")};
  ClassifiedLog c = ClassifyDiscoveryLog(log);
  EXPECT_THAT(c.subsystems, ElementsAre(Path("nqn.2016-06.io.spdk:a"), Path("nqn.2016-06.io.spdk:a", "4421")));
  ASSERT_EQ(c.referrals.size(), 2u);
  EXPECT_EQ(c.referrals[0].trsvcid, "8009");
  EXPECT_EQ(c.referrals[1].trsvcid, "8010");
  EXPECT_EQ(c.invalid, 1u);
  EXPECT_THAT(c.reasons, ElementsAre(HasSubstr("entry 3: TRSVCID")));
}

TEST(DiscoveryLogTest, ReasonsAreCapped) {
  DiscoveryLog log;
  for (int i = 0; i < 100; ++i) log.entries.push_back(Nvm("bad"));
  ClassifiedLog c = ClassifyDiscoveryLog(log, 3);
  EXPECT_EQ(c.invalid, 100u);
  EXPECT_EQ(c.reasons.size(), 3u);
}

struct Planner {
  std::vector<DiscoveredController> current;
  std::vector<DiscoveryPath> listed;
  std::map<std::string, FailedAttach> failed;
  std::map<std::string, std::string> elsewhere;
  uint32_t next = 0;
  uint64_t now = 1000;
  size_t max = 4096;

  DiscoveryPlan Run() {
    DiscoveryPlanInput in;
    in.service_name = "disc";
    in.current = &current;
    in.listed = &listed;
    in.failed = &failed;
    in.held_elsewhere = [this](const std::string& subnqn) -> std::optional<std::string> {
      auto it = elsewhere.find(subnqn);
      if (it == elsewhere.end()) return std::nullopt;
      return it->second;
    };
    in.now_ns = now;
    in.max_controllers = max;
    return PlanDiscoveryRound(in, &next);
  }
};

std::vector<std::string> Names(const std::vector<DiscoveredController>& list) {
  std::vector<std::string> names;
  for (const auto& c : list) names.push_back(c.name);
  return names;
}

TEST(DiscoveryPlanTest, NamesNewSubsystemsInOrder) {
  Planner p;
  p.listed = {Path("nqn.2016-06.io.spdk:a"), Path("nqn.2016-06.io.spdk:b")};
  DiscoveryPlan plan = p.Run();
  EXPECT_THAT(Names(plan.attach), ElementsAre("disc0", "disc1"));
  EXPECT_THAT(plan.detach, IsEmpty());
  EXPECT_EQ(p.next, 2u);
}

TEST(DiscoveryPlanTest, KeepsListedDetachesGoneAndNeverReusesIndexes) {
  Planner p;
  p.current = {{"disc0", Path("nqn.2016-06.io.spdk:a")}, {"disc1", Path("nqn.2016-06.io.spdk:b")}};
  p.next = 2;
  p.listed = {Path("nqn.2016-06.io.spdk:b"), Path("nqn.2016-06.io.spdk:c")};
  DiscoveryPlan plan = p.Run();
  EXPECT_THAT(Names(plan.keep), ElementsAre("disc1"));
  EXPECT_THAT(plan.detach, ElementsAre("disc0"));
  EXPECT_THAT(Names(plan.attach), ElementsAre("disc2"));
}

TEST(DiscoveryPlanTest, SecondPathIsStandbyAndTakesOverUnderTheSameName) {
  Planner p;
  p.listed = {Path("nqn.2016-06.io.spdk:a", "4420"), Path("nqn.2016-06.io.spdk:a", "4421")};
  DiscoveryPlan first = p.Run();
  EXPECT_THAT(Names(first.attach), ElementsAre("disc0"));
  EXPECT_THAT(first.standby, ElementsAre(Path("nqn.2016-06.io.spdk:a", "4421")));

  p.current = first.attach;
  p.listed = {Path("nqn.2016-06.io.spdk:a", "4421")};  // the attached path left
  DiscoveryPlan second = p.Run();
  EXPECT_THAT(second.detach, ElementsAre("disc0"));
  ASSERT_EQ(second.attach.size(), 1u);
  EXPECT_EQ(second.attach[0].name, "disc0");
  EXPECT_EQ(second.attach[0].path.trsvcid, "4421");
  EXPECT_EQ(p.next, 1u);
}

TEST(DiscoveryPlanTest, SubsystemHeldByAnotherServiceIsStandby) {
  Planner p;
  p.elsewhere["nqn.2016-06.io.spdk:a"] = "other0";
  p.listed = {Path("nqn.2016-06.io.spdk:a"), Path("nqn.2016-06.io.spdk:b")};
  DiscoveryPlan plan = p.Run();
  EXPECT_THAT(Names(plan.attach), ElementsAre("disc0"));
  EXPECT_EQ(plan.attach[0].path.subnqn, "nqn.2016-06.io.spdk:b");
  EXPECT_THAT(plan.standby, ElementsAre(Path("nqn.2016-06.io.spdk:a")));
}

TEST(DiscoveryPlanTest, FailedAttachWaitsThenRetriesWithItsName) {
  Planner p;
  p.next = 5;
  p.failed[Path("nqn.2016-06.io.spdk:a").Key()] = {"disc3", 2000};
  p.listed = {Path("nqn.2016-06.io.spdk:a")};
  EXPECT_THAT(p.Run().attach, IsEmpty());
  p.now = 2000;
  DiscoveryPlan plan = p.Run();
  EXPECT_THAT(Names(plan.attach), ElementsAre("disc3"));
  EXPECT_EQ(p.next, 5u);
}

TEST(DiscoveryPlanTest, CapsControllersPerService) {
  Planner p;
  p.max = 2;
  for (int i = 0; i < 5; ++i) p.listed.push_back(Path("nqn.2016-06.io.spdk:s" + std::to_string(i)));
  DiscoveryPlan plan = p.Run();
  EXPECT_EQ(plan.attach.size(), 2u);
  EXPECT_EQ(plan.over_limit, 3u);
}

TEST(DiscoveryPlanTest, ThousandsOfEntriesPlanQuickly) {
  Planner p;
  for (int i = 0; i < 20000; ++i) p.listed.push_back(Path("nqn.2016-06.io.spdk:s" + std::to_string(i)));
  DiscoveryPlan plan = p.Run();
  EXPECT_EQ(plan.attach.size(), 4096u);
  p.current = plan.attach;
  DiscoveryPlan again = p.Run();
  EXPECT_EQ(again.keep.size(), 4096u);
  EXPECT_THAT(again.attach, IsEmpty());
}

}  // namespace
}  // namespace smad::tgt
