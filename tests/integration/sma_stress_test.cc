// smad under crashes and concurrency, against real processes.
//  - Crash safety: a stream of mixed operations while smad is SIGKILLed at random points; after each
//    restart the operation in flight is retried (every call is idempotent), and at the end the target
//    must match exactly what was acknowledged: no lost and no leftover object.
//  - Concurrency: 16 clients issue overlapping create/attach/detach/delete on shared and on their own
//    devices; every answer must be the one the per-client model predicts, and the final target state the
//    union of the models.

#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "support/net.h"
#include "support/sma_helpers.h"
#include "support/smad_process.h"
#include "support/temp_dir.h"

namespace smad::testing {
namespace {

std::string Nqn(int i) { return absl::StrCat("nqn.2016-06.io.spdk:dev", i); }
std::string Handle(int i) { return absl::StrCat("nvmf-tcp:", Nqn(i)); }

class SmaStressTest : public ::testing::Test {
 protected:
  void StartSmad() {
    smad_ = std::make_unique<SmadProcess>(dir_.path());
    SmadProcess::Options options;
    options.config_yaml = "devices:\n  - name: nvmf_tcp\n";
    ASSERT_TRUE(smad_->Start(options).ok()) << smad_->ReadLog();
    tgt_ = std::make_unique<TargetView>(smad_->tgt_socket());
    port_ = FreeTcpPort();
  }
  std::vector<std::string> MakeVolumes(int count, const std::string& prefix) {
    std::vector<std::string> uuids;
    for (int i = 0; i < count; ++i) {
      std::string name = absl::StrCat(prefix, i);
      auto created = tgt_->Call("bdev_null_create", {{"name", name}, {"num_blocks", 1024}, {"block_size", 4096}});
      EXPECT_TRUE(created.ok()) << created.status();
      uuids.push_back(tgt_->BdevUuid(name));
    }
    return uuids;
  }
  // nqn -> namespace UUIDs, for every subsystem on the target.
  std::map<std::string, std::set<std::string>> TargetBindings() {
    std::map<std::string, std::set<std::string>> out;
    for (auto& s : tgt_->Subsystems()) {
      auto& set = out[s["nqn"].get<std::string>()];
      for (auto& ns : s.value("namespaces", Json::array())) set.insert(ns["uuid"].get<std::string>());
    }
    return out;
  }

  TempDir dir_;
  std::unique_ptr<SmadProcess> smad_;
  std::unique_ptr<TargetView> tgt_;
  std::string port_;
};

// The acknowledged state of a set of devices and volumes, and the answer each operation must get.
struct Model {
  std::set<int> devices;
  std::map<int, int> bound;            // volume -> device
  std::map<int, uint64_t> qos;         // volume -> rw_iops (kIOPS) last acknowledged

