// server.cpp: routes, generation jobs, SSE streaming and graceful shutdown (see server.h).
//
// Threading: httplib runs each connection on a pool thread. A generation request submits its choices
// to the backend and then waits on its own Channel, into which the engine thread's callbacks push
// deltas and finishes (short pushes, as engine.h asks). Streams are written by the content provider
// on the connection's thread; between events it wakes every 100 ms to check the socket, so a client
// that disconnects is cancelled within about that time even while its prompt is still queued. A
// non-streamed answer is assembled in the handler itself (its status is not known until the end), which
// wakes as often and checks its socket through a ConnectionWatch (connection.h) to the same effect.
#include "server/server.h"

#include <pthread.h>
#include <sys/socket.h>

#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <new>
#include <random>
#include <thread>

#include "server/auth.h"
#include "server/batch_routes.h"
#include "server/connection.h"
#include "server/event_queue.h"
#include "server/generation.h"
#include "server/ollama.h"
#include "server/response.h"
#include "server/routing_trace.h"
#include "server/tool_stream.h"
#include "server/web_ui.h"
#include "util/error.h"
#include "util/log.h"

namespace moe::server {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

// httplib's compiled-in listen backlog is 5, too few for 32 clients connecting at once; calling
// listen() again on the bound socket raises it.
class HttpServer : public httplib::Server {
 public:
  void raise_backlog(int backlog) {
    socket_t s = svr_sock_;
    if (s != INVALID_SOCKET) ::listen(s, backlog);
  }
};

// httplib's connection threads, created with a fixed stack size: httplib matches routes and parses
// some headers (Range) with std::regex, whose matcher recurses once per character, so an 8 KiB header
// needs megabytes of stack. Default thread stacks follow `ulimit -s` and may be far smaller; a fixed
// 32 MiB (address space only: pages are touched on demand) keeps any request within httplib's header
// and URI limits from overflowing it.
class ConnectionPool : public httplib::TaskQueue {
 public:
  static constexpr size_t kStackBytes = size_t(32) << 20;

  explicit ConnectionPool(size_t n_threads) {
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, kStackBytes);
    for (size_t i = 0; i < n_threads; ++i) {
      pthread_t t;
      if (pthread_create(&t, &attr, &ConnectionPool::entry, this) == 0) threads_.push_back(t);
    }
    pthread_attr_destroy(&attr);
    if (threads_.empty()) fail("cannot start the HTTP connection threads");
  }
  ~ConnectionPool() override { shutdown(); }

  void enqueue(std::function<void()> fn) override {
    {
      std::lock_guard lock(mu_);
      jobs_.push_back(std::move(fn));
    }
    cv_.notify_one();
  }
  // Runs what is queued, then joins the threads.
  void shutdown() override {
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
      stopping_ = true;
    }
    cv_.notify_all();
    for (pthread_t t : threads_) pthread_join(t, nullptr);
  }

 private:
  static void* entry(void* self) {
    static_cast<ConnectionPool*>(self)->work();
    return nullptr;
  }
  void work() {
    for (;;) {
      std::function<void()> fn;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] { return stopping_ || !jobs_.empty(); });
        if (jobs_.empty()) return;
        fn = std::move(jobs_.front());
        jobs_.pop_front();
      }
      try {
        fn();
      } catch (const std::exception& e) {
        log_error("moe serve: connection thread: ", e.what());
      } catch (...) {
        log_error("moe serve: connection thread: unknown exception");
      }
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  std::vector<pthread_t> threads_;
  bool stopping_ = false;
};

// One engine callback's worth of news for one choice.
struct Event {
  int choice = 0;
  bool finished = false;
  engine::Delta delta;
  engine::FinishReason reason = engine::FinishReason::Stop;
  engine::Usage usage;
  std::string error;
};

// The per-request queue between the engine thread (push) and the connection thread (take).
using Channel = EventQueue<Event>;

// Timing of one choice, touched only on the engine thread (after submit, which happens-before).
struct ChoiceTiming {
  Clock::time_point start, last;
  bool first_seen = false;
};

enum class Kind { Chat, Completion };

