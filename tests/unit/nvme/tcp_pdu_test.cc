#include "nvme/tcp_pdu.h"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstring>
#include <limits>
#include <ostream>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nvme/spec.h"
#include "unit/nvme/test_files.h"

namespace smad::nvme::tcp {
namespace {

using Role = PduReader::Role;
using Result = PduReader::Result;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr uint32_t kMaxData = 128 * 1024;
constexpr size_t kAllAtOnce = std::numeric_limits<size_t>::max();
constexpr size_t kRandomChunks = 0;

// A received PDU, copied out of the reader.
struct Parsed {
  uint8_t type = 0;
  uint8_t flags = 0;
  uint8_t pdo = 0;
  uint32_t plen = 0;
  std::vector<uint8_t> header;
  std::vector<uint8_t> data;
  bool has_data = false;
  bool data_digest_error = false;

  bool operator==(const Parsed& other) const {
    return std::tie(type, flags, pdo, plen, header, data, has_data, data_digest_error) ==
           std::tie(other.type, other.flags, other.pdo, other.plen, other.header, other.data, other.has_data,
                    other.data_digest_error);
  }
};

Parsed Copy(const Pdu& pdu) {
  Parsed parsed;
  parsed.type = pdu.type;
  parsed.flags = pdu.flags;
  parsed.pdo = pdu.pdo;
  parsed.plen = pdu.plen;
  parsed.header.assign(pdu.header, pdu.header + pdu.hlen);
  parsed.has_data = pdu.data != nullptr;
  if (pdu.data != nullptr) parsed.data.assign(pdu.data, pdu.data + pdu.data_length);
  EXPECT_TRUE(pdu.data != nullptr || pdu.data_length == 0);
  parsed.data_digest_error = pdu.data_digest_error;
  return parsed;
}

struct Outcome {
  std::vector<Parsed> pdus;
  Result last = Result::kNeedMore;
  ProtocolError error;
  size_t buffered = 0;
};

// Feeds `bytes` to a new reader in pieces of `chunk` bytes (kRandomChunks: pseudo-random sizes,
// kAllAtOnce: one piece) and collects every PDU until the end or the first error. `params` is applied
// once the IC PDU has been returned, as a connection does after the exchange.
Outcome Read(Role role, const std::vector<uint8_t>& bytes, const Params& params, size_t chunk = kAllAtOnce,
             uint32_t max_data = kMaxData) {
  PduReader reader(role, max_data);
  Outcome outcome;
  std::mt19937 rng(static_cast<uint32_t>(bytes.size()));
  size_t pos = 0;
  while (pos < bytes.size()) {
    size_t piece = chunk == kAllAtOnce ? bytes.size() : chunk == kRandomChunks ? 1 + rng() % 3000 : chunk;
    piece = std::min(piece, bytes.size() - pos);
    size_t available = 0;
    uint8_t* space = reader.WritableSpace(piece, &available);
    EXPECT_GE(available, piece);
    std::memcpy(space, bytes.data() + pos, piece);
    reader.Commit(piece);
    pos += piece;
    while (true) {
      Pdu pdu;
      ProtocolError error;
      outcome.last = reader.Next(&pdu, &error);
      if (outcome.last == Result::kPdu) {
        outcome.pdus.push_back(Copy(pdu));
        if (pdu.type == kIcReq || pdu.type == kIcResp) reader.SetParams(params);
        continue;
      }
      if (outcome.last == Result::kError) {
        outcome.error = error;
        outcome.buffered = reader.buffered();
        return outcome;
      }
      break;
    }
  }
  outcome.buffered = reader.buffered();
  return outcome;
}

std::vector<uint8_t> IcReq(bool hdgst = false, bool ddgst = false) {
  std::vector<uint8_t> out;
  AppendIcReq(out, 0, hdgst, ddgst, 0);
  return out;
}

std::vector<uint8_t> IcResp(uint8_t cpda = 0, bool hdgst = false, bool ddgst = false) {
  std::vector<uint8_t> out;
  AppendIcResp(out, cpda, hdgst, ddgst, kMaxData);
  return out;
}

std::vector<uint8_t> Pattern(size_t size, uint8_t seed = 0) {
  std::vector<uint8_t> bytes(size);
  for (size_t i = 0; i < size; ++i) bytes[i] = static_cast<uint8_t>(seed + i * 7 + (i >> 8));
  return bytes;
}

std::vector<uint8_t> Sqe(uint8_t opcode, uint16_t cid) {
  std::vector<uint8_t> sqe(kSqeSize);
  CommandBuilder::Init(sqe.data(), opcode, cid, 1);
  return sqe;
}

std::vector<uint8_t> Cqe(uint16_t cid) {
  std::vector<uint8_t> cqe(kCqeSize, 0);
  Store16(cqe.data() + 12, cid);
  return cqe;
}

Params MakeParams(bool hdgst, bool ddgst, uint32_t cpda = 0) {
  Params params;
  params.hdgst = hdgst;
  params.ddgst = ddgst;
  params.cpda = cpda;
  params.maxh2cdata = kMaxData;
  return params;
}

size_t AlignUp(size_t value, size_t alignment) { return (value + alignment - 1) / alignment * alignment; }

std::vector<uint8_t> Concat(std::vector<uint8_t> a, const std::vector<uint8_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// --- Round trips -------------------------------------------------------------------------------------

TEST(PduTypeNameTest, Names) {
  EXPECT_STREQ(PduTypeName(kIcReq), "ICReq");
  EXPECT_STREQ(PduTypeName(kR2T), "R2T");
  EXPECT_STREQ(PduTypeName(0x08), "unknown");
}

TEST(TcpPduRoundTripTest, IcReqAndIcResp) {
  std::vector<uint8_t> req;
  AppendIcReq(req, 3, true, false, 15);
  ASSERT_EQ(req.size(), kIcSize);
  Outcome controller = Read(Role::kController, req, Params{});
  ASSERT_EQ(controller.last, Result::kNeedMore);
  ASSERT_EQ(controller.pdus.size(), 1u);
  const Parsed& ic = controller.pdus[0];
  EXPECT_EQ(ic.type, kIcReq);
  EXPECT_EQ(ic.plen, kIcSize);
  EXPECT_FALSE(ic.has_data);
  Pdu pdu;
  pdu.type = ic.type;
  pdu.hlen = static_cast<uint8_t>(ic.header.size());
  pdu.header = ic.header.data();
  IcFields fields = ParseIc(pdu);
  EXPECT_EQ(fields.pfv, 0);
  EXPECT_EQ(fields.pda, 3);
  EXPECT_TRUE(fields.hdgst);
  EXPECT_FALSE(fields.ddgst);
  EXPECT_EQ(fields.limit, 15u);

  std::vector<uint8_t> resp;
  AppendIcResp(resp, 31, false, true, 131072);
  Outcome host = Read(Role::kHost, resp, Params{});
  ASSERT_EQ(host.pdus.size(), 1u);
  pdu.type = host.pdus[0].type;
  pdu.header = host.pdus[0].header.data();
  fields = ParseIc(pdu);
  EXPECT_EQ(host.pdus[0].type, kIcResp);
  EXPECT_EQ(fields.pda, 31);
  EXPECT_FALSE(fields.hdgst);
  EXPECT_TRUE(fields.ddgst);
  EXPECT_EQ(fields.limit, 131072u);
}

struct DigestCase {
  bool hdgst;
  bool ddgst;
  uint32_t cpda;
};

class TcpPduDigestTest : public ::testing::TestWithParam<DigestCase> {};

TEST_P(TcpPduDigestTest, CapsuleCmdWithAndWithoutData) {
  const DigestCase c = GetParam();
  const Params params = MakeParams(c.hdgst, c.ddgst, c.cpda);
  const size_t hd = c.hdgst ? kDigestSize : 0;
  const size_t dd = c.ddgst ? kDigestSize : 0;
  std::vector<uint8_t> stream = IcReq(c.hdgst, c.ddgst);
  const std::vector<uint32_t> lengths = {0, 1, 13, 4096, 8192};
  for (uint32_t i = 0; i < lengths.size(); ++i) {
    const std::vector<uint8_t> sqe = Sqe(io::kWrite, static_cast<uint16_t>(i));
    const std::vector<uint8_t> data = Pattern(lengths[i], static_cast<uint8_t>(i));
    AppendCapsuleCmd(stream, params, sqe.data(), data.data(), lengths[i]);
  }
  for (size_t chunk : {kAllAtOnce, size_t{1}, size_t{5}, kRandomChunks}) {
    SCOPED_TRACE(chunk);
    const Outcome outcome = Read(Role::kController, stream, params, chunk);
    ASSERT_EQ(outcome.last, Result::kNeedMore) << outcome.error.message;
    EXPECT_EQ(outcome.buffered, 0u);
    ASSERT_EQ(outcome.pdus.size(), lengths.size() + 1);
    for (uint32_t i = 0; i < lengths.size(); ++i) {
      const Parsed& pdu = outcome.pdus[i + 1];
      EXPECT_EQ(pdu.type, kCapsuleCmd);
      EXPECT_EQ(pdu.header.size(), kCapsuleCmdHeaderSize);
      EXPECT_EQ(std::vector<uint8_t>(pdu.header.begin() + 8, pdu.header.end()), Sqe(io::kWrite, i));
      EXPECT_FALSE(pdu.data_digest_error);
      EXPECT_EQ((pdu.flags & kFlagHdgst) != 0, c.hdgst);
      if (lengths[i] == 0) {
        EXPECT_EQ(pdu.pdo, 0);
        EXPECT_EQ(pdu.plen, kCapsuleCmdHeaderSize + hd);
        EXPECT_FALSE(pdu.has_data);
        EXPECT_EQ(pdu.flags & kFlagDdgst, 0);
      } else {
        const size_t pdo = AlignUp(kCapsuleCmdHeaderSize + hd, (c.cpda + 1) * 4);
        EXPECT_EQ(pdu.pdo, pdo);
        EXPECT_EQ(pdu.plen, pdo + lengths[i] + dd);
        EXPECT_EQ((pdu.flags & kFlagDdgst) != 0, c.ddgst);
        EXPECT_EQ(pdu.data, Pattern(lengths[i], static_cast<uint8_t>(i)));
      }
    }
  }
}

TEST_P(TcpPduDigestTest, DataTransferPdus) {
  const DigestCase c = GetParam();
  const Params params = MakeParams(c.hdgst, c.ddgst, c.cpda);
  const size_t hd = c.hdgst ? kDigestSize : 0;
  const std::vector<uint8_t> payload = Pattern(5000, 9);

  // Controller to host: R2T, C2HData (with and without SUCCESS), CapsuleResp.
  std::vector<uint8_t> c2h = IcResp(static_cast<uint8_t>(c.cpda), c.hdgst, c.ddgst);
  AppendR2T(c2h, params, 7, 0x1234, 4096, 8192);
  AppendC2HData(c2h, params, 8, 0, payload.data(), 4096, false, false);
  AppendC2HData(c2h, params, 8, 4096, payload.data() + 4096, 904, true, true);
  AppendC2HData(c2h, params, 9, 0, payload.data(), 1, true, false);
  const std::vector<uint8_t> cqe = Cqe(9);
  AppendCapsuleResp(c2h, params, cqe.data());
  for (size_t chunk : {kAllAtOnce, size_t{1}, kRandomChunks}) {
    const Outcome host = Read(Role::kHost, c2h, params, chunk);
    ASSERT_EQ(host.last, Result::kNeedMore) << host.error.message;
    ASSERT_EQ(host.pdus.size(), 6u);
    EXPECT_EQ(host.buffered, 0u);
    const Parsed& r2t = host.pdus[1];
    EXPECT_EQ(r2t.type, kR2T);
    EXPECT_EQ(r2t.pdo, 0);
    EXPECT_EQ(r2t.plen, kR2THeaderSize + hd);
    Pdu view;
    view.type = r2t.type;
    view.header = r2t.header.data();
    DataFields fields = ParseData(view);
    EXPECT_EQ(fields.cccid, 7);
    EXPECT_EQ(fields.ttag, 0x1234);
    EXPECT_EQ(fields.offset, 4096u);
    EXPECT_EQ(fields.length, 8192u);

    const Parsed& first = host.pdus[2];
    EXPECT_EQ(first.type, kC2HData);
    EXPECT_EQ(first.pdo, kDataHeaderSize + hd);  // no host alignment: hosts advertise HPDA 0
    EXPECT_EQ(first.flags & (kFlagLastPdu | kFlagSuccess), 0);
    EXPECT_EQ(first.data, std::vector<uint8_t>(payload.begin(), payload.begin() + 4096));
    view.type = first.type;
    view.header = first.header.data();
    fields = ParseData(view);
    EXPECT_EQ(fields.cccid, 8);
    EXPECT_EQ(fields.offset, 0u);
    EXPECT_EQ(fields.length, 4096u);
    const Parsed& second = host.pdus[3];
    EXPECT_EQ(second.flags & (kFlagLastPdu | kFlagSuccess), kFlagLastPdu | kFlagSuccess);
    EXPECT_EQ(second.data, std::vector<uint8_t>(payload.begin() + 4096, payload.end()));
    EXPECT_EQ(host.pdus[4].data.size(), 1u);
    EXPECT_EQ(host.pdus[4].flags & (kFlagLastPdu | kFlagSuccess), kFlagLastPdu);
    const Parsed& resp = host.pdus[5];
    EXPECT_EQ(resp.type, kCapsuleResp);
    EXPECT_EQ(resp.plen, kCapsuleRespHeaderSize + hd);
    EXPECT_EQ(std::vector<uint8_t>(resp.header.begin() + 8, resp.header.end()), cqe);
  }

  // Host to controller: H2CData, aligned per CPDA.
  std::vector<uint8_t> h2c = IcReq(c.hdgst, c.ddgst);
  AppendH2CData(h2c, params, 7, 0x1234, 4096, payload.data(), 4096, false);
  AppendH2CData(h2c, params, 7, 0x1234, 8192, payload.data() + 4096, 904, true);
  for (size_t chunk : {kAllAtOnce, size_t{3}, kRandomChunks}) {
    const Outcome controller = Read(Role::kController, h2c, params, chunk);
    ASSERT_EQ(controller.last, Result::kNeedMore) << controller.error.message;
    ASSERT_EQ(controller.pdus.size(), 3u);
    const Parsed& data = controller.pdus[1];
    EXPECT_EQ(data.type, kH2CData);
    EXPECT_EQ(data.pdo, AlignUp(kDataHeaderSize + hd, (c.cpda + 1) * 4));
    EXPECT_EQ(data.data, std::vector<uint8_t>(payload.begin(), payload.begin() + 4096));
    Pdu view;
    view.type = data.type;
    view.header = data.header.data();
    const DataFields fields = ParseData(view);
    EXPECT_EQ(fields.cccid, 7);
    EXPECT_EQ(fields.ttag, 0x1234);
    EXPECT_EQ(fields.offset, 4096u);
    EXPECT_EQ(fields.length, 4096u);
    EXPECT_EQ(controller.pdus[2].flags & kFlagLastPdu, kFlagLastPdu);
    EXPECT_EQ(controller.pdus[2].data.size(), 904u);
  }
}

INSTANTIATE_TEST_SUITE_P(Digests, TcpPduDigestTest,
                         ::testing::Values(DigestCase{false, false, 0}, DigestCase{true, false, 0},
                                           DigestCase{false, true, 0}, DigestCase{true, true, 0},
                                           DigestCase{false, false, 1}, DigestCase{true, true, 3},
                                           DigestCase{true, false, 7}, DigestCase{true, true, 31}));

TEST(TcpPduRoundTripTest, TermReqBothDirections) {
  ProtocolError error;
  error.fes = kFesInvalidHeaderField;
  error.fei = 2;
  error.header = Pattern(200);
  std::vector<uint8_t> c2h;
  AppendTermReq(c2h, /*from_controller=*/true, error);
  ASSERT_EQ(c2h.size(), kMaxTermReqSize);  // the echo is cut at 128 bytes
  // A controller may reject the ICReq: the host accepts a TermReq before any ICResp.
  const Outcome host = Read(Role::kHost, c2h, Params{});
  ASSERT_EQ(host.last, Result::kNeedMore) << host.error.message;
  ASSERT_EQ(host.pdus.size(), 1u);
  EXPECT_EQ(host.pdus[0].type, kC2HTermReq);
  EXPECT_EQ(host.pdus[0].data, std::vector<uint8_t>(error.header.begin(), error.header.begin() + 128));
  Pdu view;
  view.type = host.pdus[0].type;
  view.header = host.pdus[0].header.data();
  EXPECT_EQ(ParseTerm(view).fes, kFesInvalidHeaderField);
  EXPECT_EQ(ParseTerm(view).fei, 2u);

  // FEI is reserved for other errors; a TermReq after IC, with digests on, carries none.
  error.fes = kFesHeaderDigestError;
  error.fei = 77;
  error.header = Pattern(24);
  std::vector<uint8_t> h2c = IcReq(true, true);
  AppendTermReq(h2c, /*from_controller=*/false, error);
  ASSERT_EQ(h2c.size(), kIcSize + kTermReqHeaderSize + 24);
  const Outcome controller = Read(Role::kController, h2c, MakeParams(true, true));
  ASSERT_EQ(controller.last, Result::kNeedMore) << controller.error.message;
  ASSERT_EQ(controller.pdus.size(), 2u);
  EXPECT_EQ(controller.pdus[1].type, kH2CTermReq);
  view.type = controller.pdus[1].type;
  view.header = controller.pdus[1].header.data();
  EXPECT_EQ(ParseTerm(view).fes, kFesHeaderDigestError);
  EXPECT_EQ(ParseTerm(view).fei, 0u);
  EXPECT_EQ(controller.pdus[1].data, error.header);
}

// --- Streaming -----------------------------------------------------------------------------------------

// A long host-to-controller stream with every kind of PDU the controller receives.
std::vector<uint8_t> MixedHostStream(const Params& params, int count) {
  std::vector<uint8_t> stream = IcReq(params.hdgst, params.ddgst);
  std::mt19937 rng(5);
  for (int i = 0; i < count; ++i) {
    const uint32_t length = rng() % 3 == 0 ? 0 : rng() % 9000;
    const std::vector<uint8_t> data = Pattern(length, static_cast<uint8_t>(i));
    const std::vector<uint8_t> sqe = Sqe(i % 2 == 0 ? io::kWrite : io::kRead, static_cast<uint16_t>(i));
    if (rng() % 2 == 0) {
      AppendCapsuleCmd(stream, params, sqe.data(), data.data(), length);
    } else {
      AppendH2CData(stream, params, static_cast<uint16_t>(i), 3, 0, data.data(), length, true);
    }
  }
  return stream;
}

TEST(TcpPduStreamTest, ChunkingDoesNotChangeTheResult) {
  for (const Params& params : {MakeParams(false, false), MakeParams(true, true, 2)}) {
    const std::vector<uint8_t> stream = MixedHostStream(params, 200);
    const Outcome whole = Read(Role::kController, stream, params);
    ASSERT_EQ(whole.last, Result::kNeedMore) << whole.error.message;
    ASSERT_EQ(whole.pdus.size(), 201u);
    EXPECT_EQ(whole.buffered, 0u);
    for (size_t chunk : {size_t{1}, size_t{2}, size_t{7}, size_t{64}, size_t{4096}, kRandomChunks}) {
      SCOPED_TRACE(chunk);
      const Outcome pieces = Read(Role::kController, stream, params, chunk);
      ASSERT_EQ(pieces.last, Result::kNeedMore);
      ASSERT_EQ(pieces.pdus.size(), whole.pdus.size());
      for (size_t i = 0; i < whole.pdus.size(); ++i) ASSERT_EQ(pieces.pdus[i], whole.pdus[i]) << i;
    }
  }
}

TEST(TcpPduStreamTest, IncompletePduWaitsForMoreBytes) {
  const Params params = MakeParams(true, true);
  std::vector<uint8_t> stream = IcReq(true, true);
  const std::vector<uint8_t> sqe = Sqe(io::kWrite, 1);
  const std::vector<uint8_t> data = Pattern(100);
  AppendCapsuleCmd(stream, params, sqe.data(), data.data(), 100);
  for (size_t cut = kIcSize; cut < stream.size(); ++cut) {
    const Outcome outcome = Read(
        Role::kController, std::vector<uint8_t>(stream.begin(), stream.begin() + cut), params, kRandomChunks);
    ASSERT_EQ(outcome.last, Result::kNeedMore) << cut;
    ASSERT_EQ(outcome.pdus.size(), 1u) << cut;
    EXPECT_EQ(outcome.buffered, cut - kIcSize);
  }
}

TEST(TcpPduStreamTest, PduStaysValidWhileTheBufferMoves) {
  const Params params = MakeParams(false, false);
  std::vector<uint8_t> stream = IcReq();
  const std::vector<uint8_t> sqe = Sqe(io::kWrite, 1);
  const std::vector<uint8_t> data = Pattern(3000);
  AppendCapsuleCmd(stream, params, sqe.data(), data.data(), 3000);
  AppendCapsuleCmd(stream, params, sqe.data(), data.data(), 3000);
  const size_t cut = stream.size() - 100;  // the second capsule is incomplete

  PduReader reader(Role::kController, kMaxData);
  size_t available = 0;
  uint8_t* space = reader.WritableSpace(cut, &available);
  ASSERT_GE(available, cut);
  std::memcpy(space, stream.data(), cut);
  reader.Commit(cut);
  Pdu pdu;
  ProtocolError error;
  ASSERT_EQ(reader.Next(&pdu, &error), Result::kPdu);
  reader.SetParams(params);
  ASSERT_EQ(reader.Next(&pdu, &error), Result::kPdu);
  ASSERT_EQ(pdu.type, kCapsuleCmd);
  // Asking for much more space forces the reader to move the unparsed bytes: the PDU must survive it
  // (ASan reports a use after free otherwise).
  space = reader.WritableSpace(1 << 20, &available);
  ASSERT_GE(available, size_t{1} << 20);
  EXPECT_EQ(std::vector<uint8_t>(pdu.data, pdu.data + pdu.data_length), data);
  EXPECT_EQ(std::vector<uint8_t>(pdu.header + 8, pdu.header + 72), sqe);
  std::memcpy(space, stream.data() + cut, 100);
  reader.Commit(100);
  ASSERT_EQ(reader.Next(&pdu, &error), Result::kPdu);
  EXPECT_EQ(std::vector<uint8_t>(pdu.data, pdu.data + pdu.data_length), data);
  EXPECT_EQ(reader.Next(&pdu, &error), Result::kNeedMore);
  EXPECT_EQ(reader.buffered(), 0u);
}

TEST(TcpPduStreamTest, WritableSpaceCompactsInsteadOfGrowingForever) {
  const Params params = MakeParams(false, false);
  const std::vector<uint8_t> stream = MixedHostStream(params, 2000);  // about 6 MB
  PduReader reader(Role::kController, kMaxData);
  size_t pos = 0;
  size_t pdus = 0;
  size_t largest = 0;
  while (pos < stream.size()) {
    size_t available = 0;
    uint8_t* space = reader.WritableSpace(1500, &available);
    largest = std::max(largest, available + reader.buffered());
    const size_t piece = std::min({available, stream.size() - pos, size_t{1500}});
    std::memcpy(space, stream.data() + pos, piece);
    reader.Commit(piece);
    pos += piece;
    Pdu pdu;
    ProtocolError error;
    Result result;
    while ((result = reader.Next(&pdu, &error)) == Result::kPdu) {
      if (pdus++ == 0) reader.SetParams(params);
    }
    ASSERT_EQ(result, Result::kNeedMore) << error.message;
  }
  EXPECT_EQ(pdus, 2001u);
  EXPECT_LT(largest, 64u * 1024);  // a few PDUs' worth, not the stream
}

// --- Validation ----------------------------------------------------------------------------------------

// Reads `bytes` whole and in single bytes; both must end in the same error, which is returned.
ProtocolError ExpectError(Role role, const std::vector<uint8_t>& bytes, const Params& params = Params{},
                          uint32_t max_data = kMaxData) {
  const Outcome whole = Read(role, bytes, params, kAllAtOnce, max_data);
  EXPECT_EQ(whole.last, Result::kError);
  const Outcome single = Read(role, bytes, params, 1, max_data);
  EXPECT_EQ(single.last, Result::kError);
  EXPECT_EQ(single.error.fes, whole.error.fes);
  EXPECT_EQ(single.error.fei, whole.error.fei);
  EXPECT_EQ(single.pdus.size(), whole.pdus.size());
  EXPECT_FALSE(whole.error.message.empty());
  EXPECT_LE(whole.error.header.size(), kMaxTermReqData);
  return whole.error;
}

// The offset of the last PDU appended to `bytes` after `before` bytes.
struct Mutable {
  std::vector<uint8_t> bytes;
  size_t at;
  uint8_t& operator[](size_t i) { return bytes[at + i]; }
  void SetPlen(uint32_t plen) { Store32(bytes.data() + at + 4, plen); }
  // Recomputes the header digest after an edit (for tests of checks that follow the digest).
  void Redigest() {
    const size_t hlen = bytes[at + 2];
    Store32(bytes.data() + at + hlen, Crc32c(bytes.data() + at, hlen));
  }
};

Mutable ControllerStream(const Params& params, uint32_t length) {
  Mutable m{IcReq(params.hdgst, params.ddgst), 0};
  m.at = m.bytes.size();
  const std::vector<uint8_t> sqe = Sqe(io::kWrite, 1);
  const std::vector<uint8_t> data = Pattern(length);
  AppendCapsuleCmd(m.bytes, params, sqe.data(), data.data(), length);
  return m;
}

TEST(TcpPduValidationTest, UnknownTypes) {
  for (uint8_t type : {uint8_t{0x08}, uint8_t{0x0a}, uint8_t{0x7f}, uint8_t{0xff}}) {
    Mutable m = ControllerStream(Params{}, 0);
    m[0] = type;
    const ProtocolError error = ExpectError(Role::kController, m.bytes);
    EXPECT_EQ(error.fes, kFesInvalidHeaderField);
    EXPECT_EQ(error.fei, 0u);
    EXPECT_THAT(error.message, HasSubstr("unexpected PDU type"));
    // The offending header is echoed back (its first hlen bytes).
    EXPECT_EQ(error.header, std::vector<uint8_t>(m.bytes.begin() + kIcSize, m.bytes.begin() + kIcSize + 72));
  }
}

TEST(TcpPduValidationTest, TypesOfTheOtherRole) {
  const Params params;
  std::vector<uint8_t> c2h = IcResp();
  const std::vector<uint8_t> cqe = Cqe(1);
  AppendCapsuleResp(c2h, params, cqe.data());
  // A controller receiving what only hosts receive.
  for (uint8_t type : {kIcResp, kC2HTermReq, kCapsuleResp, kC2HData, kR2T}) {
    std::vector<uint8_t> bytes = IcReq();
    std::vector<uint8_t> pdu(c2h.begin() + kIcSize, c2h.end());
    pdu[0] = type;
    bytes.insert(bytes.end(), pdu.begin(), pdu.end());
    const ProtocolError error = ExpectError(Role::kController, bytes);
    EXPECT_EQ(error.fes, kFesInvalidHeaderField) << int{type};
    EXPECT_EQ(error.fei, 0u);
  }
  // And the reverse.
  for (uint8_t type : {kIcReq, kH2CTermReq, kCapsuleCmd, kH2CData}) {
    std::vector<uint8_t> bytes = c2h;
    bytes[kIcSize] = type;
    const ProtocolError error = ExpectError(Role::kHost, bytes);
    EXPECT_EQ(error.fes, kFesInvalidHeaderField) << int{type};
    EXPECT_EQ(error.fei, 0u);
  }
}

TEST(TcpPduValidationTest, FirstPduMustBeIc) {
  std::vector<uint8_t> bytes;
  const std::vector<uint8_t> sqe = Sqe(io::kRead, 1);
  AppendCapsuleCmd(bytes, Params{}, sqe.data(), nullptr, 0);
  ProtocolError error = ExpectError(Role::kController, bytes);
  EXPECT_EQ(error.fes, kFesPduSequenceError);

  bytes.clear();
  const std::vector<uint8_t> cqe = Cqe(1);
  AppendCapsuleResp(bytes, Params{}, cqe.data());
  error = ExpectError(Role::kHost, bytes);
  EXPECT_EQ(error.fes, kFesPduSequenceError);
}

TEST(TcpPduValidationTest, SecondIcIsASequenceError) {
  ProtocolError error = ExpectError(Role::kController, Concat(IcReq(), IcReq()));
  EXPECT_EQ(error.fes, kFesPduSequenceError);
  error = ExpectError(Role::kHost, Concat(IcResp(), IcResp()));
  EXPECT_EQ(error.fes, kFesPduSequenceError);
}

TEST(TcpPduValidationTest, WrongHlen) {
  Mutable m = ControllerStream(Params{}, 0);
  m[2] = 24;
  ProtocolError error = ExpectError(Role::kController, m.bytes);
  EXPECT_EQ(error.fes, kFesInvalidHeaderField);
  EXPECT_EQ(error.fei, 2u);
  EXPECT_THAT(error.message, HasSubstr("CapsuleCmd: hlen 24, expected 72"));

  std::vector<uint8_t> ic = IcReq();
  ic[2] = 127;
  error = ExpectError(Role::kController, ic);
  EXPECT_EQ(error.fei, 2u);
  // The echo is the offending header: hlen bytes.
  EXPECT_EQ(error.header.size(), 127u);
}

TEST(TcpPduValidationTest, IcFields) {
  std::vector<uint8_t> ic = IcReq();
  Store32(ic.data() + 4, 129);
  ProtocolError error = ExpectError(Role::kController, ic);
  EXPECT_EQ(error.fes, kFesInvalidHeaderField);
  EXPECT_EQ(error.fei, 4u);

  ic = IcReq();
  ic[3] = 4;
  EXPECT_EQ(ExpectError(Role::kController, ic).fei, 3u);

  ic = IcReq();
  Store16(ic.data() + 8, 1);
  error = ExpectError(Role::kController, ic);
  EXPECT_EQ(error.fes, kFesInvalidHeaderField);
  EXPECT_EQ(error.fei, 8u);

  ic.clear();
  AppendIcReq(ic, 32, false, false, 0);
  EXPECT_EQ(ExpectError(Role::kController, ic).fei, 10u);

  std::vector<uint8_t> resp;
  AppendIcResp(resp, 0, false, false, 4095);
  error = ExpectError(Role::kHost, resp);
  EXPECT_EQ(error.fes, kFesInvalidHeaderField);
  EXPECT_EQ(error.fei, 12u);
}

TEST(TcpPduValidationTest, NoDataPdusHaveExactLengths) {
  std::vector<uint8_t> bytes = IcResp();
  const std::vector<uint8_t> cqe = Cqe(1);
  AppendCapsuleResp(bytes, Params{}, cqe.data());
  std::vector<uint8_t> bad = bytes;
  Store32(bad.data() + kIcSize + 4, 28);
  bad.resize(bad.size() + 4);
  EXPECT_EQ(ExpectError(Role::kHost, bad).fei, 4u);
  bad = bytes;
  bad[kIcSize + 3] = 24;
  EXPECT_EQ(ExpectError(Role::kHost, bad).fei, 3u);

  bytes = IcResp();
  AppendR2T(bytes, Params{}, 1, 1, 0, 4096);
  bad = bytes;
  Store32(bad.data() + kIcSize + 4, 20);
  EXPECT_EQ(ExpectError(Role::kHost, bad).fei, 4u);
}

TEST(TcpPduValidationTest, PdoMustMatchTheAlignment) {
  const Params aligned = MakeParams(false, false, 3);  // 16-byte alignment: PDO 80 for a capsule
  Mutable m = ControllerStream(aligned, 10);
  EXPECT_EQ(m[3], 80);
  // Accepted as built; rejected when the controller expects another alignment or none.
  EXPECT_EQ(Read(Role::kController, m.bytes, aligned).last, Result::kNeedMore);
  ProtocolError error = ExpectError(Role::kController, m.bytes, MakeParams(false, false, 0));
  EXPECT_EQ(error.fes, kFesInvalidHeaderField);
  EXPECT_EQ(error.fei, 3u);
  m[3] = 76;
  EXPECT_EQ(ExpectError(Role::kController, m.bytes, aligned).fei, 3u);
  // PDO 0 with data following.
  m[3] = 0;
  EXPECT_EQ(ExpectError(Role::kController, m.bytes, aligned).fei, 3u);
  // PDO beyond the end of the PDU.
  Mutable n = ControllerStream(Params{}, 0);
  n[3] = 72;
  n.SetPlen(72);
  EXPECT_EQ(Read(Role::kController, n.bytes, Params{}).last, Result::kNeedMore);  // empty data part
  n[3] = 76;
  EXPECT_EQ(ExpectError(Role::kController, n.bytes).fei, 3u);
}

TEST(TcpPduValidationTest, PlenShorterThanTheHeader) {
  Mutable m = ControllerStream(Params{}, 0);
  m.SetPlen(71);
  ProtocolError error = ExpectError(Role::kController, m.bytes);
  EXPECT_EQ(error.fes, kFesInvalidHeaderField);
  EXPECT_EQ(error.fei, 4u);
  // With a data digest expected, plen must hold it.
  const Params params = MakeParams(false, true);
  Mutable d = ControllerStream(params, 4);
  d.SetPlen(74);
  EXPECT_EQ(ExpectError(Role::kController, d.bytes, params).fei, 4u);
}

TEST(TcpPduValidationTest, DataLimit) {
  const Mutable m = ControllerStream(Params{}, 4097);
  EXPECT_EQ(Read(Role::kController, m.bytes, Params{}, kAllAtOnce, 4097).last, Result::kNeedMore);
  ProtocolError error = ExpectError(Role::kController, m.bytes, Params{}, 4096);
  EXPECT_EQ(error.fes, kFesDataLimitExceeded);

  // Detected from the common header alone: a huge plen is refused without waiting for the bytes.
  std::vector<uint8_t> bytes = IcReq();
  std::vector<uint8_t> header(8);
  header[0] = kH2CData;
  header[2] = 24;
  header[3] = 24;
  Store32(header.data() + 4, 0xffffffffu);
  bytes.insert(bytes.end(), header.begin(), header.end());
  error = ExpectError(Role::kController, bytes);
  EXPECT_EQ(error.fes, kFesDataLimitExceeded);
  EXPECT_EQ(error.header, header);  // only what was received is echoed
}

TEST(TcpPduValidationTest, DigestFlagsMustFollowTheNegotiation) {
  const Params none = MakeParams(false, false);
  const Params both = MakeParams(true, true);
  // Digests sent but not negotiated, and the reverse.
  Mutable m = ControllerStream(both, 16);
  ProtocolError error = ExpectError(Role::kController, m.bytes, none);
  EXPECT_EQ(error.fes, kFesInvalidHeaderField);
  EXPECT_EQ(error.fei, 1u);
  m = ControllerStream(none, 16);
  EXPECT_EQ(ExpectError(Role::kController, m.bytes, both).fei, 1u);
  // Only a data digest missing.
  const Params header_only = MakeParams(true, false);
  m = ControllerStream(header_only, 16);
  EXPECT_EQ(ExpectError(Role::kController, m.bytes, both).fei, 1u);
  // DDGSTF on a PDU that has no data part.
  m = ControllerStream(both, 0);
  m[1] |= kFlagDdgst;
  m.Redigest();
  EXPECT_EQ(ExpectError(Role::kController, m.bytes, both).fei, 1u);
  // DDGSTF on an R2T.
  std::vector<uint8_t> bytes = IcResp(0, true, true);
  const size_t at = bytes.size();
  AppendR2T(bytes, both, 1, 1, 0, 4096);
  bytes[at + 1] |= kFlagDdgst;
  EXPECT_EQ(ExpectError(Role::kHost, bytes, both).fei, 1u);
}

TEST(TcpPduValidationTest, SuccessRequiresLast) {
  std::vector<uint8_t> bytes = IcResp();
  const size_t at = bytes.size();
  const std::vector<uint8_t> data = Pattern(8);
  AppendC2HData(bytes, Params{}, 1, 0, data.data(), 8, true, true);
  EXPECT_EQ(Read(Role::kHost, bytes, Params{}).last, Result::kNeedMore);
  bytes[at + 1] &= static_cast<uint8_t>(~kFlagLastPdu);
  const ProtocolError error = ExpectError(Role::kHost, bytes);
  EXPECT_EQ(error.fes, kFesInvalidHeaderField);
  EXPECT_EQ(error.fei, 1u);
}

TEST(TcpPduValidationTest, DatalMustMatchTheData) {
  std::vector<uint8_t> bytes = IcReq();
  const size_t at = bytes.size();
  const std::vector<uint8_t> data = Pattern(100);
  AppendH2CData(bytes, Params{}, 1, 2, 0, data.data(), 100, true);
  Store32(bytes.data() + at + 16, 99);
  const ProtocolError error = ExpectError(Role::kController, bytes);
  EXPECT_EQ(error.fes, kFesInvalidHeaderField);
  EXPECT_EQ(error.fei, 16u);
}

TEST(TcpPduValidationTest, HeaderDigestMismatch) {
  const Params params = MakeParams(true, false);
  Mutable m = ControllerStream(params, 0);
  m[8 + 2] ^= 1;  // the CID, covered by the digest
  ProtocolError error = ExpectError(Role::kController, m.bytes, params);
  EXPECT_EQ(error.fes, kFesHeaderDigestError);
  EXPECT_EQ(error.header.size(), 72u);
  // A corrupt digest, not header.
  m = ControllerStream(params, 0);
  m[72] ^= 0x80;
  EXPECT_EQ(ExpectError(Role::kController, m.bytes, params).fes, kFesHeaderDigestError);
}

TEST(TcpPduValidationTest, DataDigestMismatchIsReportedNotFatal) {
  const Params params = MakeParams(true, true);
  Mutable m = ControllerStream(params, 64);
  m[76 + 5] ^= 0x10;  // a data byte
  const std::vector<uint8_t> sqe = Sqe(io::kRead, 2);
  AppendCapsuleCmd(m.bytes, params, sqe.data(), nullptr, 0);
  for (size_t chunk : {kAllAtOnce, size_t{1}}) {
    const Outcome outcome = Read(Role::kController, m.bytes, params, chunk);
    ASSERT_EQ(outcome.last, Result::kNeedMore);
    ASSERT_EQ(outcome.pdus.size(), 3u);
    EXPECT_TRUE(outcome.pdus[1].data_digest_error);
    EXPECT_FALSE(outcome.pdus[2].data_digest_error);
  }
}

TEST(TcpPduValidationTest, TermReqLength) {
  ProtocolError sent;
  sent.header = Pattern(128);
  std::vector<uint8_t> bytes;
  AppendTermReq(bytes, true, sent);
  Store32(bytes.data() + 4, kMaxTermReqSize + 1);
  bytes.push_back(0);
  const ProtocolError error = ExpectError(Role::kHost, bytes);
  EXPECT_EQ(error.fes, kFesInvalidHeaderField);
  EXPECT_EQ(error.fei, 4u);
}

TEST(TcpPduValidationTest, ErrorsAreSticky) {
  Mutable m = ControllerStream(Params{}, 0);
  m[2] = 0;
  PduReader reader(Role::kController, kMaxData);
  size_t available = 0;
  uint8_t* space = reader.WritableSpace(m.bytes.size(), &available);
  std::memcpy(space, m.bytes.data(), m.bytes.size());
  reader.Commit(m.bytes.size());
  Pdu pdu;
  ProtocolError error;
  ASSERT_EQ(reader.Next(&pdu, &error), Result::kPdu);
  ASSERT_EQ(reader.Next(&pdu, &error), Result::kError);
  EXPECT_EQ(error.fei, 2u);
  // More (valid) bytes change nothing.
  const std::vector<uint8_t> more = ControllerStream(Params{}, 0).bytes;
  space = reader.WritableSpace(more.size(), &available);
  std::memcpy(space, more.data() + kIcSize, more.size() - kIcSize);
  reader.Commit(more.size() - kIcSize);
  ProtocolError again;
  EXPECT_EQ(reader.Next(&pdu, &again), Result::kError);
  EXPECT_EQ(again.fes, error.fes);
  EXPECT_EQ(again.fei, 2u);
  EXPECT_EQ(again.header, error.header);
}

// A reader's error, sent back as a TermReq, reaches the peer intact.
TEST(TcpPduValidationTest, ErrorTravelsAsTermReq) {
  Mutable m = ControllerStream(Params{}, 0);
  m[3] = 9;
  const ProtocolError error = ExpectError(Role::kController, m.bytes);
  ASSERT_EQ(error.fei, 3u);
  std::vector<uint8_t> bytes = IcResp();
  AppendTermReq(bytes, /*from_controller=*/true, error);
  const Outcome host = Read(Role::kHost, bytes, Params{});
  ASSERT_EQ(host.last, Result::kNeedMore);
  ASSERT_EQ(host.pdus.size(), 2u);
  Pdu view;
  view.type = host.pdus[1].type;
  view.header = host.pdus[1].header.data();
  EXPECT_EQ(ParseTerm(view).fes, kFesInvalidHeaderField);
  EXPECT_EQ(ParseTerm(view).fei, 3u);
  EXPECT_EQ(host.pdus[1].data,
            std::vector<uint8_t>(m.bytes.begin() + kIcSize, m.bytes.begin() + kIcSize + 72));
}

// --- Replay of real traffic ----------------------------------------------------------------------------

// Byte streams extracted from /work/shared/interop/nvme-tcp/*.pcap (SPDK initiator and target) by
// tests/data/nvme-tcp/extract.py. `complete` streams hold whole connections; the others were cut (at
// 200 KiB or 64 KiB, or where the capture missed segments) and may end inside a PDU.
struct CaptureCase {
  const char* name;
  bool complete;
  size_t h2c_pdus;  // PDUs in the host-to-controller stream
  size_t c2h_pdus;
};

std::ostream& operator<<(std::ostream& out, const CaptureCase& c) { return out << c.name; }

class CaptureReplayTest : public ::testing::TestWithParam<CaptureCase> {};

Params ParamsFromIcResp(const std::vector<uint8_t>& c2h) {
  Params params;
  if (c2h.size() < kIcSize || c2h[0] != kIcResp) return params;
  Pdu pdu;
  pdu.type = kIcResp;
  pdu.hlen = kIcSize;
  pdu.header = c2h.data();
  const IcFields fields = ParseIc(pdu);
  params.hdgst = fields.hdgst;
  params.ddgst = fields.ddgst;
  params.cpda = fields.pda;
  params.maxh2cdata = fields.limit;
  return params;
}

uint16_t CapsuleCid(const Parsed& pdu) { return Load16(pdu.header.data() + 8 + 2); }
uint16_t ResponseCid(const Parsed& pdu) { return Load16(pdu.header.data() + 8 + 12); }

TEST_P(CaptureReplayTest, EveryPduParses) {
  const CaptureCase c = GetParam();
  const std::vector<uint8_t> h2c = test::ReadCaptureStream(std::string(c.name) + ".h2c.bin");
  const std::vector<uint8_t> c2h = test::ReadCaptureStream(std::string(c.name) + ".c2h.bin");
  ASSERT_FALSE(h2c.empty());
  ASSERT_FALSE(c2h.empty());
  const Params params = ParamsFromIcResp(c2h);
  EXPECT_EQ(params.cpda, 0u);
  EXPECT_EQ(params.maxh2cdata, 131072u);

  const Outcome controller = Read(Role::kController, h2c, params);
  ASSERT_EQ(controller.last, Result::kNeedMore) << controller.error.message;
  const Outcome host = Read(Role::kHost, c2h, params);
  ASSERT_EQ(host.last, Result::kNeedMore) << host.error.message;
  EXPECT_EQ(controller.pdus.size(), c.h2c_pdus);
  EXPECT_EQ(host.pdus.size(), c.c2h_pdus);
  if (c.complete) {
    EXPECT_EQ(controller.buffered, 0u);
    EXPECT_EQ(host.buffered, 0u);
  } else {
    EXPECT_LT(controller.buffered, 72u + 4 + kMaxData + 4);
    EXPECT_LT(host.buffered, 72u + 4 + kMaxData + 4);
  }

  // The same result however the bytes arrive.
  for (size_t chunk : {size_t{1}, size_t{13}, kRandomChunks}) {
    const Outcome a = Read(Role::kController, h2c, params, chunk);
    const Outcome b = Read(Role::kHost, c2h, params, chunk);
    ASSERT_EQ(a.last, Result::kNeedMore);
    ASSERT_EQ(b.last, Result::kNeedMore);
    EXPECT_TRUE(a.pdus == controller.pdus) << chunk;
    EXPECT_TRUE(b.pdus == host.pdus) << chunk;
  }

  // Host side: ICReq, then the Connect capsule, then capsules and data.
  ASSERT_GE(controller.pdus.size(), 2u);
  EXPECT_EQ(controller.pdus[0].type, kIcReq);
  const Parsed& connect = controller.pdus[1];
  ASSERT_EQ(connect.type, kCapsuleCmd);
  EXPECT_EQ(connect.header[8], kFabricsOpcode);
  EXPECT_EQ(connect.header[8 + 4], fabrics::kConnect);
  EXPECT_EQ(connect.data.size(), kConnectDataSize);
  std::set<uint16_t> commands;
  for (size_t i = 1; i < controller.pdus.size(); ++i) {
    const Parsed& pdu = controller.pdus[i];
    EXPECT_TRUE(pdu.type == kCapsuleCmd || pdu.type == kH2CData) << i;
    EXPECT_FALSE(pdu.data_digest_error) << i;
    EXPECT_EQ((pdu.flags & kFlagHdgst) != 0, params.hdgst) << i;
    if (pdu.type == kCapsuleCmd) commands.insert(CapsuleCid(pdu));
  }

  // Controller side: ICResp, then responses, data and R2Ts for commands the host sent.
  ASSERT_GE(host.pdus.size(), 2u);
  EXPECT_EQ(host.pdus[0].type, kIcResp);
  EXPECT_EQ(host.pdus[1].type, kCapsuleResp);  // the Connect response
  for (size_t i = 1; i < host.pdus.size(); ++i) {
    const Parsed& pdu = host.pdus[i];
    EXPECT_TRUE(pdu.type == kCapsuleResp || pdu.type == kC2HData || pdu.type == kR2T) << i;
    EXPECT_FALSE(pdu.data_digest_error) << i;
    EXPECT_EQ((pdu.flags & kFlagHdgst) != 0, params.hdgst) << i;
    if (!c.complete) continue;
    const uint16_t cid = pdu.type == kCapsuleResp ? ResponseCid(pdu) : Load16(pdu.header.data() + 8);
    EXPECT_EQ(commands.count(cid), 1u) << "PDU " << i << " for unknown command " << cid;
  }
}

INSTANTIATE_TEST_SUITE_P(Captures, CaptureReplayTest,
                         ::testing::Values(CaptureCase{"identify.0", true, 36, 43},
                                           CaptureCase{"discover.0", true, 23, 24},
                                           CaptureCase{"host-denied.0", true, 2, 2},
                                           CaptureCase{"perf-randrw-64k-digests.0", true, 23, 26},
                                           CaptureCase{"perf-randrw-64k-digests.1", false, 12, 20},
                                           CaptureCase{"perf-randrw-4k-qd4.0", true, 23, 26},
                                           CaptureCase{"perf-randrw-4k-qd4.1", false, 29, 52}),
                         [](const ::testing::TestParamInfo<CaptureCase>& info) {
                           std::string name = info.param.name;
                           std::replace_if(
                               name.begin(), name.end(),
                               [](char ch) { return !std::isalnum(static_cast<unsigned char>(ch)); }, '_');
                           return name;
                         });

TEST(CaptureReplayTest, HostDeniedConnectCompletesWithInvalidHost) {
  const std::vector<uint8_t> c2h = test::ReadCaptureStream("host-denied.0.c2h.bin");
  const Outcome host = Read(Role::kHost, c2h, ParamsFromIcResp(c2h));
  ASSERT_EQ(host.pdus.size(), 2u);
  const Status status = Status::Decode(Load16(host.pdus[1].header.data() + 8 + 14));
  EXPECT_EQ(status.sct, kSctCommandSpecific);
  EXPECT_EQ(status.sc, sc_specific::kConnectInvalidHost);
}

TEST(CaptureReplayTest, DigestsNegotiatedInTheDigestCapture) {
  const std::vector<uint8_t> h2c = test::ReadCaptureStream("perf-randrw-64k-digests.1.h2c.bin");
  const std::vector<uint8_t> c2h = test::ReadCaptureStream("perf-randrw-64k-digests.1.c2h.bin");
  const Params params = ParamsFromIcResp(c2h);
  EXPECT_TRUE(params.hdgst);
  EXPECT_TRUE(params.ddgst);
  // Corrupting one data byte of the first H2CData PDU flags that PDU only.
  const Outcome clean = Read(Role::kController, h2c, params);
  size_t pos = 0;
  size_t index = 0;
  while (h2c[pos] != kH2CData) {
    pos += Load32(h2c.data() + pos + 4);
    ++index;
  }
  std::vector<uint8_t> corrupt = h2c;
  corrupt[pos + h2c[pos + 3] + 1000] ^= 1;
  const Outcome outcome = Read(Role::kController, corrupt, params);
  ASSERT_EQ(outcome.last, Result::kNeedMore);
  ASSERT_EQ(outcome.pdus.size(), clean.pdus.size());
  for (size_t i = 0; i < outcome.pdus.size(); ++i)
    EXPECT_EQ(outcome.pdus[i].data_digest_error, i == index) << i;
}

}  // namespace
}  // namespace smad::nvme::tcp
