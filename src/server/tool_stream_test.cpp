// tool_stream_test.cpp: the tool-call parser on every format, fed whole, byte by byte and in random
// pieces (the three must agree, which also proves that no partial marker was released as content:
// the streamed content, joined, would contain it), and malformed calls given back as content.
#include "server/tool_stream.h"

#include <gtest/gtest.h>

#include <random>

namespace moe::server {
namespace {

struct Parsed {
  std::string content;
  std::vector<ToolCall> calls;
};

std::function<std::string()> counter_ids() {
  auto n = std::make_shared<int>(0);
  return [n] { return "id" + std::to_string((*n)++); };
}

const std::vector<std::string> kNames = {"get_weather", "search", "add"};

// Feeds `text` in pieces whose lengths come from `cut` (0: whole), returns everything released.
Parsed parse(ToolFormat f, std::string_view text, size_t max_calls, const std::function<size_t()>& cut) {
  ToolCallParser p(f, kNames, max_calls, counter_ids());
  Parsed out;
  auto take = [&](ToolCallParser::Output o) {
    out.content += o.content;
    for (auto& c : o.calls) out.calls.push_back(std::move(c));
  };
  size_t i = 0;
  while (i < text.size()) {
    size_t n = cut ? std::max<size_t>(1, cut()) : text.size();
    take(p.feed(text.substr(i, n)));
    i += n;
  }
  take(p.finish());
  return out;
}

// Whole, byte by byte, and in random pieces: all three agree; returns the whole parse.
Parsed parse_all_ways(ToolFormat f, std::string_view text, size_t max_calls = 16) {
  Parsed whole = parse(f, text, max_calls, {});
  Parsed bytes = parse(f, text, max_calls, [] { return size_t(1); });
  std::mt19937 rng(1234);
  Parsed pieces = parse(f, text, max_calls, [&] { return size_t(rng() % 7); });
  for (const Parsed* p : {&bytes, &pieces}) {
    EXPECT_EQ(p->content, whole.content) << text;
    EXPECT_EQ(p->calls.size(), whole.calls.size()) << text;
    for (size_t i = 0; i < std::min(p->calls.size(), whole.calls.size()); ++i) {
      EXPECT_EQ(p->calls[i].name, whole.calls[i].name);
      EXPECT_EQ(p->calls[i].arguments, whole.calls[i].arguments);
      EXPECT_EQ(p->calls[i].id, whole.calls[i].id);
    }
  }
  return whole;
}

TEST(ToolStream, HermesOneCall) {
  auto r = parse_all_ways(ToolFormat::Hermes,
                          "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": 3}}\n</tool_call>");
  EXPECT_EQ(r.content, "");
  ASSERT_EQ(r.calls.size(), 1u);
  EXPECT_EQ(r.calls[0].name, "get_weather");
  EXPECT_EQ(r.calls[0].arguments, R"({"city":"Paris","days":3})");  // order kept, compact
  EXPECT_EQ(r.calls[0].id, "id0");
}

TEST(ToolStream, HermesContentAndTwoCalls) {
  auto r = parse_all_ways(ToolFormat::Hermes,
                          "Let me look.\n<tool_call>\n{\"name\": \"search\", \"arguments\": {\"q\": \"a </tool_call> b\"}}\n"
                          "</tool_call>\n<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": 1, \"b\": 2}}\n</tool_call>\n");
  EXPECT_EQ(r.content, "Let me look.");
  ASSERT_EQ(r.calls.size(), 2u) << "a closing tag inside a JSON string does not end the call";
  EXPECT_EQ(r.calls[0].arguments, R"({"q":"a </tool_call> b"})");
  EXPECT_EQ(r.calls[1].arguments, R"({"a":1,"b":2})");
}

TEST(ToolStream, HermesTwoCallsAndQwenSpelling) {
  auto r = parse_all_ways(ToolFormat::Hermes,
                          "Sure. <tool_call>{\"name\": \"search\", \"arguments\": {\"q\": \"x\"}}</tool_call>\n\n"
                          "<tool_call>\n{\"name\": \"add\", \"parameters\": {\"a\": 1}}\n</tool_call>");
  EXPECT_EQ(r.content, "Sure.");
  ASSERT_EQ(r.calls.size(), 2u);
  EXPECT_EQ(r.calls[0].name, "search");
  EXPECT_EQ(r.calls[1].name, "add");
  EXPECT_EQ(r.calls[1].arguments, R"({"a":1})");
  EXPECT_EQ(r.calls[1].id, "id1");
}

TEST(ToolStream, HermesMalformedCallsAreContent) {
  for (std::string bad : {"<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": }\n</tool_call>",
                          "<tool_call>{\"arguments\": {}}</tool_call>",                       // no name
                          "<tool_call>{\"name\": \"rm_rf\", \"arguments\": {}}</tool_call>",  // not a tool
                          "<tool_call>{\"name\": \"add\", \"arguments\": [1, 2]}</tool_call>",  // not an object
                          "<tool_call>{\"name\": \"add\", \"arguments\": {\"a\": 1}",           // cut off
                          "text <tool_ca"}) {
    auto r = parse_all_ways(ToolFormat::Hermes, bad);
    EXPECT_TRUE(r.calls.empty()) << bad;
    EXPECT_EQ(r.content, bad);
  }
}

