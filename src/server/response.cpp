// response.cpp: OpenAI response shapes (see response.h).
#include "server/response.h"

#include <bit>
#include <chrono>
#include <cmath>
#include <cstring>
#include <mutex>
#include <random>

namespace moe::server {

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string random_hex(size_t n) {
  static std::mutex mu;
  static std::mt19937_64 rng{std::random_device{}()};
  static constexpr char kHex[] = "0123456789abcdef";
  std::lock_guard lock(mu);
  std::string s(n, '0');
  for (auto& c : s) c = kHex[rng() & 15];
  return s;
}

using nlohmann::json;

std::string dump_json(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

json error_json(const ApiError& e) {
  return {{"error",
           {{"message", e.what()},
            {"type", e.type},
            {"param", e.param.empty() ? json(nullptr) : json(e.param)},
            {"code", e.code.empty() ? json(nullptr) : json(e.code)}}}};
}

json usage_json(const UsageCounts& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.prompt_tokens + u.completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", u.cached_tokens}}}};
}

namespace {

// JSON has no -inf; OpenAI reports impossible tokens as -9999.
double finite_logprob(float lp) { return std::isfinite(lp) ? double(lp) : -9999.0; }

json token_bytes(const std::string& text) {
  json bytes = json::array();
  for (unsigned char c : text) bytes.push_back(int(c));
  return bytes;
}

json chat_token_json(const engine::TokenLogprob& t) {
  return {{"token", t.text}, {"logprob", finite_logprob(t.logprob)}, {"bytes", token_bytes(t.text)}};
}

}  // namespace

json chat_logprobs_json(std::span<const engine::TokenLogprob> chosen,
                        std::span<const std::vector<engine::TokenLogprob>> top) {
  json content = json::array();
  for (size_t i = 0; i < chosen.size(); ++i) {
    json entry = chat_token_json(chosen[i]);
    json alts = json::array();
    if (i < top.size())
      for (const auto& t : top[i]) alts.push_back(chat_token_json(t));
    entry["top_logprobs"] = std::move(alts);
    content.push_back(std::move(entry));
  }
  return {{"content", std::move(content)}, {"refusal", nullptr}};
}

json completion_logprobs_json(std::span<const engine::TokenLogprob> chosen,
                              std::span<const std::vector<engine::TokenLogprob>> top, int64_t& text_offset) {
  json tokens = json::array(), token_logprobs = json::array(), tops = json::array(), offsets = json::array();
  for (size_t i = 0; i < chosen.size(); ++i) {
    tokens.push_back(chosen[i].text);
    token_logprobs.push_back(finite_logprob(chosen[i].logprob));
    json alts = json::object();
    if (i < top.size())
      for (const auto& t : top[i]) alts[t.text] = finite_logprob(t.logprob);
    tops.push_back(std::move(alts));
    offsets.push_back(text_offset);
    text_offset += int64_t(chosen[i].text.size());
  }
  return {{"tokens", std::move(tokens)},
          {"token_logprobs", std::move(token_logprobs)},
          {"top_logprobs", std::move(tops)},
          {"text_offset", std::move(offsets)}};
}

json chat_completion_json(const ResponseMeta& meta, const std::vector<ChoiceOutput>& choices,
                          const UsageCounts& usage, bool logprobs) {
  json cs = json::array();
  for (size_t i = 0; i < choices.size(); ++i) {
    const auto& c = choices[i];
    cs.push_back({{"index", i},
                  {"message", {{"role", "assistant"}, {"content", c.text}, {"refusal", nullptr}}},
                  {"logprobs", logprobs ? chat_logprobs_json(c.chosen, c.top) : json(nullptr)},
                  {"finish_reason", c.finish_reason}});
  }
  return {{"id", meta.id},        {"object", "chat.completion"}, {"created", meta.created},
          {"model", meta.model},  {"choices", std::move(cs)},    {"usage", usage_json(usage)},
          {"system_fingerprint", nullptr}};
}

json completion_json(const ResponseMeta& meta, const std::vector<ChoiceOutput>& choices, const UsageCounts& usage,
                     bool logprobs) {
  json cs = json::array();
  for (size_t i = 0; i < choices.size(); ++i) {
    const auto& c = choices[i];
    int64_t offset = 0;
    cs.push_back({{"index", i},
                  {"text", c.text},
                  {"logprobs", logprobs ? completion_logprobs_json(c.chosen, c.top, offset) : json(nullptr)},
                  {"finish_reason", c.finish_reason}});
  }
  return {{"id", meta.id},       {"object", "text_completion"}, {"created", meta.created},
          {"model", meta.model}, {"choices", std::move(cs)},    {"usage", usage_json(usage)},
          {"system_fingerprint", nullptr}};
}

json chat_chunk_json(const ResponseMeta& meta, int index, json delta, json logprobs, const std::string& finish_reason,
                     bool include_usage) {
  json chunk = {{"id", meta.id},
                {"object", "chat.completion.chunk"},
                {"created", meta.created},
                {"model", meta.model},
                {"system_fingerprint", nullptr},
                {"choices",
                 json::array({{{"index", index},
                               {"delta", std::move(delta)},
                               {"logprobs", std::move(logprobs)},
                               {"finish_reason", finish_reason.empty() ? json(nullptr) : json(finish_reason)}}})}};
  if (include_usage) chunk["usage"] = nullptr;
  return chunk;
}

json completion_chunk_json(const ResponseMeta& meta, int index, const std::string& text, json logprobs,
                           const std::string& finish_reason, bool include_usage) {
  json chunk = {{"id", meta.id},
                {"object", "text_completion"},
                {"created", meta.created},
                {"model", meta.model},
                {"system_fingerprint", nullptr},
                {"choices",
                 json::array({{{"index", index},
                               {"text", text},
                               {"logprobs", std::move(logprobs)},
                               {"finish_reason", finish_reason.empty() ? json(nullptr) : json(finish_reason)}}})}};
  if (include_usage) chunk["usage"] = nullptr;
  return chunk;
}

json usage_chunk_json(const ResponseMeta& meta, const char* object, const UsageCounts& usage) {
  return {{"id", meta.id},
          {"object", object},
          {"created", meta.created},
          {"model", meta.model},
          {"system_fingerprint", nullptr},
          {"choices", json::array()},
          {"usage", usage_json(usage)}};
}

std::string base64_encode(std::span<const uint8_t> bytes) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    uint32_t v = (uint32_t(bytes[i]) << 16) | (uint32_t(bytes[i + 1]) << 8) | bytes[i + 2];
    for (int s = 18; s >= 0; s -= 6) out.push_back(kAlphabet[(v >> s) & 63]);
  }
  size_t rest = bytes.size() - i;
  if (rest) {
    uint32_t v = uint32_t(bytes[i]) << 16;
    if (rest == 2) v |= uint32_t(bytes[i + 1]) << 8;
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(rest == 2 ? kAlphabet[(v >> 6) & 63] : '=');
    out.push_back('=');
  }
  return out;
}

