#pragma once

// NVMe/TCP transport PDUs (NVMe over Fabrics TCP transport binding): the incremental, validating reader
// both sides use for received bytes, and builders for every PDU. No I/O here: callers own sockets.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace smad::nvme::tcp {

enum PduType : uint8_t {
  kIcReq = 0x00,
  kIcResp = 0x01,
  kH2CTermReq = 0x02,
  kC2HTermReq = 0x03,
  kCapsuleCmd = 0x04,
  kCapsuleResp = 0x05,
  kH2CData = 0x06,
  kC2HData = 0x07,
  kR2T = 0x09,
};
const char* PduTypeName(uint8_t type);

// Common header flags.
inline constexpr uint8_t kFlagHdgst = 0x01;
inline constexpr uint8_t kFlagDdgst = 0x02;
inline constexpr uint8_t kFlagLastPdu = 0x04;  // C2HData, H2CData
inline constexpr uint8_t kFlagSuccess = 0x08;  // C2HData: the command completed, no CapsuleResp follows

// Header lengths (hlen) per type, including the 8-byte common header.
inline constexpr size_t kCommonHeaderSize = 8;
inline constexpr size_t kIcSize = 128;  // ICReq and ICResp
inline constexpr size_t kTermReqHeaderSize = 24;
inline constexpr size_t kCapsuleCmdHeaderSize = 72;
inline constexpr size_t kCapsuleRespHeaderSize = 24;
inline constexpr size_t kDataHeaderSize = 24;  // H2CData, C2HData
inline constexpr size_t kR2THeaderSize = 24;
inline constexpr size_t kDigestSize = 4;
inline constexpr size_t kMaxTermReqData = 128;  // bytes of the offending PDU header echoed back
inline constexpr size_t kMaxTermReqSize = kTermReqHeaderSize + kMaxTermReqData;  // largest TermReq plen

// Fatal error status (FES) of a termination request.
inline constexpr uint16_t kFesInvalidHeaderField = 0x01;
inline constexpr uint16_t kFesPduSequenceError = 0x02;
inline constexpr uint16_t kFesHeaderDigestError = 0x03;
inline constexpr uint16_t kFesDataOutOfRange = 0x04;
inline constexpr uint16_t kFesDataLimitExceeded = 0x05;
inline constexpr uint16_t kFesUnsupportedParameter = 0x06;

// CRC32C (Castagnoli) as the header and data digests use it: initial value ~0, final xor ~0.
uint32_t Crc32c(const void* data, size_t size);
// Incremental form: start with crc = 0xffffffff, feed pieces, finish with ~crc.
uint32_t Crc32cUpdate(uint32_t crc, const void* data, size_t size);

// What the connection negotiated in ICReq/ICResp; both sides use it for sending and receiving.
struct Params {
  bool hdgst = false;
  bool ddgst = false;
  uint32_t cpda = 0;         // controller PDU data alignment, in 4-byte units minus one (0: none)
  uint32_t maxh2cdata = 0;   // max data bytes per H2CData PDU (from ICResp)
  uint32_t max_in_capsule = 0;  // bytes of in-capsule data the controller accepts (0: none)
};

// One received PDU. `header` points at the common header (hlen bytes, digest excluded); `data` at the
// PDU data (digests and padding excluded; nullptr when the PDU has no data part). Valid until the next
// call to PduReader::Next or Commit (WritableSpace keeps it valid).
struct Pdu {
  uint8_t type = 0;
  uint8_t flags = 0;
  uint8_t hlen = 0;
  uint8_t pdo = 0;
  uint32_t plen = 0;
  const uint8_t* header = nullptr;
  const uint8_t* data = nullptr;
  uint32_t data_length = 0;
  // The PDU carried a data digest that does not match its data. Not fatal: a controller completes the
  // command with a transient transport error, a host fails the command; the stream stays in sync.
  bool data_digest_error = false;
};

// A fatal protocol error: the receiver sends a termination request with `fes` and `fei` (the byte
// offset of the offending field for kFesInvalidHeaderField) and closes the connection.
struct ProtocolError {
  uint16_t fes = kFesInvalidHeaderField;
  uint32_t fei = 0;
  std::string message;
  // The offending PDU's header bytes (at most kMaxTermReqData) to echo in the termination request.
  std::vector<uint8_t> header;
};