TEST(ToolStream, HermesCallWithoutClosingTagIsAccepted) {
  auto r = parse_all_ways(ToolFormat::Hermes, "<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": 1}}\n");
  ASSERT_EQ(r.calls.size(), 1u);
  EXPECT_EQ(r.content, "");
}

TEST(ToolStream, PlainTextPassesThroughWithItsWhitespace) {
  const std::string text = "Once upon a time <b>there</b> was a [TOOL] call {x}.\n\n";
  for (ToolFormat f : {ToolFormat::Hermes, ToolFormat::Mistral}) {
    auto r = parse_all_ways(f, text);
    EXPECT_EQ(r.content, text);
    EXPECT_TRUE(r.calls.empty());
  }
}

TEST(ToolStream, MistralNemoArrayWithIds) {
  auto r = parse_all_ways(ToolFormat::Mistral,
                          "[TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}, \"id\": \"abcDEF123\"}, "
                          "{\"name\": \"add\", \"arguments\": {\"a\": 2}}]");
  EXPECT_EQ(r.content, "");
  ASSERT_EQ(r.calls.size(), 2u);
  EXPECT_EQ(r.calls[0].id, "abcDEF123");
  EXPECT_EQ(r.calls[0].arguments, R"({"city":"Paris"})");
  EXPECT_EQ(r.calls[1].name, "add");
  EXPECT_EQ(r.calls[1].id, "id0");
}

TEST(ToolStream, MistralV7NameArgsForms) {
  auto r = parse_all_ways(ToolFormat::Mistral,
                          "[TOOL_CALLS]get_weather[CALL_ID]a1b2c3d4e[ARGS]{\"city\": \"Paris\"}"
                          "[TOOL_CALLS]add[ARGS]{\"a\": 1, \"b\": {\"c\": [2, \"]}\"]}}");
  EXPECT_EQ(r.content, "");
  ASSERT_EQ(r.calls.size(), 2u);
  EXPECT_EQ(r.calls[0].name, "get_weather");
  EXPECT_EQ(r.calls[0].id, "a1b2c3d4e");
  EXPECT_EQ(r.calls[1].name, "add");
  EXPECT_EQ(r.calls[1].arguments, R"({"a":1,"b":{"c":[2,"]}"]}})");
}

TEST(ToolStream, MistralMalformedIsContent) {
  for (std::string bad : {"[TOOL_CALLS][{\"name\": \"add\", \"arguments\": 5}]", "[TOOL_CALLS]add[ARGS]{\"a\": 1",
                          "[TOOL_CALLS]nope[ARGS]{}", "[TOOL_CALLS][{\"name\": \"add\"}}"}) {
    auto r = parse_all_ways(ToolFormat::Mistral, bad);
    EXPECT_TRUE(r.calls.empty()) << bad;
    EXPECT_EQ(r.content, bad);
  }
}

TEST(ToolStream, Llama3BareJsonAndPythonTag) {
  auto r = parse_all_ways(ToolFormat::Llama3, "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}");
  ASSERT_EQ(r.calls.size(), 1u);
  EXPECT_EQ(r.calls[0].arguments, R"({"city":"Oslo"})");
  EXPECT_EQ(r.content, "");
  r = parse_all_ways(ToolFormat::Llama3, "<|python_tag|>{\"name\": \"search\", \"parameters\": {\"q\": \"}\"}}; "
                                          "{\"name\": \"add\", \"parameters\": {}}");
  ASSERT_EQ(r.calls.size(), 2u);
  EXPECT_EQ(r.calls[1].name, "add");
  EXPECT_EQ(r.content, "");
}

TEST(ToolStream, Llama3TextAndNonCallJsonAreContent) {
  for (std::string text : {"The answer is {\"name\": \"add\", \"parameters\": {}}", "{\"x\": 1} is JSON",
                           "  {not json at all", "{\"name\": \"unknown\", \"parameters\": {}}"}) {
    auto r = parse_all_ways(ToolFormat::Llama3, text);
    EXPECT_TRUE(r.calls.empty()) << text;
    EXPECT_EQ(r.content, text);
  }
}

TEST(ToolStream, ParallelFalseKeepsOneCall) {
  auto r = parse_all_ways(ToolFormat::Hermes,
                          "<tool_call>{\"name\": \"add\", \"arguments\": {}}</tool_call><tool_call>{\"name\": "
                          "\"search\", \"arguments\": {}}</tool_call> and more",
                          1);
  ASSERT_EQ(r.calls.size(), 1u);
  EXPECT_EQ(r.calls[0].name, "add");
  EXPECT_EQ(r.content, "");
}

TEST(ToolStream, DeepNestingIsMalformedNotACrash) {
  std::string deep = "[TOOL_CALLS]add[ARGS]" + std::string(100000, '{');
  auto r = parse(ToolFormat::Mistral, deep, 16, {});
  EXPECT_TRUE(r.calls.empty());
  EXPECT_EQ(r.content, deep);
}

}  // namespace
}  // namespace moe::server