// The n × prompts engine requests of one HTTP request, and what they produced so far.
struct Job {
  std::shared_ptr<Channel> channel = std::make_shared<Channel>();
  int n = 1;                                  // choices per prompt
  std::vector<int64_t> prompt_tokens;         // per prompt
  std::vector<uint64_t> ids;                  // engine id per submitted choice
  std::vector<ChoiceOutput> outputs;          // per choice
  std::vector<std::vector<engine::Delta::TokenRouting>> routing;  // per choice: the routing trace
  std::vector<engine::Usage> usages;          // per choice, at finish
  std::vector<char> finished;                 // per choice
  std::vector<int64_t> text_offsets;          // completions logprobs, per choice
  std::string error;                          // first engine error
  int n_finished = 0;
  bool cancelled = false;                     // cancel_unfinished ran
  std::mutex cancel_mu;                       // guards ids and cancelled
  ChatTools tools;                            // a tool request's output parsing (tools.h); inactive otherwise
  std::vector<ToolCallParser> tool_parsers;   // streamed tool request: per choice
  std::vector<int> tool_calls_sent;           // streamed tool request: per choice, the next call index

  size_t choices() const { return outputs.size(); }
  bool done() const { return n_finished == int(outputs.size()); }

  // Folds one event into the outputs; returns false when it is a duplicate finish (ignored).
  bool apply(const Event& e) {
    ChoiceOutput& out = outputs[size_t(e.choice)];
    if (finished[size_t(e.choice)]) return false;
    if (!e.finished) {
      out.text += e.delta.text;
      out.chosen.insert(out.chosen.end(), e.delta.chosen.begin(), e.delta.chosen.end());
      out.top.insert(out.top.end(), e.delta.top.begin(), e.delta.top.end());
      auto& trace = routing[size_t(e.choice)];  // routing trace (opt-in; empty deltas otherwise)
      trace.insert(trace.end(), e.delta.routing.begin(), e.delta.routing.end());
      out.completion_tokens += int64_t(e.delta.token_ids.size());
      return true;
    }
    finished[size_t(e.choice)] = 1;
    ++n_finished;
    usages[size_t(e.choice)] = e.usage;
    if (e.usage.completion_tokens > 0) out.completion_tokens = e.usage.completion_tokens;
    switch (e.reason) {
      case engine::FinishReason::Stop: out.finish_reason = "stop"; break;
      case engine::FinishReason::Length: out.finish_reason = "length"; break;
      case engine::FinishReason::Cancelled:
        if (error.empty()) error = "the request was cancelled by the server";
        break;
      case engine::FinishReason::Error:
        if (error.empty()) error = e.error.empty() ? "the engine failed on this request" : e.error;
        break;
    }
    return true;
  }

  UsageCounts usage() const {
    UsageCounts u;
    for (size_t p = 0; p < prompt_tokens.size(); ++p) {
      u.prompt_tokens += prompt_tokens[p];
      u.cached_tokens += usages[p * size_t(n)].cached_prompt_tokens;
    }
    for (const auto& o : outputs) u.completion_tokens += o.completion_tokens;
    return u;
  }
};

ApiError server_error(const std::string& message) { return ApiError(500, message, "", "server_error"); }

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

}  // namespace

struct Server::Impl {
  Backend& backend;
  ServerOptions opts;
  std::shared_ptr<Metrics> metrics = std::make_shared<Metrics>();
  HttpServer http;
  int64_t created = unix_now();

  std::atomic<bool> shutting_down{false};
  std::atomic<bool> run_active{false};  // inside Server::run()
  std::mutex active_mu;
  std::condition_variable active_cv;
  int64_t active = 0;  // handlers running plus streams being written

  std::unique_ptr<BatchRoutes> batch_routes;  // the Batch API, when opts.data_dir is set

  Impl(Backend& b, ServerOptions o) : backend(b), opts(std::move(o)) { setup_routes(); }

  // ---- bookkeeping -------------------------------------------------------------------------------

  void enter() {
    std::lock_guard lock(active_mu);
    ++active;
  }
  void leave() {
    {
      std::lock_guard lock(active_mu);
      --active;
    }
    active_cv.notify_all();
  }
  struct ActiveGuard {
    Impl& s;
    explicit ActiveGuard(Impl& s) : s(s) { s.enter(); }
    ~ActiveGuard() { s.leave(); }
  };

