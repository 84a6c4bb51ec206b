// engine_backend.cpp: Backend over engine::Engine (see engine_backend.h).
#include "server/engine_backend.h"

#include "engine/prompt_builder.h"
#include "tokenizer/tokenizer.h"

namespace moe::server {

uint64_t EngineBackend::submit(engine::Request request, engine::Callbacks callbacks) {
  return engine_.submit(std::move(request), std::move(callbacks));
}
void EngineBackend::cancel(uint64_t id) { engine_.cancel(id); }
std::vector<float> EngineBackend::embed(const std::vector<int32_t>& tokens) { return engine_.embed(tokens); }
void EngineBackend::drain() { engine_.drain(); }
engine::Stats EngineBackend::stats() const { return engine_.stats(); }

std::vector<int32_t> EngineBackend::tokenize(std::string_view text, bool add_bos) const {
  const auto& tok = engine_.tokenizer();
  return tok.encode(text, add_bos && tok.add_bos() && tok.bos_id() >= 0, /*parse_special=*/true);
}

std::string EngineBackend::detokenize(std::span<const int32_t> ids) const { return engine_.tokenizer().decode(ids); }

std::vector<int32_t> EngineBackend::chat_prompt(const nlohmann::json& messages) const {
  return engine_.prompt_builder().chat_prompt(messages);
}

std::vector<int32_t> EngineBackend::end_of_turn_ids() const { return engine_.prompt_builder().end_of_turn_ids(); }
int32_t EngineBackend::n_vocab() const { return engine_.tokenizer().n_vocab(); }
int64_t EngineBackend::max_model_len() const { return engine_.max_model_len(); }

}  // namespace moe::server
