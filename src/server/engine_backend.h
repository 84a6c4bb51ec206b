// engine_backend.h: the server's Backend over the real engine::Engine. Kept in its own file so that
// the server's unit tests, which use a fake backend, do not link the model.
#pragma once
#include <mutex>

#include "server/backend.h"

namespace moe::tokenizer { class Tokenizer; }
namespace moe::engine { class LoraRegistry; }

namespace moe::server {

class EngineBackend : public Backend {
 public:
  // `loras` (optional, not owned): the adapters served beside the base (engine/lora_loader.h).
  explicit EngineBackend(engine::Engine& engine, engine::LoraRegistry* loras = nullptr) : engine_(engine), loras_(loras) {}

  uint64_t submit(engine::Request request, engine::Callbacks callbacks) override;
  void cancel(uint64_t id) override;
  std::vector<float> embed(const std::vector<int32_t>& tokens) override;
  std::optional<std::vector<float>> embed_until(const std::vector<int32_t>& tokens,
                                                const std::function<bool()>& cancelled) override;
  void drain() override;
  engine::Stats stats() const override;
  std::vector<int32_t> tokenize(std::string_view text, bool add_bos) const override;
  std::string detokenize(std::span<const int32_t> ids) const override;
  std::vector<int32_t> chat_prompt(const nlohmann::json& messages) const override;
  std::vector<int32_t> chat_prompt_with_tools(const nlohmann::json& messages,
                                              const nlohmann::ordered_json& tools) const override;
  std::string chat_template_source() const override;
  std::vector<int32_t> end_of_turn_ids() const override;
  int32_t n_vocab() const override;
  int64_t max_model_len() const override;
  nlohmann::json model_facts() const override;
  std::vector<std::string> adapter_names() const override;
  std::shared_ptr<const model::LoraAdapter> adapter(const std::string& name) override;

 private:
  engine::Engine& engine_;
  engine::LoraRegistry* loras_ = nullptr;
  mutable nlohmann::json facts_;  // model_facts(), read once
  mutable std::mutex facts_mu_;
};

}  // namespace moe::server
