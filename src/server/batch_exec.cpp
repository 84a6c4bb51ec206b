// batch_exec.cpp: see batch_exec.h. The steps from a parsed body to engine requests (prompts, budget, n
// choices with seed + i, end-of-turn stops for chat) and embeddings are server/generation.h's, shared
// with server.cpp; what is this file's own is waiting for the choices without a socket, and the error
// translation (as server.cpp's translate(), less its shutdown and queue-full cases, which a batch line
// meets as a stopped runner or a retried submit).
#include "server/batch_exec.h"

#include <chrono>
#include <condition_variable>
#include <algorithm>
#include <exception>
#include <new>
#include <thread>

#include "server/generation.h"
#include "server/request.h"
#include "server/response.h"
#include "util/error.h"

namespace moe::server {

using nlohmann::json;

namespace {

// What the choices of one line produced so far, filled by the engine thread's callbacks.
struct Pending {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<ChoiceOutput> outputs;
  std::vector<engine::Usage> usages;
  std::vector<char> finished;
  int n_finished = 0;
  std::string error;
  bool cancelled = false;

  void delta(int choice, const engine::Delta& d) {
    std::lock_guard lock(mu);
    ChoiceOutput& out = outputs[size_t(choice)];
    if (finished[size_t(choice)]) return;
    out.text += d.text;
    out.chosen.insert(out.chosen.end(), d.chosen.begin(), d.chosen.end());
    out.top.insert(out.top.end(), d.top.begin(), d.top.end());
    out.completion_tokens += int64_t(d.token_ids.size());
  }
  void finish(int choice, engine::FinishReason reason, const engine::Usage& usage, const std::string& err) {
    {
      std::lock_guard lock(mu);
      if (finished[size_t(choice)]) return;
      finished[size_t(choice)] = 1;
      ++n_finished;
      usages[size_t(choice)] = usage;
      ChoiceOutput& out = outputs[size_t(choice)];
      if (usage.completion_tokens > 0) out.completion_tokens = usage.completion_tokens;
      switch (reason) {
        case engine::FinishReason::Stop: out.finish_reason = "stop"; break;
        case engine::FinishReason::Length: out.finish_reason = "length"; break;
        case engine::FinishReason::Cancelled: cancelled = true; break;
        case engine::FinishReason::Error:
          if (error.empty()) error = err.empty() ? "the engine failed on this request" : err;
          break;
      }
    }
    cv.notify_all();
  }
};

ApiError server_error(const std::string& message) { return ApiError(500, message, "", "server_error"); }

}  // namespace

BatchRunner::BatchRunner(Backend& backend, BatchExecOptions options) : backend_(backend), opts_(std::move(options)) {}

bool BatchRunner::is_base(const std::string& model) const {
  return model == opts_.served_model_name ||
         std::find(opts_.model_aliases.begin(), opts_.model_aliases.end(), model) != opts_.model_aliases.end();
}

void BatchRunner::check_model(const std::optional<std::string>& model) const {
  if (!model || is_base(*model)) return;
  const std::vector<std::string> adapters = backend_.adapter_names();
  if (std::find(adapters.begin(), adapters.end(), *model) == adapters.end()) {
    std::string names;
    for (const auto& n : adapters) names += cat(names.empty() ? "" : ", ", "'", n, "'");
    throw ApiError(404,
                   cat("the model '", *model, "' does not exist; this server serves '", opts_.served_model_name, "'",
                       names.empty() ? "" : cat(" and its LoRA adapters ", names)),
                   "model", "invalid_request_error", "model_not_found");
  }
}

std::shared_ptr<const model::LoraAdapter> BatchRunner::resolve_model(const std::optional<std::string>& model) {
  check_model(model);
  if (!model || is_base(*model)) return nullptr;
  try {
    return backend_.adapter(*model);
  } catch (const moe::Error& e) {  // this line fails, naming the adapter; the others go on
    throw ApiError(500, e.what(), "model", "server_error", "adapter_unavailable");
  }
}

void BatchRunner::forget(uint64_t id) {
  std::lock_guard lock(live_mu_);
  live_.erase(id);
}

// Submits, waiting while the engine's queue is full (interactive traffic has it): a 429 is the
// server's to give, never a batch line's answer.
uint64_t BatchRunner::submit(engine::Request r, engine::Callbacks cb, bool& cancelled) {
  for (;;) {
    if (stopped_) {
      cancelled = true;
      return 0;
    }
    try {
      std::lock_guard lock(live_mu_);
      uint64_t id = backend_.submit(r, cb);
      live_.insert(id);
      if (stopped_) backend_.cancel(id);
      return id;
    } catch (const engine::QueueFull&) {
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

void BatchRunner::stop() {
  stopped_ = true;
  std::lock_guard lock(live_mu_);
  for (uint64_t id : live_) backend_.cancel(id);
}

std::string BatchRunner::generate(const json& body, const nlohmann::ordered_json* in_order,
                                  batch::Endpoint endpoint, const batch::LineIds& ids, int64_t& completion_tokens,
                                  bool& cancelled) {
  const bool chat = endpoint == batch::Endpoint::Chat;
  GenerationParams gen;
  std::vector<std::vector<int32_t>> prompts;
  std::string param;
  std::shared_ptr<const model::LoraAdapter> adapter;  // the body's `model` when it names one (null: the base)
  if (chat) {
    ChatRequest r = parse_chat_request(body, in_order);
    adapter = resolve_model(r.gen.model);
    if (r.tools && r.tools->active())  // tool calling is served by /v1/chat/completions only
      throw invalid_param("tools", "'tools' is not supported in batch jobs; send tool requests to /v1/chat/completions",
                          "unsupported_parameter");
    gen = r.gen;
    param = "messages";
    prompts.push_back(chat_prompt_ids(backend_, r.messages));
  } else {
    CompletionRequest r = parse_completion_request(body, backend_.n_vocab(), in_order);
    adapter = resolve_model(r.gen.model);
    gen = r.gen;
    param = "prompt";
    for (const auto& p : r.prompts) prompts.push_back(prompt_ids(backend_, p));
  }
  if (gen.stream) throw invalid_param("stream", "streaming is not available in a batch; leave 'stream' out");

  // The prompt budget, as the server's: each prompt leaves room for at least one token.
  std::vector<int64_t> max_tokens;
  for (size_t p = 0; p < prompts.size(); ++p)
    max_tokens.push_back(completion_budget(backend_.max_model_len(), prompts[p].size(), gen,
                                           prompts.size() > 1 ? cat(param, "[", p, "]") : param));

  auto pending = std::make_shared<Pending>();
  const size_t n_choices = prompts.size() * size_t(gen.n);
  pending->outputs.resize(n_choices);
  pending->usages.resize(n_choices);
  pending->finished.assign(n_choices, 0);
  std::vector<int32_t> eot = chat ? backend_.end_of_turn_ids() : std::vector<int32_t>{};
  std::vector<uint64_t> engine_ids;
  auto release = [&] {
    for (uint64_t id : engine_ids) {
      backend_.cancel(id);
      forget(id);
    }
  };
  try {
    for (size_t p = 0; p < prompts.size(); ++p) {
      for (int i = 0; i < gen.n; ++i) {
        const int choice = int(p) * gen.n + i;
        engine::Request r = choice_request(prompts[p], max_tokens[p], gen, i, eot);
        r.adapter = adapter;
        engine::Callbacks cb;
        cb.on_delta = [pending, choice](const engine::Delta& d) { pending->delta(choice, d); };
        cb.on_finish = [pending, choice](engine::FinishReason reason, const engine::Usage& u, const std::string& e) {
          pending->finish(choice, reason, u, e);
        };
        uint64_t id = submit(std::move(r), std::move(cb), cancelled);
        if (cancelled) {
          release();
          return "";
        }
        engine_ids.push_back(id);
      }
    }
  } catch (...) {
    release();
    throw;
  }
  {
    std::unique_lock lock(pending->mu);
    pending->cv.wait(lock, [&] { return pending->n_finished == int(n_choices); });
  }
  for (uint64_t id : engine_ids) forget(id);
  if (pending->cancelled && stopped_) {
    cancelled = true;
    return "";
  }
  if (pending->cancelled && pending->error.empty()) pending->error = "the request was cancelled by the server";
  if (!pending->error.empty()) throw server_error(pending->error);

  UsageCounts usage;
  for (size_t p = 0; p < prompts.size(); ++p) {
    usage.prompt_tokens += int64_t(prompts[p].size());
    usage.cached_tokens += pending->usages[p * size_t(gen.n)].cached_prompt_tokens;
  }
  for (const auto& o : pending->outputs) usage.completion_tokens += o.completion_tokens;
  completion_tokens = usage.completion_tokens;
  ResponseMeta meta{ids.body_id, opts_.created ? opts_.created : unix_now(),
                    adapter ? *gen.model : opts_.served_model_name};
  json out = chat ? chat_completion_json(meta, pending->outputs, usage, gen.logprobs)
                  : completion_json(meta, pending->outputs, usage, gen.logprobs);
  return dump_json(out);
}

std::string BatchRunner::embeddings(const json& body) {
  EmbeddingRequest r = parse_embedding_request(body, backend_.n_vocab());
  check_model(r.model);
  if (r.model && !is_base(*r.model))
    throw ApiError(400, cat("embeddings come from the base model '", opts_.served_model_name, "'; the LoRA adapter '",
                            *r.model, "' serves completions only"),
                   "model", "invalid_request_error", "model_not_supported");
  return dump_json(embeddings_response(backend_, r, opts_.served_model_name));
}

std::optional<LineAnswer> BatchRunner::answer(const batch::Input& input, int64_t index) {
  const batch::LineInfo& info = input.lines.at(size_t(index));
  const batch::LineIds ids = batch::line_ids(opts_.id_salt, input.hash, index, info.endpoint);
  LineAnswer a;
  if (!info.valid) {
    a.to_errors = true;
    a.line = batch::line_error_line(ids, info);
    return a;
  }
  if (stopped_) return std::nullopt;
  int status = 200;
  std::string body_text;
  try {
    json line = json::parse(input.text(size_t(index)));
    const json& body = line.at("body");
    // A JSON Schema is compiled from the line in sent key order, so properties come in schema order.
    // The line's depth was bounded when the input file was read (batch/format.cpp).
    std::optional<nlohmann::ordered_json> line_in_order;
    if (has_json_schema(body)) line_in_order = nlohmann::ordered_json::parse(input.text(size_t(index)));
    bool cancelled = false;
    if (info.endpoint == batch::Endpoint::Embeddings) {
      body_text = embeddings(body);
    } else {
      body_text = generate(body, line_in_order ? &line_in_order->at("body") : nullptr, info.endpoint, ids,
                           a.completion_tokens, cancelled);
      if (cancelled) return std::nullopt;
    }
  } catch (...) {
    ApiError e(500, "internal error", "", "server_error");
    try {
      throw;
    } catch (const ApiError& x) {
      e = x;
    } catch (const moe::Error& x) {
      e = ApiError(400, x.what());
    } catch (const std::bad_alloc&) {
      e = ApiError(503, "out of memory while handling the request", "", "server_error", "out_of_memory");
    } catch (const std::exception& x) {
      e = server_error(cat("internal error: ", x.what()));
    }
    if (stopped_) return std::nullopt;  // e.g. the engine refused work while shutting down
    status = e.status;
    body_text = dump_json(error_json(e));
  }
  a.to_errors = status != 200;
  a.line = batch::response_line(ids, info.custom_id, status, body_text);
  return a;
}

void BatchRunner::run(const batch::Input& input, const std::vector<int64_t>& todo, batch::JournalWriter& journal,
                      int in_flight, const std::function<void(const BatchProgress&)>& on_progress) {
  std::mutex mu;  // guards journal, progress, next, failure
  size_t next = 0;
  std::exception_ptr failure;
  BatchProgress progress;
  progress.total = int64_t(todo.size());
  const auto t0 = std::chrono::steady_clock::now();

  auto worker = [&] {
    for (;;) {
      int64_t index;
      {
        std::lock_guard lock(mu);
        if (next >= todo.size() || stopped_) return;
        index = todo[next++];
      }
      std::optional<LineAnswer> a;
      try {
        a = answer(input, index);
      } catch (...) {
        std::lock_guard lock(mu);
        if (!failure) failure = std::current_exception();
        stop();
        return;
      }
      if (!a) return;
      std::lock_guard lock(mu);
      if (failure) return;
      try {
        journal.append(batch::Record{index, a->to_errors, a->line});
        if (journal.sync_due()) journal.sync();
      } catch (...) {
        failure = std::current_exception();
        stop();
        return;
      }
      ++progress.done;
      progress.failed += a->to_errors;
      progress.generated_tokens += a->completion_tokens;
      progress.elapsed_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (on_progress) on_progress(progress);
    }
  };
  const int n_workers = std::max(1, std::min<int>(in_flight, int(std::min<size_t>(todo.size(), 1 << 16))));
  std::vector<std::thread> threads;
  for (int i = 0; i < n_workers; ++i) threads.emplace_back(worker);
  for (auto& t : threads) t.join();
  if (failure) std::rethrow_exception(failure);
  journal.sync();
}

}  // namespace moe::server
