// Fuzzes the NVMe/TCP PDU reader (nvme/tcp_pdu.h) in both roles, before and after a digest
// negotiation. Besides "never crashes or reads out of bounds", it checks that:
//   - the PDUs and the error do not depend on how the bytes are split into receive calls;
//   - every returned PDU is self-consistent (hlen, plen, data inside the PDU, data within the limit);
//   - errors are sticky and survive the trip through a TermReq to the peer;
//   - every PDU re-encoded with the builders parses back to the same fields and data.
//
// Input layout: byte 0 configures the run (bit 0 HDGST, bit 1 DDGST, bits 2-3 pick the CPDA, bit 4 a
// small data limit, bit 5 "repair digests": recompute every digest the PDUs' flags announce, so that
// mutations get past the digest checks); the rest is the received byte stream.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "nvme/spec.h"
#include "nvme/tcp_pdu.h"

namespace smad::nvme::tcp {
namespace {

using Role = PduReader::Role;
using Result = PduReader::Result;

void Check(bool condition) {
  if (!condition) std::abort();
}

struct Parsed {
  uint8_t type = 0;
  uint8_t flags = 0;
  uint32_t plen = 0;
  std::vector<uint8_t> header;
  std::vector<uint8_t> data;
  bool data_digest_error = false;
  bool operator==(const Parsed& o) const {
    return type == o.type && flags == o.flags && plen == o.plen && header == o.header && data == o.data &&
           data_digest_error == o.data_digest_error;
  }
};

struct Run {
  std::vector<Parsed> pdus;
  bool failed = false;
  ProtocolError error;
  bool operator==(const Run& o) const {
    return pdus == o.pdus && failed == o.failed &&
           (!failed ||
            (error.fes == o.error.fes && error.fei == o.error.fei && error.message == o.error.message));
  }
};

size_t HeaderLength(uint8_t type) {
  switch (type) {
    case kIcReq:
    case kIcResp: return kIcSize;
    case kCapsuleCmd: return kCapsuleCmdHeaderSize;
    default: return 24;
  }
}

bool IsIc(uint8_t type) { return type == kIcReq || type == kIcResp; }
bool IsTerm(uint8_t type) { return type == kH2CTermReq || type == kC2HTermReq; }

// Feeds `data` to a reader of `role` in chunks drawn from a PRNG seeded with `seed` (0: one chunk),
// applying `params` after the IC PDU.
Run Parse(Role role, const Params& params, uint32_t max_data, const uint8_t* data, size_t size,
          uint64_t seed) {
  PduReader reader(role, max_data);
  Run run;
  uint64_t state = seed;
  size_t pos = 0;
  while (pos < size) {
    size_t chunk = size - pos;
    size_t min = chunk;
    if (seed != 0) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      chunk = std::min<size_t>(chunk, 1 + (state >> 33) % ((state & 1) != 0 ? 16 : 700));
      min = 1 + (state >> 20) % chunk;  // sometimes ask for less than we then write
    }
    size_t available = 0;
    uint8_t* space = reader.WritableSpace(min, &available);
    Check(available >= min);
    chunk = std::min(chunk, available);
    std::memcpy(space, data + pos, chunk);
    reader.Commit(chunk);
    pos += chunk;
    while (true) {
      Pdu pdu;
      ProtocolError error;
      const Result result = reader.Next(&pdu, &error);
      if (result == Result::kNeedMore) break;
      if (result == Result::kError) {
        Check(error.header.size() <= kMaxTermReqData);
        Check(!error.message.empty());
        ProtocolError again;
        Check(reader.Next(&pdu, &again) == Result::kError);  // sticky
        Check(again.fes == error.fes && again.fei == error.fei && again.header == error.header);
        run.failed = true;
        run.error = std::move(error);
        return run;
      }
      // Self-consistency of the PDU.
      Check(pdu.header != nullptr && pdu.header[0] == pdu.type && pdu.hlen == HeaderLength(pdu.type));
      Check(Load32(pdu.header + 4) == pdu.plen && pdu.hlen <= pdu.plen);
      if (pdu.data != nullptr) {
        Check(pdu.data >= pdu.header + pdu.hlen);
        Check(pdu.data + pdu.data_length <= pdu.header + pdu.plen);
        Check(pdu.data_length <= (IsTerm(pdu.type) ? kMaxTermReqData : max_data));
      } else {
        Check(pdu.data_length == 0);
      }
      Parsed parsed;
      parsed.type = pdu.type;
      parsed.flags = pdu.flags;
      parsed.plen = pdu.plen;
      parsed.header.assign(pdu.header, pdu.header + pdu.hlen);
      if (pdu.data != nullptr) parsed.data.assign(pdu.data, pdu.data + pdu.data_length);
      parsed.data_digest_error = pdu.data_digest_error;
      run.pdus.push_back(std::move(parsed));
      if (IsIc(pdu.type)) reader.SetParams(params);
    }
  }
  Check(reader.buffered() <= size);
  return run;
}

// Parses `stream` (an IC PDU and one more PDU, built by the builders) with a reader of `role`; returns
// the second PDU, which must parse cleanly.
Parsed Reparse(Role role, const Params& params, const std::vector<uint8_t>& stream) {
  const Run run = Parse(role, params, 1u << 24, stream.data(), stream.size(), 0);
  Check(!run.failed && run.pdus.size() == 2);
  Check(!run.pdus[1].data_digest_error);
  return run.pdus[1];
}

std::vector<uint8_t> IcFor(Role role, const Params& params) {
  std::vector<uint8_t> out;
  if (role == Role::kController) {
    AppendIcReq(out, 0, params.hdgst, params.ddgst, 0);
  } else {
    AppendIcResp(out, static_cast<uint8_t>(params.cpda), params.hdgst, params.ddgst, 1u << 17);
  }
  return out;
}

Pdu View(const Parsed& parsed) {
  Pdu pdu;
  pdu.type = parsed.type;
  pdu.flags = parsed.flags;
  pdu.hlen = static_cast<uint8_t>(parsed.header.size());
  pdu.plen = parsed.plen;
  pdu.header = parsed.header.data();
  pdu.data = parsed.data.data();
  pdu.data_length = static_cast<uint32_t>(parsed.data.size());
  return pdu;
}

// Re-encodes `parsed` with the builders (using `params` for digests and alignment) and checks that the
// result parses back to the same content.
void Reencode(Role role, const Params& params, const Parsed& parsed) {
  const Pdu pdu = View(parsed);
  std::vector<uint8_t> stream = IcFor(role, params);
  const uint8_t* data = parsed.data.data();
  const uint32_t length = static_cast<uint32_t>(parsed.data.size());
  switch (parsed.type) {
    case kIcReq:
    case kIcResp: {
      const IcFields fields = ParseIc(pdu);
      std::vector<uint8_t> out;
      if (parsed.type == kIcReq) {
        AppendIcReq(out, fields.pda, fields.hdgst, fields.ddgst, fields.limit);
      } else {
        AppendIcResp(out, fields.pda, fields.hdgst, fields.ddgst, fields.limit);
      }
      const Run run = Parse(role, params, 0, out.data(), out.size(), 0);
      Check(!run.failed && run.pdus.size() == 1);
      const IcFields again = ParseIc(View(run.pdus[0]));
      Check(again.pfv == fields.pfv && again.pda == fields.pda && again.hdgst == fields.hdgst &&
            again.ddgst == fields.ddgst && again.limit == fields.limit);
      return;
    }
    case kCapsuleCmd: AppendCapsuleCmd(stream, params, parsed.header.data() + 8, data, length); break;
    case kCapsuleResp: AppendCapsuleResp(stream, params, parsed.header.data() + 8); break;
    case kH2CData:
    case kC2HData:
    case kR2T: {
      const DataFields fields = ParseData(pdu);
      if (parsed.type == kR2T) {
        AppendR2T(stream, params, fields.cccid, fields.ttag, fields.offset, fields.length);
      } else if (parsed.type == kH2CData) {
        AppendH2CData(stream, params, fields.cccid, fields.ttag, fields.offset, data, length,
                      (parsed.flags & kFlagLastPdu) != 0);
      } else {
        AppendC2HData(stream, params, fields.cccid, fields.offset, data, length,
                      (parsed.flags & kFlagLastPdu) != 0, (parsed.flags & kFlagSuccess) != 0);
      }
      const Parsed again = Reparse(role, params, stream);
      const DataFields fields_again = ParseData(View(again));
      Check(fields_again.cccid == fields.cccid && fields_again.ttag == fields.ttag &&
            fields_again.offset == fields.offset && fields_again.length == fields.length);
      Check(again.data == parsed.data);
      // Flags other than the digest ones: LAST_PDU on data PDUs, SUCCESS on C2HData; reserved elsewhere.
      const uint8_t meaningful = parsed.type == kC2HData   ? (kFlagLastPdu | kFlagSuccess)
                                 : parsed.type == kH2CData ? kFlagLastPdu
                                                           : 0;
      Check((again.flags & meaningful) == (parsed.flags & meaningful));
      return;
    }
    case kH2CTermReq:
    case kC2HTermReq: {
      const TermFields fields = ParseTerm(pdu);
      ProtocolError error;
      error.fes = fields.fes;
      error.fei = fields.fei;
      error.header = parsed.data;
      AppendTermReq(stream, parsed.type == kC2HTermReq, error);
      const Parsed again = Reparse(role, params, stream);
      const TermFields fields_again = ParseTerm(View(again));
      Check(again.type == parsed.type && again.data == parsed.data && fields_again.fes == fields.fes);
      const bool has_fei = fields.fes == kFesInvalidHeaderField || fields.fes == kFesUnsupportedParameter;
      Check(fields_again.fei == (has_fei ? fields.fei : 0));
      return;
    }
    default: std::abort();  // the reader returned a type it should have refused
  }
  const Parsed again = Reparse(role, params, stream);
  Check(again.type == parsed.type && again.data == parsed.data);
  Check(std::vector<uint8_t>(again.header.begin() + 8, again.header.end()) ==
        std::vector<uint8_t>(parsed.header.begin() + 8, parsed.header.end()));
}

// A reader's error, sent as a TermReq, must reach the peer with its FES, FEI and echoed header.
void CheckTermReq(Role role, const ProtocolError& error) {
  const bool from_controller = role == Role::kController;
  std::vector<uint8_t> out;
  AppendTermReq(out, from_controller, error);
  const Run run =
      Parse(from_controller ? Role::kHost : Role::kController, Params{}, 0, out.data(), out.size(), 0);
  Check(!run.failed && run.pdus.size() == 1);
  const TermFields fields = ParseTerm(View(run.pdus[0]));
  Check(fields.fes == error.fes && run.pdus[0].data == error.header);
  const bool has_fei = error.fes == kFesInvalidHeaderField || error.fes == kFesUnsupportedParameter;
  Check(fields.fei == (has_fei ? error.fei : 0));
}

// Walks the PDUs of `bytes` by their plen and rewrites the header and data digests their flags announce.
void RepairDigests(std::vector<uint8_t>& bytes) {
  size_t pos = 0;
  while (pos + kCommonHeaderSize <= bytes.size()) {
    uint8_t* p = bytes.data() + pos;
    const size_t plen = Load32(p + 4);
    const size_t hlen = p[2];
    const size_t pdo = p[3];
    if (plen < kCommonHeaderSize || plen > bytes.size() - pos) break;
    if ((p[1] & kFlagHdgst) != 0 && hlen + kDigestSize <= plen) Store32(p + hlen, Crc32c(p, hlen));
    if ((p[1] & kFlagDdgst) != 0 && pdo != 0 && pdo + kDigestSize <= plen) {
      Store32(p + plen - kDigestSize, Crc32c(p + pdo, plen - kDigestSize - pdo));
    }
    pos += plen;
  }
}

// `input` is the configuration byte and the stream (at least the configuration byte).
void FuzzOne(const uint8_t* input, size_t input_size) {
  const uint8_t config = input[0];
  std::vector<uint8_t> bytes(input + 1, input + input_size);
  if ((config & 0x20) != 0) RepairDigests(bytes);
  const uint8_t* data = bytes.data();
  const size_t size = bytes.size();
  static constexpr uint32_t kCpdas[] = {0, 1, 3, 31};
  Params negotiated;
  negotiated.hdgst = (config & 0x01) != 0;
  negotiated.ddgst = (config & 0x02) != 0;
  negotiated.cpda = kCpdas[(config >> 2) & 3];
  negotiated.maxh2cdata = 1u << 17;
  const uint32_t max_data = (config & 0x10) != 0 ? 512 : 1u << 17;

  uint64_t hash = 1469598103934665603ull;  // FNV-1a: a chunking that is stable for a given input
  for (size_t i = 0; i < size; ++i) hash = (hash ^ data[i]) * 1099511628211ull;

  for (Role role : {Role::kController, Role::kHost}) {
    for (const Params& params : {Params{}, negotiated}) {
      const Run whole = Parse(role, params, max_data, data, size, 0);
      Check(Parse(role, params, max_data, data, size, hash | 1) == whole);
      for (const Parsed& pdu : whole.pdus) Reencode(role, params, pdu);
      if (whole.failed) CheckTermReq(role, whole.error);
    }
  }
}

}  // namespace
}  // namespace smad::nvme::tcp

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 0) smad::nvme::tcp::FuzzOne(data, size);
  return 0;
}
