// ollama.cpp: the Ollama routes (see ollama.h). A generation is one engine request whose callbacks
// push into a small queue (the engine thread only pushes, as engine.h asks); a streamed answer is
// written line by line by httplib's chunked content provider, which wakes every 100 ms to notice a
// client that went away (and cancels the request, freeing its KV blocks), and a non-streamed one is
// assembled in the handler while a ConnectionWatch does the same watching.
#include "server/ollama.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>

#include "server/connection.h"
#include "server/event_queue.h"
#include "server/ollama_request.h"
#include "server/response.h"
#include "server/routing_trace.h"
#include "server/tool_stream.h"
#include "util/error.h"

namespace moe::server {

using nlohmann::json;

namespace {

using Clock = std::chrono::steady_clock;

int64_t nanos(Clock::duration d) { return std::chrono::duration_cast<std::chrono::nanoseconds>(d).count(); }

// RFC 3339 in UTC with nanoseconds, as Ollama writes created_at.
std::string rfc3339(std::chrono::system_clock::time_point t) {
  auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  std::time_t secs = static_cast<std::time_t>(ns / 1000000000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%09lldZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<long long>(ns % 1000000000));
  return buf;
}
std::string now_rfc3339() { return rfc3339(std::chrono::system_clock::now()); }

// "46.7B", "292.4K": Ollama's parameter_size.
std::string human_params(uint64_t n) {
  char buf[32];
  double d = double(n);
  if (d >= 1e9) std::snprintf(buf, sizeof buf, "%.1fB", d / 1e9);
  else if (d >= 1e6) std::snprintf(buf, sizeof buf, "%.1fM", d / 1e6);
  else std::snprintf(buf, sizeof buf, "%.1fK", d / 1e3);
  return buf;
}

// Ollama names models by the sha256 of their blob. Hashing a 26 GB file at start-up would cost
// minutes, so the digest here identifies the file instead: 64 hex digits from FNV-1a over its path,
// size and modification time (it changes when the file is replaced); it is not a content hash.
std::string file_digest(const json& facts) {
  std::string key = cat(facts.value("path", ""), "|", facts.value("size_bytes", uint64_t(0)), "|",
                        facts.value("modified_unix", int64_t(0)));
  std::string out;
  for (uint64_t seed : {0xcbf29ce484222325ull, 0x84222325cbf29ce4ull, 0x9e3779b97f4a7c15ull, 0x2545f4914f6cdd1dull}) {
    uint64_t h = seed;
    for (unsigned char c : key) h = (h ^ c) * 0x100000001b3ull;
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
    out += buf;
  }
  return out;
}

json error_body(const std::string& message) { return {{"error", message}}; }

void respond(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(dump_json(body), "application/json; charset=utf-8");
}

struct Event {
  bool finished = false;
  engine::Delta delta;
  engine::FinishReason reason = engine::FinishReason::Stop;
  engine::Usage usage;
  std::string error;
  Clock::time_point at;
};

using Queue = EventQueue<Event>;

enum class Kind { Generate, Chat };

// One generation and what it produced so far.
struct Generation {
  Kind kind = Kind::Generate;
  std::string model;                  // the name the client used
  bool routing = false;
  std::vector<int32_t> prompt;
  Clock::time_point start, first_token, end;
  bool saw_first = false;
  std::shared_ptr<Queue> queue = std::make_shared<Queue>();
  uint64_t id = 0;
  std::mutex cancel_mu;
  bool cancel_sent = false;
  Backend* backend = nullptr;

  std::string text;                   // the whole reply
  std::vector<int32_t> out_ids;       // generated token ids (generate's "context")
  std::vector<engine::Delta::TokenRouting> routing_all;
  bool finished = false;
  std::string done_reason;            // "stop" | "length"; empty with error
  std::string error;
  engine::Usage usage;
  std::optional<ToolCallParser> tools;  // a chat with tools: its reply's calls (tool_stream.h)
  size_t calls_sent = 0;                // streamed calls so far (their "index")

