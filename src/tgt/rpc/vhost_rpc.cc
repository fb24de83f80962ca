#include <memory>

#include "absl/strings/ascii.h"
#include "common/status.h"
#include "tgt/rpc/params.h"
#include "tgt/rpc/rpc.h"

namespace smad::tgt {
namespace {

using jsonrpc::Json;
using jsonrpc::Responder;

// SPDK's vhost methods answer a failure with a fixed JSON-RPC code and strerror of the errno; the
// message here also gives the reason.
void FailErrno(Responder& r, int code, const absl::Status& status) {
  int err = StatusErrno(status).value_or(EINVAL);
  std::string message = ErrnoString(err);
  if (!status.message().empty() && StatusMessage(status) != message) message += ": " + StatusMessage(status);
  r.Fail(code, message);
}

absl::Status Undecodable(const ParamReader& p) { return ErrnoStatus(EINVAL, StatusMessage(p.status())); }

}  // namespace

void RegisterVhostRpcs(RpcContext& ctx) {
  auto& d = ctx.dispatcher;

  // Relaxed decoding, as SPDK's: the params also go to the transport, so unknown keys are ignored.
  d.Register("vhost_create_blk_controller", [&ctx](const Json& params, Responder r) {
    ParamReader p(params, {"ctrlr", "dev_name", "readonly", "packed_ring", "cpumask", "transport"},
                  /*ignore_unknown=*/true);
    VhostBlkParams vp;
    vp.ctrlr = p.String("ctrlr", true);
    vp.dev_name = p.String("dev_name", true);
    vp.readonly = p.Bool("readonly", false);
    vp.packed_ring = p.Bool("packed_ring", false);
    vp.cpumask = p.OptionalString("cpumask");
    vp.transport = p.OptionalString("transport");
    if (!p.ok()) return FailErrno(r, jsonrpc::kInvalidParams, Undecodable(p));
    absl::Status status = ctx.vhost.CreateBlkController(vp);
    if (!status.ok()) return FailErrno(r, jsonrpc::kInvalidParams, status);
    r.Reply(true);
  });

  d.Register("vhost_get_controllers", [&ctx](const Json& params, Responder r) {
    // SPDK answers this method's failures with -32603.
    ParamReader p(params, {"name"});
    auto name = p.OptionalString("name");
    if (!p.ok()) return FailErrno(r, jsonrpc::kInternalError, Undecodable(p));
    Json list = Json::array();
    if (name) {
      const VhostBlkController* c = ctx.vhost.Find(*name);
      if (c == nullptr) {
        return FailErrno(r, jsonrpc::kInternalError, ErrnoStatus(ENODEV, "vhost controller " + *name + " not found"));
      }
      list.push_back(c->Describe());
    } else {
      for (const VhostBlkController* c : ctx.vhost.List()) list.push_back(c->Describe());
    }
    r.Reply(list);
  });

  d.Register("vhost_delete_controller", [&ctx](const Json& params, Responder r) {
    ParamReader p(params, {"ctrlr"});
    std::string name = p.String("ctrlr", true);
    if (!p.ok()) return FailErrno(r, jsonrpc::kInvalidParams, Undecodable(p));
    absl::Status status = ctx.vhost.DeleteController(name);
    if (!status.ok()) return FailErrno(r, jsonrpc::kInvalidParams, status);
    r.Reply(true);
  });

  d.Register("vhost_controller_set_coalescing", [&ctx](const Json& params, Responder r) {
    ParamReader p(params, {"ctrlr", "delay_base_us", "iops_threshold"});
    std::string name = p.String("ctrlr", true);
    uint32_t delay = p.U32("delay_base_us", true);
    uint32_t iops = p.U32("iops_threshold", true);
    if (!p.ok()) return FailErrno(r, jsonrpc::kInvalidParams, Undecodable(p));
    absl::Status status = ctx.vhost.SetCoalescing(name, delay, iops);
    if (!status.ok()) return FailErrno(r, jsonrpc::kInvalidParams, status);
    r.Reply(true);
  });

  // The virtio-blk transports: vhost_user_blk is built in and always present, as in SPDK.
  d.Register("virtio_blk_get_transports", [](const Json& params, Responder r) {
    ParamReader p(params, {"name"});
    auto name = p.OptionalString("name");
    if (!p.ok()) return r.Fail(jsonrpc::kInvalidParams, "Invalid parameters: " + StatusMessage(p.status()));
    if (name && absl::AsciiStrToLower(*name) != kVhostUserBlkTransport) return r.Fail(-ENODEV, ErrnoString(ENODEV));
    r.Reply(Json::array({{{"name", kVhostUserBlkTransport}}}));
  });

  d.Register("virtio_blk_create_transport", [](const Json& params, Responder r) {
    ParamReader p(params, {"name"}, /*ignore_unknown=*/true);
    std::string name = p.String("name", true);
    if (!p.ok()) return r.Fail(-EINVAL, ErrnoString(EINVAL) + ": " + StatusMessage(p.status()));
    if (absl::AsciiStrToLower(name) == kVhostUserBlkTransport) return r.Fail(-EEXIST, ErrnoString(EEXIST));
    r.Fail(-ENOENT, ErrnoString(ENOENT) + ": virtio-blk transport '" + name + "' is not available");
  });
}

}  // namespace smad::tgt
