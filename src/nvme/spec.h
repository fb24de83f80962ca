#pragma once

// NVMe and NVMe over Fabrics wire facts used by both the target (smad-tgt) and the initiator (host)
// side: opcodes, status codes, the 64-byte submission and 16-byte completion queue entries, controller
// properties, and the byte offsets of the Identify and Discovery log page structures. All multi-byte
// fields are little endian on the wire; the helpers below read and write them portably.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace smad::nvme {

// --- Little-endian access ------------------------------------------------------------------------
inline uint16_t Load16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | p[1] << 8); }
inline uint32_t Load32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 | static_cast<uint32_t>(p[2]) << 16 |
         static_cast<uint32_t>(p[3]) << 24;
}
inline uint64_t Load64(const uint8_t* p) { return Load32(p) | static_cast<uint64_t>(Load32(p + 4)) << 32; }
inline void Store16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
}
inline void Store32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
inline void Store64(uint8_t* p, uint64_t v) {
  Store32(p, static_cast<uint32_t>(v));
  Store32(p + 4, static_cast<uint32_t>(v >> 32));
}

// --- Opcodes -------------------------------------------------------------------------------------
namespace admin {
inline constexpr uint8_t kGetLogPage = 0x02;
inline constexpr uint8_t kIdentify = 0x06;
inline constexpr uint8_t kAbort = 0x08;
inline constexpr uint8_t kSetFeatures = 0x09;
inline constexpr uint8_t kGetFeatures = 0x0a;
inline constexpr uint8_t kAsyncEventRequest = 0x0c;
inline constexpr uint8_t kKeepAlive = 0x18;
}  // namespace admin

namespace io {
inline constexpr uint8_t kFlush = 0x00;
inline constexpr uint8_t kWrite = 0x01;
inline constexpr uint8_t kRead = 0x02;
inline constexpr uint8_t kWriteZeroes = 0x08;
inline constexpr uint8_t kDatasetManagement = 0x09;
}  // namespace io

inline constexpr uint8_t kFabricsOpcode = 0x7f;
namespace fabrics {
inline constexpr uint8_t kPropertySet = 0x00;
inline constexpr uint8_t kConnect = 0x01;
inline constexpr uint8_t kPropertyGet = 0x04;
}  // namespace fabrics

// Identify CNS values.
namespace cns {
inline constexpr uint8_t kNamespace = 0x00;
inline constexpr uint8_t kController = 0x01;
inline constexpr uint8_t kActiveNamespaceList = 0x02;
inline constexpr uint8_t kNamespaceIdDescriptors = 0x03;
}  // namespace cns

// Log page identifiers.
namespace log_page {
inline constexpr uint8_t kError = 0x01;
inline constexpr uint8_t kHealth = 0x02;
inline constexpr uint8_t kFirmwareSlot = 0x03;
inline constexpr uint8_t kChangedNamespaceList = 0x04;
inline constexpr uint8_t kDiscovery = 0x70;
}  // namespace log_page

// Feature identifiers.
namespace feature {
inline constexpr uint8_t kArbitration = 0x01;
inline constexpr uint8_t kPowerManagement = 0x02;
inline constexpr uint8_t kTemperatureThreshold = 0x04;
inline constexpr uint8_t kErrorRecovery = 0x05;
inline constexpr uint8_t kVolatileWriteCache = 0x06;
inline constexpr uint8_t kNumberOfQueues = 0x07;
inline constexpr uint8_t kInterruptCoalescing = 0x08;
inline constexpr uint8_t kWriteAtomicity = 0x0a;
inline constexpr uint8_t kAsyncEventConfiguration = 0x0b;
inline constexpr uint8_t kKeepAliveTimer = 0x0f;
inline constexpr uint8_t kHostIdentifier = 0x81;
}  // namespace feature

// --- Status ----------------------------------------------------------------------------------------
// Status code types.
inline constexpr uint8_t kSctGeneric = 0x0;
inline constexpr uint8_t kSctCommandSpecific = 0x1;
inline constexpr uint8_t kSctMediaError = 0x2;

namespace sc {  // generic (SCT 0)
inline constexpr uint8_t kSuccess = 0x00;
inline constexpr uint8_t kInvalidOpcode = 0x01;
inline constexpr uint8_t kInvalidField = 0x02;
inline constexpr uint8_t kCommandIdConflict = 0x03;
inline constexpr uint8_t kDataTransferError = 0x04;
inline constexpr uint8_t kInternalError = 0x06;
inline constexpr uint8_t kAbortedByRequest = 0x07;
inline constexpr uint8_t kAbortedSqDeletion = 0x08;
inline constexpr uint8_t kInvalidNamespaceOrFormat = 0x0b;
inline constexpr uint8_t kCommandSequenceError = 0x0c;
inline constexpr uint8_t kInvalidSglSegmentDescriptor = 0x0d;
inline constexpr uint8_t kDataSglLengthInvalid = 0x0f;
inline constexpr uint8_t kSglDescriptorTypeInvalid = 0x11;
inline constexpr uint8_t kSglOffsetInvalid = 0x16;
inline constexpr uint8_t kLbaOutOfRange = 0x80;
inline constexpr uint8_t kCapacityExceeded = 0x81;
inline constexpr uint8_t kNamespaceNotReady = 0x82;
}  // namespace sc

