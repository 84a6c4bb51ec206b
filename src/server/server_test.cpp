// server_test.cpp: the whole HTTP layer over loopback with a scripted fake backend (no model): routes,
// status codes and error JSON, streamed and non-streamed answers that agree, n > 1 with seed + i,
// stop strings, usage, logprobs, embeddings, auth, 413, 429, a client that disconnects mid-stream
// being cancelled at once, and a graceful shutdown that finishes a running stream while refusing new
// requests with 503.
#include "server/server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <random>
#include <thread>

#include "util/error.h"

namespace moe::server {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

// Tokens are bytes + 3 (0..2 are PAD, BOS, EOS). Generation writes letters from a base letter that the
// seed chooses (greedy: 'a'; sampled without seed: random), one token per step, then EOS after
// `eos_after` tokens unless ignore_eos; json_object writes {"a": 1}.
class FakeBackend : public Backend {
 public:
  struct Options {
    int64_t max_model_len = 256;
    std::chrono::milliseconds step{1};
    size_t queue_limit = 1000;
    int eos_after = 20;
    std::string script;         // when set: every request writes exactly this (tool-call tests)
    std::string tool_template;  // chat_template_source(): e.g. "<tool_call>" (Hermes tool calls)
  };
  explicit FakeBackend(Options o) : o_(o), loop_([this] { run(); }) {}
  ~FakeBackend() override {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    loop_.join();
  }

  uint64_t submit(engine::Request r, engine::Callbacks cb) override {
    std::lock_guard lock(mu_);
    if (draining_) fail("the engine is draining");
    if (active_.size() >= o_.queue_limit) throw engine::QueueFull();
    Seq s;
    s.id = next_id_++;
    s.req = r;
    s.cb = std::move(cb);
    if (!o_.script.empty()) {
      s.script = o_.script;
    } else if (r.sampling.json_object) {
      s.script = "{\"a\": 1}";
    } else {
      int base = 0;
      if (r.sampling.seed) base = int(*r.sampling.seed % 26);
      else if (r.sampling.temperature > 0) base = int(rng_() % 26);
      int len = r.ignore_eos ? int(r.max_tokens) : o_.eos_after;
      for (int i = 0; i < len && i < 100000; ++i) s.script.push_back(char('a' + (base + i) % 26));
    }
    submitted_.push_back(r);
    active_.push_back(std::move(s));
    cv_.notify_all();
    return active_.back().id;
  }
  void cancel(uint64_t id) override {
    std::lock_guard lock(mu_);
    cancelled_.push_back(id);
    for (auto& s : active_)
      if (s.id == id) s.cancel = true;
    cv_.notify_all();
  }
  std::vector<float> embed(const std::vector<int32_t>& tokens) override {
    float a = float(tokens.size()), b = 1.0f;
    float n = std::sqrt(a * a + b * b);
    return {a / n, b / n, 0.0f, 0.0f};
  }
  void drain() override {
    std::unique_lock lock(mu_);
    draining_ = true;
    cv_.wait(lock, [&] { return active_.empty(); });
  }
  engine::Stats stats() const override {
    std::lock_guard lock(mu_);
    engine::Stats s;
    s.running = int64_t(active_.size());
    s.generated_tokens_total = generated_;
    s.expert_tokens = {{1, 2}, {3, 4}};
    return s;
  }
  std::vector<int32_t> tokenize(std::string_view text, bool add_bos) const override {
    std::vector<int32_t> ids;
    if (add_bos) ids.push_back(1);
    for (unsigned char c : text) ids.push_back(int32_t(c) + 3);
    return ids;
  }
  std::string detokenize(std::span<const int32_t> ids) const override {
    std::string s;
    for (int32_t id : ids)
      if (id >= 3) s.push_back(char(id - 3));
    return s;
  }
  std::vector<int32_t> chat_prompt(const json& messages) const override {
    std::string text;
    for (const auto& m : messages) {
      if (m["content"] == "RAISE") fail("roles must alternate");
      text += m["role"].get<std::string>() + ":" + m["content"].get<std::string>() + "\n";
    }
    return tokenize(text + "assistant:", true);
  }
  std::vector<int32_t> chat_prompt_with_tools(const json& messages, const nlohmann::ordered_json& tools) const override {
    std::vector<int32_t> ids = tokenize("tools:" + tools.dump() + "\n", true);
    std::vector<int32_t> rest = chat_prompt(messages);
    ids.insert(ids.end(), rest.begin() + 1, rest.end());
    return ids;
  }
  std::string chat_template_source() const override { return o_.tool_template; }
  std::vector<int32_t> end_of_turn_ids() const override { return {299}; }
  int32_t n_vocab() const override { return 300; }
  int64_t max_model_len() const override { return o_.max_model_len; }

  std::vector<engine::Request> submitted() const {
    std::lock_guard lock(mu_);
    return submitted_;
  }
  std::vector<uint64_t> cancelled() const {
    std::lock_guard lock(mu_);
    return cancelled_;
  }
  size_t active() const {
    std::lock_guard lock(mu_);
    return active_.size();
  }

 private:
  struct Seq {
    uint64_t id = 0;
    engine::Request req;
    engine::Callbacks cb;
    std::string script;
    size_t pos = 0;
    std::string pending;  // held back: could be the start of a stop string
    std::string text;
    int64_t emitted = 0;
    bool cancel = false;
  };

