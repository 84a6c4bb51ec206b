// request_test.cpp: validation of the OpenAI request bodies: every field's type and bounds, the param
// named in each error, defaults, and hostile bodies (deep nesting, huge numbers) that must not crash.
#include "server/request.h"

#include "grammar/grammar.h"
#include "util/error.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>

namespace moe::server {
namespace {

using nlohmann::json;

json chat_body(json extra = json::object()) {
  json b = {{"model", "m"}, {"messages", {{{"role", "user"}, {"content", "hi"}}}}};
  for (auto& [k, v] : extra.items()) b[k] = v;
  return b;
}

// Expects a 400 naming `param`.
template <typename F>
void expect_param(F&& f, const std::string& param, const std::string& why = "") {
  try {
    f();
    ADD_FAILURE() << "no error for " << param << " " << why;
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status, 400) << e.what();
    EXPECT_EQ(e.param, param) << e.what() << " " << why;
    EXPECT_EQ(e.type, "invalid_request_error");
  }
}

TEST(ServerRequest, ParseBodyRejectsNonJsonAndNonObjects) {
  for (const char* bad : {"", "{", "nope", "[1,2]", "42", "\"s\"", "{\"a\":1}x"}) {
    try {
      parse_body(bad);
      ADD_FAILURE() << bad;
    } catch (const ApiError& e) {
      EXPECT_EQ(e.status, 400);
      EXPECT_EQ(e.code, "invalid_json");
    }
  }
  EXPECT_TRUE(parse_body("{\"a\":1}").is_object());
}

TEST(ServerRequest, DeeplyNestedBodyIsRefusedWhileParsing) {
  for (const char* field : {"messages", "ignored"}) {
    std::string deep(200000, '[');
    deep += std::string(200000, ']');
    std::string body = std::string("{\"model\":\"m\",\"") + field + "\":" + deep + "}";
    try {
      parse_body(body);
      ADD_FAILURE() << "a body 200,000 levels deep was accepted";
    } catch (const ApiError& e) {
      EXPECT_EQ(e.status, 400);
      EXPECT_NE(std::string(e.what()).find("256 levels deep"), std::string::npos) << e.what();
    }
  }
  // At the bound it parses (the top-level object is level 1).
  std::string ok = "{\"x\":" + std::string(255, '[') + std::string(255, ']') + "}";
  EXPECT_NO_THROW(parse_body(ok));
  std::string over = "{\"x\":" + std::string(256, '[') + std::string(256, ']') + "}";
  EXPECT_THROW(parse_body(over), ApiError);
  // Deep inside a string is not nesting.
  EXPECT_NO_THROW(parse_body("{\"x\":\"" + std::string(100000, '[') + "\"}"));
}

TEST(ServerRequest, ChatDefaults) {
  ChatRequest r = parse_chat_request(chat_body());
  EXPECT_EQ(r.gen.model, "m");
  EXPECT_FALSE(r.gen.max_tokens.has_value());
  EXPECT_EQ(r.gen.n, 1);
  EXPECT_FALSE(r.gen.stream);
  EXPECT_FALSE(r.gen.logprobs);
  EXPECT_EQ(r.gen.sampling.top_logprobs, -1);
  EXPECT_FLOAT_EQ(r.gen.sampling.temperature, 1.0f);
  EXPECT_FALSE(r.gen.sampling.seed.has_value());
  EXPECT_FALSE(r.gen.sampling.json_object);
  ASSERT_EQ(r.messages.size(), 1u);
  EXPECT_EQ(r.messages[0]["role"], "user");
  EXPECT_EQ(r.messages[0]["content"], "hi");
}

TEST(ServerRequest, ChatAllFieldsInRange) {
  ChatRequest r = parse_chat_request(chat_body({{"max_tokens", 10},
                                                {"temperature", 0.5},
                                                {"top_p", 0.9},
                                                {"top_k", 40},
                                                {"min_p", 0.05},
                                                {"presence_penalty", -1.5},
                                                {"frequency_penalty", 2},
                                                {"repetition_penalty", 1.1},
                                                {"seed", 7},
                                                {"stop", {"a", "bb"}},
                                                {"n", 3},
                                                {"logprobs", true},
                                                {"top_logprobs", 5},
                                                {"stream", true},
                                                {"stream_options", {{"include_usage", true}}},
                                                {"response_format", {{"type", "json_object"}}},
                                                {"user", {{"anything", "goes"}}},
                                                {"metadata", {{"k", "v"}}},
                                                {"store", false},
                                                {"service_tier", "auto"},
                                                {"parallel_tool_calls", true}}));
  EXPECT_EQ(r.gen.max_tokens, 10);
  EXPECT_FLOAT_EQ(r.gen.sampling.temperature, 0.5f);
  EXPECT_FLOAT_EQ(r.gen.sampling.top_p, 0.9f);
  EXPECT_EQ(r.gen.sampling.top_k, 40);
  EXPECT_FLOAT_EQ(r.gen.sampling.min_p, 0.05f);
  EXPECT_FLOAT_EQ(r.gen.sampling.presence_penalty, -1.5f);
  EXPECT_FLOAT_EQ(r.gen.sampling.frequency_penalty, 2.0f);
  EXPECT_FLOAT_EQ(r.gen.sampling.repetition_penalty, 1.1f);
  EXPECT_EQ(r.gen.sampling.seed, 7u);
  EXPECT_EQ(r.gen.stop, (std::vector<std::string>{"a", "bb"}));
  EXPECT_EQ(r.gen.n, 3);
  EXPECT_TRUE(r.gen.logprobs);
  EXPECT_EQ(r.gen.top_logprobs, 5);
  EXPECT_EQ(r.gen.sampling.top_logprobs, 5);
  EXPECT_TRUE(r.gen.stream);
  EXPECT_TRUE(r.gen.include_usage);
  EXPECT_TRUE(r.gen.sampling.json_object);
}

TEST(ServerRequest, MaxCompletionTokensWinsAndNullsAreAbsent) {
  ChatRequest r = parse_chat_request(chat_body({{"max_tokens", 10}, {"max_completion_tokens", 20}}));
  EXPECT_EQ(r.gen.max_tokens, 20);
  r = parse_chat_request(chat_body({{"temperature", nullptr}, {"stop", nullptr}, {"seed", nullptr}, {"n", nullptr}}));
  EXPECT_FLOAT_EQ(r.gen.sampling.temperature, 1.0f);
  EXPECT_TRUE(r.gen.stop.empty());
  EXPECT_EQ(r.gen.n, 1);
}

TEST(ServerRequest, EveryBoundedFieldRejectsOutOfRangeAndWrongTypes) {
  struct Case {
    const char* field;
    json value;
  };
  const Case cases[] = {
      {"max_tokens", 0},           {"max_tokens", -1},         {"max_tokens", 1.5},
      {"max_tokens", "10"},        {"max_completion_tokens", 0}, {"temperature", -0.1},
      {"temperature", 2.01},       {"temperature", "hot"},     {"top_p", 0},
      {"top_p", 1.01},             {"top_k", -2},              {"top_k", 1.5},
      {"min_p", -0.01},            {"min_p", 1.5},             {"presence_penalty", -2.5},
      {"presence_penalty", 2.5},   {"frequency_penalty", 3},   {"repetition_penalty", 0},
      {"repetition_penalty", 10.5}, {"seed", 1.5},             {"seed", "7"},
      {"n", 0},                    {"n", 17},                  {"n", true},
      {"stop", 5},                 {"stop", json::array({"a", "b", "c", "d", "e"})},
      {"stop", ""},                {"stop", std::string(257, 'x')},
      {"logprobs", 1},             {"top_logprobs", 21},       {"top_logprobs", -1},
      {"stream", "yes"},           {"stream_options", true},   {"response_format", "json"},
      {"model", 5},                {"logit_bias", json::array()}, {"tools", "get_weather"},
      {"max_tokens", json::parse("99999999999999999999999")},
      {"top_p", 1e-300},           {"repetition_penalty", 1e-300},
  };
  for (const auto& c : cases) {
    std::string param = c.field;
    expect_param([&] { parse_chat_request(chat_body({{c.field, c.value}})); }, param, c.value.dump());
  }
  expect_param([&] { parse_chat_request(chat_body({{"stop", json::array({"a", 3})}})); }, "stop[1]");
  expect_param([&] { parse_chat_request(chat_body({{"stream_options", {{"include_usage", 1}}}})); },
               "stream_options.include_usage");
  expect_param([&] { parse_chat_request(chat_body({{"response_format", {{"type", "json_schema"}}}})); },
               "response_format.json_schema");
  expect_param([&] { parse_chat_request(chat_body({{"response_format", {{"type", "xml"}}}})); },
               "response_format.type");
  expect_param([&] { parse_chat_request(chat_body({{"top_logprobs", 3}})); }, "top_logprobs",
               "top_logprobs without logprobs");
}

TEST(ServerRequest, BoundariesAreInclusive) {
  auto r = parse_chat_request(chat_body({{"temperature", 0}, {"top_p", 1}, {"n", 16}, {"top_logprobs", 20},
                                         {"logprobs", true}, {"presence_penalty", -2}, {"top_k", -1},
                                         {"repetition_penalty", 10}, {"min_p", 1}}));
  EXPECT_EQ(r.gen.n, 16);
  EXPECT_EQ(r.gen.sampling.top_k, 0);  // -1 means off, as 0
  EXPECT_FLOAT_EQ(r.gen.sampling.temperature, 0.0f);
  r = parse_chat_request(chat_body({{"temperature", 2}, {"stop", std::string(256, 'x')}}));
  EXPECT_EQ(r.gen.stop.size(), 1u);
}

TEST(ServerRequest, SeedAcceptsNegativeAndFullUnsignedRange) {
  auto r = parse_chat_request(chat_body({{"seed", -1}}));
  EXPECT_EQ(r.gen.sampling.seed, ~uint64_t(0));
  r = parse_chat_request(chat_body({{"seed", json::parse("18446744073709551615")}}));
  EXPECT_EQ(r.gen.sampling.seed, ~uint64_t(0));
}

TEST(ServerRequest, MessagesAreValidatedAndNormalised) {
  expect_param([&] { parse_chat_request({{"model", "m"}}); }, "messages");
  expect_param([&] { parse_chat_request({{"messages", "hi"}}); }, "messages");
  expect_param([&] { parse_chat_request({{"messages", json::array()}}); }, "messages");
  expect_param([&] { parse_chat_request({{"messages", {"hi"}}}); }, "messages[0]");
  expect_param([&] { parse_chat_request({{"messages", {{{"content", "x"}}}}}); }, "messages[0].role");
  expect_param([&] { parse_chat_request({{"messages", {{{"role", "wizard"}, {"content", "x"}}}}}); },
               "messages[0].role");
  expect_param([&] { parse_chat_request({{"messages", {{{"role", "user"}}}}}); }, "messages[0].content");
  expect_param([&] { parse_chat_request({{"messages", {{{"role", "user"}, {"content", 5}}}}}); },
               "messages[0].content");
  expect_param(
      [&] {
        parse_chat_request({{"messages",
                             {{{"role", "user"}, {"content", "a"}},
                              {{"role", "user"},
                               {"content", {{{"type", "image_url"}, {"image_url", {{"url", "x"}}}}}}}}}});
      },
      "messages[1].content[0].type");
  json many = json::array();
  for (size_t i = 0; i <= bounds::kMaxMessages; ++i) many.push_back({{"role", "user"}, {"content", "x"}});
  expect_param([&] { parse_chat_request({{"messages", many}}); }, "messages");

  auto r = parse_chat_request({{"messages",
                                {{{"role", "developer"}, {"content", "be brief"}},
                                 {{"role", "user"},
                                  {"content", {{{"type", "text"}, {"text", "a"}}, {{"type", "text"}, {"text", "b"}}}},
                                  {"name", "ann"}},
                                 {{"role", "assistant"}, {"content", nullptr}}}}});
  ASSERT_EQ(r.messages.size(), 3u);
  EXPECT_EQ(r.messages[0]["role"], "system");
  EXPECT_EQ(r.messages[1]["content"], "a\nb");
  EXPECT_EQ(r.messages[1]["name"], "ann");
  EXPECT_EQ(r.messages[2]["content"], "");
}

TEST(ServerRequest, CompletionPromptShapes) {
  const int32_t vocab = 512;
  auto r = parse_completion_request({{"prompt", "once"}}, vocab);
  ASSERT_EQ(r.prompts.size(), 1u);
  EXPECT_FALSE(r.prompts[0].is_tokens);
  EXPECT_EQ(r.prompts[0].text, "once");
  r = parse_completion_request({{"prompt", {"a", "b"}}}, vocab);
  ASSERT_EQ(r.prompts.size(), 2u);
  EXPECT_EQ(r.prompts[1].text, "b");
  r = parse_completion_request({{"prompt", {1, 2, 511}}}, vocab);
  ASSERT_EQ(r.prompts.size(), 1u);
  EXPECT_TRUE(r.prompts[0].is_tokens);
  EXPECT_EQ(r.prompts[0].tokens, (std::vector<int32_t>{1, 2, 511}));
  r = parse_completion_request({{"prompt", {{1, 2}, {3}}}}, vocab);
  ASSERT_EQ(r.prompts.size(), 2u);
  EXPECT_EQ(r.prompts[1].tokens, (std::vector<int32_t>{3}));

  expect_param([&] { parse_completion_request(json::object(), vocab); }, "prompt");
  expect_param([&] { parse_completion_request({{"prompt", 5}}, vocab); }, "prompt");
  expect_param([&] { parse_completion_request({{"prompt", json::array()}}, vocab); }, "prompt");
  expect_param([&] { parse_completion_request({{"prompt", {1, 512}}}, vocab); }, "prompt[1]");
  expect_param([&] { parse_completion_request({{"prompt", {1, -1}}}, vocab); }, "prompt[1]");
  expect_param([&] { parse_completion_request({{"prompt", {1, "a"}}}, vocab); }, "prompt[1]");
  expect_param([&] { parse_completion_request({{"prompt", {"a", 1}}}, vocab); }, "prompt");
  expect_param([&] { parse_completion_request({{"prompt", {{1}, json::array()}}}, vocab); }, "prompt[1]");
  expect_param([&] { parse_completion_request({{"prompt", {{1}, {1000}}}}, vocab); }, "prompt[1][0]");
  json many = json::array();
  for (size_t i = 0; i <= bounds::kMaxPrompts; ++i) many.push_back("x");
  expect_param([&] { parse_completion_request({{"prompt", many}}, vocab); }, "prompt");
  // 16 prompts × n=16 = 256 choices > 64.
  json sixteen = json::array();
  for (size_t i = 0; i < bounds::kMaxPrompts; ++i) sixteen.push_back("x");
  expect_param([&] { parse_completion_request({{"prompt", sixteen}, {"n", 16}}, vocab); }, "n");
}

TEST(ServerRequest, CompletionLogprobsAndUnsupportedFields) {
  auto r = parse_completion_request({{"prompt", "x"}, {"logprobs", 0}}, 512);
  EXPECT_TRUE(r.gen.logprobs);
  EXPECT_EQ(r.gen.sampling.top_logprobs, 0);
  r = parse_completion_request({{"prompt", "x"}, {"logprobs", 5}}, 512);
  EXPECT_EQ(r.gen.sampling.top_logprobs, 5);
  r = parse_completion_request({{"prompt", "x"}, {"echo", false}, {"suffix", ""}, {"best_of", 1}}, 512);
  EXPECT_FALSE(r.gen.logprobs);
  expect_param([&] { parse_completion_request({{"prompt", "x"}, {"logprobs", 6}}, 512); }, "logprobs");
  expect_param([&] { parse_completion_request({{"prompt", "x"}, {"logprobs", true}}, 512); }, "logprobs");
  EXPECT_TRUE(parse_completion_request({{"prompt", "x"}, {"echo", true}}, 512).gen.echo);
  expect_param([&] { parse_completion_request({{"prompt", "x"}, {"echo", true}, {"logprobs", 1}}, 512); }, "echo");
  expect_param([&] { parse_completion_request({{"prompt", "x"}, {"suffix", "end"}}, 512); }, "suffix");
  expect_param([&] { parse_completion_request({{"prompt", "x"}, {"best_of", 3}}, 512); }, "best_of");
  expect_param([&] { parse_completion_request({{"prompt", "x"}, {"ignore_eos", 1}}, 512); }, "ignore_eos");
}

TEST(ServerRequest, Embeddings) {
  auto r = parse_embedding_request({{"input", "hello"}, {"encoding_format", "base64"}}, 512);
  ASSERT_EQ(r.inputs.size(), 1u);
  EXPECT_TRUE(r.base64);
  r = parse_embedding_request({{"input", {"a", "b", "c"}}}, 512);
  EXPECT_EQ(r.inputs.size(), 3u);
  EXPECT_FALSE(r.base64);
  expect_param([&] { parse_embedding_request(json::object(), 512); }, "input");
  expect_param([&] { parse_embedding_request({{"input", "a"}, {"encoding_format", "hex"}}, 512); }, "encoding_format");
  expect_param([&] { parse_embedding_request({{"input", "a"}, {"dimensions", 0}}, 512); }, "dimensions");
  json many = json::array();
  for (size_t i = 0; i <= bounds::kMaxEmbeddingInputs; ++i) many.push_back("x");
  expect_param([&] { parse_embedding_request({{"input", many}}, 512); }, "input");
}

TEST(ServerRequest, TokenizeAndDetokenize) {
  auto t = parse_tokenize_request({{"prompt", "abc"}});
  EXPECT_EQ(t.text, "abc");
  EXPECT_TRUE(t.add_special_tokens);
  t = parse_tokenize_request({{"content", "x"}, {"add_special_tokens", false}});
  EXPECT_EQ(t.text, "x");
  EXPECT_FALSE(t.add_special_tokens);
  t = parse_tokenize_request({{"messages", {{{"role", "user"}, {"content", "q"}}}}});
  EXPECT_TRUE(t.is_chat);
  expect_param([&] { parse_tokenize_request(json::object()); }, "prompt");
  expect_param([&] { parse_tokenize_request({{"prompt", 1}}); }, "prompt");

  auto d = parse_detokenize_request({{"tokens", {1, 2, 3}}}, 512);
  EXPECT_EQ(d.tokens, (std::vector<int32_t>{1, 2, 3}));
  expect_param([&] { parse_detokenize_request(json::object(), 512); }, "tokens");
  expect_param([&] { parse_detokenize_request({{"tokens", "1 2"}}, 512); }, "tokens");
  expect_param([&] { parse_detokenize_request({{"tokens", {1, 9999}}}, 512); }, "tokens[1]");
}

TEST(ServerRequest, ErrorMessagesSayWhatIsAllowed) {
  try {
    parse_chat_request(chat_body({{"n", 17}}));
    FAIL();
  } catch (const ApiError& e) {
    EXPECT_NE(std::string(e.what()).find("between 1 and 16"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("17"), std::string::npos) << e.what();
  }
}

TEST(Request, ToolsAreValidatedStrictly) {
  const json fn = json::parse(
      R"({"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}})");
  auto with = [&](json extra) { return chat_body(std::move(extra)); };
  ChatRequest ok = parse_chat_request(with({{"tools", json::array({fn})}, {"tool_choice", "required"}}));
  ASSERT_TRUE(ok.tools);
  EXPECT_EQ(ok.tools->choice, ToolChoice::Required);
  EXPECT_EQ(ok.tools->names, std::vector<std::string>{"get_weather"});
  ok = parse_chat_request(with({{"tools", json::array({fn})}, {"parallel_tool_calls", false},
                                {"tool_choice", {{"type", "function"}, {"function", {{"name", "get_weather"}}}}}}));
  EXPECT_EQ(ok.tools->choice, ToolChoice::Named);
  EXPECT_EQ(ok.tools->max_calls(), 1u);
  // No parameters: a function of no arguments, written out for the templates.
  ok = parse_chat_request(with({{"tools", json::array({{{"type", "function"}, {"function", {{"name", "now"}}}}})}}));
  EXPECT_EQ(ok.tools->parameters[0].dump(), R"({"type":"object","properties":{}})");

