#include <memory>

#include "common/status.h"
#include "tgt/bdev/aio_bdev.h"
#include "tgt/bdev/memory_bdevs.h"
#include "tgt/rpc/params.h"
#include "tgt/rpc/rpc.h"

namespace smad::tgt {
namespace {

using jsonrpc::Json;
using jsonrpc::Responder;

// SPDK answers a failed bdev call with -errno and strerror(errno).
void FailErrno(Responder& r, const absl::Status& status) {
  int err = StatusErrno(status).value_or(EINVAL);
  r.Fail(-err, ErrnoString(err));
}

// SPDK's bdev methods answer undecodable params with -32603 "spdk_json_decode_object failed"; the
// message here also names the field.
void FailDecode(Responder& r, const absl::Status& status) {
  r.Fail(jsonrpc::kInternalError, "spdk_json_decode_object failed: " + StatusMessage(status));
}

absl::StatusOr<Uuid> OptionalUuid(ParamReader& p) {
  auto text = p.OptionalString("uuid");
  if (!text) return Uuid();
  auto uuid = Uuid::Parse(*text);
  if (!uuid.ok()) return absl::InvalidArgumentError("parameter 'uuid' is not a UUID");
  return *uuid;
}

// Registers a new bdev and answers with its name; false (and an -errno answer) on failure.
template <typename Module>
bool RegisterCreated(RpcContext& ctx, absl::StatusOr<std::unique_ptr<Module>> created, Responder& r) {
  if (!created.ok()) {
    FailErrno(r, created.status());
    return false;
  }
  std::string name = (*created)->name();
  absl::Status status = ctx.bdevs.Register(std::move(created).value());
  if (!status.ok()) {
    FailErrno(r, status);
    return false;
  }
  r.Reply(name);
  return true;
}

// Reads what bdev_malloc_create and bdev_null_create share: name (or `default_name`), num_blocks,
// block_size, uuid, and the metadata options smad-tgt does not support. False after answering an error.
bool ReadSizedBdevParams(ParamReader& p, const std::string& default_name, Bdev::Params& bp, Responder& r) {
  bp.name = p.String("name", false, default_name);
  bp.num_blocks = p.U64("num_blocks", true);
  bp.block_size = p.U32("block_size", true);
  p.U32("physical_block_size", false);
  p.Bool("dif_is_head_of_md", false);
  bool metadata = p.U32("md_size", false) != 0 || p.U32("dif_type", false) != 0;
  auto uuid = OptionalUuid(p);
  if (!p.ok()) {
    FailDecode(r, p.status());
    return false;
  }
  if (!uuid.ok()) {
    FailDecode(r, uuid.status());
    return false;
  }
  if (metadata) {
    r.Fail(-EINVAL, "metadata and DIF are not supported by smad-tgt");
    return false;
  }
  if (bp.name.empty()) {
    r.Fail(-EINVAL, ErrnoString(EINVAL));
    return false;
  }
  bp.uuid = *uuid;
  return true;
}

void Delete(RpcContext& ctx, const Json& params, Responder r, const char* product) {
  ParamReader p(params, {"name"});
  std::string name = p.String("name", true);
  if (!p.ok()) return FailDecode(r, p.status());
  auto shared = std::make_shared<Responder>(std::move(r));
  ctx.bdevs.Unregister(name, product, [shared](absl::Status status) {
    if (!status.ok()) return FailErrno(*shared, status);
    shared->Reply(true);
  });
}

}  // namespace

void RegisterBdevRpcs(RpcContext& ctx) {
  auto& d = ctx.dispatcher;
  auto malloc_counter = std::make_shared<int>(0);

  d.Register("bdev_malloc_create", [&ctx, malloc_counter](const Json& params, Responder r) {
    ParamReader p(params, {"name", "num_blocks", "block_size", "uuid", "optimal_io_boundary", "md_size",
                           "md_interleave", "dif_type", "dif_is_head_of_md", "physical_block_size"});
    bool generated = !p.Has("name");
    p.U32("optimal_io_boundary", false);
    p.Bool("md_interleave", false);
    Bdev::Params bp;
    if (!ReadSizedBdevParams(p, "Malloc" + std::to_string(*malloc_counter), bp, r)) return;
    if (RegisterCreated(ctx, MallocBdev::Create(std::move(bp)), r) && generated) ++*malloc_counter;
  });
  d.Register("bdev_malloc_delete",
             [&ctx](const Json& params, Responder r) { Delete(ctx, params, std::move(r), "Malloc disk"); });

  d.Register("bdev_null_create", [&ctx](const Json& params, Responder r) {
    ParamReader p(params, {"name", "num_blocks", "block_size", "uuid", "md_size", "dif_type",
                           "dif_is_head_of_md", "physical_block_size"});
    if (!p.Has("name")) return FailDecode(r, absl::InvalidArgumentError("missing required parameter 'name'"));
    Bdev::Params bp;
    if (!ReadSizedBdevParams(p, "", bp, r)) return;
    RegisterCreated(ctx, NullBdev::Create(std::move(bp)), r);
  });
  d.Register("bdev_null_delete",
             [&ctx](const Json& params, Responder r) { Delete(ctx, params, std::move(r), "Null disk"); });

  d.Register("bdev_aio_create", [&ctx](const Json& params, Responder r) {
    ParamReader p(params, {"name", "filename", "block_size", "readonly", "fallocate", "uuid"});
    AioBdev::Options o;
    o.name = p.String("name", true);
    o.filename = p.String("filename", true);
    o.block_size = p.U32("block_size", false);
    o.readonly = p.Bool("readonly", false);
    p.Bool("fallocate", false);
    auto uuid = OptionalUuid(p);
    if (!p.ok()) return FailDecode(r, p.status());
    if (!uuid.ok()) return FailDecode(r, uuid.status());
    if (o.name.empty()) return r.Fail(-EINVAL, ErrnoString(EINVAL));
    o.uuid = *uuid;
    if (ctx.bdevs.Find(o.name) != nullptr) return r.Fail(-EEXIST, ErrnoString(EEXIST));
    RegisterCreated(ctx, AioBdev::Create(o), r);
  });
  d.Register("bdev_aio_delete",
             [&ctx](const Json& params, Responder r) { Delete(ctx, params, std::move(r), "AIO disk"); });

  d.Register("bdev_get_bdevs", [&ctx](const Json& params, Responder r) {
    ParamReader p(params, {"name", "timeout"});
    auto name = p.OptionalString("name");
    uint64_t timeout = p.U64("timeout", false);
    if (!p.ok()) return FailDecode(r, p.status());
    if (!name) {
      Json list = Json::array();
      for (Bdev* bdev : ctx.bdevs.List()) list.push_back(bdev->Describe());
      return r.Reply(list);
    }
    auto shared = std::make_shared<Responder>(std::move(r));
    ctx.bdevs.WaitFor(*name, timeout, [shared](absl::StatusOr<Bdev*> bdev) {
      if (!bdev.ok()) return FailErrno(*shared, bdev.status());
      shared->Reply(Json::array({(*bdev)->Describe()}));
    });
  });

  d.Register("bdev_get_iostat", [&ctx](const Json& params, Responder r) {
    ParamReader p(params, {"names", "per_channel"});
    auto names = p.StringList("names");
    bool per_channel = p.Bool("per_channel", false);
    if (!p.ok()) return FailDecode(r, p.status());
    std::vector<Bdev*> bdevs;
    if (names) {
      for (const auto& name : *names) {
        Bdev* bdev = ctx.bdevs.Find(name);
        if (bdev == nullptr) return r.Fail(-ENODEV, ErrnoString(ENODEV));
        bdevs.push_back(bdev);
      }
    } else {
      bdevs = ctx.bdevs.List();
    }
    auto shared = std::make_shared<Responder>(std::move(r));
    if (per_channel) {
      if (bdevs.size() != 1) return shared->Fail(-EINVAL, "per_channel needs exactly one bdev in 'names'");
      struct State {
        absl::Mutex mu;
        Json channels = Json::array();
      };
      auto state = std::make_shared<State>();
      uint64_t id = bdevs[0]->id();
      std::string name = bdevs[0]->name();
      ctx.bdevs.ForEachReactor(
          [state, id](Reactor& reactor) {
            BdevChannel* ch = FindChannelOnThisReactor(id);
            if (ch == nullptr) return;
            Json j = {{"thread_id", reactor.index() + 1}};
            j.update(ch->stats().ToJson());
            absl::MutexLock lock(&state->mu);
            state->channels.push_back(std::move(j));
          },
          [state, shared, name]() {
            absl::MutexLock lock(&state->mu);
            shared->Reply({{"tick_rate", 1000000000}, {"ticks", NowNs()}, {"name", name},
                           {"channels", state->channels}});
          });
      return;
    }
    std::vector<std::string> bdev_names;
    for (Bdev* b : bdevs) bdev_names.push_back(b->name());
    ctx.bdevs.GatherStats(bdevs, [shared, bdev_names](std::vector<IoStats> stats) {
      Json list = Json::array();
      for (size_t i = 0; i < stats.size(); ++i) {
        Json j = {{"name", bdev_names[i]}};
        j.update(stats[i].ToJson());
        list.push_back(std::move(j));
      }
      shared->Reply({{"tick_rate", 1000000000}, {"ticks", NowNs()}, {"bdevs", list}});
    });
  });

  d.Register("bdev_set_qos_limit", [&ctx](const Json& params, Responder r) {
    ParamReader p(params, {"name", "rw_ios_per_sec", "rw_mbytes_per_sec", "r_mbytes_per_sec", "w_mbytes_per_sec"});
    std::string name = p.String("name", true);
    const char* keys[] = {"rw_ios_per_sec", "rw_mbytes_per_sec", "r_mbytes_per_sec", "w_mbytes_per_sec"};
    std::optional<uint64_t> values[4];
    for (int i = 0; i < 4; ++i) {
      if (p.Has(keys[i])) values[i] = p.U64(keys[i], true);
    }
    if (!p.ok()) return FailDecode(r, p.status());
    Bdev* bdev = ctx.bdevs.Find(name);
    if (bdev == nullptr) return r.Fail(-ENODEV, ErrnoString(ENODEV));
    if (!values[0] && !values[1] && !values[2] && !values[3]) return r.Fail(-EINVAL, "No rate limits specified");
    // Unspecified limits keep their value; IOPS round up to a multiple of 1000 as SPDK does.
    constexpr uint64_t kMaxMBytesPerSec = UINT64_MAX / (1024 * 1024);
    QosLimits limits = bdev->qos_limits();
    if (values[0]) limits.rw_ios_per_sec = (*values[0] + 999) / 1000 * 1000;
    if (values[1]) limits.rw_mbytes_per_sec = std::min(*values[1], kMaxMBytesPerSec);
    if (values[2]) limits.r_mbytes_per_sec = std::min(*values[2], kMaxMBytesPerSec);
    if (values[3]) limits.w_mbytes_per_sec = std::min(*values[3], kMaxMBytesPerSec);
    auto shared = std::make_shared<Responder>(std::move(r));
    ctx.bdevs.SetQos(*bdev, limits, [shared](absl::Status status) {
      if (!status.ok()) {
        int err = StatusErrno(status).value_or(EINVAL);
        return shared->Fail(jsonrpc::kInvalidParams, "Failed to configure rate limit: " + ErrnoString(err));
      }
      shared->Reply(true);
    });
  });
}

}  // namespace smad::tgt