  // One step: each sequence emits one token (or finishes).
  void step(Seq& s, bool& finished) {
    auto finish = [&](engine::FinishReason r) {
      engine::Usage u;
      u.prompt_tokens = int64_t(s.req.prompt.size());
      u.completion_tokens = s.emitted;
      u.cached_prompt_tokens = int64_t(s.req.prompt.size()) / 2;
      s.cb.on_finish(r, u, "");
      finished = true;
    };
    if (s.cancel) return finish(engine::FinishReason::Cancelled);
    if (s.emitted >= s.req.max_tokens) return finish(engine::FinishReason::Length);
    if (s.pos >= s.script.size()) return finish(engine::FinishReason::Stop);
    char c = s.script[s.pos++];
    ++s.emitted;
    ++generated_;
    s.pending.push_back(c);
    engine::Delta d;
    d.token_ids = {int32_t(static_cast<unsigned char>(c)) + 3};
    if (s.req.sampling.top_logprobs >= 0) {
      d.chosen.push_back({d.token_ids[0], std::string(1, c), -0.5f});
      std::vector<engine::TokenLogprob> top;
      for (int k = 0; k < s.req.sampling.top_logprobs; ++k) top.push_back({4 + k, std::string(1, char('A' + k)), -1.0f - float(k)});
      d.top.push_back(std::move(top));
    }
    for (const auto& stop : s.req.stop) {
      auto at = s.pending.find(stop);
      if (at != std::string::npos) {
        d.text = s.pending.substr(0, at);
        s.cb.on_delta(d);
        return finish(engine::FinishReason::Stop);
      }
    }
    size_t keep = 0;  // longest suffix of pending that starts a stop string
    for (const auto& stop : s.req.stop)
      for (size_t k = std::min(stop.size() - 1, s.pending.size()); k > keep; --k)
        if (s.pending.compare(s.pending.size() - k, k, stop, 0, k) == 0) keep = k;
    d.text = s.pending.substr(0, s.pending.size() - keep);
    s.pending.erase(0, s.pending.size() - keep);
    s.cb.on_delta(d);
  }

  void run() {
    std::unique_lock lock(mu_);
    while (true) {
      cv_.wait(lock, [&] { return stop_ || !active_.empty(); });
      if (stop_) break;
      lock.unlock();
      std::this_thread::sleep_for(o_.step);
      lock.lock();
      for (auto it = active_.begin(); it != active_.end();) {
        bool finished = false;
        step(*it, finished);
        it = finished ? active_.erase(it) : std::next(it);
      }
      cv_.notify_all();
    }
    for (auto& s : active_) s.cb.on_finish(engine::FinishReason::Cancelled, {}, "");
  }

  Options o_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Seq> active_;
  std::vector<engine::Request> submitted_;
  std::vector<uint64_t> cancelled_;
  uint64_t next_id_ = 1;
  int64_t generated_ = 0;
  bool draining_ = false;
  bool stop_ = false;
  std::mt19937_64 rng_{std::random_device{}()};
  std::thread loop_;
};

struct Harness {
  FakeBackend backend;
  Server server;
  int port = 0;
  std::thread thread;

  static ServerOptions any_port(ServerOptions so) {
    so.port = 0;
    so.served_model_name = "fake";
    so.model_aliases = {"fake.gguf"};
    return so;
  }
  explicit Harness(ServerOptions so = {}, FakeBackend::Options bo = {})
      : backend(bo), server(backend, any_port(std::move(so))) {
    port = server.bind();
    thread = std::thread([this] { server.run(); });
  }
  ~Harness() {
    server.shutdown();
    thread.join();
  }
  httplib::Client client(const std::string& key = "") const {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(20, 0);
    if (!key.empty()) c.set_bearer_token_auth(key);
    return c;
  }
  httplib::Result post(const std::string& path, const json& body, const std::string& key = "") const {
    auto c = client(key);
    return c.Post(path.c_str(), body.dump(), "application/json");
  }
};

json body_of(const httplib::Result& r) { return json::parse(r->body); }

void expect_error(const httplib::Result& r, int status, const std::string& param = "") {
  ASSERT_TRUE(r) << "no response";
  EXPECT_EQ(r->status, status) << r->body;
  json j = json::parse(r->body);
  ASSERT_TRUE(j.contains("error")) << r->body;
  EXPECT_TRUE(j["error"]["message"].is_string());
  EXPECT_TRUE(j["error"]["type"].is_string());
  if (!param.empty()) {
    EXPECT_EQ(j["error"]["param"], param) << r->body;
  }
}

// The data events of an SSE body; "[DONE]" becomes the string "[DONE]".
std::vector<json> sse_events(const std::string& body) {
  std::vector<json> out;
  size_t pos = 0;
  while (pos < body.size()) {
    size_t end = body.find("\n\n", pos);
    EXPECT_NE(end, std::string::npos) << "unterminated event at " << pos;
    if (end == std::string::npos) break;
    std::string ev = body.substr(pos, end - pos);
    pos = end + 2;
    EXPECT_TRUE(ev.starts_with("data: ")) << ev;
    std::string data = ev.substr(6);
    out.push_back(data == "[DONE]" ? json("[DONE]") : json::parse(data));
  }
  return out;
}

json chat(const std::string& content, json extra = json::object()) {
  json b = {{"model", "fake"}, {"messages", {{{"role", "user"}, {"content", content}}}}};
  for (auto& [k, v] : extra.items()) b[k] = v;
  return b;
}

TEST(Server, HealthModelsAndUnknownRoutes) {
  Harness h;
  auto c = h.client();
  auto r = c.Get("/health");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  r = c.Get("/v1/models");
  ASSERT_TRUE(r);
  EXPECT_EQ(body_of(r)["data"][0]["id"], "fake");
  r = c.Get("/v1/models/fake");
  EXPECT_EQ(r->status, 200);
  expect_error(c.Get("/v1/models/other"), 404, "model");
  // Long paths and headers (near httplib's 8 KiB limits) must not exhaust a connection thread's stack.
  expect_error(c.Get(("/v1/models/" + std::string(8000, 'a')).c_str()), 404, "model");
  expect_error(c.Get(("/v1/" + std::string(8000, 'b')).c_str()), 404);
  std::string ranges = "bytes=0-1";
  for (int i = 0; i < 1500; ++i) ranges += ",1-2";
  r = c.Get("/health", {{"Range", ranges}});
  ASSERT_TRUE(r);
  EXPECT_EQ(c.Get("/health")->status, 200);
  expect_error(c.Get("/v1/nothing"), 404);
  expect_error(c.Post("/v1/nothing", "{}", "application/json"), 404);
  expect_error(c.Get("/v1/chat/completions"), 405);  // a known path: 405 with Allow, not 404
  EXPECT_EQ(c.Get("/v1/chat/completions")->get_header_value("Allow"), "POST, OPTIONS");
}

TEST(Server, ChatCompletionShapeUsageAndTemplateStopIds) {
  Harness h;
  auto r = h.post("/v1/chat/completions", chat("hi", {{"temperature", 0}, {"max_tokens", 5}}));
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  json j = body_of(r);
  EXPECT_TRUE(j["id"].get<std::string>().starts_with("chatcmpl-"));
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["model"], "fake");
  EXPECT_EQ(j["choices"][0]["message"]["content"], "abcde");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  // "user:hi\nassistant:" is 18 bytes, plus BOS.
  EXPECT_EQ(j["usage"]["prompt_tokens"], 19);
  EXPECT_EQ(j["usage"]["completion_tokens"], 5);
  EXPECT_EQ(j["usage"]["total_tokens"], 24);
  EXPECT_EQ(j["usage"]["prompt_tokens_details"]["cached_tokens"], 9);
  auto sub = h.backend.submitted();
  ASSERT_EQ(sub.size(), 1u);
  EXPECT_EQ(sub[0].stop_token_ids, std::vector<int32_t>{299});
  EXPECT_EQ(sub[0].max_tokens, 5);
  EXPECT_EQ(sub[0].prompt.front(), 1);
}