  void cancel() {
    std::lock_guard lock(cancel_mu);
    if (cancel_sent || finished) return;
    cancel_sent = true;
    backend->cancel(id);
  }

  void apply(const Event& e) {
    if (finished) return;
    if (!e.finished) {
      if (!e.delta.token_ids.empty() && !saw_first) {
        saw_first = true;
        first_token = e.at;
      }
      text += e.delta.text;
      out_ids.insert(out_ids.end(), e.delta.token_ids.begin(), e.delta.token_ids.end());
      if (routing) routing_all.insert(routing_all.end(), e.delta.routing.begin(), e.delta.routing.end());
      return;
    }
    finished = true;
    end = e.at;
    if (!saw_first) first_token = e.at;
    usage = e.usage;
    switch (e.reason) {
      case engine::FinishReason::Stop: done_reason = "stop"; break;
      case engine::FinishReason::Length: done_reason = "length"; break;
      case engine::FinishReason::Cancelled: error = "the request was cancelled by the server"; break;
      case engine::FinishReason::Error: error = e.error.empty() ? "the engine failed on this request" : e.error; break;
    }
  }

  json head() const { return {{"model", model}, {"created_at", now_rfc3339()}}; }

  // A streamed piece: the text of one or more tokens.
  json piece(const engine::Delta& d) const {
    json j = head();
    if (kind == Kind::Chat) j["message"] = {{"role", "assistant"}, {"content", d.text}};
    else j["response"] = d.text;
    j["done"] = false;
    if (routing && !d.routing.empty()) j["moe"] = {{"routing", routing_json(d.routing)}};
    return j;
  }

  // A chat with tools, streamed: the lines for a delta (or the end, `d` null) after the tool-call
  // parser: content it released, and each whole call in a line of its own, as Ollama streams them.
  std::string tool_lines(const engine::Delta* d) {
    ToolCallParser::Output o = d ? tools->feed(d->text) : tools->finish();
    std::string out;
    const bool with_routing = d && routing && !d->routing.empty();
    if (!o.content.empty() || with_routing) {
      engine::Delta shown;
      shown.text = o.content;
      if (with_routing) shown.routing = d->routing;
      out += dump_json(piece(shown)) + "\n";
    }
    if (!o.calls.empty()) {
      json j = head();
      json calls = ollama_tool_calls_json(o.calls);
      for (auto& c : calls) c["function"]["index"] = calls_sent++;
      j["message"] = {{"role", "assistant"}, {"content", ""}, {"tool_calls", std::move(calls)}};
      j["done"] = false;
      out += dump_json(j) + "\n";
    }
    return out;
  }

  // The last object: done, the reason and the counts; with the whole reply when not streamed.
  json final_object(bool whole) const {
    json j = head();
    std::string content = whole ? text : "";
    if (kind == Kind::Chat) j["message"] = {{"role", "assistant"}, {"content", content}};
    else j["response"] = content;
    if (whole && tools) {  // the reply's tool calls out of its text (a fresh parser: this one is const)
      ToolCallParser p = *tools;
      ToolCallParser::Output o = p.feed(text), rest = p.finish();
      o.content += rest.content;
      for (auto& c : rest.calls) o.calls.push_back(std::move(c));
      j["message"]["content"] = o.content;
      if (!o.calls.empty()) j["message"]["tool_calls"] = ollama_tool_calls_json(o.calls);
    }
    j["done"] = true;
    j["done_reason"] = done_reason;
    if (kind == Kind::Generate) {
      std::vector<int32_t> context = prompt;
      context.insert(context.end(), out_ids.begin(), out_ids.end());
      j["context"] = context;
    }
    j["total_duration"] = nanos(end - start);
    j["load_duration"] = 0;  // the model was loaded when the server started
    j["prompt_eval_count"] = int64_t(prompt.size());
    j["prompt_eval_duration"] = nanos(first_token - start);
    j["eval_count"] = usage.completion_tokens;
    j["eval_duration"] = nanos(end - first_token);
    if (whole && routing) j["moe"] = {{"routing", routing_json(routing_all)}};
    return j;
  }
};

struct Routes {
  OllamaContext ctx;

