#include "nvme/tcp_pdu.h"

#include <algorithm>
#include <cassert>
#include <cstring>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "nvme/spec.h"

namespace smad::nvme::tcp {
namespace {

// Byte offsets inside the PDU headers.
constexpr size_t kTypeOffset = 0;
constexpr size_t kFlagsOffset = 1;
constexpr size_t kHlenOffset = 2;
constexpr size_t kPdoOffset = 3;
constexpr size_t kPlenOffset = 4;
// ICReq / ICResp.
constexpr size_t kPfvOffset = 8;
constexpr size_t kPdaOffset = 10;    // hpda / cpda
constexpr size_t kDgstOffset = 11;   // bit 0 HDGST_ENABLE, bit 1 DDGST_ENABLE
constexpr size_t kLimitOffset = 12;  // maxr2t / maxh2cdata
constexpr uint8_t kDgstHdgstEnable = 0x01;
constexpr uint8_t kDgstDdgstEnable = 0x02;
// H2CData / C2HData / R2T.
constexpr size_t kCccidOffset = 8;
constexpr size_t kTtagOffset = 10;
constexpr size_t kDataOffsetOffset = 12;  // datao / r2to
constexpr size_t kDataLengthOffset = 16;  // datal / r2tl
// H2CTermReq / C2HTermReq.
constexpr size_t kFesOffset = 8;
constexpr size_t kFeiOffset = 10;

constexpr uint32_t kMaxPda = 31;           // hpda and cpda are 0's based dwords, at most 31
constexpr uint32_t kMinMaxH2CData = 4096;  // ICResp.maxh2cdata must be at least this
constexpr size_t kMinBufferSize = 4096;

// What a PDU type may carry.
enum class Kind { kIc, kTerm, kNoData, kData };

struct TypeInfo {
  bool known = false;
  Kind kind = Kind::kNoData;
  size_t hlen = 0;
  bool to_controller = false;  // sent by the host, received by the controller
};

TypeInfo Info(uint8_t type) {
  switch (type) {
    case kIcReq: return {true, Kind::kIc, kIcSize, true};
    case kIcResp: return {true, Kind::kIc, kIcSize, false};
    case kH2CTermReq: return {true, Kind::kTerm, kTermReqHeaderSize, true};
    case kC2HTermReq: return {true, Kind::kTerm, kTermReqHeaderSize, false};
    case kCapsuleCmd: return {true, Kind::kData, kCapsuleCmdHeaderSize, true};
    case kCapsuleResp: return {true, Kind::kNoData, kCapsuleRespHeaderSize, false};
    case kH2CData: return {true, Kind::kData, kDataHeaderSize, true};
    case kC2HData: return {true, Kind::kData, kDataHeaderSize, false};
    case kR2T: return {true, Kind::kNoData, kR2THeaderSize, false};
    default: return {};
  }
}

// Data of host-to-controller PDUs starts at a multiple of the controller's alignment. Hosts built on
// this code advertise HPDA 0, so controller-to-host data is only dword aligned.
size_t Alignment(uint32_t pda) { return (static_cast<size_t>(pda) + 1) * 4; }
size_t AlignUp(size_t value, size_t alignment) { return (value + alignment - 1) / alignment * alignment; }

std::string Hex(uint32_t value) { return absl::StrCat("0x", absl::Hex(value, absl::kZeroPad2)); }

// Where the parts of a PDU sit, derived from its common header.
struct Layout {
  TypeInfo info;
  uint8_t type = 0;
  uint8_t flags = 0;
  uint8_t hlen = 0;
  uint8_t pdo = 0;
  uint32_t plen = 0;
  size_t header_digest = 0;  // 0 or kDigestSize
  size_t data_offset = 0;    // 0: no data part
  size_t data_length = 0;
  size_t data_digest = 0;  // 0 or kDigestSize
};

// The layout of a PDU to build.
struct Shape {
  size_t hlen = 0;
  size_t header_digest = 0;
  size_t pdo = 0;  // 0: no data part
  size_t data_length = 0;
  size_t data_digest = 0;
  size_t plen() const { return pdo == 0 ? hlen + header_digest : pdo + data_length + data_digest; }
};

// Shape of a PDU that may carry data, per the negotiated digests and alignment.
Shape DataShape(const Params& params, size_t hlen, uint32_t pda, bool has_data, uint32_t length) {
  Shape shape;
  shape.hlen = hlen;
  shape.header_digest = params.hdgst ? kDigestSize : 0;
  if (has_data) {
    assert(pda <= kMaxPda);
    shape.pdo = AlignUp(hlen + shape.header_digest, Alignment(pda));
    shape.data_length = length;
    shape.data_digest = params.ddgst ? kDigestSize : 0;
  }
  return shape;
}

// Appends a zeroed PDU of `shape` with its common header filled in; returns its first byte. The caller
// fills the type-specific header fields, then calls FinishPdu.
uint8_t* StartPdu(std::vector<uint8_t>& out, uint8_t type, uint8_t flags, const Shape& shape) {
  const size_t plen = shape.plen();
  const size_t at = out.size();
  out.resize(at + plen);
  uint8_t* p = out.data() + at;
  if (shape.header_digest != 0) flags |= kFlagHdgst;
  if (shape.data_digest != 0) flags |= kFlagDdgst;
  p[kTypeOffset] = type;
  p[kFlagsOffset] = flags;
  p[kHlenOffset] = static_cast<uint8_t>(shape.hlen);
  p[kPdoOffset] = static_cast<uint8_t>(shape.pdo);
  Store32(p + kPlenOffset, static_cast<uint32_t>(plen));
  return p;
}

// Copies the data and computes the digests of a PDU begun by StartPdu.
void FinishPdu(uint8_t* p, const Shape& shape, const uint8_t* data) {
  if (shape.pdo != 0 && shape.data_length > 0) std::memcpy(p + shape.pdo, data, shape.data_length);
  if (shape.header_digest != 0) Store32(p + shape.hlen, Crc32c(p, shape.hlen));
  if (shape.data_digest != 0) {
    Store32(p + shape.pdo + shape.data_length, Crc32c(p + shape.pdo, shape.data_length));
  }
}

void AppendIc(std::vector<uint8_t>& out, uint8_t type, uint8_t pda, bool hdgst, bool ddgst, uint32_t limit) {
  Shape shape;
  shape.hlen = kIcSize;
  uint8_t* p = StartPdu(out, type, 0, shape);
  Store16(p + kPfvOffset, 0);
  p[kPdaOffset] = pda;
  p[kDgstOffset] = static_cast<uint8_t>((hdgst ? kDgstHdgstEnable : 0) | (ddgst ? kDgstDdgstEnable : 0));
  Store32(p + kLimitOffset, limit);
  FinishPdu(p, shape, nullptr);
}

}  // namespace

const char* PduTypeName(uint8_t type) {
  switch (type) {
    case kIcReq: return "ICReq";
    case kIcResp: return "ICResp";
    case kH2CTermReq: return "H2CTermReq";
    case kC2HTermReq: return "C2HTermReq";
    case kCapsuleCmd: return "CapsuleCmd";
    case kCapsuleResp: return "CapsuleResp";
    case kH2CData: return "H2CData";
    case kC2HData: return "C2HData";
    case kR2T: return "R2T";
    default: return "unknown";
  }
}

// --- PduReader ---------------------------------------------------------------------------------------

namespace {

ProtocolError MakeError(uint16_t fes, uint32_t fei, std::string message) {
  ProtocolError error;
  error.fes = fes;
  error.fei = fei;
  error.message = std::move(message);
  return error;
}

ProtocolError FieldError(uint32_t fei, const Layout& layout, std::string what) {
  return MakeError(kFesInvalidHeaderField, fei, absl::StrCat(PduTypeName(layout.type), ": ", what));
}

// Checks the 8-byte common header of the PDU at `p` and computes its layout. Needs no other byte.
std::optional<ProtocolError> CheckCommonHeader(const uint8_t* p, PduReader::Role role, bool got_ic,
                                               const Params& params, uint32_t max_data, Layout* layout) {
  Layout& l = *layout;
  l.type = p[kTypeOffset];
  l.flags = p[kFlagsOffset];
  l.hlen = p[kHlenOffset];
  l.pdo = p[kPdoOffset];
  l.plen = Load32(p + kPlenOffset);
  l.info = Info(l.type);
  const bool controller = role == PduReader::Role::kController;
  if (!l.info.known || l.info.to_controller != controller) {
    return MakeError(kFesInvalidHeaderField, kTypeOffset,
                     absl::StrCat("unexpected PDU type ", Hex(l.type), " (", PduTypeName(l.type), ") for a ",
                                  controller ? "controller" : "host"));
  }
  const Kind kind = l.info.kind;
  if (kind == Kind::kIc && got_ic) {
    return MakeError(kFesPduSequenceError, 0, absl::StrCat("second ", PduTypeName(l.type)));
  }
  if (kind != Kind::kIc && kind != Kind::kTerm && !got_ic) {
    return MakeError(kFesPduSequenceError, 0,
                     absl::StrCat(PduTypeName(l.type), " before connection initialization"));
  }
  if (l.hlen != l.info.hlen) {
    return FieldError(kHlenOffset, l, absl::StrCat("hlen ", l.hlen, ", expected ", l.info.hlen));
  }

  if (kind == Kind::kIc) {
    if (l.pdo != 0) return FieldError(kPdoOffset, l, absl::StrCat("pdo ", l.pdo, ", expected 0"));
    if (l.plen != kIcSize) return FieldError(kPlenOffset, l, absl::StrCat("plen ", l.plen, ", expected 128"));
    return std::nullopt;
  }
  if (kind == Kind::kTerm) {
    // The data (the offending header) follows the header directly; PDO and the flags are not used.
    if (l.plen < kTermReqHeaderSize || l.plen > kMaxTermReqSize) {
      return FieldError(kPlenOffset, l,
                        absl::StrCat("plen ", l.plen, " outside [24, ", kMaxTermReqSize, "]"));
    }
    l.data_offset = kTermReqHeaderSize;
    l.data_length = l.plen - kTermReqHeaderSize;
    return std::nullopt;
  }

  // Capsules, data and R2T: the digest flags must follow the negotiation.
  const bool hdgstf = (l.flags & kFlagHdgst) != 0;
  const bool ddgstf = (l.flags & kFlagDdgst) != 0;
  if (hdgstf != params.hdgst) {
    return FieldError(kFlagsOffset, l,
                      params.hdgst ? "HDGSTF clear but header digests are enabled"
                                   : "HDGSTF set but header digests are not enabled");
  }
  if (ddgstf && (!params.ddgst || kind == Kind::kNoData)) {
    return FieldError(kFlagsOffset, l, "DDGSTF set on a PDU that may not carry a data digest");
  }
  if (l.type == kC2HData && (l.flags & kFlagSuccess) != 0 && (l.flags & kFlagLastPdu) == 0) {
    return FieldError(kFlagsOffset, l, "SUCCESS set without LAST_PDU");
  }
  l.header_digest = hdgstf ? kDigestSize : 0;
  const size_t header_end = l.hlen + l.header_digest;

  if (kind == Kind::kNoData) {
    if (l.pdo != 0) return FieldError(kPdoOffset, l, absl::StrCat("pdo ", l.pdo, ", expected 0"));
    if (l.plen != header_end) {
      return FieldError(kPlenOffset, l, absl::StrCat("plen ", l.plen, ", expected ", header_end));
    }
    return std::nullopt;
  }

  // Kind::kData. PDO 0: no data part at all.
  if (l.pdo == 0) {
    if (ddgstf) return FieldError(kFlagsOffset, l, "DDGSTF set on a PDU without data");
    if (l.plen < header_end) {
      return FieldError(kPlenOffset, l, absl::StrCat("plen ", l.plen, " shorter than the header"));
    }
    if (l.plen > header_end) return FieldError(kPdoOffset, l, "pdo 0 on a PDU with data");
    return std::nullopt;
  }
  const uint32_t pda = controller ? params.cpda : 0;
  const size_t expected_pdo = AlignUp(header_end, Alignment(pda));
  if (l.pdo != expected_pdo) {
    return FieldError(kPdoOffset, l, absl::StrCat("pdo ", l.pdo, ", expected ", expected_pdo));
  }
  l.data_digest = ddgstf ? kDigestSize : 0;
  if (l.plen < l.pdo + l.data_digest) {
    return FieldError(kPlenOffset, l, absl::StrCat("plen ", l.plen, " shorter than pdo and digest"));
  }
  l.data_offset = l.pdo;
  l.data_length = l.plen - l.pdo - l.data_digest;
  if (params.ddgst && l.data_length > 0 && !ddgstf) {
    return FieldError(kFlagsOffset, l, "DDGSTF clear but data digests are enabled");
  }
  if (l.data_length > max_data) {
    return MakeError(kFesDataLimitExceeded, 0,
                     absl::StrCat(PduTypeName(l.type), ": ", l.data_length, " data bytes, limit ", max_data));
  }
  return std::nullopt;
}

// Checks the type-specific header fields and the header digest; needs hlen + header digest bytes.
std::optional<ProtocolError> CheckHeader(const uint8_t* p, const Layout& l) {
  if (l.header_digest != 0) {
    const uint32_t expected = Crc32c(p, l.hlen);
    const uint32_t received = Load32(p + l.hlen);
    if (expected != received) {
      return MakeError(
          kFesHeaderDigestError, 0,
          absl::StrCat(PduTypeName(l.type), ": header digest ", Hex(received), ", computed ", Hex(expected)));
    }
  }
  switch (l.type) {
    case kIcReq:
    case kIcResp: {
      const uint16_t pfv = Load16(p + kPfvOffset);
      if (pfv != 0) return FieldError(kPfvOffset, l, absl::StrCat("unsupported pfv ", pfv));
      if (p[kPdaOffset] > kMaxPda) {
        return FieldError(
            kPdaOffset, l,
            absl::StrCat(l.type == kIcReq ? "hpda " : "cpda ", p[kPdaOffset], " above ", kMaxPda));
      }
      if (l.type == kIcResp && Load32(p + kLimitOffset) < kMinMaxH2CData) {
        return FieldError(kLimitOffset, l,
                          absl::StrCat("maxh2cdata ", Load32(p + kLimitOffset), " below ", kMinMaxH2CData));
      }
      break;
    }
    case kH2CData:
    case kC2HData: {
      const uint32_t datal = Load32(p + kDataLengthOffset);
      if (datal != l.data_length) {
        return FieldError(kDataLengthOffset, l,
                          absl::StrCat("datal ", datal, " but the PDU carries ", l.data_length, " bytes"));
      }
      break;
    }
    default: break;
  }
  return std::nullopt;
}

}  // namespace

PduReader::PduReader(Role role, uint32_t max_data) : role_(role), max_data_(max_data) {}

uint8_t* PduReader::WritableSpace(size_t min, size_t* available) {
  min = std::max<size_t>(min, 1);
  if (buffer_.size() - end_ < min) {
    const size_t unparsed = end_ - start_;
    const size_t needed = unparsed + min;
    if (pdu_in_buffer_) {
      // The last returned PDU must stay readable: move the unparsed bytes to the other buffer.
      if (spare_.size() < needed) spare_.resize(std::max({needed, buffer_.size(), kMinBufferSize}));
      if (unparsed > 0) std::memcpy(spare_.data(), buffer_.data() + start_, unparsed);
      buffer_.swap(spare_);
      pdu_in_buffer_ = false;
    } else {
      // Compact in place only when that moves no more bytes than were consumed since the last move
      // (amortised O(1) per byte); otherwise grow geometrically.
      if (start_ >= unparsed && buffer_.size() >= needed) {
        if (unparsed > 0) std::memmove(buffer_.data(), buffer_.data() + start_, unparsed);
      } else {
        std::vector<uint8_t> bigger(std::max({needed, buffer_.size() * 2, kMinBufferSize}));
        if (unparsed > 0) std::memcpy(bigger.data(), buffer_.data() + start_, unparsed);
        buffer_.swap(bigger);
      }
    }
    start_ = 0;
    end_ = unparsed;
  }
  *available = buffer_.size() - end_;
  return buffer_.data() + end_;
}

void PduReader::Commit(size_t n) {
  assert(n <= buffer_.size() - end_);
  end_ += n;
  pdu_in_buffer_ = false;
}

PduReader::Result PduReader::Next(Pdu* pdu, ProtocolError* error) {
  if (failed_) {
    *error = error_;
    return Result::kError;
  }
  pdu_in_buffer_ = false;
  if (start_ == end_) {
    start_ = end_ = 0;  // nothing buffered: receive at the front again
    return Result::kNeedMore;
  }
  const size_t available = end_ - start_;
  if (available < kCommonHeaderSize) return Result::kNeedMore;
  const uint8_t* p = buffer_.data() + start_;

  Layout layout;
  std::optional<ProtocolError> failure = CheckCommonHeader(p, role_, got_ic_, params_, max_data_, &layout);
  if (!failure && !header_checked_) {
    if (available < layout.hlen + layout.header_digest) return Result::kNeedMore;
    failure = CheckHeader(p, layout);
    header_checked_ = !failure;
  }
  if (failure) {
    const size_t echoed =
        std::min({available, std::max<size_t>(layout.hlen, kCommonHeaderSize), kMaxTermReqData});
    failure->header.assign(p, p + echoed);
    failed_ = true;
    error_ = std::move(*failure);
    *error = error_;
    return Result::kError;
  }
  if (available < layout.plen) return Result::kNeedMore;

  *pdu = Pdu{};
  pdu->type = layout.type;
  pdu->flags = layout.flags;
  pdu->hlen = layout.hlen;
  pdu->pdo = layout.pdo;
  pdu->plen = layout.plen;
  pdu->header = p;
  if (layout.data_offset != 0) {
    pdu->data = p + layout.data_offset;
    pdu->data_length = static_cast<uint32_t>(layout.data_length);
    if (layout.data_digest != 0) {
      const uint32_t received = Load32(p + layout.data_offset + layout.data_length);
      pdu->data_digest_error = Crc32c(pdu->data, layout.data_length) != received;
    }
  }
  if (layout.info.kind == Kind::kIc) got_ic_ = true;
  start_ += layout.plen;
  header_checked_ = false;
  pdu_in_buffer_ = true;
  return Result::kPdu;
}

// --- Builders ----------------------------------------------------------------------------------------

void AppendIcReq(std::vector<uint8_t>& out, uint8_t hpda, bool hdgst, bool ddgst, uint32_t maxr2t) {
  AppendIc(out, kIcReq, hpda, hdgst, ddgst, maxr2t);
}

void AppendIcResp(std::vector<uint8_t>& out, uint8_t cpda, bool hdgst, bool ddgst, uint32_t maxh2cdata) {
  AppendIc(out, kIcResp, cpda, hdgst, ddgst, maxh2cdata);
}

void AppendCapsuleCmd(std::vector<uint8_t>& out, const Params& params, const uint8_t* sqe,
                      const uint8_t* data, uint32_t length) {
  const Shape shape = DataShape(params, kCapsuleCmdHeaderSize, params.cpda, length > 0, length);
  uint8_t* p = StartPdu(out, kCapsuleCmd, 0, shape);
  std::memcpy(p + kCommonHeaderSize, sqe, kSqeSize);
  FinishPdu(p, shape, data);
}

void AppendCapsuleResp(std::vector<uint8_t>& out, const Params& params, const uint8_t* cqe) {
  const Shape shape = DataShape(params, kCapsuleRespHeaderSize, 0, false, 0);
  uint8_t* p = StartPdu(out, kCapsuleResp, 0, shape);
  std::memcpy(p + kCommonHeaderSize, cqe, kCqeSize);
  FinishPdu(p, shape, nullptr);
}

void AppendC2HData(std::vector<uint8_t>& out, const Params& params, uint16_t cccid, uint32_t offset,
                   const uint8_t* data, uint32_t length, bool last, bool success) {
  assert(!success || last);
  const Shape shape = DataShape(params, kDataHeaderSize, 0, true, length);
  const uint8_t flags = static_cast<uint8_t>((last ? kFlagLastPdu : 0) | (success ? kFlagSuccess : 0));
  uint8_t* p = StartPdu(out, kC2HData, flags, shape);
  Store16(p + kCccidOffset, cccid);
  Store32(p + kDataOffsetOffset, offset);
  Store32(p + kDataLengthOffset, length);
  FinishPdu(p, shape, data);
}

void AppendH2CData(std::vector<uint8_t>& out, const Params& params, uint16_t cccid, uint16_t ttag,
                   uint32_t offset, const uint8_t* data, uint32_t length, bool last) {
  const Shape shape = DataShape(params, kDataHeaderSize, params.cpda, true, length);
  uint8_t* p = StartPdu(out, kH2CData, last ? kFlagLastPdu : 0, shape);
  Store16(p + kCccidOffset, cccid);
  Store16(p + kTtagOffset, ttag);
  Store32(p + kDataOffsetOffset, offset);
  Store32(p + kDataLengthOffset, length);
  FinishPdu(p, shape, data);
}

void AppendR2T(std::vector<uint8_t>& out, const Params& params, uint16_t cccid, uint16_t ttag,
               uint32_t offset, uint32_t length) {
  const Shape shape = DataShape(params, kR2THeaderSize, 0, false, 0);
  uint8_t* p = StartPdu(out, kR2T, 0, shape);
  Store16(p + kCccidOffset, cccid);
  Store16(p + kTtagOffset, ttag);
  Store32(p + kDataOffsetOffset, offset);
  Store32(p + kDataLengthOffset, length);
  FinishPdu(p, shape, nullptr);
}

void AppendTermReq(std::vector<uint8_t>& out, bool from_controller, const ProtocolError& error) {
  // The echoed header follows the TermReq header directly: no PDO, never digests.
  const size_t echoed = std::min(error.header.size(), kMaxTermReqData);
  const size_t plen = kTermReqHeaderSize + echoed;
  const size_t at = out.size();
  out.resize(at + plen);
  uint8_t* p = out.data() + at;
  p[kTypeOffset] = from_controller ? kC2HTermReq : kH2CTermReq;
  p[kHlenOffset] = static_cast<uint8_t>(kTermReqHeaderSize);
  Store32(p + kPlenOffset, static_cast<uint32_t>(plen));
  Store16(p + kFesOffset, error.fes);
  // FEI is defined for these two; reserved otherwise.
  const bool has_fei = error.fes == kFesInvalidHeaderField || error.fes == kFesUnsupportedParameter;
  Store32(p + kFeiOffset, has_fei ? error.fei : 0);
  if (echoed > 0) std::memcpy(p + kTermReqHeaderSize, error.header.data(), echoed);
}

// --- Accessors ---------------------------------------------------------------------------------------

IcFields ParseIc(const Pdu& pdu) {
  const uint8_t* h = pdu.header;
  IcFields fields;
  fields.pfv = Load16(h + kPfvOffset);
  fields.pda = h[kPdaOffset];
  fields.hdgst = (h[kDgstOffset] & kDgstHdgstEnable) != 0;
  fields.ddgst = (h[kDgstOffset] & kDgstDdgstEnable) != 0;
  fields.limit = Load32(h + kLimitOffset);
  return fields;
}

DataFields ParseData(const Pdu& pdu) {
  const uint8_t* h = pdu.header;
  DataFields fields;
  fields.cccid = Load16(h + kCccidOffset);
  fields.ttag = pdu.type == kC2HData ? 0 : Load16(h + kTtagOffset);
  fields.offset = Load32(h + kDataOffsetOffset);
  fields.length = Load32(h + kDataLengthOffset);
  return fields;
}

TermFields ParseTerm(const Pdu& pdu) {
  TermFields fields;
  fields.fes = Load16(pdu.header + kFesOffset);
  fields.fei = Load32(pdu.header + kFeiOffset);
  return fields;
}

}  // namespace smad::nvme::tcp
