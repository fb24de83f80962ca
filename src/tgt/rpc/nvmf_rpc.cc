#include <memory>

#include "absl/strings/ascii.h"
#include "common/status.h"
#include "tgt/rpc/params.h"
#include "tgt/rpc/rpc.h"

namespace smad::tgt {
namespace {

using jsonrpc::Json;
using jsonrpc::Responder;

// The nvmf methods answer undecodable params with -32602 "Invalid parameters"; the message also names
// the problem.
void FailParams(Responder& r, const absl::Status& status) {
  r.Fail(jsonrpc::kInvalidParams, "Invalid parameters: " + StatusMessage(status));
}

std::string NotFoundMessage(const std::string& nqn) { return "Subsystem with NQN '" + nqn + "' not found"; }

// Maps a target error: a missing subsystem keeps SPDK's message, everything else is "Invalid parameters"
// with the reason.
void FailTarget(Responder& r, const absl::Status& status, const std::string& nqn, int code) {
  if (absl::IsNotFound(status) && StatusMessage(status) == NotFoundMessage(nqn)) {
    return r.Fail(jsonrpc::kInvalidParams, NotFoundMessage(nqn));
  }
  r.Fail(code, (code == jsonrpc::kInternalError ? "Internal error: " : "Invalid parameters: ") +
                   StatusMessage(status));
}

absl::StatusOr<std::array<uint8_t, 16>> ParseNguid(const std::string& text) {
  std::string hex;
  for (char c : text) {
    if (c != '-') hex.push_back(c);
  }
  auto parsed = Uuid::ParseHex(hex);
  if (!parsed.ok()) return absl::InvalidArgumentError("namespace.nguid must be 32 hex digits");
  return parsed->bytes();
}

absl::StatusOr<uint64_t> ParseEui64(const std::string& text) {
  std::string hex;
  for (char c : text) {
    if (c != '-') hex.push_back(c);
  }
  if (hex.size() != 16) return absl::InvalidArgumentError("namespace.eui64 must be 16 hex digits");
  uint64_t value = 0;
  for (char c : hex) {
    int v = absl::ascii_isdigit(static_cast<unsigned char>(c)) ? c - '0'
            : (c >= 'a' && c <= 'f')                           ? c - 'a' + 10
            : (c >= 'A' && c <= 'F')                           ? c - 'A' + 10
                                                               : -1;
    if (v < 0) return absl::InvalidArgumentError("namespace.eui64 must be 16 hex digits");
    value = value << 4 | static_cast<uint64_t>(v);
  }
  return value;
}

// Reads {"nqn", "listen_address", ...} for the listener methods.
absl::StatusOr<std::pair<std::string, ListenAddress>> ReadListener(const Json& params) {
  ParamReader p(params, {"nqn", "listen_address", "tgt_name", "secure_channel", "anagrpid", "sock_impl"});
  std::string nqn = p.String("nqn", true);
  Json address = p.Object("listen_address", true);
  p.String("tgt_name", false);
  p.String("sock_impl", false);
  if (p.Bool("secure_channel", false)) return absl::InvalidArgumentError("secure_channel (TLS) is not supported");
  p.U32("anagrpid", false);
  if (!p.ok()) return p.status();
  ASSIGN_OR_RETURN(ListenAddress parsed, ListenAddress::FromJson(address));
  return std::make_pair(nqn, parsed);
}

}  // namespace

void RegisterNvmfRpcs(RpcContext& ctx) {
  auto& d = ctx.dispatcher;

  d.Register("nvmf_create_transport", [&ctx](const Json& params, Responder r) {
    if (!params.is_object()) return FailParams(r, absl::InvalidArgumentError("params must be an object"));
    if (!params.contains("trtype") || !params["trtype"].is_string()) {
      return FailParams(r, absl::InvalidArgumentError("missing required parameter 'trtype'"));
    }
    // SPDK's messages name the trtype as the request spelled it.
    std::string given = params["trtype"].get<std::string>();
    std::string trtype = absl::AsciiStrToUpper(given);
    absl::Status status;
    if (trtype == kTrtypeTcp) {
      auto options = TransportOptions::FromJson(params);
      if (!options.ok()) return FailParams(r, options.status());
      status = ctx.nvmf.CreateTransport(*options);
    } else if (trtype == kTrtypeVfioUser) {
      auto options = VfioUserTransportOptions::FromJson(params);
      if (!options.ok()) return FailParams(r, options.status());
      status = ctx.nvmf.CreateVfioUserTransport(*options);
    } else {
      return r.Fail(jsonrpc::kInvalidParams, "Transport type '" + given + "' is not supported by smad-tgt");
    }
    if (!status.ok()) return r.Fail(jsonrpc::kInternalError, "Transport type '" + given + "' already exists");
    r.Reply(true);
  });

  d.Register("nvmf_get_transports", [&ctx](const Json& params, Responder r) {
    ParamReader p(params, {"trtype", "tgt_name"});
    auto trtype = p.OptionalString("trtype");
    p.String("tgt_name", false);
    if (!p.ok()) return FailParams(r, p.status());
    Json all = ctx.nvmf.DescribeTransports();
    if (!trtype) return r.Reply(all);
    for (const auto& t : all) {
      if (t["trtype"] == absl::AsciiStrToUpper(*trtype)) return r.Reply(Json::array({t}));
    }
    r.Fail(-ENODEV, ErrnoString(ENODEV));
  });

  d.Register("nvmf_create_subsystem", [&ctx](const Json& params, Responder r) {
    ParamReader p(params, {"nqn", "serial_number", "model_number", "allow_any_host", "max_namespaces",
                           "min_cntlid", "max_cntlid", "tgt_name", "ana_reporting", "max_discard_size_kib",
                           "max_write_zeroes_size_kib", "passthrough", "enable_nssr"});
    SubsystemParams sp;
    sp.nqn = p.String("nqn", true);
    sp.serial_number = p.String("serial_number", false, sp.serial_number);
    sp.model_number = p.String("model_number", false, sp.model_number);
    sp.allow_any_host = p.Bool("allow_any_host", false);
    sp.max_namespaces = p.U32("max_namespaces", false, sp.max_namespaces);
    uint32_t min_cntlid = p.U32("min_cntlid", false, sp.min_cntlid);
    uint32_t max_cntlid = p.U32("max_cntlid", false, sp.max_cntlid);
    p.String("tgt_name", false);
    p.Bool("ana_reporting", false);
    p.U64("max_discard_size_kib", false);
    p.U64("max_write_zeroes_size_kib", false);
    if (p.Bool("passthrough", false)) return FailParams(r, absl::InvalidArgumentError("passthrough is not supported"));
    p.Bool("enable_nssr", false);
    if (!p.ok()) return FailParams(r, p.status());
    if (min_cntlid > 0xffff || max_cntlid > 0xffff) {
      return FailParams(r, absl::InvalidArgumentError("controller IDs must fit in 16 bits"));
    }
    sp.min_cntlid = static_cast<uint16_t>(min_cntlid);
    sp.max_cntlid = static_cast<uint16_t>(max_cntlid);
    absl::Status status = ctx.nvmf.CreateSubsystem(sp);
    if (!status.ok()) {
      return r.Fail(jsonrpc::kInternalError,
                    "Unable to create subsystem " + sp.nqn + ": " + StatusMessage(status));
    }
    r.Reply(true);
  });

  d.Register("nvmf_delete_subsystem", [&ctx](const Json& params, Responder r) {
    ParamReader p(params, {"nqn", "tgt_name"});
    std::string nqn = p.String("nqn", true);
    p.String("tgt_name", false);
    if (!p.ok()) return FailParams(r, p.status());
    auto shared = std::make_shared<Responder>(std::move(r));
    ctx.nvmf.DeleteSubsystem(nqn, [shared, nqn](absl::Status status) {
      if (!status.ok()) return FailTarget(*shared, status, nqn, jsonrpc::kInvalidParams);
      shared->Reply(true);
    });
  });

  d.Register("nvmf_get_subsystems", [&ctx](const Json& params, Responder r) {
    ParamReader p(params, {"nqn", "tgt_name"});
    auto nqn = p.OptionalString("nqn");
    p.String("tgt_name", false);
    if (!p.ok()) return FailParams(r, p.status());
    Json list = Json::array();
    if (nqn) {
      Subsystem* s = ctx.nvmf.Find(*nqn);
      if (s == nullptr) return r.Fail(jsonrpc::kInvalidParams, NotFoundMessage(*nqn));
      list.push_back(s->Describe());
    } else {
      for (Subsystem* s : ctx.nvmf.List()) list.push_back(s->Describe());
    }
    r.Reply(list);
  });

  d.Register("nvmf_subsystem_add_listener", [&ctx](const Json& params, Responder r) {
    auto listener = ReadListener(params);
    if (!listener.ok()) return FailParams(r, listener.status());
    auto shared = std::make_shared<Responder>(std::move(r));
    std::string nqn = listener->first;
    ctx.nvmf.AddListener(nqn, listener->second, [shared, nqn](absl::Status status) {
      if (!status.ok()) return FailTarget(*shared, status, nqn, jsonrpc::kInvalidParams);
      shared->Reply(true);
    });
  });

  d.Register("nvmf_subsystem_remove_listener", [&ctx](const Json& params, Responder r) {
    auto listener = ReadListener(params);
    if (!listener.ok()) return FailParams(r, listener.status());
    auto shared = std::make_shared<Responder>(std::move(r));
    std::string nqn = listener->first;
    ctx.nvmf.RemoveListener(nqn, listener->second, [shared, nqn](absl::Status status) {
      if (!status.ok()) return FailTarget(*shared, status, nqn, jsonrpc::kInvalidParams);
      shared->Reply(true);
    });
  });

  d.Register("nvmf_subsystem_get_listeners", [&ctx](const Json& params, Responder r) {
    ParamReader p(params, {"nqn", "tgt_name"});
    std::string nqn = p.String("nqn", true);
    p.String("tgt_name", false);
    if (!p.ok()) return FailParams(r, p.status());
    Subsystem* s = ctx.nvmf.Find(nqn);
    if (s == nullptr) return r.Fail(jsonrpc::kInvalidParams, NotFoundMessage(nqn));
    Json list = Json::array();
    for (const auto& l : s->listeners()) list.push_back({{"address", l.ToJson()}});
    r.Reply(list);
  });

  d.Register("nvmf_subsystem_add_ns", [&ctx](const Json& params, Responder r) {
    ParamReader p(params, {"nqn", "namespace", "tgt_name", "no_auto_visible"});
    std::string nqn = p.String("nqn", true);
    Json ns = p.Object("namespace", true);
    p.String("tgt_name", false);
    p.Bool("no_auto_visible", false);
    if (!p.ok()) return FailParams(r, p.status());
    ParamReader n(ns, {"bdev_name", "nsid", "uuid", "nguid", "eui64", "ptpl_file", "anagrpid", "no_auto_visible"});
    NamespaceParams np;
    np.bdev_name = n.String("bdev_name", true);
    np.nsid = n.U32("nsid", false);
    auto uuid = n.OptionalString("uuid");
    auto nguid = n.OptionalString("nguid");
    auto eui64 = n.OptionalString("eui64");
    n.String("ptpl_file", false);
    n.U32("anagrpid", false);
    n.Bool("no_auto_visible", false);
    if (!n.ok()) return FailParams(r, absl::InvalidArgumentError("namespace: " + StatusMessage(n.status())));
    if (uuid) {
      auto parsed = Uuid::Parse(*uuid);
      if (!parsed.ok()) return FailParams(r, absl::InvalidArgumentError("namespace.uuid is not a UUID"));
      np.uuid = *parsed;
    }
    if (nguid) {
      auto parsed = ParseNguid(*nguid);
      if (!parsed.ok()) return FailParams(r, parsed.status());
      np.nguid = *parsed;
    }
    if (eui64) {
      auto parsed = ParseEui64(*eui64);
      if (!parsed.ok()) return FailParams(r, parsed.status());
      np.eui64 = *parsed;
    }
    auto shared = std::make_shared<Responder>(std::move(r));
    ctx.nvmf.AddNamespace(nqn, np, [shared, nqn](absl::StatusOr<uint32_t> nsid) {
      if (!nsid.ok()) return FailTarget(*shared, nsid.status(), nqn, jsonrpc::kInvalidParams);
      shared->Reply(*nsid);
    });
  });

  d.Register("nvmf_subsystem_remove_ns", [&ctx](const Json& params, Responder r) {
    ParamReader p(params, {"nqn", "nsid", "tgt_name"});
    std::string nqn = p.String("nqn", true);
    uint32_t nsid = p.U32("nsid", true);
    p.String("tgt_name", false);
    if (!p.ok()) return FailParams(r, p.status());
    auto shared = std::make_shared<Responder>(std::move(r));
    ctx.nvmf.RemoveNamespace(nqn, nsid, [shared, nqn](absl::Status status) {
      if (!status.ok()) return FailTarget(*shared, status, nqn, jsonrpc::kInvalidParams);
      shared->Reply(true);
    });
  });

  auto host_method = [&ctx](bool add) {
    return [&ctx, add](const Json& params, Responder r) {
      ParamReader p(params, {"nqn", "host", "tgt_name", "psk", "dhchap_key", "dhchap_ctrlr_key"});
      std::string nqn = p.String("nqn", true);
      std::string host = p.String("host", true);
      p.String("tgt_name", false);
      if (p.Has("psk") || p.Has("dhchap_key") || p.Has("dhchap_ctrlr_key")) {
        return FailParams(r, absl::InvalidArgumentError("TLS PSK and DH-HMAC-CHAP are not supported"));
      }
      if (!p.ok()) return FailParams(r, p.status());
      absl::Status status = add ? ctx.nvmf.AddHost(nqn, host) : ctx.nvmf.RemoveHost(nqn, host);
      if (!status.ok()) {
        if (absl::IsInvalidArgument(status)) return FailParams(r, status);
        return FailTarget(r, status, nqn, jsonrpc::kInternalError);
      }
      r.Reply(true);
    };
  };
  d.Register("nvmf_subsystem_add_host", host_method(true));
  d.Register("nvmf_subsystem_remove_host", host_method(false));

  d.Register("nvmf_subsystem_allow_any_host", [&ctx](const Json& params, Responder r) {
    ParamReader p(params, {"nqn", "allow_any_host", "tgt_name"});
    std::string nqn = p.String("nqn", true);
    bool allow = p.Bool("allow_any_host", true);
    p.String("tgt_name", false);
    if (!p.ok()) return FailParams(r, p.status());
    absl::Status status = ctx.nvmf.SetAllowAnyHost(nqn, allow);
    if (!status.ok()) return FailTarget(r, status, nqn, jsonrpc::kInvalidParams);
    r.Reply(true);
  });

  auto list_method = [&ctx](bool qpairs) {
    return [&ctx, qpairs](const Json& params, Responder r) {
      ParamReader p(params, {"nqn", "tgt_name"});
      std::string nqn = p.String("nqn", true);
      p.String("tgt_name", false);
      if (!p.ok()) return FailParams(r, p.status());
      if (ctx.nvmf.Find(nqn) == nullptr) return r.Fail(jsonrpc::kInvalidParams, NotFoundMessage(nqn));
      r.Reply(qpairs ? ctx.nvmf.DescribeQpairs(nqn) : ctx.nvmf.DescribeControllers(nqn));
    };
  };
  d.Register("nvmf_subsystem_get_controllers", list_method(false));
  d.Register("nvmf_subsystem_get_qpairs", list_method(true));

  d.Register("nvmf_get_stats", [&ctx](const Json& params, Responder r) {
    ParamReader p(params, {"tgt_name"});
    p.String("tgt_name", false);
    if (!p.ok()) return FailParams(r, p.status());
    auto shared = std::make_shared<Responder>(std::move(r));
    ctx.nvmf.GetStats([shared](Json stats) { shared->Reply(std::move(stats)); });
  });
}

}  // namespace smad::tgt
