// engine_backend.cpp: Backend over engine::Engine (see engine_backend.h).
#include "server/engine_backend.h"

#include <filesystem>
#include <map>

#include "engine/loaded_model.h"
#include "engine/lora_loader.h"
#include "engine/prompt_builder.h"
#include "gguf/ggml_types.h"
#include "gguf/gguf.h"
#include "hf/hf.h"
#include "model/hparams.h"
#include "tokenizer/tokenizer.h"

namespace moe::server {

uint64_t EngineBackend::submit(engine::Request request, engine::Callbacks callbacks) {
  return engine_.submit(std::move(request), std::move(callbacks));
}
void EngineBackend::cancel(uint64_t id) { engine_.cancel(id); }
std::vector<float> EngineBackend::embed(const std::vector<int32_t>& tokens) { return engine_.embed(tokens); }
std::optional<std::vector<float>> EngineBackend::embed_until(const std::vector<int32_t>& tokens,
                                                             const std::function<bool()>& cancelled) {
  return engine_.embed_until(tokens, cancelled);
}
void EngineBackend::drain() { engine_.drain(); }
engine::Stats EngineBackend::stats() const {
  engine::Stats s = engine_.stats();
  if (loras_) {
    s.lora_adapters_loaded = loras_->loaded_count();
    s.lora_adapter_bytes = loras_->loaded_bytes();
  }
  return s;
}

std::vector<std::string> EngineBackend::adapter_names() const {
  std::vector<std::string> names;
  if (loras_)
    for (const auto& m : loras_->modules()) names.push_back(m.name);
  return names;
}

std::shared_ptr<const model::LoraAdapter> EngineBackend::adapter(const std::string& name) {
  if (!loras_) return Backend::adapter(name);
  return loras_->get(name);
}

std::vector<int32_t> EngineBackend::tokenize(std::string_view text, bool add_bos) const {
  const auto& tok = engine_.tokenizer();
  return tok.encode(text, add_bos && tok.add_bos() && tok.bos_id() >= 0, /*parse_special=*/true);
}

std::string EngineBackend::detokenize(std::span<const int32_t> ids) const { return engine_.tokenizer().decode(ids); }

std::vector<int32_t> EngineBackend::chat_prompt(const nlohmann::json& messages) const {
  return engine_.prompt_builder().chat_prompt(messages);
}

std::vector<int32_t> EngineBackend::chat_prompt_with_tools(const nlohmann::json& messages,
                                                          const nlohmann::ordered_json& tools) const {
  return engine_.prompt_builder().chat_prompt(messages, tools);
}

std::string EngineBackend::chat_template_source() const { return engine_.prompt_builder().template_source(); }

std::vector<int32_t> EngineBackend::end_of_turn_ids() const { return engine_.prompt_builder().end_of_turn_ids(); }
int32_t EngineBackend::n_vocab() const { return engine_.tokenizer().n_vocab(); }
int64_t EngineBackend::max_model_len() const { return engine_.max_model_len(); }

// Read once from the GGUF header (mmap'd again: only the header pages are touched): the parameter
// count, the weight type holding the most bytes (Ollama's "quantization_level"), the file's size and
// modification time, and the hyperparameters.
nlohmann::json EngineBackend::model_facts() const {
  std::lock_guard lock(facts_mu_);
  if (!facts_.is_null()) return facts_;
  const std::string& path = engine_.model().path;  // also set for an engine built on a loaded model
  gguf::File f = hf::open_model_file(path);
  uint64_t params = 0;
  std::map<std::string, uint64_t> bytes_by_type;
  for (const auto& t : f.tensors()) {
    params += t.n_elements;
    bytes_by_type[type_name(t.type)] += t.n_bytes;
  }
  std::string quant;
  uint64_t most = 0;
  for (const auto& [type, bytes] : bytes_by_type)
    if (bytes > most) most = bytes, quant = type;
  const model::HParams& hp = engine_.hparams();
  std::error_code ec;
  auto mtime = std::filesystem::last_write_time(path, ec);
  int64_t modified = 0;
  if (!ec)
    modified = std::chrono::duration_cast<std::chrono::seconds>(
                   std::chrono::file_clock::to_sys(mtime).time_since_epoch())
                   .count();
  facts_ = {{"path", path},
            {"size_bytes", f.file_size()},
            {"modified_unix", modified},
            {"parameter_count", params},
            {"quantization_level", quant},
            {"architecture", hp.arch},
            {"general_name", f.get_string("general.name").value_or("")},
            {"context_length", hp.n_ctx_train},
            {"embedding_length", hp.n_embd},
            {"block_count", hp.n_layer},
            {"feed_forward_length", hp.n_ff},
            {"head_count", hp.n_head},
            {"head_count_kv", hp.n_head_kv},
            {"expert_count", hp.n_expert},
            {"expert_used_count", hp.n_expert_used},
            {"vocab_size", hp.n_vocab},
            {"rope_freq_base", hp.rope_freq_base},
            {"chat_template", f.get_string("tokenizer.chat_template").value_or("")}};
  return facts_;
}

}  // namespace moe::server
