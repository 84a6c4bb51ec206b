// tool_grammar_test.cpp: the grammar of a forced tool call (tool_grammar.h), per format: it accepts the
// call text the template teaches, with arguments that follow the schema, and the parser reads that very
// text back as the call; it refuses another function (named choice), a second call (parallel false),
// and arguments that break the schema. A schema the compiler refuses is a 400 naming the tool.
#include "server/tool_grammar.h"

#include <gtest/gtest.h>

#include "grammar/grammar.h"
#include "server/request.h"
#include "server/tool_stream.h"

namespace moe::server {
namespace {

using nlohmann::ordered_json;

ToolRequest two_tools(ToolChoice choice, bool parallel, const std::string& named = "") {
  ordered_json body = ordered_json::parse(R"({"tools": [
      {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
        "required": ["city", "unit"], "additionalProperties": false}}},
      {"type": "function", "function": {"name": "add", "parameters": {"type": "object",
        "properties": {"a": {"type": "integer"}}, "required": ["a"], "additionalProperties": false}}}]})");
  body["parallel_tool_calls"] = parallel;
  if (choice == ToolChoice::Required) body["tool_choice"] = "required";
  if (choice == ToolChoice::Named) body["tool_choice"] = {{"type", "function"}, {"function", {{"name", named}}}};
  return *parse_openai_tools(body);
}

bool full_match(const std::shared_ptr<const grammar::Grammar>& g, const std::string& text) {
  grammar::Matcher m(g);
  return m.advance(text) && m.accepting();
}

std::vector<ToolCall> parsed(ToolFormat f, const ToolRequest& t, const std::string& text) {
  ToolCallParser p(f, t.names, t.max_calls());
  auto out = p.feed(text);
  auto rest = p.finish();
  for (auto& c : rest.calls) out.calls.push_back(c);
  EXPECT_EQ(out.content + rest.content, "") << text;
  return out.calls;
}

const std::string kWeather = R"({"name": "get_weather", "arguments": {"city": "Oslo", "unit": "c"}})";
const std::string kAdd = R"({"name": "add", "arguments": {"a": 7}})";

TEST(ToolGrammar, HermesRequiredParallel) {
  ToolRequest t = two_tools(ToolChoice::Required, true);
  auto g = tool_call_grammar(t, ToolFormat::Hermes, "<tool_call>");
  const std::string two = "<tool_call>\n" + kWeather + "\n</tool_call>\n<tool_call>\n" + kAdd + "\n</tool_call>";
  EXPECT_TRUE(full_match(g, two)) << tool_call_gbnf(t, ToolFormat::Hermes, "");
  auto calls = parsed(ToolFormat::Hermes, t, two);
  ASSERT_EQ(calls.size(), 2u);
  EXPECT_EQ(calls[0].arguments, R"({"city":"Oslo","unit":"c"})");
  EXPECT_EQ(calls[1].arguments, R"({"a":7})");
  // Arguments that break the schema, an unknown function, or no call at all are not sentences.
  EXPECT_FALSE(full_match(g, R"(<tool_call>
{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "kelvin"}}
</tool_call>)"));
  EXPECT_FALSE(full_match(g, R"(<tool_call>
{"name": "add", "arguments": {"a": "seven"}}
</tool_call>)"));
  EXPECT_FALSE(full_match(g, R"(<tool_call>
{"name": "rm", "arguments": {}}
</tool_call>)"));
  EXPECT_FALSE(full_match(g, "Sure!"));
  EXPECT_FALSE(full_match(g, ""));
}

TEST(ToolGrammar, NamedWithoutParallelIsExactlyOneCallOfIt) {
  ToolRequest t = two_tools(ToolChoice::Named, false, "add");
  auto g = tool_call_grammar(t, ToolFormat::Hermes, "<tool_call>");
  const std::string one = "<tool_call>\n" + kAdd + "\n</tool_call>";
  grammar::Matcher m(g);
  ASSERT_TRUE(m.advance(one));
  EXPECT_TRUE(m.complete());  // nothing may follow: the sequence ends there
  EXPECT_FALSE(full_match(g, "<tool_call>\n" + kWeather + "\n</tool_call>"));
}

TEST(ToolGrammar, MistralBothSpellingsAndLlama3) {
  ToolRequest t = two_tools(ToolChoice::Required, true);
  // Nemo: a JSON array after [TOOL_CALLS].
  auto nemo = tool_call_grammar(t, ToolFormat::Mistral, "[TOOL_CALLS]");
  const std::string arr = "[TOOL_CALLS][" + kWeather + ", " + kAdd + "]";
  EXPECT_TRUE(full_match(nemo, arr)) << tool_call_gbnf(t, ToolFormat::Mistral, "[TOOL_CALLS]");
  EXPECT_EQ(parsed(ToolFormat::Mistral, t, arr).size(), 2u);
  // Small 3.x / v7: [TOOL_CALLS]name[ARGS]{...}, repeated.
  auto v7 = tool_call_grammar(t, ToolFormat::Mistral, "[TOOL_CALLS] [ARGS]");
  const std::string v7text = R"([TOOL_CALLS]get_weather[ARGS]{"city": "Oslo", "unit": "f"}[TOOL_CALLS]add[ARGS]{"a": 1})";
  EXPECT_TRUE(full_match(v7, v7text));
  EXPECT_EQ(parsed(ToolFormat::Mistral, t, v7text).size(), 2u);
  // Llama 3: one JSON object with "parameters", even when parallel calls are allowed.
  auto llama = tool_call_grammar(t, ToolFormat::Llama3, "<|python_tag|>");
  const std::string l3 = R"({"name": "add", "parameters": {"a": 3}})";
  grammar::Matcher m(llama);
  ASSERT_TRUE(m.advance(l3));
  EXPECT_TRUE(m.complete());
  EXPECT_EQ(parsed(ToolFormat::Llama3, t, l3).size(), 1u);
}

TEST(ToolGrammar, SchemaTheCompilerRefusesIsA400NamingTheTool) {
  ordered_json body = ordered_json::parse(R"({"tools": [
      {"type": "function", "function": {"name": "ok", "parameters": {"type": "object"}}},
      {"type": "function", "function": {"name": "bad", "parameters": {"type": "object",
        "properties": {"s": {"type": "string", "pattern": "(?<=a)b"}}}}}]})");
  ToolRequest t = *parse_openai_tools(body);
  try {
    check_tool_schemas(t);
    ADD_FAILURE() << "no error";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status, 400);
    EXPECT_EQ(e.param, "tools[1].function.parameters");
    EXPECT_NE(std::string(e.what()).find("pattern"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace moe::server
