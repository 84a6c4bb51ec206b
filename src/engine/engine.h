// engine.h: the serving engine: requests in, streamed tokens out, many sequences at once.
//
// One engine thread runs the loop: each step the Scheduler (scheduler.h) builds one batch from the
// decode tokens of running sequences plus chunks of waiting prompts (continuous batching, chunked
// prefill) under max_num_batched_tokens, the engine runs Model::forward over it, samples where a token
// is due (a chain of logits processors, sampling/sampler.h), and hands each request its new text
// through its callbacks. KV memory is a paged cache; full blocks are hashed by their token prefix so a
// repeated system prompt is computed once (prefix caching); when blocks run out the newest running
// sequence is preempted and later recomputed. The engine runs a model it is given (loaded_model.h), so
// engines can share one; prompts are built outside it (prompt_builder.h). Frontends (CLI, HTTP server)
// only talk to this interface and to the PromptBuilder.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/loaded_model.h"
#include "kv/kv_types.h"

namespace moe::tokenizer { class Tokenizer; }
namespace moe::tmpl { class ChatTemplate; }
namespace moe::model {
struct HParams;
class LoraAdapter;
}
namespace moe::grammar { class Grammar; }

namespace moe::engine {

struct EngineConfig {
  // model_path, n_threads and chat_template_override are for Engine(config), which loads the model.
  std::string model_path;
  int n_threads = 0;                      // 0: physical cores
  int max_num_seqs = 16;                  // running sequences at once
  int64_t max_model_len = 0;              // 0: the model's training context (capped by memory)
  int64_t max_num_batched_tokens = 512;   // tokens per forward step (decode + prefill chunks)
  kv::KvType kv_type = kv::KvType::F16;
  uint64_t memory_budget = 0;             // bytes for the KV pool; 0: max_model_len * max_num_seqs
  bool enable_prefix_caching = true;
  int max_queue = 256;                    // waiting requests beyond this are refused
  std::string chat_template_override;     // a built-in name or template text; empty: the model's own
                                          // (for Engine(config); see LoadOptions)
  std::string device = "cpu";             // where the forward pass runs (model::ModelOptions::device)
  uint64_t gpu_memory = 0;                // Vulkan: device-memory budget (model::ModelOptions::gpu_memory)
};

struct SamplingParams {
  float temperature = 1.0f;               // 0: greedy
  float top_p = 1.0f;
  int32_t top_k = 0;                      // 0: off
  float min_p = 0.0f;
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  float repetition_penalty = 1.0f;
  std::optional<uint64_t> seed;
  int32_t top_logprobs = -1;              // -1: no logprobs; 0..20: chosen token's + that many alternatives
  bool json_object = false;               // constrain output to one valid JSON object (grammar::json_object_gbnf)
  // Constrain the output to this grammar (grammar/grammar.h; wins over json_object). End-of-sequence only
  // where the grammar accepts; an output no byte can extend finishes the sequence ("stop", or "length"
  // when the token budget forced the grammar's shortest completion).
  std::shared_ptr<const moe::grammar::Grammar> grammar;
  std::vector<std::pair<int32_t, float>> logit_bias;  // (token id, bias added to its logit), OpenAI's
  int32_t repeat_last_n = 64;             // recent tokens the penalties look at (-1: all); Ollama's option
};

struct Request {
  std::vector<int32_t> prompt;            // token ids, BOS included as the model wants it
  int64_t max_tokens = 256;
  SamplingParams sampling;
  std::vector<std::string> stop;          // stop strings (not included in the output)
  std::vector<int32_t> stop_token_ids;    // beyond the model's EOS (e.g. a template's end-of-turn)
  bool ignore_eos = false;
  bool routing_trace = false;             // report each generated token's experts (Delta::routing)
  // The LoRA adapter (model/lora.h) this sequence runs with; null: the base. Held until it finishes.
  std::shared_ptr<const model::LoraAdapter> adapter;
};

enum class FinishReason { Stop, Length, Cancelled, Error };
const char* finish_reason_name(FinishReason r);  // "stop", "length", "cancelled", "error"

struct TokenLogprob {
  int32_t id;
  std::string text;  // the token's own text (bytes of the piece)
  float logprob;
};

struct Delta {
  std::string text;                       // new text, UTF-8 complete, stop strings held back/removed
  std::vector<int32_t> token_ids;         // tokens that produced it
  std::vector<TokenLogprob> chosen;       // per token, when logprobs were asked
  std::vector<std::vector<TokenLogprob>> top;  // per token, top alternatives
  // Routing trace, per token when Request::routing_trace: the experts of the forward position whose
  // logits produced the token, [n_layer][k] flattened (see model::ForwardResult::routing_*).
  struct TokenRouting {
    int32_t n_layer = 0, k = 0;
    std::vector<int32_t> experts;         // [n_layer][k]
    std::vector<float> weights;           // [n_layer][k], each layer's sum 1
  };
  std::vector<TokenRouting> routing;
};

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t cached_prompt_tokens = 0;       // prompt tokens served from the prefix cache
  double time_to_first_token_s = 0;
};

