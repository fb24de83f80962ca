#pragma once

// Submission queue entries the initiator sends, and NVMe completion status as text and absl errors.
// Each Build* fills a 64-byte SQE from zero; the queue pair later sets the CID and the SGL descriptor.
// Pure functions; thread safe.

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "nvme/spec.h"

namespace smad::nvme::host {

// --- Fabrics -----------------------------------------------------------------------------------------
// Connect for queue `qid` with `queue_entries` entries (SQSIZE = entries - 1), keep-alive timeout in ms.
void BuildConnect(uint8_t* sqe, uint16_t qid, uint16_t queue_entries, uint32_t kato_ms);
// The 1024-byte Connect data: host identifier, controller ID (0xffff for a dynamic admin connect), NQNs.
void BuildConnectData(uint8_t* data, const uint8_t hostid[16], uint16_t cntlid, absl::string_view subnqn,
                      absl::string_view hostnqn);
// Property Get/Set of a 4- or 8-byte property.
void BuildPropertyGet(uint8_t* sqe, uint32_t offset, bool eight_bytes);
void BuildPropertySet(uint8_t* sqe, uint32_t offset, bool eight_bytes, uint64_t value);

// --- Admin -------------------------------------------------------------------------------------------
void BuildIdentify(uint8_t* sqe, uint8_t cns, uint32_t nsid, uint16_t cntid = 0);
// Get Log Page of `length` bytes (a non-zero multiple of 4) at byte `offset`.
void BuildGetLogPage(uint8_t* sqe, uint8_t lid, uint32_t nsid, uint64_t offset, uint32_t length,
                     bool retain_async_event = false);
void BuildSetFeatures(uint8_t* sqe, uint8_t fid, uint32_t cdw11, uint32_t cdw12 = 0);
void BuildGetFeatures(uint8_t* sqe, uint8_t fid, uint32_t cdw11 = 0);
void BuildKeepAlive(uint8_t* sqe);

// --- NVM I/O -----------------------------------------------------------------------------------------
// Read or Write of `nblocks` (1..65536) logical blocks at `slba`.
void BuildRead(uint8_t* sqe, uint32_t nsid, uint64_t slba, uint32_t nblocks);
void BuildWrite(uint8_t* sqe, uint32_t nsid, uint64_t slba, uint32_t nblocks);
void BuildFlush(uint8_t* sqe, uint32_t nsid);
// Write Zeroes of `nblocks` (1..65536) logical blocks at `slba`.
void BuildWriteZeroes(uint8_t* sqe, uint32_t nsid, uint64_t slba, uint32_t nblocks);
// Dataset Management with the deallocate attribute over `nranges` (1..256) ranges; the range list (16 bytes
// per range, see PutDsmRange) travels as the command's data.
void BuildDeallocate(uint8_t* sqe, uint32_t nsid, uint32_t nranges);
// Writes one 16-byte Dataset Management range (no context attributes) at `out`.
void PutDsmRange(uint8_t* out, uint64_t slba, uint32_t nblocks);
inline constexpr uint32_t kDsmRangeSize = 16;
inline constexpr uint32_t kDsmMaxRanges = 256;

// --- Controller configuration ---------------------------------------------------------------------------
// CC with EN=1, CSS NVM, MPS 4 KiB, round robin, IOSQES 6 (64 bytes) and IOCQES 4 (16 bytes).
inline constexpr uint32_t kCcEnableValue = kCcEnable | (6u << 16) | (4u << 20);
inline constexpr uint32_t kCcShnNormal = 1u << kCcShnShift;
inline constexpr uint32_t kCcShnMask = 3u << kCcShnShift;
inline constexpr uint32_t kCstsShstMask = 3u << kCstsShstShift;
inline constexpr uint32_t kCstsShstComplete = 2u << kCstsShstShift;

// CAP fields.
inline uint32_t CapMqes(uint64_t cap) { return static_cast<uint32_t>(cap & 0xffff); }  // 0's based
inline uint32_t CapTimeoutMs(uint64_t cap) { return static_cast<uint32_t>((cap >> 24) & 0xff) * 500; }
inline uint32_t CapMpsMinBytes(uint64_t cap) { return 4096u << ((cap >> 48) & 0xf); }

// --- Status ------------------------------------------------------------------------------------------
// "SCT 1 SC 0x84 (connect invalid host)"; the name part is omitted for codes without one.
std::string DescribeStatus(const Status& status);
// The name of a status code, e.g. "invalid field in command"; empty when unknown.
std::string StatusName(const Status& status);
// An absl error "<what> failed: SCT 1 SC 0x84 (connect invalid host)" with a canonical code that fits the
// NVMe status (PermissionDenied for an invalid host, InvalidArgument for invalid fields, OutOfRange for
// LBA out of range, ...). OK for a successful status.
absl::Status NvmeStatusError(absl::string_view what, const Status& status);

}  // namespace smad::nvme::host