  Backend& backend() const { return *ctx.backend; }

  // ---- names -------------------------------------------------------------------------------------

  bool serves(const std::string& requested) const {
    std::string name = requested;
    if (name.ends_with(":latest")) name.resize(name.size() - 7);
    if (name == ctx.served_model_name) return true;
    if (std::any_of(ctx.model_aliases.begin(), ctx.model_aliases.end(), [&](const auto& a) { return a == name; }))
      return true;
    const auto adapters = backend().adapter_names();  // LoRA adapters (--lora-modules) are models too
    return std::find(adapters.begin(), adapters.end(), name) != adapters.end();
  }

  // The LoRA adapter a served name picks (null: the base); one that cannot be loaded fails this request.
  std::shared_ptr<const model::LoraAdapter> adapter_of(const std::string& requested) const {
    std::string name = requested;
    if (name.ends_with(":latest")) name.resize(name.size() - 7);
    const auto adapters = backend().adapter_names();
    if (name == ctx.served_model_name || std::find(adapters.begin(), adapters.end(), name) == adapters.end())
      return nullptr;
    try {
      return backend().adapter(name);
    } catch (const moe::Error& e) {
      throw ApiError(500, e.what(), "model", "server_error", "adapter_unavailable");
    }
  }

  void check_model(const std::string& name) const {
    if (!serves(name))
      throw ApiError(404, cat("model '", name, "' not found; this server serves '", ctx.served_model_name,
                              ":latest' (moe loads a local GGUF file: there is nothing to pull)"));
  }

  std::string tag() const { return ctx.served_model_name + ":latest"; }

  json details(const json& facts) const {
    std::string arch = facts.value("architecture", "llama");
    return {{"parent_model", ""},
            {"format", "gguf"},
            {"family", arch},
            {"families", json::array({arch})},
            {"parameter_size", human_params(facts.value("parameter_count", uint64_t(0)))},
            {"quantization_level", facts.value("quantization_level", "")}};
  }

  std::string modified_at(const json& facts) const {
    return rfc3339(std::chrono::system_clock::time_point(std::chrono::seconds(facts.value("modified_unix", int64_t(0)))));
  }

  // ---- generation --------------------------------------------------------------------------------

  std::shared_ptr<Generation> submit(Kind kind, const std::string& model, std::vector<int32_t> prompt,
                                     const ollama::Options& opts, bool routing, bool stop_at_end_of_turn,
                                     const ChatTools& tools = {}) {
    const int64_t server_ctx = backend().max_model_len();
    const int64_t ctx_len = opts.num_ctx ? std::min(*opts.num_ctx, server_ctx) : server_ctx;
    const int64_t n = int64_t(prompt.size());
    if (n + 1 > ctx_len)
      throw ApiError(400, cat("the prompt is ", n, " tokens, but the context is ", ctx_len, " tokens",
                              opts.num_ctx ? " (options.num_ctx, at most the server's)" : "",
                              " and at least 1 must be left for the reply: ", n + 1 - ctx_len, " tokens too many"));
    auto g = std::make_shared<Generation>();
    g->kind = kind;
    g->model = model;
    g->routing = routing;
    g->prompt = prompt;
    g->backend = ctx.backend;
    if (tools.active) g->tools.emplace(tools);
    engine::Request r;
    r.prompt = std::move(prompt);
    r.max_tokens = opts.num_predict ? std::min(*opts.num_predict, ctx_len - n) : ctx_len - n;
    r.sampling = opts.sampling;
    r.stop = opts.stop;
    if (stop_at_end_of_turn) r.stop_token_ids = backend().end_of_turn_ids();
    r.routing_trace = routing;
    r.adapter = adapter_of(model);
    engine::Callbacks cb;
    cb.on_delta = [q = g->queue](const engine::Delta& d) {
      Event e;
      e.delta = d;
      e.at = Clock::now();
      q->push(std::move(e));
    };
    cb.on_finish = [q = g->queue](engine::FinishReason reason, const engine::Usage& usage, const std::string& error) {
      Event e;
      e.finished = true;
      e.reason = reason;
      e.usage = usage;
      e.error = error;
      e.at = Clock::now();
      q->push(std::move(e));
    };
    g->start = Clock::now();
    g->id = backend().submit(std::move(r), std::move(cb));
    return g;
  }