// Splits received bytes into PDUs and validates each: a type the receiving role may get, the hlen of
// that type, pdo/plen consistent with hlen, digests, data length within `max_data` (plus the digest
// and padding), and, once negotiated, the header and data digests. The first PDU must be ICReq (for a
// controller) or ICResp (for a host); a second IC PDU is a sequence error.
//
// Usage: write received bytes into WritableSpace(), Commit(n), then call Next() until it returns
// kNeedMore. Thread compatible.
class PduReader {
 public:
  enum class Role { kController, kHost };
  enum class Result { kPdu, kNeedMore, kError };

  // `max_data` bounds the data of any one PDU (in-capsule data, H2C/C2HData chunk).
  PduReader(Role role, uint32_t max_data);

  // Called once the IC exchange completed: enables digest checking as negotiated.
  void SetParams(const Params& params) { params_ = params; negotiated_ = true; }
  const Params& params() const { return params_; }

  // At least `min` bytes of contiguous space to receive into (grows or compacts the buffer).
  uint8_t* WritableSpace(size_t min, size_t* available);
  void Commit(size_t n);

  // Parses the next PDU. kPdu fills `pdu`; kError fills `error` (the reader stays in error).
  Result Next(Pdu* pdu, ProtocolError* error);
  size_t buffered() const { return end_ - start_; }

 private:
  Role role_;
  uint32_t max_data_;
  Params params_;
  bool negotiated_ = false;
  bool got_ic_ = false;
  bool failed_ = false;
  bool header_checked_ = false;  // the header (and digest) of the PDU at start_ passed its checks
  ProtocolError error_;          // the error once failed_
  std::vector<uint8_t> buffer_;
  size_t start_ = 0;  // first unparsed byte
  size_t end_ = 0;    // one past the last received byte
  // The last PDU returned by Next stays readable until the next Next/Commit: while it lives in
  // buffer_, WritableSpace moves the unparsed bytes into spare_ (and swaps) instead of compacting.
  std::vector<uint8_t> spare_;
  bool pdu_in_buffer_ = false;
};

// --- Builders: each appends one complete PDU (with digests per `params`) to `out` ---------------------
void AppendIcReq(std::vector<uint8_t>& out, uint8_t hpda, bool hdgst, bool ddgst, uint32_t maxr2t);
void AppendIcResp(std::vector<uint8_t>& out, uint8_t cpda, bool hdgst, bool ddgst, uint32_t maxh2cdata);
// A command capsule; `data`/`length` is in-capsule data (may be empty).
void AppendCapsuleCmd(std::vector<uint8_t>& out, const Params& params, const uint8_t* sqe, const uint8_t* data,
                      uint32_t length);
void AppendCapsuleResp(std::vector<uint8_t>& out, const Params& params, const uint8_t* cqe);
// Controller-to-host data for command `cccid`: `length` bytes at `offset` of the command's data.
void AppendC2HData(std::vector<uint8_t>& out, const Params& params, uint16_t cccid, uint32_t offset,
                   const uint8_t* data, uint32_t length, bool last, bool success);
void AppendH2CData(std::vector<uint8_t>& out, const Params& params, uint16_t cccid, uint16_t ttag,
                   uint32_t offset, const uint8_t* data, uint32_t length, bool last);
void AppendR2T(std::vector<uint8_t>& out, const Params& params, uint16_t cccid, uint16_t ttag, uint32_t offset,
               uint32_t length);
// H2CTermReq (host) or C2HTermReq (controller) carrying `error`.
void AppendTermReq(std::vector<uint8_t>& out, bool from_controller, const ProtocolError& error);

// Accessors for received PDU headers (byte offsets per the TCP transport binding).
struct IcFields {
  uint16_t pfv;
  uint8_t pda;      // ICReq: hpda; ICResp: cpda
  bool hdgst;
  bool ddgst;
  uint32_t limit;   // ICReq: maxr2t; ICResp: maxh2cdata
};
IcFields ParseIc(const Pdu& pdu);
struct DataFields {
  uint16_t cccid;
  uint16_t ttag;     // H2CData and R2T
  uint32_t offset;   // datao / r2to
  uint32_t length;   // datal / r2tl
};
DataFields ParseData(const Pdu& pdu);  // H2CData, C2HData, R2T
struct TermFields {
  uint16_t fes;
  uint32_t fei;
};
TermFields ParseTerm(const Pdu& pdu);

}  // namespace smad::nvme::tcp