  expect_param([&] { parse_chat_request(with({{"tools", json::array({{{"type", "function"}}})}})); }, "tools[0].function");
  expect_param([&] { parse_chat_request(with({{"tools", json::array({{{"type", "code"}, {"function", fn["function"]}}})}})); },
               "tools[0].type");
  json bad = fn;
  bad["function"]["name"] = "get weather";
  expect_param([&] { parse_chat_request(with({{"tools", json::array({bad})}})); }, "tools[0].function.name", "space");
  bad["function"]["name"] = std::string(65, 'a');
  expect_param([&] { parse_chat_request(with({{"tools", json::array({bad})}})); }, "tools[0].function.name", "65 bytes");
  expect_param([&] { parse_chat_request(with({{"tools", json::array({fn, fn})}})); }, "tools[1].function.name", "repeat");
  bad = fn;
  bad["function"]["parameters"] = "object";
  expect_param([&] { parse_chat_request(with({{"tools", json::array({bad})}})); }, "tools[0].function.parameters");
  bad["function"]["parameters"] = {{"type", "array"}};
  expect_param([&] { parse_chat_request(with({{"tools", json::array({bad})}})); }, "tools[0].function.parameters.type");
  expect_param([&] { parse_chat_request(with({{"tools", json::array({fn})}, {"tool_choice", "always"}})); }, "tool_choice");
  expect_param([&] {
    parse_chat_request(with({{"tools", json::array({fn})}, {"tool_choice", {{"type", "function"}, {"function", {{"name", "other"}}}}}}));
  }, "tool_choice.function.name");
  expect_param([&] { parse_chat_request(with({{"tool_choice", "required"}})); }, "tool_choice", "without tools");
  expect_param([&] { parse_chat_request(with({{"tools", json::array({fn})}, {"parallel_tool_calls", 1}})); },
               "parallel_tool_calls");
  expect_param([&] { parse_chat_request(with({{"functions", json::array({fn["function"]})}})); }, "functions");
}