TEST(Server, DefaultMaxTokensIsTheRestOfTheContextAndRequestsAreClamped) {
  FakeBackend::Options bo;
  bo.max_model_len = 64;
  Harness h({}, bo);
  ASSERT_EQ(h.post("/v1/completions", {{"prompt", "abc"}})->status, 200);
  ASSERT_EQ(h.post("/v1/completions", {{"prompt", "abc"}, {"max_tokens", 1000}})->status, 200);
  auto sub = h.backend.submitted();
  ASSERT_EQ(sub.size(), 2u);
  EXPECT_EQ(sub[0].max_tokens, 64 - 4);
  EXPECT_EQ(sub[1].max_tokens, 64 - 4);
}

TEST(Server, PromptLongerThanContextSaysByHowMuch) {
  FakeBackend::Options bo;
  bo.max_model_len = 32;
  Harness h({}, bo);
  auto r = h.post("/v1/completions", {{"prompt", std::string(40, 'x')}});
  expect_error(r, 400, "prompt");
  std::string msg = body_of(r)["error"]["message"];
  EXPECT_NE(msg.find("41 tokens"), std::string::npos) << msg;  // 40 bytes + BOS
  EXPECT_NE(msg.find("10 tokens too many"), std::string::npos) << msg;
  EXPECT_EQ(body_of(r)["error"]["code"], "context_length_exceeded");
  // Exactly the context: no room for a completion token.
  expect_error(h.post("/v1/completions", {{"prompt", std::string(31, 'x')}}), 400, "prompt");
  EXPECT_EQ(h.post("/v1/completions", {{"prompt", std::string(30, 'x')}})->status, 200);
  expect_error(h.post("/v1/chat/completions", chat(std::string(40, 'x'))), 400, "messages");
  expect_error(h.post("/v1/completions", {{"prompt", {"ok", std::string(40, 'x')}}}), 400, "prompt[1]");
  EXPECT_TRUE(h.backend.submitted().size() == 1);
}

TEST(Server, CompletionsBatchOfPromptsTimesN) {
  Harness h;
  auto r = h.post("/v1/completions", {{"prompt", {"a", "b"}}, {"n", 2}, {"seed", 3}, {"max_tokens", 3}});
  ASSERT_EQ(r->status, 200) << r->body;
  json j = body_of(r);
  EXPECT_TRUE(j["id"].get<std::string>().starts_with("cmpl-"));
  EXPECT_EQ(j["object"], "text_completion");
  ASSERT_EQ(j["choices"].size(), 4u);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(j["choices"][i]["index"], i);
  // Choice i of each prompt uses seed + i: 'd' then 'e'.
  EXPECT_EQ(j["choices"][0]["text"], "def");
  EXPECT_EQ(j["choices"][1]["text"], "efg");
  EXPECT_EQ(j["choices"][2]["text"], "def");
  EXPECT_EQ(j["usage"]["prompt_tokens"], 4);  // two prompts of BOS + 1 byte, counted once each
  EXPECT_EQ(j["usage"]["completion_tokens"], 12);
  auto sub = h.backend.submitted();
  ASSERT_EQ(sub.size(), 4u);
  EXPECT_EQ(sub[1].sampling.seed, 4u);
  EXPECT_TRUE(sub[0].stop_token_ids.empty());
}

