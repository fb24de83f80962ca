#include "nvme/spec.h"

#include <algorithm>

namespace smad::nvme {

namespace {

// SQE byte 1 (FUSE and PSDT): PSDT in bits 7:6, 01b = SGLs for data, metadata pointer contiguous.
constexpr uint8_t kPsdtMask = 0xc0;
constexpr uint8_t kPsdtSgl = 0x40;

// SGL descriptor 1 (the data pointer) of the SQE.
constexpr size_t kSglAddressOffset = 24;  // u64
constexpr size_t kSglLengthOffset = 32;   // u32
constexpr size_t kSglTypeOffset = 39;     // descriptor type << 4 | subtype

}  // namespace

void PutPadded(uint8_t* field, size_t size, const char* text, size_t length, char pad) {
  const size_t copied = std::min(size, length);
  if (copied > 0) std::memcpy(field, text, copied);
  std::memset(field + copied, static_cast<unsigned char>(pad), size - copied);
}

std::string GetPadded(const uint8_t* field, size_t size) {
  // NUL-padded fields end at the first NUL; space-padded ones lose their trailing spaces.
  size_t length = 0;
  while (length < size && field[length] != 0) ++length;
  while (length > 0 && field[length - 1] == ' ') --length;
  return std::string(reinterpret_cast<const char*>(field), length);
}

void CommandBuilder::Init(uint8_t* sqe, uint8_t opcode, uint16_t cid, uint32_t nsid) {
  std::memset(sqe, 0, kSqeSize);
  sqe[0] = opcode;
  Store16(sqe + 2, cid);
  Store32(sqe + 4, nsid);
}

void CommandBuilder::SetSgl(uint8_t* sqe, bool in_capsule, uint32_t length) {
  sqe[1] = static_cast<uint8_t>((sqe[1] & ~kPsdtMask) | kPsdtSgl);
  // In-capsule data: the address is the offset into the capsule's data, always 0 here. Transport data
  // blocks have no address (the transport moves the data).
  Store64(sqe + kSglAddressOffset, 0);
  Store32(sqe + kSglLengthOffset, length);
  std::memset(sqe + kSglLengthOffset + 4, 0, kSglTypeOffset - (kSglLengthOffset + 4));
  sqe[kSglTypeOffset] = in_capsule ? kSglDataBlockOffset : kSglTransportDataBlock;
}

}  // namespace smad::nvme
