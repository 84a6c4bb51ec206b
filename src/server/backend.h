// backend.h: what the HTTP server needs from the engine, as an interface. The real one wraps
// engine::Engine (engine_backend.h); tests drive the whole HTTP layer (routing, streaming,
// cancellation, errors, shutdown) with a scripted fake, without a model.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <optional>

#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "engine/engine.h"
#include "util/error.h"

namespace moe::server {

class Backend {
 public:
  virtual ~Backend() = default;

  // As engine::Engine: submit throws engine::QueueFull or moe::Error; on_finish comes exactly once.
  virtual uint64_t submit(engine::Request request, engine::Callbacks callbacks) = 0;
  virtual void cancel(uint64_t id) = 0;
  virtual std::vector<float> embed(const std::vector<int32_t>& tokens) = 0;
  // embed(), giving up (nullopt) as soon as `cancelled` answers true: a backend that computes in
  // chunks (the engine) drops the job between chunks; one that cannot stop finishes it.
  virtual std::optional<std::vector<float>> embed_until(const std::vector<int32_t>& tokens,
                                                        const std::function<bool()>& cancelled) {
    if (cancelled && cancelled()) return std::nullopt;
    return embed(tokens);
  }
  virtual void drain() = 0;
  virtual engine::Stats stats() const = 0;

  // Text to ids with special-token texts parsed; add_bos adds the model's BOS if it wants one.
  virtual std::vector<int32_t> tokenize(std::string_view text, bool add_bos) const = 0;
  virtual std::string detokenize(std::span<const int32_t> ids) const = 0;
  // Messages (normalised by request.h) rendered by the chat template with the generation prompt, and
  // tokenized with BOS exactly once. Throws moe::Error with the template's message.
  virtual std::vector<int32_t> chat_prompt(const nlohmann::json& messages) const = 0;
  // The same with the request's tool definitions given to the template as `tools` (server/tools.h);
  // a backend without a template (the tests' fakes) renders none and says so.
  virtual std::vector<int32_t> chat_prompt_with_tools(const nlohmann::json& messages,
                                                      const nlohmann::ordered_json& tools) const {
    (void)messages, (void)tools;
    throw std::runtime_error("this backend renders no tools");
  }
  // The chat template's text, from which the tool-call format is read ("": no tool support).
  virtual std::string chat_template_source() const { return {}; }
  // Token ids that end an assistant turn besides EOS (added to each chat request's stop ids).
  virtual std::vector<int32_t> end_of_turn_ids() const = 0;

  virtual int32_t n_vocab() const = 0;
  virtual int64_t max_model_len() const = 0;
  // Facts about the loaded model for Ollama's /api/tags, /api/show and /api/ps (see ollama.h for the
  // keys); a backend that knows none (the tests' fakes) answers an empty object.
  virtual nlohmann::json model_facts() const { return nlohmann::json::object(); }

  // LoRA adapters served as models of their own over the base (`moe serve --lora-modules name=path`):
  // their names, and the adapter a name picks, loaded on first use (throws moe::Error naming it when it
  // cannot be loaded; the others keep working). A backend without adapters has none.
  virtual std::vector<std::string> adapter_names() const { return {}; }
  virtual std::shared_ptr<const model::LoraAdapter> adapter(const std::string& name) {
    throw Error(cat("no LoRA adapter is named '", name, "'"));
  }
};

}  // namespace moe::server