  void answer(const httplib::Request& req, httplib::Response& res, std::shared_ptr<Generation> g, bool stream) {
    if (stream) {
      write_stream(res, std::move(g));
      return;
    }
    ConnectionWatch watch(req.local_addr, req.local_port, req.remote_addr, req.remote_port);
    while (!g->finished) {
      for (const Event& e : g->queue->take(std::chrono::milliseconds(100))) g->apply(e);
      if (!g->finished && watch.peer_gone()) {
        g->cancel();
        throw ApiError(499, "the client closed the connection before the answer was ready");
      }
    }
    if (!g->error.empty()) throw ApiError(500, g->error);
    respond(res, 200, g->final_object(/*whole=*/true));
  }

  void write_stream(httplib::Response& res, std::shared_ptr<Generation> g) {
    ctx.enter();  // the stream outlives the handler; the releaser leaves
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");
    res.set_chunked_content_provider(
        "application/x-ndjson",
        [g](size_t, httplib::DataSink& sink) -> bool {
          std::string out;
          for (const Event& e : g->queue->take(std::chrono::milliseconds(100))) {
            g->apply(e);
            if (g->tools && g->error.empty()) {
              out += g->tool_lines(e.finished ? nullptr : &e.delta);
              if (e.finished) out += dump_json(g->final_object(/*whole=*/false)) + "\n";
            } else if (!e.finished) {
              bool routing = g->routing && !e.delta.routing.empty();
              if (!e.delta.text.empty() || routing) out += dump_json(g->piece(e.delta)) + "\n";
            } else if (!g->error.empty()) {
              out += dump_json(error_body(g->error)) + "\n";  // Ollama's in-stream error line
            } else {
              out += dump_json(g->final_object(/*whole=*/false)) + "\n";
            }
          }
          if (!out.empty()) {
            if (!sink.write(out.data(), out.size())) {
              g->cancel();
              return false;
            }
          } else if (!sink.is_writable()) {
            g->cancel();
            return false;
          }
          if (g->finished) sink.done();
          return true;
        },
        [this, g](bool) {
          g->cancel();
          ctx.leave();
        });
  }

  // The body with its keys in the order sent (parse_body sorts them), parsed once, under parse_body's
  // depth bound, and only when something needs that order: a `format` schema (the grammar writes
  // properties in the schema's order) or tools (the template shows them as sent).
  class SentOrder {
   public:
    explicit SentOrder(const std::string& text) : text_(text) {}
    const nlohmann::ordered_json& body() {
      if (!body_) body_ = parse_body_ordered(text_);
      return *body_;
    }

   private:
    const std::string& text_;
    std::optional<nlohmann::ordered_json> body_;
  };

  // A `format` schema compiled again from the body as sent.
  static void keep_format_order(SentOrder& sent, ollama::Options& opts) {
    if (!opts.sampling.grammar) return;
    opts.sampling.grammar = ollama::format_grammar(sent.body().at("format"));
  }

  // "done_reason": "load": Ollama's answer to an empty prompt (it loads the model and says so).
  void loaded(httplib::Response& res, Kind kind, const std::string& model) const {
    json j = {{"model", model}, {"created_at", now_rfc3339()}};
    if (kind == Kind::Chat) j["message"] = {{"role", "assistant"}, {"content", ""}};
    else j["response"] = "";
    j["done"] = true;
    j["done_reason"] = "load";
    respond(res, 200, j);
  }