json embeddings_json(const std::string& model, const std::vector<std::vector<float>>& vectors, bool base64,
                     int64_t prompt_tokens) {
  static_assert(std::endian::native == std::endian::little, "base64 embeddings are little-endian float32");
  json data = json::array();
  for (size_t i = 0; i < vectors.size(); ++i) {
    json embedding;
    if (base64) {
      std::vector<uint8_t> bytes(vectors[i].size() * sizeof(float));
      if (!bytes.empty()) std::memcpy(bytes.data(), vectors[i].data(), bytes.size());
      embedding = base64_encode(bytes);
    } else {
      embedding = vectors[i];
    }
    data.push_back({{"object", "embedding"}, {"index", i}, {"embedding", std::move(embedding)}});
  }
  return {{"object", "list"},
          {"data", std::move(data)},
          {"model", model},
          {"usage", {{"prompt_tokens", prompt_tokens}, {"total_tokens", prompt_tokens}}}};
}

json model_json(const std::string& served_name, int64_t created, int64_t max_model_len) {
  return {{"id", served_name},
          {"object", "model"},
          {"created", created},
          {"owned_by", "moe"},
          {"max_model_len", max_model_len}};
}

json models_json(const std::string& served_name, int64_t created, int64_t max_model_len) {
  return {{"object", "list"}, {"data", json::array({model_json(served_name, created, max_model_len)})}};
}

std::string sse_event(const json& j) { return "data: " + dump_json(j) + "\n\n"; }

}  // namespace moe::server