TEST(Request, ToolMessagesAreNormalisedForTheTemplate) {
  json msgs = json::array({{{"role", "user"}, {"content", "weather?"}},
                           {{"role", "assistant"}, {"content", nullptr},
                            {"tool_calls", json::array({{{"id", "call_1"}, {"type", "function"},
                                                         {"function", {{"name", "get_weather"}, {"arguments", "{\"city\": \"Paris\"}"}}}}})}},
                           {{"role", "tool"}, {"tool_call_id", "call_1"}, {"content", "sunny"}}});
  ChatRequest r = parse_chat_request({{"messages", msgs}});
  EXPECT_EQ(r.messages[1]["tool_calls"][0]["function"]["arguments"], json({{"city", "Paris"}}));  // an object
  EXPECT_EQ(r.messages[1]["content"], "");
  EXPECT_EQ(r.messages[2]["tool_call_id"], "call_1");
  msgs[1]["tool_calls"][0]["function"]["arguments"] = "{not json";
  expect_param([&] { parse_chat_request({{"messages", msgs}}); }, "messages[1].tool_calls[0].function.arguments");
  msgs[1]["tool_calls"][0]["function"]["arguments"] = "[1]";
  expect_param([&] { parse_chat_request({{"messages", msgs}}); }, "messages[1].tool_calls[0].function.arguments");
  msgs[1]["tool_calls"][0]["function"] = {{"arguments", "{}"}};
  expect_param([&] { parse_chat_request({{"messages", msgs}}); }, "messages[1].tool_calls[0].function.name");
  msgs[0]["tool_calls"] = json::array();
  msgs[0]["tool_calls"].push_back(msgs[1]["tool_calls"][0]);
  expect_param([&] { parse_chat_request({{"messages", msgs}}); }, "messages[0].tool_calls");
}

}  // namespace
// No field is ignored silently: unknown ones are refused by name, on both routes.
TEST(ServerRequest, UnknownFieldsAreRefusedByName) {
  for (const char* key : {"unknown_extra", "reasoning_effort", "audio", "modalities", "prediction", "guided_decoding_backend"}) {
    expect_param([&] { parse_chat_request(chat_body({{key, 1}})); }, key);
    expect_param([&] { parse_completion_request({{"prompt", "x"}, {key, 1}}, 512); }, key);
  }
  expect_param([&] { parse_completion_request({{"prompt", "x"}, {"messages", json::array()}}, 512); }, "messages");
  expect_param([&] { parse_chat_request(chat_body({{"echo", true}})); }, "echo");
  expect_param([&] { parse_chat_request(chat_body({{"store", true}})); }, "store");
  expect_param([&] { parse_chat_request(chat_body({{"function_call", "auto"}})); }, "function_call");
}

