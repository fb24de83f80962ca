// bdev_nvme_start_discovery, bdev_nvme_stop_discovery and bdev_nvme_get_discovery_info, with SPDK's
// parameters, result shapes and error codes.
#include <memory>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/strip.h"
#include "common/nqn.h"
#include "common/status.h"
#include "tgt/bdev_nvme/discovery_service.h"
#include "tgt/rpc/params.h"
#include "tgt/rpc/rpc.h"

namespace smad::tgt {
namespace {

using jsonrpc::Json;
using jsonrpc::Responder;

// Discovery controllers listen on 8009 by default (NVMe/TCP transport specification).
constexpr char kDefaultDiscoveryPort[] = "8009";

void FailErrno(Responder& r, const absl::Status& status) {
  int err = StatusErrno(status).value_or(EINVAL);
  r.Fail(-err, ErrnoString(err));
}

void FailDecode(Responder& r) { r.Fail(jsonrpc::kInternalError, "spdk_json_decode_object failed"); }

void StartDiscovery(DiscoveryManager& discovery, const Json& params, Responder r) {
  ParamReader p(params, {"name", "trtype", "traddr", "adrfam", "trsvcid", "hostnqn", "wait_for_attach",
                         "attach_timeout_ms", "ctrlr_loss_timeout_sec", "reconnect_delay_sec",
                         "fast_io_fail_timeout_sec"});
  DiscoveryManager::StartParams sp;
  sp.name = p.String("name", true);
  std::string trtype = p.String("trtype", true);
  std::string traddr = p.String("traddr", true);
  auto adrfam = p.OptionalString("adrfam");
  std::string trsvcid = p.String("trsvcid", false, kDefaultDiscoveryPort);
  auto hostnqn = p.OptionalString("hostnqn");
  sp.wait_for_attach = p.Bool("wait_for_attach", false);
  sp.attach_timeout_ms = p.U64("attach_timeout_ms", false);
  sp.ctrlr_loss_timeout_sec = p.I32("ctrlr_loss_timeout_sec", false);
  sp.reconnect_delay_sec = p.U32("reconnect_delay_sec", false);
  sp.fast_io_fail_timeout_sec = p.U32("fast_io_fail_timeout_sec", false);
  if (!p.ok()) return FailDecode(r);

  if (!absl::EqualsIgnoreCase(trtype, "tcp")) return r.Fail(-EINVAL, "Failed to parse trtype: " + trtype);
  if (traddr.size() >= 256) return r.Fail(-EINVAL, "traddr too long: " + traddr);
  if (traddr.empty() || absl::StrContains(traddr, ' ')) return r.Fail(-EINVAL, "Invalid traddr: " + traddr);
  auto& trid = sp.trid;
  trid.traddr = traddr;
  trid.adrfam = absl::StrContains(traddr, ':') ? nvme::host::AddressFamily::kIpv6 : nvme::host::AddressFamily::kIpv4;
  if (adrfam) {
    if (absl::EqualsIgnoreCase(*adrfam, "ipv4")) {
      trid.adrfam = nvme::host::AddressFamily::kIpv4;
    } else if (absl::EqualsIgnoreCase(*adrfam, "ipv6")) {
      trid.adrfam = nvme::host::AddressFamily::kIpv6;
    } else {
      return r.Fail(-EINVAL, "Failed to parse adrfam: " + *adrfam);
    }
  }
  if (trsvcid.size() >= 32) return r.Fail(-EINVAL, "trsvcid too long: " + trsvcid);
  uint32_t port = 0;
  if (!absl::SimpleAtoi(trsvcid, &port) || port == 0 || port > 65535) {
    return r.Fail(-EINVAL, "Invalid trsvcid: " + trsvcid);
  }
  trid.trsvcid = std::to_string(port);
  trid.hostnqn = hostnqn ? *hostnqn : nvme::host::DefaultHostNqn();
  if (!ValidateNqn(trid.hostnqn).ok()) return r.Fail(-EINVAL, "Invalid hostnqn: " + trid.hostnqn);
  trid.hostid = nvme::host::HostIdOf(trid.hostnqn).value_or(Uuid::Generate());
  if (sp.name.empty()) return r.Fail(-EINVAL, ErrnoString(EINVAL));
  // Checked up front (SPDK only fails each attach later, silently).
  absl::Status resiliency =
      CheckNvmeResiliencyParams(sp.ctrlr_loss_timeout_sec, sp.reconnect_delay_sec, sp.fast_io_fail_timeout_sec);
  if (!resiliency.ok()) return r.Fail(-EINVAL, StatusMessage(resiliency));
  // SPDK: a time limit implies waiting.
  if (sp.attach_timeout_ms != 0) sp.wait_for_attach = true;

  auto shared = std::make_shared<Responder>(std::move(r));
  discovery.Start(std::move(sp), [shared](absl::Status status) {
    if (shared->answered()) return;
    if (!status.ok()) return FailErrno(*shared, status);
    shared->Reply(true);
  });
}

}  // namespace

void RegisterDiscoveryRpcs(RpcContext& ctx) {
  auto& d = ctx.dispatcher;
  DiscoveryManager& discovery = *ctx.discovery;

  d.Register("bdev_nvme_start_discovery",
             [&discovery](const Json& params, Responder r) { StartDiscovery(discovery, params, std::move(r)); });

  d.Register("bdev_nvme_stop_discovery", [&discovery](const Json& params, Responder r) {
    ParamReader p(params, {"name"});
    std::string name = p.String("name", true);
    if (!p.ok()) return FailDecode(r);
    auto shared = std::make_shared<Responder>(std::move(r));
    discovery.Stop(name, [shared](absl::Status status) {
      if (!status.ok()) return FailErrno(*shared, status);
      shared->Reply(true);
    });
  });

  d.Register("bdev_nvme_get_discovery_info",
             [&discovery](const Json&, Responder r) { r.Reply(discovery.Describe()); });
}

}  // namespace smad::tgt
