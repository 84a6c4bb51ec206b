// response_test.cpp: the exact JSON shapes of responses, stream chunks, errors and logprobs, SSE
// framing, base64 embeddings and UTF-8 safety of the serialiser.
#include "server/response.h"

#include <gtest/gtest.h>

#include <cstring>

namespace moe::server {
namespace {

using nlohmann::json;

const ResponseMeta kMeta{"chatcmpl-abc", 1700000000, "stories"};

TEST(ServerResponse, ErrorShape) {
  json e = error_json(ApiError(400, "bad n", "n", "invalid_request_error", "invalid_value"));
  EXPECT_EQ(e, json::parse(R"({"error":{"message":"bad n","type":"invalid_request_error","param":"n","code":"invalid_value"}})"));
  e = error_json(ApiError(500, "boom", "", "server_error"));
  EXPECT_TRUE(e["error"]["param"].is_null());
  EXPECT_TRUE(e["error"]["code"].is_null());
}

TEST(ServerResponse, UsageShape) {
  json u = usage_json({10, 5, 4});
  EXPECT_EQ(u, json::parse(
                   R"({"prompt_tokens":10,"completion_tokens":5,"total_tokens":15,"prompt_tokens_details":{"cached_tokens":4}})"));
}

TEST(ServerResponse, ChatCompletionShape) {
  ChoiceOutput a{"Hello", "stop", {}, {}, 2};
  ChoiceOutput b{"Hi", "length", {}, {}, 1};
  json j = chat_completion_json(kMeta, {a, b}, {3, 3, 0}, false);
  EXPECT_EQ(j["id"], "chatcmpl-abc");
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["created"], 1700000000);
  EXPECT_EQ(j["model"], "stories");
  ASSERT_EQ(j["choices"].size(), 2u);
  EXPECT_EQ(j["choices"][0]["index"], 0);
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(j["choices"][0]["message"]["content"], "Hello");
  EXPECT_TRUE(j["choices"][0]["logprobs"].is_null());
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(j["choices"][1]["index"], 1);
  EXPECT_EQ(j["choices"][1]["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["total_tokens"], 6);
}

TEST(ServerResponse, ChatLogprobsShape) {
  std::vector<engine::TokenLogprob> chosen = {{5, "Hi", -0.25f}, {6, "\xE2", -1.0f}};
  std::vector<std::vector<engine::TokenLogprob>> top = {{{5, "Hi", -0.25f}, {7, "Yo", -2.0f}}, {}};
  json lp = chat_logprobs_json(chosen, top);
  ASSERT_EQ(lp["content"].size(), 2u);
  const json& t0 = lp["content"][0];
  EXPECT_EQ(t0["token"], "Hi");
  EXPECT_DOUBLE_EQ(t0["logprob"].get<double>(), -0.25);
  EXPECT_EQ(t0["bytes"], json::array({72, 105}));
  ASSERT_EQ(t0["top_logprobs"].size(), 2u);
  EXPECT_EQ(t0["top_logprobs"][1]["token"], "Yo");
  EXPECT_EQ(t0["top_logprobs"][1]["bytes"], json::array({89, 111}));
  // A lone byte of a multi-byte character: bytes are exact, the text serialises with U+FFFD.
  EXPECT_EQ(lp["content"][1]["bytes"], json::array({0xE2}));
  std::string s = dump_json(lp);
  EXPECT_NE(s.find("\xEF\xBF\xBD"), std::string::npos);
}

TEST(ServerResponse, ImpossibleTokensGetFiniteLogprob) {
  std::vector<engine::TokenLogprob> chosen = {{1, "x", -std::numeric_limits<float>::infinity()}};
  json lp = chat_logprobs_json(chosen, {});
  EXPECT_DOUBLE_EQ(lp["content"][0]["logprob"].get<double>(), -9999.0);
}

TEST(ServerResponse, CompletionLogprobsShapeAndOffsets) {
  std::vector<engine::TokenLogprob> chosen = {{5, " Once", -0.5f}, {6, " upon", -0.75f}};
  std::vector<std::vector<engine::TokenLogprob>> top = {{{5, " Once", -0.5f}, {9, " One", -1.5f}},
                                                        {{6, " upon", -0.75f}}};
  int64_t offset = 3;
  json lp = completion_logprobs_json(chosen, top, offset);
  EXPECT_EQ(lp["tokens"], json::array({" Once", " upon"}));
  EXPECT_EQ(lp["token_logprobs"], json::array({-0.5, -0.75}));
  EXPECT_EQ(lp["top_logprobs"][0], json::parse(R"({" Once":-0.5," One":-1.5})"));
  EXPECT_EQ(lp["text_offset"], json::array({3, 8}));
  EXPECT_EQ(offset, 13);
}

TEST(ServerResponse, CompletionShape) {
  std::vector<engine::TokenLogprob> chosen = {{5, "a", -0.5f}};
  ChoiceOutput a{"a", "length", chosen, {{}}, 1};
  json j = completion_json({"cmpl-x", 1, "m"}, {a}, {2, 1, 0}, true);
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["choices"][0]["text"], "a");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["choices"][0]["logprobs"]["tokens"], json::array({"a"}));
  EXPECT_EQ(j["choices"][0]["logprobs"]["text_offset"], json::array({0}));
}

TEST(ServerResponse, ChunkShapes) {
  json c = chat_chunk_json(kMeta, 2, {{"content", "x"}}, nullptr, "", false);
  EXPECT_EQ(c["object"], "chat.completion.chunk");
  EXPECT_EQ(c["choices"][0]["index"], 2);
  EXPECT_EQ(c["choices"][0]["delta"]["content"], "x");
  EXPECT_TRUE(c["choices"][0]["finish_reason"].is_null());
  EXPECT_FALSE(c.contains("usage"));
  c = chat_chunk_json(kMeta, 0, json::object(), nullptr, "stop", true);
  EXPECT_EQ(c["choices"][0]["finish_reason"], "stop");
  EXPECT_TRUE(c["choices"][0]["delta"].empty());
  EXPECT_TRUE(c.contains("usage"));
  EXPECT_TRUE(c["usage"].is_null());
  c = completion_chunk_json({"cmpl-1", 1, "m"}, 1, "tok", nullptr, "", false);
  EXPECT_EQ(c["object"], "text_completion");
  EXPECT_EQ(c["choices"][0]["text"], "tok");
  json u = usage_chunk_json(kMeta, "chat.completion.chunk", {1, 2, 0});
  EXPECT_TRUE(u["choices"].empty());
  EXPECT_EQ(u["usage"]["total_tokens"], 3);
}

TEST(ServerResponse, SseFraming) {
  EXPECT_EQ(sse_event(json{{"a", 1}}), "data: {\"a\":1}\n\n");
  EXPECT_STREQ(sse_done(), "data: [DONE]\n\n");
  // A newline inside a string is escaped by JSON, so an event is always exactly one data line.
  std::string ev = sse_event(json{{"t", "line1\nline2"}});
  EXPECT_EQ(ev.find('\n'), ev.size() - 2);
}

TEST(ServerResponse, Base64MatchesRfc4648Vectors) {
  auto b64 = [](const std::string& s) {
    return base64_encode(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size()));
  };
  EXPECT_EQ(b64(""), "");
  EXPECT_EQ(b64("f"), "Zg==");
  EXPECT_EQ(b64("fo"), "Zm8=");
  EXPECT_EQ(b64("foo"), "Zm9v");
  EXPECT_EQ(b64("foob"), "Zm9vYg==");
  EXPECT_EQ(b64("fooba"), "Zm9vYmE=");
  EXPECT_EQ(b64("foobar"), "Zm9vYmFy");
}