  void generate(const httplib::Request& req, const std::string& text, httplib::Response& res) {
    ollama::GenerateRequest r = ollama::parse_generate(parse_body(text), backend().n_vocab());
    check_model(r.model);
    SentOrder sent(text);
    keep_format_order(sent, r.options);
    if (r.prompt.empty() && r.context.empty() && !r.template_text) return loaded(res, Kind::Generate, r.model);
    std::vector<int32_t> ids = r.context;
    const bool first = ids.empty();
    bool chat_turn = false;
    if (r.raw) {
      ids_append(ids, backend().tokenize(r.prompt, first));
    } else if (r.template_text) {
      ids_append(ids, backend().tokenize(ollama::render_go_template(*r.template_text, r.system.value_or(""), r.prompt), first));
    } else {
      json messages = json::array();
      if (r.system && !r.system->empty()) messages.push_back({{"role", "system"}, {"content", *r.system}});
      messages.push_back({{"role", "user"}, {"content", r.prompt}});
      std::vector<int32_t> turn = rendered(messages);
      // After a context, this turn continues the same sequence: no second BOS.
      const std::vector<int32_t> bos = backend().tokenize("", true);
      if (!first && bos.size() == 1 && turn.size() > 1 && turn.front() == bos.front()) turn.erase(turn.begin());
      ids_append(ids, turn);
      chat_turn = true;
    }
    if (ids.empty()) throw invalid_param("prompt", "the prompt is empty (it has no tokens)");
    answer(req, res, submit(Kind::Generate, r.model, std::move(ids), r.options, r.routing_trace, chat_turn), r.stream);
  }

  static void ids_append(std::vector<int32_t>& ids, const std::vector<int32_t>& more) {
    ids.insert(ids.end(), more.begin(), more.end());
  }

  std::vector<int32_t> rendered(const json& messages) const {
    try {
      return backend().chat_prompt(messages);
    } catch (const moe::Error& e) {
      throw invalid_param("messages", cat("the chat template rejected the messages: ", e.what()));
    }
  }

  void chat(const httplib::Request& req, const std::string& text, httplib::Response& res) {
    ollama::ChatRequest r = ollama::parse_chat(parse_body(text));
    check_model(r.model);
    SentOrder sent(text);
    keep_format_order(sent, r.options);
    if (r.messages.empty()) return loaded(res, Kind::Chat, r.model);
    if (r.tools) {  // tool calling (tools.h): the tools parsed again in their sent key order for the template
      ToolRequest tools = *parse_ollama_tools(sent.body());
      ChatTools chat_tools;
      std::vector<int32_t> prompt = tool_prompt_ids(backend(), r.messages, tools, chat_tools, r.options.sampling);
      answer(req, res, submit(Kind::Chat, r.model, std::move(prompt), r.options, r.routing_trace, true, chat_tools),
             r.stream);
      return;
    }
    answer(req, res, submit(Kind::Chat, r.model, rendered(r.messages), r.options, r.routing_trace, true), r.stream);
  }

  // ---- embeddings --------------------------------------------------------------------------------

  // One input's vector; stops (499) as soon as the client has gone: the engine drops the input between
  // chunks instead of computing it for nobody.
  std::vector<float> embed_one(const std::string& input, bool truncate, const std::string& param, int64_t& tokens,
                               const ConnectionWatch& watch) {
    std::vector<int32_t> ids = backend().tokenize(input, true);
    if (ids.empty()) throw invalid_param(param, cat("'", param, "' is empty (it has no tokens)"));
    const int64_t ctx_len = backend().max_model_len();
    if (int64_t(ids.size()) > ctx_len) {
      if (!truncate)
        throw ApiError(400, cat("'", param, "' is ", ids.size(), " tokens, more than the context of ", ctx_len,
                                " (send truncate: true to cut it)"));
      ids.resize(size_t(ctx_len));
    }
    tokens += int64_t(ids.size());
    auto v = backend().embed_until(ids, [&] { return watch.peer_gone(); });
    if (!v) throw ApiError(499, "the client closed the connection before the answer was ready");
    return std::move(*v);
  }

