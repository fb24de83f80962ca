#pragma once

// Decoded Identify Controller, Identify Namespace (+ namespace identification descriptors) and Discovery
// log page data, as the initiator reads them. Parsers take the raw little-endian structures; all are pure
// functions of their input. Value types; thread compatible.

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/uuid.h"

namespace smad::nvme::host {

// Identify Controller (CNS 01h), the fields the tools use.
struct ControllerData {
  uint16_t vid = 0;
  uint16_t ssvid = 0;
  std::string serial;    // SN, padding removed
  std::string model;     // MN
  std::string firmware;  // FR
  uint8_t rab = 0;
  std::array<uint8_t, 3> ieee{};
  uint8_t cmic = 0;
  uint8_t mdts = 0;  // max data transfer size, log2 of CAP.MPSMIN pages; 0 = no limit
  uint16_t cntlid = 0;
  uint32_t ver = 0;
  uint32_t rtd3e = 0;  // microseconds
  uint32_t oaes = 0;
  uint32_t ctratt = 0;
  uint8_t cntrltype = 0;  // 1 I/O, 2 discovery, 3 administrative
  uint16_t oacs = 0;
  uint8_t acl = 0;
  uint8_t aerl = 0;
  uint8_t frmw = 0;
  uint8_t lpa = 0;
  uint8_t elpe = 0;
  uint16_t kas = 0;  // keep alive granularity, 100 ms units; 0 = keep alive not supported
  uint8_t sqes = 0;
  uint8_t cqes = 0;
  uint16_t maxcmd = 0;
  uint32_t nn = 0;
  uint16_t oncs = 0;
  uint16_t fuses = 0;
  uint8_t vwc = 0;
  uint32_t sgls = 0;
  uint32_t mnan = 0;
  std::string subnqn;
  uint32_t ioccsz = 0;  // I/O queue command capsule size, 16-byte units
  uint32_t iorcsz = 0;  // I/O queue response capsule size, 16-byte units
  uint16_t icdoff = 0;
  uint8_t fcatt = 0;
  uint8_t msdbd = 0;

  bool IsDiscovery() const { return cntrltype == 2; }
  // Bytes of in-capsule data an I/O queue command may carry: IOCCSZ * 16 - 64 (0 if IOCCSZ < 4).
  uint32_t InCapsuleDataBytes() const { return ioccsz >= 4 ? ioccsz * 16 - 64 : 0; }
  // The largest transfer in bytes given CAP.MPSMIN in bytes; 0 means no limit.
  uint64_t MaxTransferBytes(uint32_t mps_min_bytes) const {
    return mdts == 0 ? 0 : static_cast<uint64_t>(mps_min_bytes) << mdts;
  }
};

// One LBA format of a namespace.
struct LbaFormat {
  uint16_t metadata_size = 0;
  uint8_t lbads = 0;  // log2 of the data size
  uint8_t relative_performance = 0;
  uint32_t data_size() const { return lbads >= 9 && lbads < 32 ? 1u << lbads : 0; }
};

// Identify Namespace (CNS 00h) plus what the namespace identification descriptors (CNS 03h) add.
struct NamespaceData {
  uint32_t nsid = 0;
  uint64_t nsze = 0;  // size in logical blocks
  uint64_t ncap = 0;
  uint64_t nuse = 0;
  uint8_t nsfeat = 0;
  uint8_t nlbaf = 0;  // number of LBA formats, 0's based
  uint8_t flbas = 0;
  uint8_t nmic = 0;
  uint8_t dlfeat = 0;
  std::array<uint8_t, 16> nguid{};
  std::array<uint8_t, 8> eui64{};
  std::optional<Uuid> uuid;  // from the descriptors
  std::vector<LbaFormat> lba_formats;

  // Index of the LBA format in use (FLBAS bits 3:0 and 6:5).
  uint32_t current_format() const { return (flbas & 0xf) | ((flbas >> 5) & 0x3) << 4; }
  // Data size of the current LBA format in bytes; 0 when the format is invalid.
  uint32_t block_size() const;
  bool has_nguid() const;
  bool has_eui64() const;
};

// Discovery log page (LID 70h).
struct DiscoveryLogEntry {
  uint8_t trtype = 0;
  uint8_t adrfam = 0;
  uint8_t subtype = 0;
  uint8_t treq = 0;
  uint16_t portid = 0;
  uint16_t cntlid = 0;
  uint16_t asqsz = 0;
  uint16_t eflags = 0;
  std::string trsvcid;
  std::string subnqn;
  std::string traddr;
  // False when a text field (TRSVCID, SUBNQN, TRADDR) holds anything but NUL or space bytes after its
  // text, e.g. "4420\0junk": the field is then not what it claims to be.
  bool padding_ok = true;
};
struct DiscoveryLog {
  uint64_t genctr = 0;
  uint64_t numrec = 0;
  uint16_t recfmt = 0;
  std::vector<DiscoveryLogEntry> entries;
};

// Parsers. Errors: InvalidArgument when `data` is shorter than the structure.
absl::StatusOr<ControllerData> ParseControllerData(absl::Span<const uint8_t> data);
absl::StatusOr<NamespaceData> ParseNamespaceData(uint32_t nsid, absl::Span<const uint8_t> data);
// Applies a namespace identification descriptor list (CNS 03h) to `ns`: EUI64, NGUID, UUID. Errors:
// InvalidArgument for a descriptor whose length does not fit its type or the buffer.
absl::Status ApplyNamespaceDescriptors(absl::Span<const uint8_t> data, NamespaceData& ns);
// The active namespace list (CNS 02h): the non-zero NSIDs in order.
std::vector<uint32_t> ParseNamespaceList(absl::Span<const uint8_t> data);
// The discovery log header (first 1024 bytes): genctr, numrec, recfmt; entries left empty.
absl::StatusOr<DiscoveryLog> ParseDiscoveryHeader(absl::Span<const uint8_t> data);
// One 1024-byte discovery log entry.
absl::StatusOr<DiscoveryLogEntry> ParseDiscoveryEntry(absl::Span<const uint8_t> data);

// Names for printing.
const char* TrtypeName(uint8_t trtype);    // "TCP", "RDMA", ...
const char* AdrfamName(uint8_t adrfam);    // "IPv4", ...
const char* SubtypeName(uint8_t subtype);  // "NVM Subsystem", ...
// "1.4", "2.0", "1.2.1" from a VS/VER value.
std::string VersionString(uint32_t ver);

}  // namespace smad::nvme::host
