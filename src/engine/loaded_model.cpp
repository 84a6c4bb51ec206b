// loaded_model.cpp: load_model (see loaded_model.h).
#include "engine/loaded_model.h"

#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace moe::engine {

std::shared_ptr<const LoadedModel> load_model(const std::string& path, const LoadOptions& options) {
  model::ModelOptions mo;
  mo.n_threads = options.n_threads;
  mo.max_batch_tokens = options.max_batch_tokens;
  mo.device = options.device;
  mo.gpu_memory = options.gpu_memory;
  mo.repack = options.repack;
  auto m = std::make_shared<LoadedModel>();
  m->path = path;
  m->model = model::Model::load(path, mo);
  m->tokenizer = std::make_shared<const tokenizer::Tokenizer>(tokenizer::Tokenizer::from_gguf(m->model->file()));
  m->prompts = std::make_shared<const PromptBuilder>(m->tokenizer, options.chat_template_override,
                                                     m->model->file().get_string("tokenizer.chat_template"));
  return m;
}

std::shared_ptr<const LoadedModel> load_model(gguf::File file, std::shared_ptr<const tokenizer::Tokenizer> tokenizer,
                                              std::shared_ptr<const PromptBuilder> prompts, const LoadOptions& options) {
  model::ModelOptions mo;
  mo.n_threads = options.n_threads;
  mo.max_batch_tokens = options.max_batch_tokens;
  mo.device = options.device;
  mo.gpu_memory = options.gpu_memory;
  mo.repack = options.repack;
  auto m = std::make_shared<LoadedModel>();
  m->path = file.name();
  m->model = std::make_shared<model::Model>(std::move(file), mo);
  m->tokenizer = std::move(tokenizer);
  m->prompts = std::move(prompts);
  return m;
}

}  // namespace moe::engine