TEST(ServerResponse, EmbeddingsFloatAndBase64) {
  std::vector<std::vector<float>> v = {{1.0f, 0.0f}, {0.6f, 0.8f}};
  json j = embeddings_json("m", v, false, 7);
  EXPECT_EQ(j["object"], "list");
  EXPECT_EQ(j["data"][1]["object"], "embedding");
  EXPECT_EQ(j["data"][1]["index"], 1);
  EXPECT_FLOAT_EQ(j["data"][1]["embedding"][1].get<float>(), 0.8f);
  EXPECT_EQ(j["usage"]["prompt_tokens"], 7);
  EXPECT_EQ(j["usage"]["total_tokens"], 7);
  json b = embeddings_json("m", v, true, 7);
  // 1.0f = 00 00 80 3f, 0.0f = 00 00 00 00 (little-endian).
  EXPECT_EQ(b["data"][0]["embedding"], "AACAPwAAAAA=");
}

TEST(ServerResponse, ModelsShape) {
  json j = models_json("stories", 5, 512);
  EXPECT_EQ(j["object"], "list");
  EXPECT_EQ(j["data"][0]["id"], "stories");
  EXPECT_EQ(j["data"][0]["object"], "model");
  EXPECT_EQ(j["data"][0]["owned_by"], "moe");
  EXPECT_EQ(j["data"][0]["max_model_len"], 512);
}

}  // namespace
}  // namespace moe::server
