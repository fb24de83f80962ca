#include "nvme/host/commands.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace smad::nvme::host {
namespace {

void Init(uint8_t* sqe, uint8_t opcode, uint32_t nsid) {
  std::memset(sqe, 0, kSqeSize);
  sqe[0] = opcode;
  Store32(sqe + 4, nsid);
}

void InitFabrics(uint8_t* sqe, uint8_t fctype) {
  std::memset(sqe, 0, kSqeSize);
  sqe[0] = kFabricsOpcode;
  sqe[4] = fctype;
}

void SetCdw(uint8_t* sqe, int n, uint32_t value) { Store32(sqe + 4 * n, value); }

}  // namespace

void BuildConnect(uint8_t* sqe, uint16_t qid, uint16_t queue_entries, uint32_t kato_ms) {
  InitFabrics(sqe, fabrics::kConnect);
  Store16(sqe + connect_cmd::kRecfmt, 0);
  Store16(sqe + connect_cmd::kQid, qid);
  Store16(sqe + connect_cmd::kSqsize, static_cast<uint16_t>(queue_entries == 0 ? 0 : queue_entries - 1));
  sqe[connect_cmd::kCattr] = 0;
  Store32(sqe + connect_cmd::kKato, kato_ms);
}

void BuildConnectData(uint8_t* data, const uint8_t hostid[16], uint16_t cntlid, absl::string_view subnqn,
                      absl::string_view hostnqn) {
  std::memset(data, 0, kConnectDataSize);
  std::memcpy(data + connect_data::kHostId, hostid, 16);
  Store16(data + connect_data::kCntlid, cntlid);
  PutPadded(data + connect_data::kSubnqn, 256, subnqn.data(), subnqn.size(), '\0');
  PutPadded(data + connect_data::kHostnqn, 256, hostnqn.data(), hostnqn.size(), '\0');
}

void BuildPropertyGet(uint8_t* sqe, uint32_t offset, bool eight_bytes) {
  InitFabrics(sqe, fabrics::kPropertyGet);
  sqe[property_cmd::kAttrib] = eight_bytes ? 1 : 0;
  Store32(sqe + property_cmd::kOffset, offset);
}

void BuildPropertySet(uint8_t* sqe, uint32_t offset, bool eight_bytes, uint64_t value) {
  InitFabrics(sqe, fabrics::kPropertySet);
  sqe[property_cmd::kAttrib] = eight_bytes ? 1 : 0;
  Store32(sqe + property_cmd::kOffset, offset);
  Store64(sqe + property_cmd::kValue, eight_bytes ? value : (value & 0xffffffffu));
}

void BuildIdentify(uint8_t* sqe, uint8_t cns, uint32_t nsid, uint16_t cntid) {
  Init(sqe, admin::kIdentify, nsid);
  SetCdw(sqe, 10, static_cast<uint32_t>(cns) | static_cast<uint32_t>(cntid) << 16);
}

void BuildGetLogPage(uint8_t* sqe, uint8_t lid, uint32_t nsid, uint64_t offset, uint32_t length,
                     bool retain_async_event) {
  Init(sqe, admin::kGetLogPage, nsid);
  uint32_t numd = length / 4 - 1;  // 0's based dword count
  SetCdw(sqe, 10, static_cast<uint32_t>(lid) | (retain_async_event ? 1u << 15 : 0) | (numd & 0xffff) << 16);
  SetCdw(sqe, 11, numd >> 16);
  SetCdw(sqe, 12, static_cast<uint32_t>(offset));
  SetCdw(sqe, 13, static_cast<uint32_t>(offset >> 32));
}

void BuildSetFeatures(uint8_t* sqe, uint8_t fid, uint32_t cdw11, uint32_t cdw12) {
  Init(sqe, admin::kSetFeatures, 0);
  SetCdw(sqe, 10, fid);
  SetCdw(sqe, 11, cdw11);
  SetCdw(sqe, 12, cdw12);
}

void BuildGetFeatures(uint8_t* sqe, uint8_t fid, uint32_t cdw11) {
  Init(sqe, admin::kGetFeatures, 0);
  SetCdw(sqe, 10, fid);
  SetCdw(sqe, 11, cdw11);
}

void BuildKeepAlive(uint8_t* sqe) { Init(sqe, admin::kKeepAlive, 0); }

void BuildRead(uint8_t* sqe, uint32_t nsid, uint64_t slba, uint32_t nblocks) {
  Init(sqe, io::kRead, nsid);
  Store64(sqe + 40, slba);
  SetCdw(sqe, 12, (nblocks - 1) & 0xffff);
}

void BuildWrite(uint8_t* sqe, uint32_t nsid, uint64_t slba, uint32_t nblocks) {
  Init(sqe, io::kWrite, nsid);
  Store64(sqe + 40, slba);
  SetCdw(sqe, 12, (nblocks - 1) & 0xffff);
}

void BuildFlush(uint8_t* sqe, uint32_t nsid) { Init(sqe, io::kFlush, nsid); }

void BuildWriteZeroes(uint8_t* sqe, uint32_t nsid, uint64_t slba, uint32_t nblocks) {
  Init(sqe, io::kWriteZeroes, nsid);
  Store64(sqe + 40, slba);
  SetCdw(sqe, 12, (nblocks - 1) & 0xffff);
}

void BuildDeallocate(uint8_t* sqe, uint32_t nsid, uint32_t nranges) {
  Init(sqe, io::kDatasetManagement, nsid);
  SetCdw(sqe, 10, (nranges - 1) & 0xff);
  SetCdw(sqe, 11, 1u << 2);  // AD: deallocate
}