TEST(Server, TokenPromptsAreUsedAsGiven) {
  Harness h;
  ASSERT_EQ(h.post("/v1/completions", {{"prompt", {10, 11, 12}}, {"max_tokens", 1}})->status, 200);
  EXPECT_EQ(h.backend.submitted()[0].prompt, (std::vector<int32_t>{10, 11, 12}));
  expect_error(h.post("/v1/completions", {{"prompt", {10, 300}}}), 400, "prompt[1]");
}

TEST(Server, StopStringsAndFinishReason) {
  Harness h;
  auto r = h.post("/v1/completions", {{"prompt", "x"}, {"stop", "de"}, {"temperature", 0}});
  json j = body_of(r);
  EXPECT_EQ(j["choices"][0]["text"], "abc");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  // EOS after 20 tokens.
  j = body_of(h.post("/v1/completions", {{"prompt", "x"}, {"temperature", 0}}));
  EXPECT_EQ(j["choices"][0]["text"].get<std::string>().size(), 20u);
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
}

TEST(Server, StreamedChatMatchesNonStreamed) {
  Harness h;
  json req = chat("hi", {{"seed", 5}, {"max_tokens", 8}, {"n", 2}});
  json plain = body_of(h.post("/v1/chat/completions", req));
  req["stream"] = true;
  req["stream_options"] = {{"include_usage", true}};
  auto r = h.post("/v1/chat/completions", req);
  ASSERT_EQ(r->status, 200);
  EXPECT_NE(r->get_header_value("Content-Type").find("text/event-stream"), std::string::npos);
  auto events = sse_events(r->body);
  ASSERT_GE(events.size(), 4u);
  EXPECT_EQ(events.back(), "[DONE]");
  std::string text[2];
  int finishes = 0;
  bool roles[2] = {false, false};
  json usage;
  std::string id;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    const json& e = events[i];
    EXPECT_EQ(e["object"], "chat.completion.chunk");
    if (id.empty()) id = e["id"];
    EXPECT_EQ(e["id"], id);
    ASSERT_TRUE(e.contains("usage"));
    if (e["choices"].empty()) {
      usage = e["usage"];
      EXPECT_EQ(i + 2, events.size()) << "usage comes last";
      continue;
    }
    EXPECT_TRUE(e["usage"].is_null());
    int idx = e["choices"][0]["index"];
    const json& delta = e["choices"][0]["delta"];
    if (delta.contains("role")) roles[idx] = true;
    if (delta.contains("content")) text[idx] += delta["content"].get<std::string>();
    if (!e["choices"][0]["finish_reason"].is_null()) {
      ++finishes;
      EXPECT_EQ(e["choices"][0]["finish_reason"], plain["choices"][idx]["finish_reason"]);
    }
  }
  EXPECT_TRUE(roles[0] && roles[1]);
  EXPECT_EQ(finishes, 2);
  EXPECT_EQ(text[0], plain["choices"][0]["message"]["content"]);
  EXPECT_EQ(text[1], plain["choices"][1]["message"]["content"]);
  EXPECT_EQ(text[0], "fghijklm");
  EXPECT_EQ(usage, plain["usage"]);
}

TEST(Server, StreamedCompletionWithLogprobs) {
  Harness h;
  auto r = h.post("/v1/completions", {{"prompt", "x"}, {"stream", true}, {"logprobs", 2}, {"max_tokens", 3},
                                      {"temperature", 0}});
  auto events = sse_events(r->body);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back(), "[DONE]");
  std::string text;
  std::vector<int64_t> offsets;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    const json& c = events[i]["choices"][0];
    EXPECT_EQ(events[i]["object"], "text_completion");
    EXPECT_FALSE(events[i].contains("usage"));
    text += c["text"].get<std::string>();
    if (!c["logprobs"].is_null()) {
      EXPECT_EQ(c["logprobs"]["top_logprobs"][0].size(), 2u);
      for (auto& o : c["logprobs"]["text_offset"]) offsets.push_back(o);
    }
  }
  EXPECT_EQ(text, "abc");
  EXPECT_EQ(offsets, (std::vector<int64_t>{0, 1, 2}));
}