  enum Kind { kCreate, kDelete, kAttach, kDetach, kQos };
  struct Op {
    Kind kind;
    int device;
    int volume;
    uint64_t value;
  };
  absl::StatusCode Expect(const Op& op) const {
    switch (op.kind) {
      case kCreate: return absl::StatusCode::kOk;
      case kDelete:
        for (auto [v, d] : bound) {
          if (d == op.device) return absl::StatusCode::kFailedPrecondition;
        }
        return absl::StatusCode::kOk;
      case kAttach: {
        if (!devices.contains(op.device)) return absl::StatusCode::kNotFound;
        auto it = bound.find(op.volume);
        if (it != bound.end() && it->second != op.device) return absl::StatusCode::kAlreadyExists;
        return absl::StatusCode::kOk;
      }
      case kDetach: return absl::StatusCode::kOk;
      case kQos: {
        if (!devices.contains(op.device)) return absl::StatusCode::kNotFound;
        auto it = bound.find(op.volume);
        if (it == bound.end()) return absl::StatusCode::kNotFound;
        if (it->second != op.device) return absl::StatusCode::kInvalidArgument;
        return absl::StatusCode::kOk;
      }
    }
    return absl::StatusCode::kUnknown;
  }
  void Apply(const Op& op) {
    switch (op.kind) {
      case kCreate: devices.insert(op.device); break;
      case kDelete: devices.erase(op.device); break;
      case kAttach: bound[op.volume] = op.device; break;
      case kDetach:
        if (bound.contains(op.volume) && bound[op.volume] == op.device) bound.erase(op.volume);
        break;
      case kQos: qos[op.volume] = op.value; break;
    }
  }
};

absl::Status Issue(SmaClient& client, const Model::Op& op, const std::vector<std::string>& uuids,
                   const std::string& port, int device_offset = 0) {
  int d = op.device + device_offset;
  switch (op.kind) {
    case Model::kCreate: return client.CreateDevice(NvmfTcpDevice(Nqn(d), port)).status();
    case Model::kDelete: return client.DeleteDevice(Handle(d));
    case Model::kAttach: return client.AttachVolume(Handle(d), uuids[op.volume]);
    case Model::kDetach: return client.DetachVolume(Handle(d), uuids[op.volume]);
    case Model::kQos: {
      sma::SetQosRequest request;
      request.set_device_handle(Handle(d));
      request.set_volume_id(UuidBytes(uuids[op.volume]));
      request.mutable_maximum()->set_rw_iops(op.value);
      return client.SetQos(request);
    }
  }
  return absl::UnknownError("bad op");
}

Model::Op RandomOp(std::mt19937& rng, int devices, int volumes) {
  std::uniform_int_distribution<int> kind(0, 9);
  int k = kind(rng);
  Model::Op op;
  op.kind = k < 2 ? Model::kCreate : k < 3 ? Model::kDelete : k < 6 ? Model::kAttach : k < 8 ? Model::kDetach : Model::kQos;
  op.device = std::uniform_int_distribution<int>(0, devices - 1)(rng);
  op.volume = std::uniform_int_distribution<int>(0, volumes - 1)(rng);
  op.value = std::uniform_int_distribution<uint64_t>(1, 100)(rng);
  return op;
}

TEST_F(SmaStressTest, CrashesAtRandomPointsLoseNothingAcknowledged) {
  StartSmad();
  const int kDevices = 6, kVolumes = 8, kOps = 520, kMinKills = 40;
  std::vector<std::string> uuids = MakeVolumes(kVolumes, "vol");
  std::mt19937 rng(20261121);
  Model model;
  int kills = 0, interrupted = 0;
  auto client = std::make_unique<SmaClient>(smad_->Stub());
  for (int i = 0; i < kOps || kills < kMinKills; ++i) {
    Model::Op op = RandomOp(rng, kDevices, kVolumes);
    absl::StatusCode expected = model.Expect(op);
    bool kill_now = std::uniform_int_distribution<int>(0, 9)(rng) == 0 || (i >= kOps && kills < kMinKills);
    if (!kill_now) {
      absl::Status status = Issue(*client, op, uuids, port_);
      ASSERT_EQ(status.code(), expected) << "op " << i << " kind " << op.kind << ": " << status;
      if (status.ok()) model.Apply(op);
      continue;
    }
    // Kill smad somewhere inside this operation (or just before/after it).
    // Operations take about 0.3-2 ms: most kills land inside one (the rest just before or after).
    int delay_us = std::uniform_int_distribution<int>(0, 1200)(rng);
    pid_t pid = smad_->pid();
    std::thread killer([pid, delay_us] {
      std::this_thread::sleep_for(std::chrono::microseconds(delay_us));
      kill(pid, SIGKILL);
    });
    absl::Status first = Issue(*client, op, uuids, port_);
    killer.join();
    smad_->Stop(SIGKILL);
    ++kills;
    ASSERT_TRUE(smad_->Restart().ok()) << smad_->ReadLog();
    client = std::make_unique<SmaClient>(smad_->Stub());
    // The answer (if any) and the retry must both be what the model predicts: the op is idempotent.
    if (!first.ok() && first.code() != expected) ++interrupted;
    if (first.code() != absl::StatusCode::kUnavailable && first.code() != absl::StatusCode::kCancelled &&
        first.code() != absl::StatusCode::kDeadlineExceeded && first.code() != absl::StatusCode::kUnknown &&
        first.code() != absl::StatusCode::kInternal) {
      EXPECT_EQ(first.code(), expected) << "op " << i << " before the kill: " << first;
    }
    absl::Status retry = Issue(*client, op, uuids, port_);
    ASSERT_EQ(retry.code(), expected) << "op " << i << " retried after restart " << kills << ": " << retry
                                      << "\n" << smad_->ReadLog();
    if (retry.ok()) model.Apply(op);
  }
  EXPECT_GE(kills, kMinKills);
  std::printf("crash test: %d operations, %d kills of smad, %d of them interrupted an operation in flight\n",
              kOps, kills, interrupted);

  // The target holds exactly the acknowledged state.
  std::map<std::string, std::set<std::string>> want;
  for (int d : model.devices) want[Nqn(d)];
  for (auto [v, d] : model.bound) want[Nqn(d)].insert(uuids[v]);
  EXPECT_EQ(TargetBindings(), want);
  for (auto [v, iops] : model.qos) {
    auto bdevs = tgt_->Call("bdev_get_bdevs", {{"name", absl::StrCat("vol", v)}});
    ASSERT_TRUE(bdevs.ok());
    EXPECT_EQ((*bdevs)[0]["assigned_rate_limits"].value("rw_ios_per_sec", 0ull), iops * 1000) << "volume " << v;
  }
}

TEST_F(SmaStressTest, SixteenConcurrentClientsAgreeWithTheFinalState) {
  StartSmad();
  const int kClients = 16, kOpsPerClient = 60, kShared = 4, kPerClientVolumes = 2;
  // Volumes: each client owns kPerClientVolumes; one extra volume is contested by everyone.
  std::vector<std::string> uuids = MakeVolumes(kClients * kPerClientVolumes + 1, "v");
  const int contested = kClients * kPerClientVolumes;
  SmaClient setup(smad_->Stub());
  // Shared devices 0..3 exist throughout (created concurrently below as well).
  std::vector<Model> models(kClients);
  std::atomic<int> contested_wins{0};
  std::vector<std::thread> threads;
  std::vector<std::string> failures(kClients);
  for (int c = 0; c < kClients; ++c) {
    threads.emplace_back([&, c] {
      SmaClient client(smad_->Stub(), /*wait_for_ready=*/true);
      std::mt19937 rng(1000 + c);
      Model& m = models[c];
      // Devices visible to this client: shared 0..3 (always present after the first create) and its own
      // device 100 + c. Volumes: its own two.
      for (int s = 0; s < kShared; ++s) {
        if (!client.CreateDevice(NvmfTcpDevice(Nqn(s), port_)).ok()) failures[c] += "shared create failed\n";
      }
      for (int i = 0; i < kOpsPerClient; ++i) {
        Model::Op op = RandomOp(rng, kShared + 1, kPerClientVolumes);
        int device = op.device == kShared ? 100 + c : op.device;
        bool shared = device < kShared;
        if (shared && op.kind == Model::kDelete) op.kind = Model::kDetach;  // shared devices stay
        Model::Op local = op;
        local.device = device;
        if (shared) m.devices.insert(device);
        std::vector<std::string> mine = {uuids[c * kPerClientVolumes], uuids[c * kPerClientVolumes + 1]};
        absl::StatusCode expected = m.Expect(local);
        // Deleting a shared device is never issued; a shared device with this client's volume bound
        // is deleted by nobody, so the model's answer holds.
        absl::Status status = Issue(client, local, mine, port_);
        if (status.code() != expected) {
          failures[c] += absl::StrCat("op ", i, " kind ", op.kind, " device ", device, ": ", status.ToString(),
                                      " (expected ", absl::StatusCodeToString(expected), ")\n");
          return;
        }
        if (status.ok()) m.Apply(local);
        // Everyone fights over the contested volume on its own device.
        if (i % 10 == 5 && m.devices.contains(100 + c)) {
          absl::Status won = client.AttachVolume(Handle(100 + c), uuids[contested]);
          if (won.ok()) {
            contested_wins++;
            if (!client.DetachVolume(Handle(100 + c), uuids[contested]).ok()) failures[c] += "detach contested\n";
          } else if (won.code() != absl::StatusCode::kAlreadyExists) {
            failures[c] += "contested: " + won.ToString() + "\n";
          }
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int c = 0; c < kClients; ++c) EXPECT_EQ(failures[c], "") << "client " << c;
  EXPECT_GT(contested_wins.load(), 0);

  std::map<std::string, std::set<std::string>> want;
  for (int s = 0; s < kShared; ++s) want[Nqn(s)];
  for (int c = 0; c < kClients; ++c) {
    for (int d : models[c].devices) want[Nqn(d)];
    for (auto [v, d] : models[c].bound) want[Nqn(d)].insert(uuids[c * kPerClientVolumes + v]);
  }
  EXPECT_EQ(TargetBindings(), want);
}

}  // namespace
}  // namespace smad::testing