  void embed(const httplib::Request& req, const std::string& text, httplib::Response& res) {
    auto start = Clock::now();
    ConnectionWatch watch(req.local_addr, req.local_port, req.remote_addr, req.remote_port);
    ollama::EmbedRequest r = ollama::parse_embed(parse_body(text));
    check_model(r.model);
    json vectors = json::array();
    int64_t tokens = 0;
    for (size_t i = 0; i < r.inputs.size(); ++i) {
      std::vector<float> v = embed_one(r.inputs[i], r.truncate, r.inputs.size() > 1 ? cat("input[", i, "]") : "input", tokens,
                                     watch);
      if (r.dimensions && *r.dimensions != int64_t(v.size()))
        throw invalid_param("dimensions", cat("'dimensions' must be ", v.size(), " (this model's embedding size), got ",
                                              *r.dimensions));
      vectors.push_back(std::move(v));
    }
    respond(res, 200,
            {{"model", r.model},
             {"embeddings", std::move(vectors)},
             {"total_duration", nanos(Clock::now() - start)},
             {"load_duration", 0},
             {"prompt_eval_count", tokens}});
  }

  void embeddings(const httplib::Request& req, const std::string& text, httplib::Response& res) {
    ConnectionWatch watch(req.local_addr, req.local_port, req.remote_addr, req.remote_port);
    ollama::EmbedRequest r = ollama::parse_embeddings(parse_body(text));
    check_model(r.model);
    if (r.inputs[0].empty()) return respond(res, 200, {{"embedding", json::array()}});
    int64_t tokens = 0;
    respond(res, 200, {{"embedding", embed_one(r.inputs[0], true, "prompt", tokens, watch)}});
  }

  // ---- models ------------------------------------------------------------------------------------

  void tags(const httplib::Request&, httplib::Response& res) {
    json facts = backend().model_facts();
    json m = {{"name", tag()},
              {"model", tag()},
              {"modified_at", modified_at(facts)},
              {"size", facts.value("size_bytes", uint64_t(0))},
              {"digest", file_digest(facts)},
              {"details", details(facts)}};
    json models = json::array({m});
    for (const auto& name : backend().adapter_names()) {  // LoRA adapters over the base
      json a = m;
      a["name"] = a["model"] = name + ":latest";
      a["details"]["parent_model"] = tag();
      models.push_back(std::move(a));
    }
    respond(res, 200, {{"models", models}});
  }

  void ps(const httplib::Request&, httplib::Response& res) {
    json facts = backend().model_facts();
    json m = {{"name", tag()},
              {"model", tag()},
              {"size", facts.value("size_bytes", uint64_t(0))},
              {"digest", file_digest(facts)},
              {"details", details(facts)},
              // moe keeps its one model loaded for as long as it serves: no expiry.
              {"expires_at", "9999-12-31T23:59:59Z"},
              {"size_vram", 0},
              {"context_length", backend().max_model_len()}};
    respond(res, 200, {{"models", json::array({m})}});
  }