TEST(Server, ChatLogprobsNonStreamed) {
  Harness h;
  json j = body_of(h.post("/v1/chat/completions",
                          chat("hi", {{"logprobs", true}, {"top_logprobs", 3}, {"max_tokens", 2}})));
  const json& content = j["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), 2u);
  EXPECT_EQ(content[0]["top_logprobs"].size(), 3u);
  EXPECT_DOUBLE_EQ(content[0]["logprob"].get<double>(), -0.5);
  EXPECT_EQ(h.backend.submitted()[0].sampling.top_logprobs, 3);
  j = body_of(h.post("/v1/chat/completions", chat("hi", {{"max_tokens", 2}})));
  EXPECT_TRUE(j["choices"][0]["logprobs"].is_null());
  EXPECT_EQ(h.backend.submitted()[1].sampling.top_logprobs, -1);
}

TEST(Server, JsonObjectIsPassedToTheSampler) {
  Harness h;
  json j = body_of(h.post("/v1/chat/completions", chat("hi", {{"response_format", {{"type", "json_object"}}}})));
  EXPECT_TRUE(h.backend.submitted()[0].sampling.json_object);
  EXPECT_EQ(json::parse(j["choices"][0]["message"]["content"].get<std::string>())["a"], 1);
}

TEST(Server, BadRequestsNameTheField) {
  Harness h;
  auto c = h.client();
  expect_error(c.Post("/v1/chat/completions", "{not json", "application/json"), 400);
  expect_error(c.Post("/v1/chat/completions", "[]", "application/json"), 400);
  expect_error(h.post("/v1/chat/completions", chat("hi", {{"temperature", 3}})), 400, "temperature");
  expect_error(h.post("/v1/chat/completions", chat("hi", {{"n", 0}})), 400, "n");
  expect_error(h.post("/v1/chat/completions", chat("hi", {{"messages", "x"}})), 400, "messages");
  expect_error(h.post("/v1/chat/completions", chat("RAISE")), 400, "messages");
  expect_error(h.post("/v1/chat/completions", chat("hi", {{"model", "gpt-4"}})), 404, "model");
  EXPECT_EQ(h.post("/v1/chat/completions", chat("hi", {{"model", "fake.gguf"}, {"max_tokens", 1}}))->status, 200);
  json no_model = chat("hi", {{"max_tokens", 1}});
  no_model.erase("model");
  EXPECT_EQ(h.post("/v1/chat/completions", no_model)->status, 200);
  EXPECT_EQ(h.backend.submitted().size(), 2u);
}

TEST(Server, BodyTooLargeIs413) {
  ServerOptions so;
  so.max_body_bytes = 1 << 16;
  Harness h(so);
  std::string big = chat(std::string(1 << 17, 'x')).dump();
  auto c = h.client();
  auto r = c.Post("/v1/chat/completions", big, "application/json");
  expect_error(r, 413);
  EXPECT_EQ(body_of(r)["error"]["code"], "request_too_large");
  // Unknown routes too, and the server keeps serving.
  expect_error(h.client().Post("/elsewhere", big, "application/json"), 413);
  EXPECT_EQ(h.client().Get("/health")->status, 200);
}

TEST(Server, ApiKeyOnEveryRouteButHealth) {
  ServerOptions so;
  so.api_key = "sk-test";
  Harness h(so);
  EXPECT_EQ(h.client().Get("/health")->status, 200);
  expect_error(h.client().Get("/v1/models"), 401);
  expect_error(h.client("wrong").Get("/v1/models"), 401);
  expect_error(h.client().Get("/metrics"), 401);
  expect_error(h.client().Get("/no/such/route"), 401);
  expect_error(h.post("/v1/chat/completions", chat("hi")), 401);
  expect_error(h.post("/v1/chat/completions", chat("hi"), "sk-tes"), 401);
  EXPECT_EQ(h.client("sk-test").Get("/v1/models")->status, 200);
  expect_error(h.client("sk-test").Get("/no/such/route"), 404);
  EXPECT_EQ(h.post("/v1/chat/completions", chat("hi", {{"max_tokens", 1}}), "sk-test")->status, 200);
  EXPECT_EQ(h.backend.submitted().size(), 1u);
}

TEST(Server, QueueFullIs429AndCancelsTheRestOfTheChoices) {
  FakeBackend::Options bo;
  bo.queue_limit = 2;
  bo.step = 20ms;
  Harness h({}, bo);
  auto r = h.post("/v1/completions", {{"prompt", "x"}, {"n", 3}, {"max_tokens", 50}});
  expect_error(r, 429);
  EXPECT_EQ(h.backend.cancelled().size(), 2u);
}

TEST(Server, EmbeddingsTokenizeDetokenize) {
  Harness h;
  json j = body_of(h.post("/v1/embeddings", {{"input", {"ab", "abc"}}, {"model", "fake"}}));
  ASSERT_EQ(j["data"].size(), 2u);
  auto v = j["data"][1]["embedding"].get<std::vector<float>>();
  double norm = 0;
  for (float x : v) norm += double(x) * x;
  EXPECT_NEAR(norm, 1.0, 1e-6);
  EXPECT_EQ(j["usage"]["prompt_tokens"], 3 + 4);
  j = body_of(h.post("/v1/embeddings", {{"input", "ab"}, {"encoding_format", "base64"}}));
  EXPECT_TRUE(j["data"][0]["embedding"].is_string());
  expect_error(h.post("/v1/embeddings", {{"input", "ab"}, {"dimensions", 3}}), 400, "dimensions");

  j = body_of(h.post("/tokenize", {{"prompt", "hi"}}));
  EXPECT_EQ(j["tokens"], json::array({1, 'h' + 3, 'i' + 3}));
  EXPECT_EQ(j["count"], 3);
  EXPECT_EQ(j["max_model_len"], 256);
  j = body_of(h.post("/tokenize", {{"prompt", "hi"}, {"add_special_tokens", false}}));
  EXPECT_EQ(j["count"], 2);
  j = body_of(h.post("/detokenize", {{"tokens", {'h' + 3, 'i' + 3}}}));
  EXPECT_EQ(j["prompt"], "hi");
  expect_error(h.post("/detokenize", {{"tokens", {-1}}}), 400, "tokens[0]");
}

TEST(Server, MetricsCountRequestsAndTokens) {
  Harness h;
  ASSERT_EQ(h.post("/v1/completions", {{"prompt", "x"}, {"max_tokens", 4}})->status, 200);
  expect_error(h.post("/v1/completions", {{"prompt", 5}}), 400);
  // httplib's logger (which counts requests) runs just after the response is written, so the client
  // may ask before the last count lands: poll briefly for it.
  auto r = h.client().Get("/metrics");
  for (int i = 0; i < 200 && r && r->body.find("code=\"400\"} 1\n") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    r = h.client().Get("/metrics");
  }
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  EXPECT_NE(r->get_header_value("Content-Type").find("text/plain"), std::string::npos);
  const std::string& m = r->body;
  EXPECT_NE(m.find("moe_http_requests_total{route=\"/v1/completions\",code=\"200\"} 1\n"), std::string::npos) << m;
  EXPECT_NE(m.find("moe_http_requests_total{route=\"/v1/completions\",code=\"400\"} 1\n"), std::string::npos) << m;
  EXPECT_NE(m.find("moe_time_to_first_token_seconds_count 1\n"), std::string::npos) << m;
  EXPECT_NE(m.find("moe_inter_token_latency_seconds_count 3\n"), std::string::npos) << m;
  EXPECT_NE(m.find("moe_generation_tokens_total 4\n"), std::string::npos) << m;
  EXPECT_NE(m.find("moe_expert_tokens_total{layer=\"1\",expert=\"1\"} 4\n"), std::string::npos) << m;
}

// A raw loopback client: the test controls exactly when the connection closes.
class RawClient {
 public:
  explicit RawClient(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(uint16_t(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) fail("connect failed");
  }
  ~RawClient() { close(); }
  void send_post(const std::string& path, const std::string& body) {
    std::string req = "POST " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: " +
                      std::to_string(body.size()) + "\r\n\r\n" + body;
    EXPECT_EQ(::send(fd_, req.data(), req.size(), MSG_NOSIGNAL), ssize_t(req.size()));
  }
  // Reads until `needle` appears or the deadline passes.
  std::string read_until(const std::string& needle, std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (got_.find(needle) == std::string::npos && std::chrono::steady_clock::now() < deadline) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      char buf[4096];
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) break;
      got_.append(buf, size_t(n));
    }
    return got_;
  }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
  std::string got_;
};