namespace sc_specific {  // command specific (SCT 1)
inline constexpr uint8_t kInvalidQueueIdentifier = 0x01;
inline constexpr uint8_t kInvalidQueueSize = 0x02;
inline constexpr uint8_t kAsyncEventLimitExceeded = 0x05;
inline constexpr uint8_t kInvalidLogPage = 0x09;
inline constexpr uint8_t kFeatureNotSaveable = 0x0d;
inline constexpr uint8_t kFeatureNotChangeable = 0x0e;
// Fabrics Connect.
inline constexpr uint8_t kConnectIncompatibleFormat = 0x80;
inline constexpr uint8_t kConnectControllerBusy = 0x81;
inline constexpr uint8_t kConnectInvalidParameters = 0x82;
inline constexpr uint8_t kConnectRestartDiscovery = 0x83;
inline constexpr uint8_t kConnectInvalidHost = 0x84;
}  // namespace sc_specific

// The 15-bit status field of a completion (without the phase bit): SC in bits 0-7, SCT in 8-10, DNR 14.
struct Status {
  uint8_t sct = kSctGeneric;
  uint8_t sc = sc::kSuccess;
  bool dnr = false;
  bool ok() const { return sct == kSctGeneric && sc == sc::kSuccess; }
  // The 16-bit CQE status word (phase bit 0 left clear).
  uint16_t Encode() const {
    return static_cast<uint16_t>((sc << 1) | ((sct & 0x7) << 9) | (dnr ? 1u << 15 : 0));
  }
  static Status Decode(uint16_t word) {
    return Status{static_cast<uint8_t>((word >> 9) & 0x7), static_cast<uint8_t>((word >> 1) & 0xff),
                  (word >> 15) != 0};
  }
};
inline Status Generic(uint8_t code, bool dnr = true) { return Status{kSctGeneric, code, dnr}; }
inline Status Specific(uint8_t code, bool dnr = true) { return Status{kSctCommandSpecific, code, dnr}; }

// --- Queue entries ---------------------------------------------------------------------------------
inline constexpr size_t kSqeSize = 64;
inline constexpr size_t kCqeSize = 16;

// SGL descriptor types used by NVMe/TCP (byte 15 of the descriptor: type << 4 | subtype).
inline constexpr uint8_t kSglDataBlockOffset = 0x01;     // in-capsule data: address is an offset
inline constexpr uint8_t kSglTransportDataBlock = 0x5a;  // data moved by C2HData / R2T+H2CData

// A submission queue entry, parsed (the raw bytes stay available for opcode-specific fields).
struct Command {
  uint8_t raw[kSqeSize];

  uint8_t opcode() const { return raw[0]; }
  uint8_t flags() const { return raw[1]; }
  uint16_t cid() const { return Load16(raw + 2); }
  uint32_t nsid() const { return Load32(raw + 4); }
  uint64_t sgl_address() const { return Load64(raw + 24); }
  uint32_t sgl_length() const { return Load32(raw + 32); }
  uint8_t sgl_type() const { return raw[39]; }
  uint32_t cdw(int n) const { return Load32(raw + 4 * n); }  // cdw10 is cdw(10)
  uint8_t fctype() const { return raw[4]; }                  // fabrics commands only
  // I/O commands.
  uint64_t slba() const { return Load64(raw + 40); }
  uint32_t nlb() const { return (cdw(12) & 0xffff) + 1; }  // 0's based on the wire
};

// Builds SQEs (initiator side). Every Build* starts from zero and sets the CID.
struct CommandBuilder {
  static void Init(uint8_t* sqe, uint8_t opcode, uint16_t cid, uint32_t nsid);
  // Marks the data pointer: in-capsule (offset 0) or transport-data-block of `length` bytes.
  static void SetSgl(uint8_t* sqe, bool in_capsule, uint32_t length);
};

