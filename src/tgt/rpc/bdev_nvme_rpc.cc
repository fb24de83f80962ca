// bdev_nvme_attach_controller, bdev_nvme_detach_controller and bdev_nvme_get_controllers, with SPDK's
// parameters, result shapes and error codes.
#include <memory>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/strip.h"
#include "common/nqn.h"
#include "common/status.h"
#include "tgt/bdev_nvme/nvme_bdev_module.h"
#include "tgt/rpc/params.h"
#include "tgt/rpc/rpc.h"

namespace smad::tgt {
namespace {

using jsonrpc::Json;
using jsonrpc::Responder;

constexpr uint32_t kDefaultNumIoQueues = 1024;  // SPDK's default number of I/O queues to request
constexpr uint32_t kDefaultMaxBdevs = 128;
// Field sizes of SPDK's transport ID and controller options (the value must be shorter).
constexpr size_t kTraddrMax = 256;
constexpr size_t kTrsvcidMax = 32;
constexpr size_t kNqnMax = 224;

// -errno and the status message (strerror unless a specific message was given, as SPDK does).
void FailStatus(Responder& r, const absl::Status& status) {
  int err = StatusErrno(status).value_or(EINVAL);
  r.Fail(-err, StatusMessage(status));
}

void FailDecode(Responder& r) { r.Fail(jsonrpc::kInternalError, "spdk_json_decode_object failed"); }

// The transport ID fields common to attach and detach. Empty optional fields stay empty.
struct TridFields {
  std::string trtype, traddr;
  std::optional<std::string> adrfam, trsvcid, subnqn, hostaddr, hostsvcid;
};

TridFields ReadTrid(ParamReader& p, bool required) {
  TridFields t;
  t.trtype = p.String("trtype", required);
  t.traddr = p.String("traddr", required);
  t.adrfam = p.OptionalString("adrfam");
  t.trsvcid = p.OptionalString("trsvcid");
  t.subnqn = p.OptionalString("subnqn");
  t.hostaddr = p.OptionalString("hostaddr");
  t.hostsvcid = p.OptionalString("hostsvcid");
  return t;
}

// SPDK's checks of the transport ID strings, in its order; false after answering the error.
bool CheckTrid(const TridFields& t, Responder& r) {
  auto too_long = [&r](const char* what, const std::optional<std::string>& v, size_t max) {
    if (!v || v->size() < max) return false;
    r.Fail(-EINVAL, std::string(what) + " too long: " + *v);
    return true;
  };
  if (!t.trtype.empty() && !absl::EqualsIgnoreCase(t.trtype, "tcp")) {
    r.Fail(-EINVAL, "Failed to parse trtype: " + t.trtype + " (smad-tgt supports TCP only)");
    return false;
  }
  if (too_long("traddr", t.traddr, kTraddrMax)) return false;
  if (t.adrfam && !absl::EqualsIgnoreCase(*t.adrfam, "ipv4") && !absl::EqualsIgnoreCase(*t.adrfam, "ipv6")) {
    r.Fail(-EINVAL, "Failed to parse adrfam: " + *t.adrfam);
    return false;
  }
  if (too_long("trsvcid", t.trsvcid, kTrsvcidMax) || too_long("subnqn", t.subnqn, kNqnMax) ||
      too_long("hostaddr", t.hostaddr, kTraddrMax) || too_long("hostsvcid", t.hostsvcid, kTrsvcidMax)) {
    return false;
  }
  return true;
}

void Attach(NvmeBdevModule& nvme, const Json& params, Responder r) {
  ParamReader p(params, {"name", "trtype", "traddr", "adrfam", "trsvcid", "priority", "subnqn", "hostnqn",
                         "hostaddr", "hostsvcid", "prchk_reftag", "prchk_guard", "hdgst", "ddgst",
                         "fabrics_connect_timeout_us", "multipath", "num_io_queues", "ctrlr_loss_timeout_sec",
                         "reconnect_delay_sec", "fast_io_fail_timeout_sec", "psk", "max_bdevs", "dhchap_key",
                         "dhchap_ctrlr_key", "allow_unrecognized_csi", "multipath_opts", "disable_sq_flow_control"});
  NvmeAttachParams ap;
  ap.name = p.String("name", true);
  TridFields t = ReadTrid(p, true);
  p.String("priority", false);
  auto hostnqn = p.OptionalString("hostnqn");
  // Every key is read (not short-circuited) so each counts as known.
  const bool prchk_reftag = p.Bool("prchk_reftag", false);
  const bool prchk_guard = p.Bool("prchk_guard", false);
  bool prchk = prchk_reftag || prchk_guard;
  ap.hdgst = p.Bool("hdgst", false);
  ap.ddgst = p.Bool("ddgst", false);
  ap.fabrics_connect_timeout_us = p.U64("fabrics_connect_timeout_us", false);
  ap.multipath = p.String("multipath", false, "failover");
  ap.num_io_queues = p.U32("num_io_queues", false, kDefaultNumIoQueues);
  ap.ctrlr_loss_timeout_sec = p.I32("ctrlr_loss_timeout_sec", false);
  ap.reconnect_delay_sec = p.U32("reconnect_delay_sec", false);
  ap.fast_io_fail_timeout_sec = p.U32("fast_io_fail_timeout_sec", false);
  const bool psk = p.OptionalString("psk").has_value();
  const bool dhchap_key = p.OptionalString("dhchap_key").has_value();
  const bool dhchap_ctrlr_key = p.OptionalString("dhchap_ctrlr_key").has_value();
  bool keys = psk || dhchap_key || dhchap_ctrlr_key;
  uint32_t max_bdevs = p.U32("max_bdevs", false, kDefaultMaxBdevs);
  p.Bool("allow_unrecognized_csi", false);
  p.Object("multipath_opts", false);
  p.Bool("disable_sq_flow_control", false);
  if (!p.ok()) return FailDecode(r);
  if (ap.multipath != "disable" && ap.multipath != "failover" && ap.multipath != "multipath") return FailDecode(r);

  if (max_bdevs == 0) return r.Fail(-EINVAL, "max_bdevs cannot be zero");
  if (!CheckTrid(t, r)) return;
  if (hostnqn && hostnqn->size() >= kNqnMax) return r.Fail(-EINVAL, "hostnqn too long: " + *hostnqn);
  if (prchk) return r.Fail(-EINVAL, "protection information checks are not supported by smad-tgt");
  if (keys) return r.Fail(-EINVAL, "TLS and DH-HMAC-CHAP are not supported by smad-tgt");
  if (ap.num_io_queues == 0 || ap.num_io_queues > 65536) {
    return r.Fail(-EINVAL, "num_io_queues out of bounds, min: 1 max: 65536");
  }

  auto& trid = ap.trid;
  trid.traddr = t.traddr;
  trid.adrfam = absl::StrContains(t.traddr, ':') ? nvme::host::AddressFamily::kIpv6 : nvme::host::AddressFamily::kIpv4;
  if (t.adrfam && absl::EqualsIgnoreCase(*t.adrfam, "ipv6")) trid.adrfam = nvme::host::AddressFamily::kIpv6;
  if (t.adrfam && absl::EqualsIgnoreCase(*t.adrfam, "ipv4")) trid.adrfam = nvme::host::AddressFamily::kIpv4;
  trid.trsvcid = t.trsvcid.value_or(std::to_string(nvme::host::kDefaultNvmeTcpPort));
  uint32_t port = 0;
  if (!absl::SimpleAtoi(trid.trsvcid, &port) || port == 0 || port > 65535) {
    return r.Fail(-EINVAL, "Invalid trsvcid: " + trid.trsvcid);
  }
  trid.subnqn = t.subnqn.value_or(std::string(kDiscoveryNqn));
  trid.hostnqn = hostnqn.value_or(nvme::host::DefaultHostNqn());
  if (!ValidateNqn(trid.hostnqn).ok()) return r.Fail(-EINVAL, "Invalid hostnqn: " + trid.hostnqn);
  if (!ValidateNqn(trid.subnqn).ok()) return r.Fail(-EINVAL, "Invalid subnqn: " + trid.subnqn);
  trid.hostid = nvme::host::HostIdOf(trid.hostnqn).value_or(Uuid::Generate());
  trid.hostaddr = t.hostaddr.value_or("");
  trid.hostsvcid = t.hostsvcid.value_or("");

  auto shared = std::make_shared<Responder>(std::move(r));
  nvme.AttachController(std::move(ap), [shared, max_bdevs](absl::StatusOr<std::vector<std::string>> names) {
    if (!names.ok()) return FailStatus(*shared, names.status());
    if (names->size() > max_bdevs) return shared->Fail(-ERANGE, ErrnoString(ERANGE));
    shared->Reply(*names);
  });
}

void Detach(NvmeBdevModule& nvme, const Json& params, Responder r) {
  ParamReader p(params, {"name", "trtype", "traddr", "adrfam", "trsvcid", "subnqn", "hostaddr", "hostsvcid"});
  std::string name = p.String("name", true);
  TridFields t = ReadTrid(p, false);
  if (!p.ok()) return FailDecode(r);
  if (!CheckTrid(t, r)) return;
  const nvme::host::TransportId* trid = nvme.TridOf(name);
  if (trid == nullptr) return r.Fail(-ENODEV, ErrnoString(ENODEV));
  // A path given in part must match the controller's only path.
  auto differs = [](const std::optional<std::string>& given, const std::string& actual) {
    return given && !given->empty() && *given != actual;
  };
  if ((!t.traddr.empty() && t.traddr != trid->traddr) || differs(t.trsvcid, trid->trsvcid) ||
      differs(t.subnqn, trid->subnqn) || differs(t.hostaddr, trid->hostaddr) ||
      differs(t.hostsvcid, trid->hostsvcid)) {
    return r.Fail(-ENXIO, ErrnoString(ENXIO));
  }
  auto shared = std::make_shared<Responder>(std::move(r));
  nvme.DetachController(name, [shared](absl::Status status) {
    if (!status.ok()) return FailStatus(*shared, status);
    shared->Reply(true);
  });
}

}  // namespace

void RegisterBdevNvmeRpcs(RpcContext& ctx) {
  auto& d = ctx.dispatcher;
  NvmeBdevModule& nvme = *ctx.nvme;
  d.Register("bdev_nvme_attach_controller",
             [&nvme](const Json& params, Responder r) { Attach(nvme, params, std::move(r)); });
  d.Register("bdev_nvme_detach_controller",
             [&nvme](const Json& params, Responder r) { Detach(nvme, params, std::move(r)); });
  d.Register("bdev_nvme_get_controllers", [&nvme](const Json& params, Responder r) {
    ParamReader p(params, {"name"});
    std::string name = p.String("name", false);
    if (!p.ok()) return FailDecode(r);
    Json result = nvme.DescribeControllers(name);
    if (!name.empty() && result.empty()) return r.Fail(-EINVAL, "Controller " + name + " does not exist");
    r.Reply(result);
  });
}

}  // namespace smad::tgt