  // ---- errors ------------------------------------------------------------------------------------

  static void respond_json(httplib::Response& res, int status, const json& body) {
    res.status = status;
    res.set_content(dump_json(body), "application/json");
  }

  static void respond_error(httplib::Response& res, const ApiError& e) {
    respond_json(res, e.status, error_json(e));
    if (e.status == 401) res.set_header("WWW-Authenticate", "Bearer");
  }

  ApiError translate(std::exception_ptr ep) const {
    try {
      std::rethrow_exception(ep);
    } catch (const ApiError& e) {
      return e;
    } catch (const engine::QueueFull& e) {
      return ApiError(429, "the server is at capacity (request queue full); retry later", "", "rate_limit_error",
                      "queue_full");
    } catch (const moe::Error& e) {
      if (shutting_down) return unavailable();
      return ApiError(400, e.what());
    } catch (const std::bad_alloc&) {
      return ApiError(503, "out of memory while handling the request", "", "server_error", "out_of_memory");
    } catch (const std::exception& e) {
      if (shutting_down) return unavailable();
      return server_error(cat("internal error: ", e.what()));
    } catch (...) {
      return server_error("internal error");
    }
  }

  static ApiError unavailable() {
    return ApiError(503, "the server is shutting down", "", "service_unavailable", "shutting_down");
  }

  // Shutdown and key checks, after the body has been read (so a keep-alive connection stays in step).
  void admit(const httplib::Request& req, bool needs_key) const {
    if (shutting_down) throw unavailable();
    if (needs_key && !authorized(opts.api_key, req.get_header_value("Authorization")))
      throw ApiError(401, "missing or incorrect API key (send 'Authorization: Bearer <key>')", "",
                     "invalid_request_error", "invalid_api_key");
  }

  void check_model(const std::optional<std::string>& model) const {
    if (!model || *model == opts.served_model_name) return;
    for (const auto& a : opts.model_aliases)
      if (*model == a) return;
    throw ApiError(404, cat("the model '", *model, "' does not exist; this server serves '", opts.served_model_name, "'"),
                   "model", "invalid_request_error", "model_not_found");
  }

  std::string read_body(const httplib::Response& res, const httplib::ContentReader& reader) const {
    std::string body;
    bool too_big = false;
    bool ok = reader([&](const char* data, size_t len) {
      if (body.size() + len > opts.max_body_bytes) {
        too_big = true;
        return false;
      }
      body.append(data, len);
      return true;
    });
    if (too_big || res.status == 413)
      throw ApiError(413, cat("the request body is larger than the limit of ", opts.max_body_bytes, " bytes"), "",
                     "invalid_request_error", "request_too_large");
    if (!ok) throw ApiError(400, "the request body could not be read");
    return body;
  }

  // ---- routes ------------------------------------------------------------------------------------

  using PostFn = void (Impl::*)(const httplib::Request& req, const std::string& body, httplib::Response& res);
  using GetFn = void (Impl::*)(const httplib::Request& req, httplib::Response& res);