void PutDsmRange(uint8_t* out, uint64_t slba, uint32_t nblocks) {
  Store32(out, 0);
  Store32(out + 4, nblocks);
  Store64(out + 8, slba);
}

std::string StatusName(const Status& status) {
  if (status.sct == kSctGeneric) {
    switch (status.sc) {
      case sc::kSuccess: return "success";
      case sc::kInvalidOpcode: return "invalid opcode";
      case sc::kInvalidField: return "invalid field in command";
      case sc::kCommandIdConflict: return "command ID conflict";
      case sc::kDataTransferError: return "data transfer error";
      case 0x05: return "aborted due to power loss";
      case sc::kInternalError: return "internal error";
      case sc::kAbortedByRequest: return "aborted by request";
      case sc::kAbortedSqDeletion: return "aborted due to SQ deletion";
      case 0x0a: return "invalid field in fused command";
      case sc::kInvalidNamespaceOrFormat: return "invalid namespace or format";
      case sc::kCommandSequenceError: return "command sequence error";
      case sc::kInvalidSglSegmentDescriptor: return "invalid SGL segment descriptor";
      case 0x0e: return "invalid number of SGL descriptors";
      case sc::kDataSglLengthInvalid: return "data SGL length invalid";
      case sc::kSglDescriptorTypeInvalid: return "SGL descriptor type invalid";
      case sc::kSglOffsetInvalid: return "SGL offset invalid";
      case sc::kLbaOutOfRange: return "LBA out of range";
      case sc::kCapacityExceeded: return "capacity exceeded";
      case sc::kNamespaceNotReady: return "namespace not ready";
      default: return "";
    }
  }
  if (status.sct == kSctCommandSpecific) {
    switch (status.sc) {
      case sc_specific::kInvalidQueueIdentifier: return "invalid queue identifier";
      case sc_specific::kInvalidQueueSize: return "invalid queue size";
      case sc_specific::kAsyncEventLimitExceeded: return "asynchronous event request limit exceeded";
      case sc_specific::kInvalidLogPage: return "invalid log page";
      case sc_specific::kFeatureNotSaveable: return "feature identifier not saveable";
      case sc_specific::kFeatureNotChangeable: return "feature not changeable";
      case sc_specific::kConnectIncompatibleFormat: return "connect incompatible format";
      case sc_specific::kConnectControllerBusy: return "connect controller busy";
      case sc_specific::kConnectInvalidParameters: return "connect invalid parameters";
      case sc_specific::kConnectRestartDiscovery: return "connect restart discovery";
      case sc_specific::kConnectInvalidHost: return "connect invalid host";
      default: return "";
    }
  }
  if (status.sct == kSctMediaError) {
    switch (status.sc) {
      case 0x80: return "write fault";
      case 0x81: return "unrecovered read error";
      case 0x86: return "access denied";
      default: return "";
    }
  }
  return "";
}

std::string DescribeStatus(const Status& status) {
  std::string out = absl::StrFormat("SCT %d SC 0x%02x", status.sct, status.sc);
  std::string name = StatusName(status);
  if (!name.empty()) absl::StrAppend(&out, " (", name, ")");
  if (status.dnr) absl::StrAppend(&out, " DNR");
  return out;
}

absl::Status NvmeStatusError(absl::string_view what, const Status& status) {
  if (status.ok()) return absl::OkStatus();
  absl::StatusCode code = absl::StatusCode::kInternal;
  if (status.sct == kSctGeneric) {
    switch (status.sc) {
      case sc::kInvalidOpcode: code = absl::StatusCode::kUnimplemented; break;
      case sc::kInvalidField:
      case sc::kInvalidNamespaceOrFormat:
      case sc::kInvalidSglSegmentDescriptor:
      case sc::kDataSglLengthInvalid:
      case sc::kSglDescriptorTypeInvalid:
      case sc::kSglOffsetInvalid: code = absl::StatusCode::kInvalidArgument; break;
      case sc::kAbortedByRequest:
      case sc::kAbortedSqDeletion: code = absl::StatusCode::kAborted; break;
      case sc::kCommandSequenceError: code = absl::StatusCode::kFailedPrecondition; break;
      case sc::kLbaOutOfRange: code = absl::StatusCode::kOutOfRange; break;
      case sc::kCapacityExceeded: code = absl::StatusCode::kResourceExhausted; break;
      case sc::kNamespaceNotReady: code = absl::StatusCode::kUnavailable; break;
      default: break;
    }
  } else if (status.sct == kSctCommandSpecific) {
    switch (status.sc) {
      case sc_specific::kConnectInvalidHost: code = absl::StatusCode::kPermissionDenied; break;
      case sc_specific::kConnectControllerBusy: code = absl::StatusCode::kUnavailable; break;
      case sc_specific::kInvalidQueueIdentifier:
      case sc_specific::kInvalidQueueSize:
      case sc_specific::kInvalidLogPage:
      case sc_specific::kConnectIncompatibleFormat:
      case sc_specific::kConnectInvalidParameters: code = absl::StatusCode::kInvalidArgument; break;
      default: code = absl::StatusCode::kFailedPrecondition; break;
    }
  } else if (status.sct == kSctMediaError) {
    code = absl::StatusCode::kDataLoss;
  }
  return absl::Status(code, absl::StrCat(what, " failed: ", DescribeStatus(status)));
}

}  // namespace smad::nvme::host
