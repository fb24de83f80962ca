#include "jsonrpc/protocol.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace smad::jsonrpc {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Feeds `input` in pieces of `chunk` bytes and collects every framed value; stops at the first error,
// which is stored in `error`.
std::vector<std::string> FrameAll(const std::string& input, size_t chunk, absl::Status* error = nullptr,
                                  size_t max_size = kDefaultMaxMessageSize) {
  StreamFramer framer(max_size);
  std::vector<std::string> values;
  for (size_t pos = 0; pos < input.size(); pos += chunk) {
    framer.Append(input.data() + pos, std::min(chunk, input.size() - pos));
    while (true) {
      auto next = framer.Next();
      if (!next.ok()) {
        if (error != nullptr) *error = next.status();
        return values;
      }
      if (!next->has_value()) break;
      values.push_back(**next);
    }
  }
  return values;
}

TEST(StreamFramerTest, EmptyStreamNeedsMoreBytes) {
  StreamFramer framer;
  auto next = framer.Next();
  ASSERT_TRUE(next.ok());
  EXPECT_FALSE(next->has_value());
  framer.Append(" \n\t\r ", 5);
  next = framer.Next();
  ASSERT_TRUE(next.ok());
  EXPECT_FALSE(next->has_value());
  EXPECT_EQ(framer.buffered(), 0u);
}

TEST(StreamFramerTest, FramesPipelinedValuesWithAndWithoutWhitespace) {
  const std::string input = R"({"a":1}{"b":[1,2]}  [3,{"c":{}}]
{"d":"e"})";
  for (size_t chunk : {1, 2, 3, 7, 1000}) {
    SCOPED_TRACE(chunk);
    EXPECT_THAT(FrameAll(input, chunk),
                ElementsAre(R"({"a":1})", R"({"b":[1,2]})", R"([3,{"c":{}}])", R"({"d":"e"})"));
  }
}

TEST(StreamFramerTest, BracketsAndEscapedQuotesInsideStringsDoNotCount) {
  const std::string first = R"({"m":"}]\"{[","n":"\\"})";
  const std::string second = R"({"x":"\\\"}"})";
  for (size_t chunk : {1, 4, 100}) {
    SCOPED_TRACE(chunk);
    EXPECT_THAT(FrameAll(first + second, chunk), ElementsAre(first, second));
  }
}

TEST(StreamFramerTest, IncompleteValueWaitsForMoreBytes) {
  StreamFramer framer;
  std::string part1 = R"({"jsonrpc":"2.0","method":"x","params":{"s":"a\)";
  std::string part2 = R"("b"}})";
  framer.Append(part1.data(), part1.size());
  auto next = framer.Next();
  ASSERT_TRUE(next.ok());
  EXPECT_FALSE(next->has_value());
  EXPECT_EQ(framer.buffered(), part1.size());
  framer.Append(part2.data(), part2.size());
  next = framer.Next();
  ASSERT_TRUE(next.ok());
  ASSERT_TRUE(next->has_value());
  EXPECT_EQ(**next, part1 + part2);
  EXPECT_EQ(framer.buffered(), 0u);
}