// --- Controller properties (fabrics Property Get/Set offsets) ---------------------------------------
namespace prop {
inline constexpr uint32_t kCap = 0x00;   // 8 bytes
inline constexpr uint32_t kVs = 0x08;    // 4 bytes
inline constexpr uint32_t kCc = 0x14;    // 4 bytes
inline constexpr uint32_t kCsts = 0x1c;  // 4 bytes
}  // namespace prop
inline constexpr uint32_t kCcEnable = 1u << 0;
inline constexpr uint32_t kCcShnShift = 14;  // shutdown notification, 2 bits
inline constexpr uint32_t kCstsReady = 1u << 0;
inline constexpr uint32_t kCstsFatal = 1u << 1;
inline constexpr uint32_t kCstsShstShift = 2;  // 0 normal, 1 occurring, 2 complete
inline constexpr uint32_t kVersion2_0 = 0x00020000;

// --- Fabrics Connect ---------------------------------------------------------------------------------
inline constexpr size_t kConnectDataSize = 1024;
namespace connect_data {
inline constexpr size_t kHostId = 0;      // 16 bytes
inline constexpr size_t kCntlid = 16;     // u16; 0xffff = dynamic
inline constexpr size_t kSubnqn = 256;    // 256 bytes, NUL padded
inline constexpr size_t kHostnqn = 512;   // 256 bytes, NUL padded
}  // namespace connect_data
// In the Connect SQE.
namespace connect_cmd {
inline constexpr size_t kRecfmt = 40;  // u16
inline constexpr size_t kQid = 42;     // u16
inline constexpr size_t kSqsize = 44;  // u16, 0's based
inline constexpr size_t kCattr = 46;   // u8
inline constexpr size_t kKato = 48;    // u32, ms
}  // namespace connect_cmd
namespace property_cmd {
inline constexpr size_t kAttrib = 40;  // u8: size, 0 = 4 bytes, 1 = 8 bytes
inline constexpr size_t kOffset = 44;  // u32
inline constexpr size_t kValue = 48;   // u64 (Property Set)
}  // namespace property_cmd

// --- Identify data structures (4096 bytes each) -------------------------------------------------------
inline constexpr size_t kIdentifySize = 4096;
namespace id_ctrl {
inline constexpr size_t kVid = 0, kSsvid = 2, kSn = 4 /*20*/, kMn = 24 /*40*/, kFr = 64 /*8*/;
inline constexpr size_t kRab = 72, kIeee = 73 /*3*/, kCmic = 76, kMdts = 77, kCntlid = 78, kVer = 80;
inline constexpr size_t kOaes = 92, kCtratt = 96, kCntrltype = 111, kAcl = 258, kAerl = 259, kFrmw = 260;
inline constexpr size_t kLpa = 261, kElpe = 262, kKas = 320, kSqes = 512, kCqes = 513, kMaxcmd = 514;
inline constexpr size_t kNn = 516, kOncs = 520, kFuses = 522, kVwc = 525, kSgls = 536, kMnan = 540;
inline constexpr size_t kSubnqn = 768 /*256*/;
inline constexpr size_t kIoccsz = 1792, kIorcsz = 1796, kIcdoff = 1800, kFcatt = 1802, kMsdbd = 1803;
}  // namespace id_ctrl
namespace id_ns {
inline constexpr size_t kNsze = 0, kNcap = 8, kNuse = 16, kNsfeat = 24, kNlbaf = 25, kFlbas = 26;
inline constexpr size_t kDlfeat = 33, kNmic = 30, kNguid = 104 /*16*/, kEui64 = 120 /*8*/, kLbaf0 = 128;
}  // namespace id_ns
// Namespace identification descriptor types (CNS 03h).
inline constexpr uint8_t kNidtEui64 = 1, kNidtNguid = 2, kNidtUuid = 3;

// --- Discovery log page ----------------------------------------------------------------------------
inline constexpr size_t kDiscoveryHeaderSize = 1024;
inline constexpr size_t kDiscoveryEntrySize = 1024;
namespace disc_hdr {
inline constexpr size_t kGenctr = 0, kNumrec = 8, kRecfmt = 16;
}
namespace disc_entry {
inline constexpr size_t kTrtype = 0, kAdrfam = 1, kSubtype = 2, kTreq = 3, kPortid = 4, kCntlid = 6;
inline constexpr size_t kAsqsz = 8, kTrsvcid = 32 /*32*/, kSubnqn = 256 /*256*/, kTraddr = 512 /*256*/;
inline constexpr size_t kTsas = 768 /*256*/;
}  // namespace disc_entry
inline constexpr uint8_t kTrtypeTcp = 3;
inline constexpr uint8_t kAdrfamIpv4 = 1, kAdrfamIpv6 = 2;
inline constexpr uint8_t kSubtypeDiscoveryReferral = 1, kSubtypeNvm = 2, kSubtypeCurrentDiscovery = 3;

// Copies `text` into a fixed-size space-padded (Identify strings) or NUL-padded (NQNs) field.
void PutPadded(uint8_t* field, size_t size, const char* text, size_t length, char pad);
// Reads such a field, dropping the padding.
std::string GetPadded(const uint8_t* field, size_t size);

}  // namespace smad::nvme