  void show(const httplib::Request&, const std::string& text, httplib::Response& res) {
    std::string name = ollama::parse_show(parse_body(text));
    check_model(name);
    json facts = backend().model_facts();
    std::string arch = facts.value("architecture", "llama");
    json info = {{"general.architecture", arch},
                 {"general.name", facts.value("general_name", "")},
                 {"general.parameter_count", facts.value("parameter_count", uint64_t(0))}};
    for (const char* key : {"context_length", "embedding_length", "block_count", "feed_forward_length",
                            "expert_count", "expert_used_count", "vocab_size"})
      if (facts.contains(key)) info[arch + "." + key] = facts[key];
    if (facts.contains("head_count")) info[arch + ".attention.head_count"] = facts["head_count"];
    if (facts.contains("head_count_kv")) info[arch + ".attention.head_count_kv"] = facts["head_count_kv"];
    if (facts.contains("rope_freq_base")) info[arch + ".rope.freq_base"] = facts["rope_freq_base"];
    respond(res, 200,
            {{"license", ""},
             {"modelfile", cat("# moe serves this local GGUF file as it is\nFROM ", facts.value("path", ""), "\n")},
             {"parameters", ""},
             // The model's own chat template (Jinja, which moe renders), not an Ollama Go template.
             {"template", facts.value("chat_template", "")},
             {"details", details(facts)},
             {"model_info", info},
             {"capabilities", json::array({"completion", "embedding"})},
             {"modified_at", modified_at(facts)}});
  }

  void version(const httplib::Request&, httplib::Response& res) { respond(res, 200, {{"version", kOllamaApiVersion}}); }

  void local_files_only(const httplib::Request& req, const std::string&, httplib::Response&) {
    throw ApiError(501, cat(req.path, " is not supported: moe serves the local GGUF file it was started with ('",
                            ctx.served_model_name, "'); it does not pull, push, create, copy or delete models. "
                            "Download a GGUF file and start `moe serve FILE.gguf`"));
  }
};

}  // namespace

void register_ollama_routes(httplib::Server& http, OllamaContext context) {
  auto routes = std::make_shared<Routes>(Routes{std::move(context)});
  using PostFn = void (Routes::*)(const httplib::Request&, const std::string&, httplib::Response&);
  using GetFn = void (Routes::*)(const httplib::Request&, httplib::Response&);
  auto fail_with = [routes](httplib::Response& res, std::exception_ptr ep) {
    ApiError e = routes->ctx.translate(ep);
    if (e.status == 413) res.set_header("Connection", "close");
    if (e.status == 401) res.set_header("WWW-Authenticate", "Bearer");
    respond(res, e.status, error_body(e.what()));
  };
  auto with_body = [routes, fail_with](PostFn fn) {
    return [routes, fail_with, fn](const httplib::Request& req, httplib::Response& res,
                                   const httplib::ContentReader& reader) {
      routes->ctx.enter();
      struct Leave {
        Routes& r;
        ~Leave() { r.ctx.leave(); }
      } leave{*routes};
      try {
        std::string body = routes->ctx.read_body(res, reader);
        routes->ctx.admit(req);
        ((*routes).*fn)(req, body, res);
      } catch (...) {
        fail_with(res, std::current_exception());
      }
    };
  };
  auto no_body = [routes, fail_with](GetFn fn) {
    return [routes, fail_with, fn](const httplib::Request& req, httplib::Response& res) {
      routes->ctx.enter();
      struct Leave {
        Routes& r;
        ~Leave() { r.ctx.leave(); }
      } leave{*routes};
      try {
        routes->ctx.admit(req);
        ((*routes).*fn)(req, res);
      } catch (...) {
        fail_with(res, std::current_exception());
      }
    };
  };
  http.Post("/api/generate", with_body(&Routes::generate));
  http.Post("/api/chat", with_body(&Routes::chat));
  http.Post("/api/embed", with_body(&Routes::embed));
  http.Post("/api/embeddings", with_body(&Routes::embeddings));
  http.Post("/api/show", with_body(&Routes::show));
  http.Get("/api/tags", no_body(&Routes::tags));
  http.Get("/api/ps", no_body(&Routes::ps));
  http.Get("/api/version", no_body(&Routes::version));
  for (const char* path : {"/api/pull", "/api/push", "/api/create", "/api/copy"})
    http.Post(path, with_body(&Routes::local_files_only));
  http.Delete("/api/delete", with_body(&Routes::local_files_only));
}

}  // namespace moe::server