// A JSON Schema's properties are written in the schema's own order (z, a, m here), as OpenAI and
// llama.cpp write them, not in the sorted order nlohmann::json gives the body: on both routes, for
// response_format json_schema and guided_json (object or string). Every other key order is refused.
TEST(ServerRequest, JsonSchemaPropertiesKeepSchemaOrder) {
  const std::string schema = R"({"type": "object", "additionalProperties": false, "required": ["z", "a", "m"],
      "properties": {"z": {"type": "integer"}, "a": {"type": "integer"}, "m": {"type": "integer"}}})";
  auto only_schema_order = [](const std::shared_ptr<const grammar::Grammar>& g, const std::string& what) {
    ASSERT_TRUE(g) << what;
    std::string keys = "zam";
    std::sort(keys.begin(), keys.end());
    int accepted = 0;
    do {
      std::string out = cat("{\"", keys[0], "\": 1, \"", keys[1], "\": 2, \"", keys[2], "\": 3}");
      grammar::Matcher m(g);
      const bool ok = m.advance(out) && m.complete();
      EXPECT_EQ(ok, keys == "zam") << what << ": " << out;
      accepted += ok;
    } while (std::next_permutation(keys.begin(), keys.end()));
    EXPECT_EQ(accepted, 1) << what;
  };
  const std::string messages = R"("messages": [{"role": "user", "content": "hi"}])";
  const std::string rf_chat = cat(R"({"response_format": {"type": "json_schema", "json_schema": {"name": "o", "schema": )",
                                  schema, "}}, ", messages, "}");
  const std::string gj_completion = cat(R"({"prompt": "x", "guided_json": )", schema, "}");
  EXPECT_TRUE(has_json_schema(parse_body(rf_chat)));
  EXPECT_TRUE(has_json_schema(parse_body(gj_completion)));
  only_schema_order(parse_chat_request_text(rf_chat).gen.sampling.grammar, "chat, response_format");
  only_schema_order(parse_completion_request_text(gj_completion, 512).gen.sampling.grammar, "completions, guided_json");
  const nlohmann::ordered_json in_order = parse_body_ordered(rf_chat);  // as a batch line's body is passed
  only_schema_order(parse_chat_request(parse_body(rf_chat), &in_order).gen.sampling.grammar, "in_order given");
  // guided_json as a string is parsed in its own order, with or without the ordered body.
  only_schema_order(parse_completion_request({{"prompt", "x"}, {"guided_json", schema}}, 512).gen.sampling.grammar,
                    "guided_json string");
  // The test can fail: from the sorted body alone the order is a, m, z.
  grammar::Matcher sorted(parse_completion_request(parse_body(gj_completion), 512).gen.sampling.grammar);
  EXPECT_TRUE(sorted.advance("{\"a\": 2, \"m\": 3, \"z\": 1}") && sorted.complete());
  EXPECT_FALSE(has_json_schema(parse_body(R"({"prompt": "x", "response_format": {"type": "json_object"}})")));
  // The re-parse keeps parse_body's depth bound.
  const std::string deep = "{\"guided_json\": " + std::string(bounds::kMaxJsonDepth + 1, '[') +
                           std::string(bounds::kMaxJsonDepth + 1, ']') + "}";
  EXPECT_THROW(parse_body_ordered(deep), ApiError);
  expect_param([&] { parse_completion_request({{"prompt", "x"}, {"guided_json", std::string(300, '[')}}, 512); },
               "guided_json");
}

