#include <csignal>

#include "common/status.h"
#include "tgt/rpc/params.h"
#include "tgt/rpc/rpc.h"

namespace smad::tgt {

using jsonrpc::Json;
using jsonrpc::Responder;

void RegisterAppRpcs(RpcContext& ctx) {
  auto& d = ctx.dispatcher;

  d.Register("spdk_get_version", [](const Json& params, Responder r) {
    ParamReader p(params, {});
    if (!p.ok()) return r.Fail(jsonrpc::kInvalidParams, "spdk_get_version takes no parameters");
    std::string version = "smad-tgt v" + std::to_string(kVersionMajor) + "." + std::to_string(kVersionMinor) +
                          "." + std::to_string(kVersionPatch) + " (SPDK-compatible JSON-RPC)";
    r.Reply({{"version", version},
             {"fields",
              {{"major", kVersionMajor}, {"minor", kVersionMinor}, {"patch", kVersionPatch}, {"suffix", ""},
               {"commit", "smad-tgt"}}}});
  });

  d.Register("rpc_get_methods", [&d](const Json& params, Responder r) {
    ParamReader p(params, {"current", "include_aliases"});
    p.Bool("current", false);
    p.Bool("include_aliases", false);
    if (!p.ok()) return r.Fail(jsonrpc::kInvalidParams, StatusMessage(p.status()));
    r.Reply(d.Methods());
  });

  d.Register("framework_wait_init", [](const Json&, Responder r) { r.Reply(true); });

  d.Register("framework_get_subsystems", [](const Json&, Responder r) {
    r.Reply(Json::array({{{"subsystem", "accel"}, {"depends_on", Json::array()}},
                         {{"subsystem", "bdev"}, {"depends_on", Json::array({"accel"})}},
                         {{"subsystem", "nvmf"}, {"depends_on", Json::array({"bdev"})}},
                         {{"subsystem", "vhost_blk"}, {"depends_on", Json::array({"bdev"})}}}));
  });

  d.Register("framework_get_config", [&ctx](const Json& params, Responder r) {
    ParamReader p(params, {"name"});
    std::string name = p.String("name", true);
    if (!p.ok()) return r.Fail(jsonrpc::kInvalidParams, StatusMessage(p.status()));
    Json config = ctx.save_config();
    for (const auto& subsystem : config["subsystems"]) {
      if (subsystem["subsystem"] == name) return r.Reply(subsystem["config"]);
    }
    r.Fail(jsonrpc::kInvalidParams, "Subsystem '" + name + "' not found");
  });

  // Not an SPDK method (SPDK's rpc.py composes it from framework_get_config); smad-tgt answers it in
  // one call so a client can snapshot the configuration atomically.
  d.Register("save_config", [&ctx](const Json& params, Responder r) {
    ParamReader p(params, {});
    if (!p.ok()) return r.Fail(jsonrpc::kInvalidParams, StatusMessage(p.status()));
    r.Reply(ctx.save_config());
  });

  d.Register("spdk_kill_instance", [&ctx](const Json& params, Responder r) {
    ParamReader p(params, {"sig_name"});
    std::string sig = p.String("sig_name", true);
    if (!p.ok()) return r.Fail(jsonrpc::kInvalidParams, StatusMessage(p.status()));
    if (sig != "SIGINT" && sig != "SIGTERM" && sig != "SIGKILL" && sig != "SIGQUIT") {
      return r.Fail(jsonrpc::kInvalidParams, "unsupported signal " + sig);
    }
    r.Reply(true);
    if (sig == "SIGKILL") {
      std::raise(SIGKILL);
    } else {
      ctx.request_shutdown();
    }
  });

  // SPDK examines bdevs asynchronously; smad-tgt registers them synchronously, so there is never
  // anything to wait for.
  d.Register("bdev_wait_for_examine", [](const Json&, Responder r) { r.Reply(true); });
}

}  // namespace smad::tgt