// Called on the engine thread: keep them short (push into a queue and return).
struct Callbacks {
  std::function<void(const Delta&)> on_delta;
  std::function<void(FinishReason, const Usage&, const std::string& error)> on_finish;
};

struct Stats {
  int64_t running = 0, waiting = 0;
  int64_t kv_blocks_total = 0, kv_blocks_used = 0;
  int64_t prefix_cache_queries = 0, prefix_cache_hits = 0;  // in blocks
  int64_t prompt_tokens_total = 0, generated_tokens_total = 0;
  int64_t preemptions = 0;
  int64_t embedding_tokens_total = 0;  // tokens forwarded for embeddings (at most max_num_batched_tokens a step)
  std::vector<std::vector<int64_t>> expert_tokens;  // [layer][expert] tokens routed so far (by every engine on the model)
  // LoRA adapters held in memory (filled by the server's adapter registry; the engine holds none itself).
  int64_t lora_adapters_loaded = 0;
  uint64_t lora_adapter_bytes = 0;
};

// The options load_model needs to build the model an engine of `config` runs (threads, batch size,
// template, device and its memory budget): frontends that load the model themselves (to share it, or to
// check adapters against it first) start from these, so no field of the config is dropped on the way.
LoadOptions load_options(const EngineConfig& config);

class Engine {
 public:
  // Runs on a loaded model, which other engines may share (each engine has its own KV cache). Throws
  // moe::Error for a bad configuration.
  Engine(std::shared_ptr<const LoadedModel> model, const EngineConfig& config);
  // Loads config.model_path first (load_model with load_options(config)).
  explicit Engine(const EngineConfig& config);
  ~Engine();  // stops the loop (cancels what is left)

  // Queues a request; returns its id. Throws moe::Error if it can never run (prompt longer than
  // max_model_len: the message says by how much) and QueueFull when max_queue requests wait.
  uint64_t submit(Request request, Callbacks callbacks);
  // Cancels a request (queued or running) at once and frees its blocks; its on_finish gets Cancelled.
  void cancel(uint64_t id);
  // Mean-pooled, L2-normalised final hidden state of `tokens`. Computed on the engine thread one chunk
  // of at most max_num_batched_tokens per step, interleaved with the steps of running sequences, so a
  // long input delays their next token by one chunk's forward pass, not by the whole input's.
  std::vector<float> embed(const std::vector<int32_t>& tokens);
  // The same, polling `cancelled` (from this thread, every few tens of milliseconds) while it waits:
  // when it answers true the job is dropped before its next chunk and this returns nullopt at once.
  std::optional<std::vector<float>> embed_until(const std::vector<int32_t>& tokens,
                                                const std::function<bool()>& cancelled);
  // Stop taking requests; returns when everything in flight has finished.
  void drain();

  Stats stats() const;
  const LoadedModel& model() const;
  const tokenizer::Tokenizer& tokenizer() const;
  const model::HParams& hparams() const;
  int64_t max_model_len() const;
  const EngineConfig& config() const;
  // The model's PromptBuilder, and three of its answers, for callers that hold only an engine. Generation
  // stops on end_of_turn_ids() like on EOS (unless a request ignores EOS).
  const PromptBuilder& prompt_builder() const;
  const tmpl::ChatTemplate& chat_template() const;
  std::vector<int32_t> chat_prompt(const nlohmann::ordered_json& messages) const;
  const std::vector<int32_t>& end_of_turn_ids() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

class QueueFull : public std::runtime_error {
 public:
  QueueFull() : std::runtime_error("the request queue is full") {}
};

}  // namespace moe::engine
