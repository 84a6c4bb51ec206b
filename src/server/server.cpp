// server.cpp: routes, generation jobs, SSE streaming and graceful shutdown (see server.h).
//
// Threading: the transport (http_transport.h) reads and frames requests on its event loop and runs
// each complete one through httplib's routing on a worker thread. A generation request submits its choices
// to the backend and then waits on its own Channel, into which the engine thread's callbacks push
// deltas and finishes (short pushes, as engine.h asks). Streams are written by the content provider
// on the connection's thread; between events it wakes every 100 ms to check the socket, so a client
// that disconnects is cancelled within about that time even while its prompt is still queued. A
// non-streamed answer is assembled in the handler itself (its status is not known until the end), which
// wakes as often and checks its socket through a ConnectionWatch (connection.h) to the same effect.
#include "server/server.h"

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
#include "server/http_transport.h"
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

// httplib's routing and handlers, fed one canonical, already-framed request at a time by our transport
// (http_transport.h) instead of httplib's own listener and connection threads.
class HttpServer : public httplib::Server {
 public:
  // Serves one request read from `strm`; true when the connection may carry another.
  bool serve(httplib::Stream& strm, bool close_after) {
    bool closed = false;
    response_closes = false;
    bool ok = process_request(strm, close_after, closed, nullptr);
    return ok && !closed && !response_closes;
  }
  // httplib's chunked writer stops as soon as it sees no listening socket: ours is the transport's
  // (INVALID_SOCKET stops every stream, which a drain past its deadline wants).
  void set_listening(socket_t fd) { svr_sock_ = fd; }
  // Set by the post-routing handler when the answer says "Connection: close".
  static thread_local bool response_closes;
};
thread_local bool HttpServer::response_closes = false;