template <typename F>
bool eventually(F&& f, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (f()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return f();
}

TEST(Server, ClientDisconnectMidStreamCancelsAtOnce) {
  FakeBackend::Options bo;
  bo.step = 5ms;
  Harness h({}, bo);
  RawClient c(h.port);
  c.send_post("/v1/completions", json{{"prompt", "x"}, {"stream", true}, {"ignore_eos", true}, {"max_tokens", 5000}}.dump());
  std::string got = c.read_until("\"text\":\"c\"", 5s);
  ASSERT_NE(got.find("\"text\":\"c\""), std::string::npos) << got;
  ASSERT_EQ(h.backend.active(), 1u);
  auto closed_at = std::chrono::steady_clock::now();
  c.close();
  ASSERT_TRUE(eventually([&] { return h.backend.cancelled().size() == 1; }, 2s));
  auto waited = std::chrono::steady_clock::now() - closed_at;
  EXPECT_LT(waited, 1s);
  EXPECT_TRUE(eventually([&] { return h.backend.active() == 0; }, 2s));
}

TEST(Server, ClientDisconnectWhileWaitingForTheFirstTokenCancels) {
  FakeBackend::Options bo;
  bo.step = 5ms;
  bo.queue_limit = 1000;
  Harness h({}, bo);
  RawClient c(h.port);
  // Headers and the role chunk arrive first; no content yet when we hang up (the first token takes a step).
  c.send_post("/v1/chat/completions",
              chat("x", {{"stream", true}, {"ignore_eos", true}, {"max_tokens", 5000}}).dump());
  std::string got = c.read_until("\"role\":\"assistant\"", 5s);
  ASSERT_NE(got.find("assistant"), std::string::npos) << got;
  c.close();
  ASSERT_TRUE(eventually([&] { return h.backend.cancelled().size() == 1; }, 2s));
}

TEST(Server, ClientDisconnectDuringANonStreamedAnswerCancelsAtOnce) {
  FakeBackend::Options bo;
  bo.step = 5ms;
  Harness h({}, bo);
  RawClient c(h.port);
  c.send_post("/v1/chat/completions", chat("x", {{"ignore_eos", true}, {"max_tokens", 5000}}).dump());
  ASSERT_TRUE(eventually([&] { return h.backend.active() == 1; }, 2s));
  std::this_thread::sleep_for(50ms);  // generating: the answer is 25 s away
  auto closed_at = std::chrono::steady_clock::now();
  c.close();
  ASSERT_TRUE(eventually([&] { return h.backend.cancelled().size() == 1; }, 2s));
  EXPECT_LT(std::chrono::steady_clock::now() - closed_at, 1s);
  EXPECT_TRUE(eventually([&] { return h.backend.active() == 0; }, 2s));

  // A client that stays still gets a plain JSON answer with a length (not chunked).
  auto r = h.post("/v1/completions", {{"prompt", "x"}, {"max_tokens", 30}, {"ignore_eos", true}, {"temperature", 0}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("Content-Type"), "application/json");
  EXPECT_EQ(r->get_header_value("Content-Length"), std::to_string(r->body.size()));
  EXPECT_EQ(body_of(r)["choices"][0]["text"], "abcdefghijklmnopqrstuvwxyzabcd");
  // The same on a kept-alive connection's second request (the watch finds the right socket each time).
  auto kept = h.client();
  kept.set_keep_alive(true);
  for (int i = 0; i < 2; ++i) {
    auto k = kept.Post("/v1/completions", json{{"prompt", "x"}, {"max_tokens", 20}, {"ignore_eos", true}}.dump(),
                       "application/json");
    ASSERT_TRUE(k);
    EXPECT_EQ(k->status, 200) << k->body;
    EXPECT_EQ(body_of(k)["choices"][0]["finish_reason"], "length");
  }
  EXPECT_EQ(h.backend.cancelled().size(), 1u);
}

TEST(Server, ShutdownFinishesInFlightStreamsAndRefusesNewRequests) {
  FakeBackend::Options bo;
  bo.step = 5ms;
  auto h = std::make_unique<Harness>(ServerOptions{}, bo);
  RawClient c(h->port);
  c.send_post("/v1/completions", json{{"prompt", "x"}, {"stream", true}, {"ignore_eos", true}, {"max_tokens", 60}}.dump());
  ASSERT_NE(c.read_until("\"text\":\"b\"", 5s).find("\"text\":\"b\""), std::string::npos);
  std::thread stopper([&] { h->server.shutdown(); });
  // While draining, new requests get 503 (the in-flight stream keeps going).
  std::this_thread::sleep_for(20ms);
  auto r = h->post("/v1/completions", {{"prompt", "x"}});
  expect_error(r, 503);
  std::string all = c.read_until("data: [DONE]", 10s);
  EXPECT_NE(all.find("data: [DONE]"), std::string::npos);
  EXPECT_NE(all.find("\"finish_reason\":\"length\""), std::string::npos);
  stopper.join();
  EXPECT_TRUE(h->backend.cancelled().empty());
  h.reset();  // run() has returned; the harness joins it
}

TEST(Server, ShutdownRightAfterBindDoesNotHang) {
  for (int i = 0; i < 20; ++i) {
    FakeBackend backend({});
    ServerOptions so;
    so.port = 0;
    Server server(backend, so);
    server.bind();
    std::thread stopper([&] { server.shutdown(); });
    server.run();  // returns whether shutdown() came before, during or after its start
    stopper.join();
  }
}

TEST(Server, ManyConcurrentStreamsAllComplete) {
  FakeBackend::Options bo;
  bo.step = 2ms;
  Harness h({}, bo);
  constexpr int kClients = 40;
  std::atomic<int> ok{0};
  std::vector<std::thread> ts;
  for (int i = 0; i < kClients; ++i)
    ts.emplace_back([&, i] {
      auto r = h.post("/v1/chat/completions",
                      chat("c" + std::to_string(i), {{"stream", true}, {"seed", i}, {"max_tokens", 10}}));
      if (!r || r->status != 200) return;
      auto ev = sse_events(r->body);
      std::string text;
      for (auto& e : ev)
        if (e.is_object() && !e["choices"].empty() && e["choices"][0]["delta"].contains("content"))
          text += e["choices"][0]["delta"]["content"].get<std::string>();
      std::string expect;
      for (int k = 0; k < 10; ++k) expect.push_back(char('a' + (i + k) % 26));
      if (!ev.empty() && ev.back() == "[DONE]" && text == expect) ++ok;
    });
  for (auto& t : ts) t.join();
  EXPECT_EQ(ok, kClients);
}

// ---- tool calling (tools.h, tool_stream.h) through the routes, with a backend that writes a call ----

const char* kToolCallScript =
    "Sure.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"c\"}}\n</tool_call>";

json weather_tools() {
  return json::parse(R"([{"type": "function", "function": {"name": "get_weather", "description": "Weather",
      "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string"}}}}}])");
}

