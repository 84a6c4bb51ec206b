// loaded_model.h: a model loaded once and handed to engines, so that several engines (say two
// configurations, or later a draft model beside a target) can share one set of mapped weights. It
// bundles what every user of a model file needs together: the forward pass (Model::forward is
// serialized inside Model, so sharing it is safe), the tokenizer, and the PromptBuilder of the chosen
// chat template. Frontends call load_model(path, ...) and then construct engines on the result.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "engine/prompt_builder.h"

namespace moe::gguf { class File; }
namespace moe::model { class Model; }
namespace moe::tokenizer { class Tokenizer; }

namespace moe::engine {

struct LoadedModel {
  std::string path;
  std::shared_ptr<model::Model> model;
  std::shared_ptr<const tokenizer::Tokenizer> tokenizer;
  std::shared_ptr<const PromptBuilder> prompts;
};

struct LoadOptions {
  int n_threads = 0;                   // the model's thread pool; 0: physical cores
  int64_t max_batch_tokens = 512;      // the model's workspace is sized for this many tokens per chunk
  std::string chat_template_override;  // a built-in name, a file, or template text; empty: the model's own
  std::string device = "cpu";          // model::ModelOptions::device: cpu, vulkan, vulkan:N
  uint64_t gpu_memory = 0;             // model::ModelOptions::gpu_memory (0: the device's memory less a reserve)
  bool repack = true;                  // model::ModelOptions::repack
};

// Opens and binds the GGUF model at `path`, reads its tokenizer and resolves its chat template. Throws
// moe::Error naming what is wrong.
std::shared_ptr<const LoadedModel> load_model(const std::string& path, const LoadOptions& options = {});
// The same for a file already opened, whose tokenizer and prompt builder the caller made first (`moe run`
// reads its prompt before binding the weights, to size the model's batch by it); options'
// chat_template_override is then unused.
std::shared_ptr<const LoadedModel> load_model(gguf::File file, std::shared_ptr<const tokenizer::Tokenizer> tokenizer,
                                              std::shared_ptr<const PromptBuilder> prompts, const LoadOptions& options);

}  // namespace moe::engine