TEST(StreamFramerTest, TopLevelScalarsEndAtWhitespaceOrStructuralCharacter) {
  EXPECT_THAT(FrameAll(R"(123 true "s\"t"null{"a":1}-4.5e3[])", 1),
              ElementsAre("123", "true", R"("s\"t")", "null", R"({"a":1})", "-4.5e3", "[]"));
  // A scalar at the very end may continue: it is not returned yet.
  StreamFramer framer;
  framer.Append("42", 2);
  auto next = framer.Next();
  ASSERT_TRUE(next.ok());
  EXPECT_FALSE(next->has_value());
  framer.Append("7\n", 2);
  next = framer.Next();
  ASSERT_TRUE(next.ok() && next->has_value());
  EXPECT_EQ(**next, "427");
}

TEST(StreamFramerTest, StrayClosingCharacterIsAStickyError) {
  StreamFramer framer;
  framer.Append(R"({"a":1} ]{"b":2})", 16);
  auto next = framer.Next();
  ASSERT_TRUE(next.ok() && next->has_value());
  EXPECT_EQ(**next, R"({"a":1})");
  next = framer.Next();
  ASSERT_FALSE(next.ok());
  EXPECT_EQ(next.status().code(), absl::StatusCode::kInvalidArgument);
  framer.Append("{}", 2);
  next = framer.Next();
  ASSERT_FALSE(next.ok());
  EXPECT_EQ(next.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(StreamFramerTest, NestingDepthIsLimited) {
  std::string ok_value = std::string(kMaxNestingDepth, '[') + std::string(kMaxNestingDepth, ']');
  absl::Status error;
  EXPECT_THAT(FrameAll(ok_value, 64, &error), ElementsAre(ok_value));
  EXPECT_TRUE(error.ok());

  std::string too_deep = std::string(kMaxNestingDepth + 1, '[');
  EXPECT_TRUE(FrameAll(too_deep, 64, &error).empty());
  EXPECT_EQ(error.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(error.message()), HasSubstr("nested"));

  // Brackets inside strings are not nesting.
  std::string in_string = "{\"s\":\"" + std::string(5000, '[') + "\"}";
  EXPECT_THAT(FrameAll(in_string, 100, &error), ElementsAre(in_string));
}

TEST(StreamFramerTest, SizeLimitIsEnforcedPerValue) {
  absl::Status error;
  // Exactly at the limit is fine, several such values in a row too.
  std::string value16 = R"({"a":"12345678"})";
  ASSERT_EQ(value16.size(), 16u);
  EXPECT_THAT(FrameAll(value16 + value16 + " " + value16, 5, &error, 16), ElementsAre(value16, value16, value16));
  EXPECT_TRUE(error.ok());
  // One byte more is refused, even before the value is complete.
  std::string value17 = R"({"a":"123456789"})";
  EXPECT_THAT(FrameAll(value16 + value17, 3, &error, 16), ElementsAre(value16));
  EXPECT_EQ(error.code(), absl::StatusCode::kResourceExhausted);
  error = absl::OkStatus();
  EXPECT_TRUE(FrameAll("[" + std::string(100, ' '), 7, &error, 16).empty());
  EXPECT_EQ(error.code(), absl::StatusCode::kResourceExhausted);
}

TEST(StreamFramerTest, LargeValueFedInSmallChunksIsLinear) {
  // 8 MiB in 1 KiB chunks: a framer that rescans from the start would do ~32 G byte visits here.
  const std::string value = "{\"s\":\"" + std::string(8u << 20, 'x') + "\"}";
  StreamFramer framer;
  size_t returned = 0;
  for (size_t pos = 0; pos < value.size(); pos += 1024) {
    framer.Append(value.data() + pos, std::min<size_t>(1024, value.size() - pos));
    auto next = framer.Next();
    ASSERT_TRUE(next.ok());
    if (next->has_value()) {
      EXPECT_EQ((*next)->size(), value.size());
      ++returned;
    }
  }
  EXPECT_EQ(returned, 1u);
}

TEST(StreamFramerTest, ManySmallValuesKeepBufferSmall) {
  StreamFramer framer;
  const std::string value = R"({"jsonrpc":"2.0","id":1,"method":"m"})";
  size_t count = 0;
  for (int i = 0; i < 100000; ++i) {
    framer.Append(value.data(), value.size());
    auto next = framer.Next();
    ASSERT_TRUE(next.ok() && next->has_value());
    ++count;
  }
  EXPECT_EQ(count, 100000u);
  EXPECT_EQ(framer.buffered(), 0u);
}

TEST(DecodeRequestTextTest, SingleRequestWithNumberId) {
  Decoded d = DecodeRequestText(R"({"jsonrpc":"2.0","id":7,"method":"bdev_get_bdevs","params":{"name":"x"}})");
  EXPECT_FALSE(d.is_batch);
  EXPECT_FALSE(d.parse_error);
  ASSERT_EQ(d.items.size(), 1u);
  ASSERT_TRUE(d.items[0].request.has_value());
  const Request& r = *d.items[0].request;
  EXPECT_TRUE(r.has_id);
  EXPECT_EQ(r.id, 7);
  EXPECT_EQ(r.method, "bdev_get_bdevs");
  EXPECT_EQ(r.params, (Json{{"name", "x"}}));
}

TEST(DecodeRequestTextTest, StringNullAndMissingIds) {
  Decoded d = DecodeRequestText(R"({"jsonrpc":"2.0","id":"req-1","method":"m","params":[1,2]})");
  ASSERT_TRUE(d.items[0].request.has_value());
  EXPECT_EQ(d.items[0].request->id, "req-1");
  EXPECT_EQ(d.items[0].request->params, Json::array({1, 2}));

  d = DecodeRequestText(R"({"jsonrpc":"2.0","id":null,"method":"m"})");
  ASSERT_TRUE(d.items[0].request.has_value());
  EXPECT_TRUE(d.items[0].request->has_id);
  EXPECT_TRUE(d.items[0].request->id.is_null());

  d = DecodeRequestText(R"({"jsonrpc":"2.0","method":"notify"})");
  ASSERT_TRUE(d.items[0].request.has_value());
  EXPECT_FALSE(d.items[0].request->has_id);
  EXPECT_TRUE(d.items[0].request->params.is_null());
}

TEST(DecodeRequestTextTest, InvalidRequestsGetMinus32600WithTheirId) {
  struct Case {
    const char* text;
    Json id;
  };
  const Case cases[] = {
      {R"({"jsonrpc":"2.0","id":3})", 3},                                // no method
      {R"({"jsonrpc":"2.0","id":"x","method":5})", "x"},                 // method not a string
      {R"({"jsonrpc":"2.0","id":4,"method":"m","params":"s"})", 4},      // params not structured
      {R"({"jsonrpc":"2.0","id":4,"method":"m","params":null})", 4},     // params null
      {R"({"jsonrpc":"1.0","id":5,"method":"m"})", 5},                   // wrong version
      {R"({"jsonrpc":"2.0","id":{"a":1},"method":"m"})", nullptr},       // id not a scalar
      {R"({"jsonrpc":"2.0","id":true,"method":"m"})", nullptr},          // id boolean
      {R"(42)", nullptr},
      {R"("str")", nullptr},
      {R"(null)", nullptr},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.text);
    Decoded d = DecodeRequestText(c.text);
    EXPECT_FALSE(d.parse_error);
    ASSERT_EQ(d.items.size(), 1u);
    EXPECT_FALSE(d.items[0].request.has_value());
    ASSERT_TRUE(d.items[0].error_response.has_value());
    const Json& e = *d.items[0].error_response;
    EXPECT_EQ(e["jsonrpc"], "2.0");
    EXPECT_EQ(e["id"], c.id);
    EXPECT_EQ(e["error"]["code"], kInvalidRequest);
    EXPECT_EQ(e["error"]["message"], "Invalid request");
  }
}

TEST(DecodeRequestTextTest, InvalidJsonIsAParseError) {
  for (const char* text : {R"({"a":})", "{not json}", R"({"a":"\x"})", "[1,2", "tru", "1e99999", ""}) {
    SCOPED_TRACE(text);
    Decoded d = DecodeRequestText(text);
    EXPECT_TRUE(d.parse_error);
    ASSERT_EQ(d.items.size(), 1u);
    ASSERT_TRUE(d.items[0].error_response.has_value());
    EXPECT_EQ(*d.items[0].error_response, MakeError(nullptr, kParseError, "Parse error"));
  }
}

TEST(DecodeRequestTextTest, InvalidUtf8IsAParseError) {
  std::string text = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\xff\xfe\"}";
  EXPECT_TRUE(DecodeRequestText(text).parse_error);
}

TEST(DecodeRequestTextTest, Batches) {
  Decoded d = DecodeRequestText(
      R"([{"jsonrpc":"2.0","id":1,"method":"a"},{"jsonrpc":"2.0","method":"n"},1,[],)"
      R"({"jsonrpc":"2.0","id":"z","method":"b","params":{}}])");
  EXPECT_TRUE(d.is_batch);
  ASSERT_EQ(d.items.size(), 5u);
  EXPECT_EQ(d.items[0].request->method, "a");
  EXPECT_FALSE(d.items[1].request->has_id);
  EXPECT_EQ((*d.items[2].error_response)["error"]["code"], kInvalidRequest);
  EXPECT_EQ((*d.items[3].error_response)["error"]["code"], kInvalidRequest);
  EXPECT_EQ(d.items[4].request->id, "z");
}

TEST(DecodeRequestTextTest, EmptyBatchIsOneInvalidRequest) {
  Decoded d = DecodeRequestText(" [ ] ");
  EXPECT_FALSE(d.is_batch);
  EXPECT_FALSE(d.parse_error);
  ASSERT_EQ(d.items.size(), 1u);
  EXPECT_EQ(*d.items[0].error_response, MakeError(nullptr, kInvalidRequest, "Invalid request"));
}

TEST(SerializeTest, ResponsesUseSpdkMemberOrderAndEndWithNewline) {
  EXPECT_EQ(Serialize(MakeResult(1, true)), "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":true}\n");
  EXPECT_EQ(Serialize(MakeResult("a\"b", Json{{"z", 1}, {"a", nullptr}})),
            "{\"jsonrpc\":\"2.0\",\"id\":\"a\\\"b\",\"result\":{\"a\":null,\"z\":1}}\n");
  EXPECT_EQ(Serialize(MakeError(nullptr, kParseError, "Parse error")),
            "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32700,\"message\":\"Parse error\"}}\n");
  Json batch = Json::array({MakeResult(1, 2), MakeError("x", -17, "File exists")});
  EXPECT_EQ(Serialize(batch),
            "[{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":2},"
            "{\"jsonrpc\":\"2.0\",\"id\":\"x\",\"error\":{\"code\":-17,\"message\":\"File exists\"}}]\n");
}

TEST(SerializeTest, MatchesRecordedSpdkResponses) {
  // From shared/interop/spdk-jsonrpc (10-bdev.jsonl, 20-nvmf.jsonl), as SPDK writes them.
  EXPECT_EQ(Serialize(MakeResult(1, "Malloc0")), "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":\"Malloc0\"}\n");
  EXPECT_EQ(Serialize(MakeError(2, -17, "File exists")),
            "{\"jsonrpc\":\"2.0\",\"id\":2,\"error\":{\"code\":-17,\"message\":\"File exists\"}}\n");
  EXPECT_EQ(Serialize(MakeError(3, kInternalError, "Transport type 'TCP' already exists")),
            "{\"jsonrpc\":\"2.0\",\"id\":3,\"error\":{\"code\":-32603,"
            "\"message\":\"Transport type 'TCP' already exists\"}}\n");
}

TEST(SerializeTest, IdsRoundTripExactly) {
  for (const char* id : {"0", "-5", "18446744073709551615", "1.5", "\"\"", "\"\\u00e9t\\u00e9\"", "null"}) {
    SCOPED_TRACE(id);
    std::string request = std::string(R"({"jsonrpc":"2.0","id":)") + id + R"(,"method":"m"})";
    Decoded d = DecodeRequestText(request);
    ASSERT_TRUE(d.items[0].request.has_value());
    std::string out = Serialize(MakeResult(d.items[0].request->id, nullptr));
    Json back = Json::parse(out);
    EXPECT_EQ(back["id"], Json::parse(id));
  }
}

TEST(SerializeTest, InvalidUtf8DoesNotThrow) {
  std::string out = Serialize(MakeResult(1, std::string("bad \xff\xfe bytes")));
  EXPECT_EQ(out.back(), '\n');
  Json back = Json::parse(out);
  EXPECT_TRUE(back["result"].is_string());
}

TEST(SerializeTest, NonResponseValuesAreDumpedAsIs) {
  EXPECT_EQ(Serialize(Json{{"b", 1}, {"a", 2}}), "{\"a\":2,\"b\":1}\n");
  EXPECT_EQ(Serialize(Json(5)), "5\n");
}

}  // namespace
}  // namespace smad::jsonrpc