FakeBackend::Options tool_backend() {
  FakeBackend::Options o;
  o.script = kToolCallScript;
  o.tool_template = "... <tool_call> ...";
  o.max_model_len = 4096;  // the prompt carries the tools
  return o;
}

TEST(ServerTools, ChatAnswerCarriesToolCalls) {
  Harness h({}, tool_backend());
  auto r = h.post("/v1/chat/completions", chat("weather?", {{"tools", weather_tools()}}));
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  json c = body_of(r)["choices"][0];
  EXPECT_EQ(c["finish_reason"], "tool_calls");
  EXPECT_EQ(c["message"]["content"], "Sure.");
  ASSERT_EQ(c["message"]["tool_calls"].size(), 1u);
  json call = c["message"]["tool_calls"][0];
  EXPECT_TRUE(call["id"].get<std::string>().starts_with("call_"));
  EXPECT_EQ(call["type"], "function");
  EXPECT_EQ(call["function"]["name"], "get_weather");
  EXPECT_EQ(call["function"]["arguments"], R"({"city":"Paris","unit":"c"})");
  // The prompt was rendered with the tools (the fake writes them first), in the key order they were
  // sent in (as HF's tojson keeps it), not sorted.
  const std::string raw = R"({"model": "fake", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function",
      "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"unit": {}, "city": {}}}}}]})";
  r = h.client().Post("/v1/chat/completions", raw, "application/json");
  ASSERT_EQ(r->status, 200) << r->body;
  std::string prompt = h.backend.detokenize(h.backend.submitted().back().prompt);
  EXPECT_TRUE(prompt.starts_with(R"(tools:[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"unit":{},"city":{}}}}}])"))
      << prompt;

  // tool_choice "none": no tools in the prompt, and the text is not parsed.
  r = h.post("/v1/chat/completions", chat("weather?", {{"tools", weather_tools()}, {"tool_choice", "none"}}));
  ASSERT_EQ(r->status, 200) << r->body;
  c = body_of(r)["choices"][0];
  EXPECT_EQ(c["message"]["content"], kToolCallScript);
  EXPECT_FALSE(c["message"].contains("tool_calls"));
  EXPECT_EQ(c["finish_reason"], "stop");
  prompt = h.backend.detokenize(h.backend.submitted().back().prompt);
  EXPECT_FALSE(prompt.starts_with("tools:")) << prompt;
}