const char* reason_phrase(int status) {
  switch (status) {
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 431: return "Request Header Fields Too Large";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return status < 500 ? "Bad Request" : "Internal Server Error";
  }
}

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
  std::unique_ptr<HttpTransport> transport;
  int64_t created = unix_now();

  std::atomic<bool> shutting_down{false};
  std::mutex active_mu;
  std::condition_variable active_cv;
  int64_t active = 0;  // handlers running plus streams being written

  std::unique_ptr<BatchRoutes> batch_routes;  // the Batch API, when opts.data_dir is set

  Impl(Backend& b, ServerOptions o) : backend(b), opts(std::move(o)) {
    setup_routes();
    setup_transport();
  }

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

  bool is_base(const std::string& model) const {
    return model == opts.served_model_name ||
           std::find(opts.model_aliases.begin(), opts.model_aliases.end(), model) != opts.model_aliases.end();
  }

  // A LoRA adapter served beside the base (--lora-modules): a model of its own in the API.
  bool is_adapter(const std::string& model) const {
    const auto names = backend.adapter_names();
    return std::find(names.begin(), names.end(), model) != names.end();
  }

  void check_model(const std::optional<std::string>& model) const {
    if (!model || is_base(*model) || is_adapter(*model)) return;
    std::string adapters;
    for (const auto& n : backend.adapter_names()) adapters += cat(adapters.empty() ? "" : ", ", "'", n, "'");
    throw ApiError(404,
                   cat("the model '", *model, "' does not exist; this server serves '", opts.served_model_name, "'",
                       adapters.empty() ? "" : cat(" and its LoRA adapters ", adapters)),
                   "model", "invalid_request_error", "model_not_found");
  }

  // The LoRA adapter a request's `model` picks (null: the base), loaded on first use. An adapter that
  // cannot be loaded fails this request only, naming it; the base and the other adapters keep serving.
  std::shared_ptr<const model::LoraAdapter> resolve_adapter(const std::optional<std::string>& model) {
    check_model(model);
    if (!model || is_base(*model)) return nullptr;
    try {
      return backend.adapter(*model);
    } catch (const moe::Error& e) {
      throw ApiError(500, e.what(), "model", "server_error", "adapter_unavailable");
    }
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
      if (req.method == "OPTIONS")  // before the key check: a browser's preflight carries no credentials
        return answer_options(req, res) ? httplib::Server::HandlerResponse::Handled
                                        : httplib::Server::HandlerResponse::Unhandled;
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
        std::vector<std::string> methods = allowed_methods(req.path);
        if (!authorized(opts.api_key, req.get_header_value("Authorization"))) {
          e = ApiError(401, "missing or incorrect API key (send 'Authorization: Bearer <key>')", "",
                       "invalid_request_error", "invalid_api_key");
        } else if (!methods.empty()) {  // the path exists, the method does not: 405 with Allow
          std::string allow = join_methods(methods);
          e = ApiError(405, cat("the method ", req.method, " is not allowed on ", req.path, "; allowed: ", allow), "",
                       "invalid_request_error", "method_not_allowed");
          res.set_header("Allow", allow);
        } else {
          e = ApiError(404, cat("unknown route: ", req.method, " ", req.path), "", "invalid_request_error",
                       "not_found");
        }
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
    // On every answer: no byte ranges (the transport drops Range; httplib would still advertise them on
    // HEAD), CORS headers for an allowed Origin, and whether the answer closes its connection.
    http.set_post_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      res.headers.erase("Accept-Ranges");
      if (res.status == 204) res.headers.erase("Content-Length");  // RFC 9110 §8.6: never on a 204
      for (const auto& [k, v] : cors_headers(req.get_header_value("Origin"))) res.set_header(k, v);
      if (res.get_header_value("Connection") == "close") HttpServer::response_closes = true;
    });
    http.set_payload_max_length(opts.data_dir.empty() ? opts.max_body_bytes
                                                      : std::max(opts.max_body_bytes, opts.max_upload_bytes));
    http.set_keep_alive_max_count(1000);
    http.set_keep_alive_timeout(time_t(opts.idle_timeout_s));
  }

  // ---- transport, OPTIONS, 405, CORS ---------------------------------------------------------------

  void setup_transport() {
    TransportOptions to;
    to.workers = std::max(8, opts.http_threads);
    to.max_connections = opts.max_connections;
    to.max_connections_per_ip = opts.max_connections_per_ip;
    to.request_timeout_s = opts.request_timeout_s;
    to.idle_timeout_s = opts.idle_timeout_s;
    TransportHooks hooks;
    hooks.body_limit = [this](const RequestHead& h) -> uint64_t {
      if (!opts.data_dir.empty() && h.method == "POST" && h.path == "/v1/files") return opts.max_upload_bytes;
      return opts.max_body_bytes;
    };
    // The key (and the drain) before a byte of the body is read: nobody without the key can make the
    // server buffer or parse anything.
    hooks.check_head = [this](const RequestHead& h) -> std::optional<HttpError> {
      if (!h.has_body()) return std::nullopt;
      if (!authorized(opts.api_key, h.header("Authorization")))
        return HttpError{401, "missing or incorrect API key (send 'Authorization: Bearer <key>')"};
      if (shutting_down) return HttpError{503, "the server is shutting down"};
      return std::nullopt;
    };
    hooks.render_error = [this](const RequestHead* h, const HttpError& e) {
      std::string body;
      if (h && h->path.starts_with("/api/")) {  // Ollama's routes: Ollama's error shape
        body = dump_json(json{{"error", e.message}});
      } else {
        std::string code = e.status == 401   ? "invalid_api_key"
                           : e.status == 413 ? "request_too_large"
                           : e.status == 503 ? "too_many_connections"
                           : e.status == 408 ? "request_timeout"
                                             : "invalid_http_request";
        std::string type = e.status >= 500 ? "server_error" : "invalid_request_error";
        body = dump_json(error_json(e.status == 503 && shutting_down ? unavailable()
                                                                      : ApiError(e.status, e.message, "", type, code)));
      }
      std::string out = cat("HTTP/1.1 ", e.status, " ", reason_phrase(e.status),
                            "\r\nContent-Type: application/json\r\nContent-Length: ", body.size(),
                            "\r\nConnection: close\r\n");
      if (e.status == 401) out += "WWW-Authenticate: Bearer\r\n";
      if (e.status == 503) out += "Retry-After: 1\r\n";
      if (h)
        for (const auto& [k, v] : cors_headers(std::string(h->header("Origin")))) out += cat(k, ": ", v, "\r\n");
      return out + "\r\n" + body;
    };
    hooks.serve = [this](httplib::Stream& strm, bool close_after) { return http.serve(strm, close_after); };
    hooks.on_refused = [m = metrics](const RequestHead* h, int status) {
      m->count_request(h ? std::string_view(h->path) : std::string_view(), status);
    };
    transport = std::make_unique<HttpTransport>(to, std::move(hooks));
  }

  // The methods answered at `path`, as listed in Allow (empty: unknown path).
  std::vector<std::string> allowed_methods(const std::string& path) const {
    std::vector<std::string> m = route_methods(http, path);
    if (path.starts_with("/v1/models/") && m.empty()) m = {"GET", "HEAD"};  // the pre-routing route
    if (!m.empty()) m.push_back("OPTIONS");
    return m;
  }

  static std::string join_methods(const std::vector<std::string>& methods) {
    std::string out;
    for (const auto& m : methods) out += out.empty() ? m : ", " + m;
    return out;
  }

  // Access-Control-* headers for a request from `origin` (none unless --cors-origin allows it).
  std::vector<std::pair<std::string, std::string>> cors_headers(const std::string& origin) const {
    if (origin.empty()) return {};
    for (const auto& o : opts.cors_origins) {
      if (o == "*") return {{"Access-Control-Allow-Origin", "*"}};
      if (o == origin) return {{"Access-Control-Allow-Origin", origin}, {"Vary", "Origin"}};
    }
    return {};
  }

  // OPTIONS: 204 with Allow for a known path (a CORS preflight from an allowed origin also gets the
  // methods and headers it may use); false for an unknown path (404).
  bool answer_options(const httplib::Request& req, httplib::Response& res) const {
    std::vector<std::string> methods =
        req.path == "*" ? std::vector<std::string>{"GET", "HEAD", "POST", "OPTIONS"} : allowed_methods(req.path);
    if (methods.empty()) return false;
    res.status = 204;
    res.set_header("Allow", join_methods(methods));
    std::string origin = req.get_header_value("Origin");
    if (!cors_headers(origin).empty() && req.has_header("Access-Control-Request-Method")) {
      res.set_header("Access-Control-Allow-Methods", join_methods(methods));
      std::string asked = req.get_header_value("Access-Control-Request-Headers");
      bool token_list = std::all_of(asked.begin(), asked.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == ',' || c == ' ';
      });
      res.set_header("Access-Control-Allow-Headers",
                     !asked.empty() && token_list && asked.size() <= 1024 ? asked : "Authorization, Content-Type");
      res.set_header("Access-Control-Max-Age", "600");
    }
    return true;
  }

  // ---- generation --------------------------------------------------------------------------------

  std::shared_ptr<Job> submit_job(const std::vector<std::vector<int32_t>>& prompts, const GenerationParams& gen,
                                  Kind kind, const std::string& param, const std::vector<std::string>& echo_texts = {},
                                  const std::shared_ptr<const model::LoraAdapter>& adapter = nullptr) {
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
          r.adapter = adapter;
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
                const ChatTools& tools = {}, const std::shared_ptr<const model::LoraAdapter>& adapter = nullptr) {
    auto job = submit_job(prompts, gen, kind, param, echo_texts, adapter);
    job->tools = tools;
    if (tools.active)
      for (size_t c = 0; c < job->choices(); ++c) {
        job->tool_parsers.emplace_back(tools);
        job->tool_calls_sent.push_back(0);
      }
    ResponseMeta meta{(kind == Kind::Chat ? "chatcmpl-" : "cmpl-") + random_hex(24), unix_now(),
                      adapter ? *gen.model : opts.served_model_name};
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
    ChatRequest r = parse_chat_request_text(text);  // JSON Schemas in their sent key order
    const auto adapter = resolve_adapter(r.gen.model);
    if (r.tools) {  // tool calling (tools.h): the tools parsed again in their sent key order for the template
      ToolRequest tools = *parse_openai_tools(nlohmann::ordered_json::parse(text));
      ChatTools chat_tools;
      std::vector<int32_t> prompt = tool_prompt_ids(backend, r.messages, tools, chat_tools, r.gen.sampling);
      generate(req, res, Kind::Chat, {prompt}, r.gen, "messages", {}, chat_tools, adapter);
      return;
    }
    generate(req, res, Kind::Chat, {chat_prompt_ids(backend, r.messages)}, r.gen, "messages", {}, {}, adapter);
  }

  void completions(const httplib::Request& req, const std::string& text, httplib::Response& res) {
    CompletionRequest r = parse_completion_request_text(text, backend.n_vocab());
    const auto adapter = resolve_adapter(r.gen.model);
    std::vector<std::vector<int32_t>> prompts;
    std::vector<std::string> echo_texts;
    for (const auto& p : r.prompts) {
      prompts.push_back(prompt_ids(backend, p));
      if (r.gen.echo) echo_texts.push_back(p.is_tokens ? backend.detokenize(p.tokens) : p.text);
    }
    generate(req, res, Kind::Completion, prompts, r.gen, "prompt", echo_texts, {}, adapter);
  }

  void embeddings(const httplib::Request& req, const std::string& text, httplib::Response& res) {
    EmbeddingRequest r = parse_embedding_request(parse_body(text), backend.n_vocab());
    check_model(r.model);
    if (r.model && !is_base(*r.model))
      throw ApiError(400, cat("embeddings come from the base model '", opts.served_model_name, "'; the LoRA adapter '",
                              *r.model, "' serves completions only"),
                     "model", "invalid_request_error", "model_not_supported");
    // A client that leaves stops the work: the engine drops the input between chunks (issue 12).
    ConnectionWatch watch(req.local_addr, req.local_port, req.remote_addr, req.remote_port);
    respond_json(res, 200, embeddings_response(backend, r, opts.served_model_name, [&] { return watch.peer_gone(); }));
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

  // A LoRA adapter's model card: the base's, with vLLM's `parent` (the base) and `root` (the adapter).
  json adapter_model_json(const std::string& name) const {
    json m = model_json(name, created, backend.max_model_len());
    m["parent"] = opts.served_model_name;
    m["root"] = name;
    return m;
  }

  void list_models(const httplib::Request&, httplib::Response& res) {
    json body = models_json(opts.served_model_name, created, backend.max_model_len());
    for (const auto& name : backend.adapter_names()) body["data"].push_back(adapter_model_json(name));
    respond_json(res, 200, body);
  }

  void get_model(const std::string& id, httplib::Response& res) {
    check_model(id);
    if (!is_base(id)) return respond_json(res, 200, adapter_model_json(id));
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

Server::~Server() { impl_->transport->stop(); }

int Server::bind() {
  auto& o = impl_->opts;
  int port = impl_->transport->bind(o.host, o.port);
  impl_->http.set_listening(impl_->transport->listen_fd());
  return port;
}

void Server::run() {
  impl_->transport->run();
}

void Server::shutdown() {
  Impl& s = *impl_;
  if (s.shutting_down.exchange(true)) return;
  log_debug("server: shutting down: 503 for new requests, draining the engine");
  s.transport->set_draining();  // every answer from now on closes its connection
  if (s.batch_routes) s.batch_routes->stop();  // its in-flight requests resume after a restart
  bool drained = false;
  std::thread drainer([&] {
    s.backend.drain();
    {
      std::lock_guard lock(s.active_mu);
      drained = true;
    }
    s.active_cv.notify_all();
  });
  {
    std::unique_lock lock(s.active_mu);
    auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                       std::chrono::duration<double>(std::max(0.0, s.opts.shutdown_timeout_s)));
    if (!s.active_cv.wait_until(lock, deadline, [&] { return drained && s.active == 0; })) {
      // Past the deadline: end the connections still being answered, so their handlers see the client
      // gone and cancel their engine requests, and stop every stream.
      log_warn("the drain deadline (", s.opts.shutdown_timeout_s, " s) passed with ", s.active,
               " answers in flight: cancelling them");
      lock.unlock();
      s.transport->cancel_all();
      s.http.set_listening(INVALID_SOCKET);
      lock.lock();
      s.active_cv.wait_for(lock, std::chrono::seconds(5), [&] { return drained && s.active == 0; });
    }
  }
  drainer.join();
  s.transport->stop();
}

const Metrics& Server::metrics() const { return *impl_->metrics; }

}  // namespace moe::server