TEST(ServerRequest, OutputConstraints) {
  auto g = parse_chat_request(chat_body({{"grammar", "root ::= \"yes\" | \"no\""}})).gen.sampling.grammar;
  ASSERT_TRUE(g);
  grammar::Matcher m(g);
  EXPECT_TRUE(m.advance("no") && m.complete());
  EXPECT_TRUE(parse_completion_request({{"prompt", "x"}, {"guided_grammar", "root ::= \"a\""}}, 512).gen.sampling.grammar);
  EXPECT_TRUE(parse_chat_request(chat_body({{"guided_json", {{"type", "integer"}}}})).gen.sampling.grammar);
  EXPECT_TRUE(parse_chat_request(chat_body({{"guided_json", "{\"type\": \"integer\"}"}})).gen.sampling.grammar);
  EXPECT_TRUE(parse_chat_request(chat_body({{"guided_regex", "[a-z]+"}})).gen.sampling.grammar);
  EXPECT_TRUE(parse_chat_request(chat_body({{"guided_choice", {"a", "b"}}})).gen.sampling.grammar);
  json rf = json::parse(R"({"type": "json_schema", "json_schema": {"name": "x", "strict": true,
      "schema": {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}}})");
  auto js = parse_chat_request(chat_body({{"response_format", rf}}));
  ASSERT_TRUE(js.gen.sampling.grammar);
  grammar::Matcher mj(js.gen.sampling.grammar);
  EXPECT_TRUE(mj.advance("{\"a\": 3}") && mj.complete());
  // Compile errors name the field (and the schema keyword in the message).
  expect_param([&] { parse_chat_request(chat_body({{"grammar", "root ::= root \"a\""}})); }, "grammar");
  expect_param([&] { parse_chat_request(chat_body({{"grammar", 5}})); }, "grammar");
  expect_param([&] { parse_chat_request(chat_body({{"guided_regex", "(a+)+"}})); }, "guided_regex");
  expect_param([&] { parse_chat_request(chat_body({{"guided_choice", json::array()}})); }, "guided_choice");
  expect_param([&] { parse_chat_request(chat_body({{"guided_json", "{not json"}})); }, "guided_json");
  expect_param([&] { parse_chat_request(chat_body({{"guided_json", {{"type", "string"}, {"uniqueItems", true}}}})); }, "guided_json");
  json bad_schema = json::parse(R"({"type": "json_schema", "json_schema": {"schema": {"not": {}}}})");
  expect_param([&] { parse_chat_request(chat_body({{"response_format", bad_schema}})); }, "response_format.json_schema.schema");
  json bad_field = json::parse(R"({"type": "json_schema", "json_schema": {"schemas": {}}})");
  expect_param([&] { parse_chat_request(chat_body({{"response_format", bad_field}})); }, "response_format.json_schema.schemas");
  // One constraint per request.
  expect_param([&] { parse_chat_request(chat_body({{"grammar", "root ::= \"a\""}, {"guided_regex", "a"}})); }, "guided_regex");
  expect_param([&] { parse_chat_request(chat_body({{"guided_choice", {"a"}}, {"response_format", {{"type", "json_object"}}}})); }, "response_format");
}

TEST(ServerRequest, LogitBias) {
  auto r = parse_chat_request(chat_body({{"logit_bias", {{"5", 1}, {"7", -100}}}}));
  EXPECT_EQ(r.gen.sampling.logit_bias, (std::vector<std::pair<int32_t, float>>{{5, 1.0f}, {7, -100.0f}}));
  expect_param([&] { parse_chat_request(chat_body({{"logit_bias", {{"5", 101}}}})); }, "logit_bias.5");
  expect_param([&] { parse_chat_request(chat_body({{"logit_bias", {{"x", 1}}}})); }, "logit_bias.x");
  expect_param([&] { parse_chat_request(chat_body({{"logit_bias", {{"-1", 1}}}})); }, "logit_bias.-1");
  expect_param([&] { parse_chat_request(chat_body({{"logit_bias", {{"5", "1"}}}})); }, "logit_bias.5");
}

}  // namespace moe::server