  void setup_routes() {
    auto post = [this](const char* path, PostFn fn) {
      http.Post(path, [this, fn](const httplib::Request& req, httplib::Response& res,
                                 const httplib::ContentReader& reader) {
        ActiveGuard guard(*this);
        try {
          std::string body = read_body(res, reader);
          admit(req, true);
          (this->*fn)(req, body, res);
        } catch (...) {
          ApiError e = translate(std::current_exception());
          if (e.status == 413) res.set_header("Connection", "close");
          respond_error(res, e);
        }
      });
    };
    auto get = [this](const char* path, GetFn fn, bool needs_key) {
      http.Get(path, [this, fn, needs_key](const httplib::Request& req, httplib::Response& res) {
        ActiveGuard guard(*this);
        try {
          admit(req, needs_key);
          (this->*fn)(req, res);
        } catch (...) {
          respond_error(res, translate(std::current_exception()));
        }
      });
    };
    post("/v1/chat/completions", &Impl::chat_completions);
    post("/v1/completions", &Impl::completions);
    post("/v1/embeddings", &Impl::embeddings);
    post("/tokenize", &Impl::tokenize);
    post("/detokenize", &Impl::detokenize);
    get("/v1/models", &Impl::list_models, true);
    get("/health", &Impl::health, false);
    get("/metrics", &Impl::metrics_text, true);
    if (!opts.data_dir.empty()) {
      BatchApiOptions bo{opts.data_dir, opts.max_upload_bytes, opts.batch_in_flight, opts.served_model_name,
                         opts.model_aliases};
      batch_routes = std::make_unique<BatchRoutes>(
          backend, bo, [this](const httplib::Request& req, httplib::Response& res, const std::function<void()>& fn) {
            ActiveGuard guard(*this);
            try {
              admit(req, true);
              fn();
            } catch (...) {
              ApiError e = translate(std::current_exception());
              if (e.status == 413 || e.status == 507) res.set_header("Connection", "close");
              respond_error(res, e);
            }
          });
      batch_routes->install(http);
      batch_routes->start();
    }
    // The Ollama API (ollama.h) and the web chat page (web_ui.h), on the same port.
    register_ollama_routes(
        http, OllamaContext{&backend, opts.served_model_name, opts.model_aliases, [this] { enter(); },
                            [this] { leave(); }, [this](const httplib::Request& r) { admit(r, true); },
                            [this](const httplib::Response& r, const httplib::ContentReader& c) { return read_body(r, c); },
                            [this](std::exception_ptr ep) { return translate(ep); }});
    register_web_ui(http);

    // GET /v1/models/{id}, answered before routing: a route pattern with a wildcard would run
    // std::regex over the whole path, which recurses once per character.
    http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      constexpr std::string_view kPrefix = "/v1/models/";
      if (req.method != "GET" || !req.path.starts_with(kPrefix)) return httplib::Server::HandlerResponse::Unhandled;
      ActiveGuard guard(*this);
      try {
        admit(req, true);
        get_model(req.path.substr(kPrefix.size()), res);
      } catch (...) {
        respond_error(res, translate(std::current_exception()));
      }
      return httplib::Server::HandlerResponse::Handled;
    });
    // Unknown routes (404), bodies over the limit caught by httplib (413), malformed HTTP (400): fill in
    // OpenAI's error JSON. Answers our handlers wrote already have a body and pass through.
    httplib::Server::HandlerWithResponse on_error = [this](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty() || res.content_length_ > 0) return httplib::Server::HandlerResponse::Unhandled;
      ApiError e(res.status, cat("HTTP error ", res.status));
      if (res.status == 404) {
        if (!authorized(opts.api_key, req.get_header_value("Authorization")))
          e = ApiError(401, "missing or incorrect API key (send 'Authorization: Bearer <key>')", "",
                       "invalid_request_error", "invalid_api_key");
        else
          e = ApiError(404, cat("unknown route: ", req.method, " ", req.path), "", "invalid_request_error",
                       "not_found");
      } else if (res.status == 413) {
        e = ApiError(413, cat("the request body is larger than the limit of ", opts.max_body_bytes, " bytes"), "",
                     "invalid_request_error", "request_too_large");
        res.set_header("Connection", "close");
      } else if (res.status == 400) {
        e = ApiError(400, "malformed HTTP request");
      }
      if (req.path.starts_with("/api/")) {  // Ollama's routes: Ollama's error shape (ollama.h)
        respond_json(res, e.status, {{"error", e.what()}});
        return httplib::Server::HandlerResponse::Handled;
      }
      respond_error(res, e);
      return httplib::Server::HandlerResponse::Handled;
    };
    http.set_error_handler(std::move(on_error));
    http.set_exception_handler([this](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
      respond_error(res, translate(ep));
    });
    http.set_logger([m = metrics](const httplib::Request& req, const httplib::Response& res) {
      m->count_request(req.path, res.status);
    });
    // Streams are many small writes (one SSE event per token): without TCP_NODELAY, Nagle's algorithm
    // holds each one back until the client acknowledges the previous one, which a client's delayed ACK
    // can put off for tens of milliseconds, so tokens would arrive in bursts and late.
    http.set_tcp_nodelay(true);
    http.set_payload_max_length(opts.data_dir.empty() ? opts.max_body_bytes
                                                      : std::max(opts.max_body_bytes, opts.max_upload_bytes));
    http.set_keep_alive_max_count(1000);
    int threads = std::max(8, opts.http_threads);
    http.new_task_queue = [threads] { return new ConnectionPool(size_t(threads)); };
  }

  // ---- generation --------------------------------------------------------------------------------

  std::shared_ptr<Job> submit_job(const std::vector<std::vector<int32_t>>& prompts, const GenerationParams& gen,
                                  Kind kind, const std::string& param, const std::vector<std::string>& echo_texts = {}) {
    std::vector<int64_t> max_tokens;
    for (size_t p = 0; p < prompts.size(); ++p)
      max_tokens.push_back(completion_budget(backend.max_model_len(), prompts[p].size(), gen,
                                            prompts.size() > 1 ? cat(param, "[", p, "]") : param));

    auto job = std::make_shared<Job>();
    job->n = gen.n;
    size_t n_choices = prompts.size() * size_t(gen.n);
    job->outputs.resize(n_choices);
    job->routing.resize(n_choices);
    job->usages.resize(n_choices);
    job->finished.assign(n_choices, 0);
    job->text_offsets.assign(n_choices, 0);
    for (const auto& p : prompts) job->prompt_tokens.push_back(int64_t(p.size()));
    std::vector<int32_t> eot = kind == Kind::Chat ? backend.end_of_turn_ids() : std::vector<int32_t>{};

    std::lock_guard lock(job->cancel_mu);
    try {
      for (size_t p = 0; p < prompts.size(); ++p) {
        for (int i = 0; i < gen.n; ++i) {
          int choice = int(p) * gen.n + i;
          engine::Request r = choice_request(prompts[p], max_tokens[p], gen, i, eot);
          auto timing = std::make_shared<ChoiceTiming>();
          engine::Callbacks cb;
          cb.on_delta = [ch = job->channel, choice, timing, m = metrics](const engine::Delta& d) {
            if (!d.token_ids.empty()) {
              auto now = Clock::now();
              if (!timing->first_seen) {
                timing->first_seen = true;
                m->observe_time_to_first_token(seconds(now - timing->start));
              } else {
                m->observe_inter_token_latency(seconds(now - timing->last), int64_t(d.token_ids.size()));
              }
              timing->last = now;
            }
            Event e;
            e.choice = choice;
            e.delta = d;
            ch->push(std::move(e));
          };
          cb.on_finish = [ch = job->channel, choice](engine::FinishReason reason, const engine::Usage& usage,
                                                     const std::string& error) {
            Event e;
            e.choice = choice;
            e.finished = true;
            e.reason = reason;
            e.usage = usage;
            e.error = error;
            ch->push(std::move(e));
          };
          timing->start = Clock::now();
          if (p < echo_texts.size() && !echo_texts[p].empty()) {  // echo: the prompt's text comes first
            Event e;
            e.choice = choice;
            e.delta.text = echo_texts[p];
            job->channel->push(std::move(e));
          }
          job->ids.push_back(backend.submit(std::move(r), std::move(cb)));
        }
      }
    } catch (...) {
      for (uint64_t id : job->ids) backend.cancel(id);
      throw;
    }
    return job;
  }

  // Cancels the choices that have not finished (the client is gone). Only the first call acts.
  void cancel_unfinished(Job& job) {
    std::lock_guard lock(job.cancel_mu);
    if (job.cancelled) return;
    job.cancelled = true;
    for (size_t c = 0; c < job.ids.size(); ++c)
      if (!job.finished[c]) backend.cancel(job.ids[c]);
  }

  void generate(const httplib::Request& req, httplib::Response& res, Kind kind,
                const std::vector<std::vector<int32_t>>& prompts, const GenerationParams& gen,
                const std::string& param, const std::vector<std::string>& echo_texts = {},
                const ChatTools& tools = {}) {
    auto job = submit_job(prompts, gen, kind, param, echo_texts);
    job->tools = tools;
    if (tools.active)
      for (size_t c = 0; c < job->choices(); ++c) {
        job->tool_parsers.emplace_back(tools);
        job->tool_calls_sent.push_back(0);
      }
    ResponseMeta meta{(kind == Kind::Chat ? "chatcmpl-" : "cmpl-") + random_hex(24), unix_now(),
                      opts.served_model_name};
    if (gen.stream) {
      stream(res, kind, job, meta, gen);
      return;
    }
    ConnectionWatch watch(req.local_addr, req.local_port, req.remote_addr, req.remote_port);
    if (!watch.found())
      log_debug("server: no socket found for ", req.remote_addr, ":", req.remote_port,
                "; if that client leaves, its request runs to the end");
    while (!job->done()) {
      for (const Event& e : job->channel->take(std::chrono::milliseconds(100))) job->apply(e);
      if (!job->done() && watch.peer_gone()) {
        // Nobody will read the answer: free the sequences' slots and KV blocks now. The status is for
        // the request counters (nginx's 499); httplib's write of it fails quietly.
        cancel_unfinished(*job);
        throw ApiError(499, "the client closed the connection before the answer was ready", "",
                       "invalid_request_error", "client_closed_request");
      }
    }
    if (!job->error.empty()) throw server_error(job->error);
    json body = kind == Kind::Chat ? chat_completion_json(meta, job->outputs, job->usage(), gen.logprobs)
                                   : completion_json(meta, job->outputs, job->usage(), gen.logprobs);
    if (job->tools.active)  // tool calls out of the text (tool_stream.h)
      for (size_t c = 0; c < job->outputs.size(); ++c)
        apply_tool_calls(body["choices"][c], job->outputs[c].text, job->tools);
    if (gen.routing_trace)  // routing trace (opt-in): choices[i].moe.routing, one entry per token
      for (size_t c = 0; c < job->outputs.size(); ++c)
        body["choices"][c]["moe"] = {{"routing", routing_json(job->routing[c])}};
    respond_json(res, 200, body);
  }

  // Renders one event as SSE text (possibly empty: a delta with no text and no logprobs is not sent).
  static std::string render_event(Job& job, Kind kind, const ResponseMeta& meta, const GenerationParams& gen,
                                  const Event& e) {
    if (!job.apply(e)) return "";
    if (job.tools.active) return render_tool_event(job, meta, gen, e);
    if (!e.finished) {
      const auto& d = e.delta;
      bool with_logprobs = gen.logprobs && !d.chosen.empty();
      bool with_routing = gen.routing_trace && !d.routing.empty();
      if (d.text.empty() && !with_logprobs && !with_routing) return "";
      json chunk;
      if (kind == Kind::Chat) {
        json lp = with_logprobs ? chat_logprobs_json(d.chosen, d.top) : json(nullptr);
        chunk = chat_chunk_json(meta, e.choice, {{"content", d.text}}, std::move(lp), "", gen.include_usage);
      } else {
        json lp = with_logprobs ? completion_logprobs_json(d.chosen, d.top, job.text_offsets[size_t(e.choice)])
                                : json(nullptr);
        chunk = completion_chunk_json(meta, e.choice, d.text, std::move(lp), "", gen.include_usage);
      }
      if (with_routing) chunk["choices"][0]["moe"] = {{"routing", routing_json(d.routing)}};  // routing trace
      return sse_event(chunk);
    }
    const ChoiceOutput& out = job.outputs[size_t(e.choice)];
    if (out.finish_reason.empty()) {
      // The engine failed or cancelled this choice: tell the client in OpenAI's in-stream error form.
      return sse_event(error_json(server_error(job.error)));
    }
    if (kind == Kind::Chat)
      return sse_event(chat_chunk_json(meta, e.choice, json::object(), nullptr, out.finish_reason, gen.include_usage));
    return sse_event(completion_chunk_json(meta, e.choice, "", nullptr, out.finish_reason, gen.include_usage));
  }

  // render_event for a chat choice of a tool request: the delta's text goes through the choice's
  // tool-call parser, which releases content (never a partial marker) and whole calls; each call is
  // sent as OpenAI streams one (index, id, type and name first, then the arguments).
  static std::string render_tool_event(Job& job, const ResponseMeta& meta, const GenerationParams& gen, const Event& e) {
    const size_t c = size_t(e.choice);
    ToolCallParser::Output o = e.finished ? job.tool_parsers[c].finish() : job.tool_parsers[c].feed(e.delta.text);
    std::string out;
    const bool with_logprobs = !e.finished && gen.logprobs && !e.delta.chosen.empty();
    const bool with_routing = !e.finished && gen.routing_trace && !e.delta.routing.empty();
    if (!o.content.empty() || with_logprobs || with_routing) {
      json lp = with_logprobs ? chat_logprobs_json(e.delta.chosen, e.delta.top) : json(nullptr);
      json chunk = chat_chunk_json(meta, e.choice, {{"content", o.content}}, std::move(lp), "", gen.include_usage);
      if (with_routing) chunk["choices"][0]["moe"] = {{"routing", routing_json(e.delta.routing)}};
      out += sse_event(chunk);
    }
    for (const ToolCall& call : o.calls) {
      for (json& d : openai_tool_call_deltas(call, job.tool_calls_sent[c]))
        out += sse_event(chat_chunk_json(meta, e.choice, {{"tool_calls", json::array({std::move(d)})}}, nullptr, "",
                                         gen.include_usage));
      ++job.tool_calls_sent[c];
    }
    if (!e.finished) return out;
    const ChoiceOutput& fin = job.outputs[c];
    if (fin.finish_reason.empty()) return out + sse_event(error_json(server_error(job.error)));
    return out + sse_event(chat_chunk_json(meta, e.choice, json::object(), nullptr,
                                           tool_finish_reason(fin.finish_reason, job.tool_parsers[c].calls_seen()),
                                           gen.include_usage));
  }

  struct StreamState {
    std::shared_ptr<Job> job;
    Kind kind;
    ResponseMeta meta;
    GenerationParams gen;
    bool started = false;
    bool complete = false;
  };

  void stream(httplib::Response& res, Kind kind, std::shared_ptr<Job> job, ResponseMeta meta,
              const GenerationParams& gen) {
    auto st = std::make_shared<StreamState>(StreamState{std::move(job), kind, std::move(meta), gen});
    enter();  // the stream outlives this handler; the releaser leaves
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, st](size_t, httplib::DataSink& sink) -> bool {
          std::string out;
          Job& job = *st->job;
          if (!st->started) {
            st->started = true;
            if (st->kind == Kind::Chat)
              for (size_t c = 0; c < job.choices(); ++c)
                out += sse_event(chat_chunk_json(st->meta, int(c), {{"role", "assistant"}, {"content", ""}},
                                                 nullptr, "", st->gen.include_usage));
          }
          if (out.empty()) {
            for (const Event& e : job.channel->take(std::chrono::milliseconds(100)))
              out += render_event(job, st->kind, st->meta, st->gen, e);
            if (job.done()) {
              if (st->gen.include_usage)
                out += sse_event(usage_chunk_json(
                    st->meta, st->kind == Kind::Chat ? "chat.completion.chunk" : "text_completion", job.usage()));
              out += sse_done();
              st->complete = true;
            }
          }
          if (!out.empty()) {
            if (!sink.write(out.data(), out.size())) {
              cancel_unfinished(job);
              return false;
            }
          } else if (!sink.is_writable()) {
            cancel_unfinished(job);
            return false;
          }
          if (st->complete) sink.done();
          return true;
        },
        [this, st](bool) {
          cancel_unfinished(*st->job);
          leave();
        });
  }

  // ---- handlers ----------------------------------------------------------------------------------

  void chat_completions(const httplib::Request& req, const std::string& text, httplib::Response& res) {
    ChatRequest r = parse_chat_request(parse_body(text));
    check_model(r.gen.model);
    if (r.tools) {  // tool calling (tools.h): the tools parsed again in their sent key order for the template
      ToolRequest tools = *parse_openai_tools(nlohmann::ordered_json::parse(text));
      ChatTools chat_tools;
      std::vector<int32_t> prompt = tool_prompt_ids(backend, r.messages, tools, chat_tools, r.gen.sampling);
      generate(req, res, Kind::Chat, {prompt}, r.gen, "messages", {}, chat_tools);
      return;
    }
    generate(req, res, Kind::Chat, {chat_prompt_ids(backend, r.messages)}, r.gen, "messages");
  }

  void completions(const httplib::Request& req, const std::string& text, httplib::Response& res) {
    CompletionRequest r = parse_completion_request(parse_body(text), backend.n_vocab());
    check_model(r.gen.model);
    std::vector<std::vector<int32_t>> prompts;
    std::vector<std::string> echo_texts;
    for (const auto& p : r.prompts) {
      prompts.push_back(prompt_ids(backend, p));
      if (r.gen.echo) echo_texts.push_back(p.is_tokens ? backend.detokenize(p.tokens) : p.text);
    }
    generate(req, res, Kind::Completion, prompts, r.gen, "prompt", echo_texts);
  }

  void embeddings(const httplib::Request&, const std::string& text, httplib::Response& res) {
    EmbeddingRequest r = parse_embedding_request(parse_body(text), backend.n_vocab());
    check_model(r.model);
    respond_json(res, 200, embeddings_response(backend, r, opts.served_model_name));
  }

  void tokenize(const httplib::Request&, const std::string& text, httplib::Response& res) {
    TokenizeRequest r = parse_tokenize_request(parse_body(text));
    check_model(r.model);
    std::vector<int32_t> ids;
    if (r.is_chat) {
      try {
        ids = backend.chat_prompt(r.messages);
      } catch (const moe::Error& e) {
        throw invalid_param("messages", cat("the chat template rejected the messages: ", e.what()), "template_error");
      }
    } else {
      ids = backend.tokenize(r.text, r.add_special_tokens);
    }
    respond_json(res, 200,
                 {{"count", ids.size()}, {"max_model_len", backend.max_model_len()}, {"tokens", ids}});
  }

  void detokenize(const httplib::Request&, const std::string& text, httplib::Response& res) {
    DetokenizeRequest r = parse_detokenize_request(parse_body(text), backend.n_vocab());
    check_model(r.model);
    respond_json(res, 200, {{"prompt", backend.detokenize(r.tokens)}});
  }

  void list_models(const httplib::Request&, httplib::Response& res) {
    respond_json(res, 200, models_json(opts.served_model_name, created, backend.max_model_len()));
  }

  void get_model(const std::string& id, httplib::Response& res) {
    check_model(id);
    respond_json(res, 200, model_json(opts.served_model_name, created, backend.max_model_len()));
  }

  void health(const httplib::Request&, httplib::Response& res) { respond_json(res, 200, {{"status", "ok"}}); }

  void metrics_text(const httplib::Request&, httplib::Response& res) {
    res.status = 200;
    res.set_content(metrics->render(backend.stats()), "text/plain; version=0.0.4; charset=utf-8");
  }
};