TEST(ServerTools, StreamedToolCallDeltasAsOpenAISendsThem) {
  Harness h({}, tool_backend());
  auto r = h.post("/v1/chat/completions", chat("weather?", {{"tools", weather_tools()}, {"stream", true}}));
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  std::string content;
  std::vector<json> tool_deltas;
  std::string finish;
  for (const json& e : sse_events(r->body)) {
    if (e == "[DONE]") continue;
    const json& d = e["choices"][0]["delta"];
    if (d.contains("content")) {
      EXPECT_EQ(d["content"].get<std::string>().find('<'), std::string::npos) << "a marker leaked: " << e.dump();
      content += d["content"].get<std::string>();
    }
    if (d.contains("tool_calls")) tool_deltas.push_back(d["tool_calls"][0]);
    if (!e["choices"][0]["finish_reason"].is_null()) finish = e["choices"][0]["finish_reason"];
  }
  EXPECT_EQ(content, "Sure.");
  EXPECT_EQ(finish, "tool_calls");
  ASSERT_EQ(tool_deltas.size(), 2u);
  EXPECT_EQ(tool_deltas[0]["index"], 0);
  EXPECT_TRUE(tool_deltas[0]["id"].get<std::string>().starts_with("call_"));
  EXPECT_EQ(tool_deltas[0]["type"], "function");
  EXPECT_EQ(tool_deltas[0]["function"]["name"], "get_weather");
  EXPECT_EQ(tool_deltas[0]["function"]["arguments"], "");
  EXPECT_EQ(tool_deltas[1]["index"], 0);
  EXPECT_FALSE(tool_deltas[1].contains("id"));
  EXPECT_EQ(tool_deltas[1]["function"]["arguments"], R"({"city":"Paris","unit":"c"})");
}

TEST(ServerTools, ForcedCallCannotAlsoBeAJsonObject) {
  Harness h({}, tool_backend());
  auto r = h.post("/v1/chat/completions", chat("weather?", {{"tools", weather_tools()}, {"tool_choice", "required"},
                                                           {"response_format", {{"type", "json_object"}}}}));
  expect_error(r, 400, "tool_choice");
  // A forced call is grammar-constrained (the fake backend ignores the grammar; the request carries it).
  r = h.post("/v1/chat/completions", chat("weather?", {{"tools", weather_tools()}, {"tool_choice", "required"}}));
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_TRUE(h.backend.submitted().back().sampling.grammar);
  r = h.post("/v1/chat/completions", chat("weather?", {{"tools", weather_tools()}}));
  EXPECT_FALSE(h.backend.submitted().back().sampling.grammar);
}

TEST(ServerTools, TemplateWithoutToolsIsA400) {
  Harness h;  // the fake's template has no tool format
  auto r = h.post("/v1/chat/completions", chat("weather?", {{"tools", weather_tools()}}));
  expect_error(r, 400, "tools");
  EXPECT_NE(body_of(r)["error"]["message"].get<std::string>().find("--chat-template"), std::string::npos);
  r = h.post("/api/chat", {{"model", "fake"}, {"messages", {{{"role", "user"}, {"content", "x"}}}}, {"tools", weather_tools()}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  EXPECT_NE(body_of(r)["error"].get<std::string>().find("does not support tools"), std::string::npos) << r->body;
}

TEST(ServerTools, OllamaChatToolCallsWithObjectArguments) {
  Harness h({}, tool_backend());
  json req = {{"model", "fake"}, {"messages", {{{"role", "user"}, {"content", "weather?"}}}}, {"tools", weather_tools()},
              {"stream", false}};
  auto r = h.post("/api/chat", req);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  json m = body_of(r)["message"];
  EXPECT_EQ(m["content"], "Sure.");
  ASSERT_EQ(m["tool_calls"].size(), 1u);
  EXPECT_EQ(m["tool_calls"][0]["function"]["name"], "get_weather");
  EXPECT_EQ(m["tool_calls"][0]["function"]["arguments"], json({{"city", "Paris"}, {"unit", "c"}}));
  req["stream"] = true;
  r = h.post("/api/chat", req);
  ASSERT_EQ(r->status, 200) << r->body;
  std::string content;
  json calls = json::array();
  bool done = false;
  for (size_t pos = 0; pos < r->body.size();) {
    size_t nl = r->body.find('\n', pos);
    json line = json::parse(r->body.substr(pos, nl - pos));
    pos = nl + 1;
    content += line["message"]["content"].get<std::string>();
    if (line["message"].contains("tool_calls"))
      for (const auto& c : line["message"]["tool_calls"]) calls.push_back(c);
    done = line["done"];
  }
  EXPECT_TRUE(done);
  EXPECT_EQ(content, "Sure.");
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_EQ(calls[0]["function"]["arguments"], json({{"city", "Paris"}, {"unit", "c"}}));
  // A tool conversation sent back: the assistant's call and the tool's result reach the template.
  req["messages"].push_back({{"role", "assistant"}, {"content", ""}, {"tool_calls", calls}});
  req["messages"].push_back({{"role", "tool"}, {"content", "sunny"}, {"tool_name", "get_weather"}});
  req["stream"] = false;
  r = h.post("/api/chat", req);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_NE(h.backend.detokenize(h.backend.submitted().back().prompt).find("tool:sunny"), std::string::npos);
}

}  // namespace
}  // namespace moe::server