Server::Server(Backend& backend, ServerOptions options)
    : impl_(std::make_unique<Impl>(backend, std::move(options))) {}

Server::~Server() {
  if (impl_->http.is_running()) impl_->http.stop();
}

int Server::bind() {
  auto& o = impl_->opts;
  int port = -1;
  if (o.port == 0) {
    port = impl_->http.bind_to_any_port(o.host);
  } else if (impl_->http.bind_to_port(o.host, o.port)) {
    port = o.port;
  }
  if (port <= 0) fail("cannot listen on ", o.host, ":", o.port, " (", std::strerror(errno), ")");
  impl_->http.raise_backlog(1024);
  return port;
}

void Server::run() {
  Impl& s = *impl_;
  s.run_active = true;
  bool ok = s.shutting_down || s.http.listen_after_bind();
  s.run_active = false;
  if (!ok && !s.shutting_down) fail("the HTTP server stopped unexpectedly");
}

void Server::shutdown() {
  Impl& s = *impl_;
  if (s.shutting_down.exchange(true)) return;
  log_debug("server: shutting down: 503 for new requests, draining the engine");
  if (s.batch_routes) s.batch_routes->stop();  // its in-flight requests resume after a restart
  s.backend.drain();
  {
    std::unique_lock lock(s.active_mu);
    s.active_cv.wait_for(lock, std::chrono::duration<double>(s.opts.shutdown_grace_s), [&] { return s.active == 0; });
  }
  // httplib's stop() does nothing until listening has begun; run() may be just starting, so repeat it
  // until run() is out (a run() that starts after this sees shutting_down and returns at once).
  s.http.stop();
  while (s.run_active) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    s.http.stop();
  }
}

const Metrics& Server::metrics() const { return *impl_->metrics; }

}  // namespace moe::server
