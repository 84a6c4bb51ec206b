// lora_loader.h: PEFT LoRA adapter directories (adapter_config.json + adapter_model.safetensors, as
// `peft` saves them) read against a loaded base, and the registry of named adapters a server offers.
//
// Reading is in two steps so a server can list many adapters cheaply: inspect_lora() reads the config
// and the safetensors header (the tensors are mmap'd, not read) and runs every check that does not need
// the values; load_lora() also copies the tensors (Q/K rows permuted for a GGUF base), scanning them for
// NaN/Inf. Both throw moe::Error naming the directory and the key or field at fault.
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "engine/loaded_model.h"
#include "model/lora.h"

namespace moe::model { struct ModelSpec; }

namespace moe::engine {

// adapter_config.json's text to the fields that matter; refuses what this engine cannot run as trained
// (DoRA, fan_in_fan_out, trained biases, per-module rank/alpha patterns, modules_to_save, a regex
// target_modules, layers_to_transform), naming the field.
model::LoraConfig parse_lora_config(const std::string& json_text, const std::string& where);


struct LoraInfo {
  std::string dir;
  model::LoraConfig config;
  uint64_t bytes = 0;  // the A/B data a load holds in memory
};
LoraInfo inspect_lora(const std::string& dir, const model::ModelSpec& base);
// The same against a base's hyperparameters and Q/K row order, before its weights are bound (the serve
// planner counts adapter bytes before the model loads).
LoraInfo inspect_lora(const std::string& dir, const model::HParams& hp, model::QkRowOrder order);
std::shared_ptr<const model::LoraWeights> load_lora(const std::string& dir, const model::ModelSpec& base);
// The same for a base not loaded as a model (`moe convert --lora` merges into the rows it writes, in
// `order`).
std::shared_ptr<const model::LoraWeights> load_lora(const std::string& dir, const model::HParams& hp,
                                                    model::QkRowOrder order);

// `--lora PATH[:SCALE]`: the adapter directory and a factor on its alpha/r (default 1). The suffix is
// taken as a scale only when it parses as a finite number, so paths with colons still work.
struct LoraArg {
  std::string path;
  float scale = 1.0f;
};
LoraArg parse_lora_arg(const std::string& arg);
// The adapters of `--lora` flags, loaded and stacked into one adapter (null when there are none).
std::shared_ptr<const model::LoraAdapter> load_lora_stack(const std::vector<std::string>& args,
                                                          const model::ModelSpec& base);

// The named adapters of `moe serve --lora-modules name=path ...`. Every one is inspected when the
// registry is made (a bad one fails the start, naming it); each is loaded on first use and kept while
// requests use it; beyond max_loaded adapters in memory, the least recently used one that no request
// holds is dropped (loaded again when asked for). Thread-safe.
class LoraRegistry {
 public:
  struct Module {
    std::string name, path;
  };
  LoraRegistry(std::shared_ptr<const LoadedModel> base, std::vector<Module> modules, int max_loaded = 0);

  // "name=path" (vLLM's spelling). Throws naming the argument.
  static Module parse_module(const std::string& arg);

  const std::vector<Module>& modules() const { return modules_; }
  bool has(const std::string& name) const;
  // The adapter `name`, loading it if needed. Throws moe::Error ("the LoRA adapter 'x' (dir) cannot be
  // loaded: ...") when it fails; the other adapters are unaffected.
  std::shared_ptr<const model::LoraAdapter> get(const std::string& name);

  int64_t loaded_count() const;
  uint64_t loaded_bytes() const;
  uint64_t declared_bytes() const;  // all of them loaded at once (the planner's figure)
  uint64_t declared_bytes(const std::string& name) const;

 private:
  struct Entry {
    uint64_t declared = 0;
    std::shared_ptr<const model::LoraAdapter> adapter;
    uint64_t last_use = 0;
  };
  void evict_locked(size_t keep);  // under mu_
  std::shared_ptr<const LoadedModel> base_;
  std::vector<Module> modules_;
  int max_loaded_ = 0;
  mutable std::mutex mu_;
  std::mutex load_mu_;  // one load at a time (loads are I/O bound; this keeps memory peaks bounded)
  std::vector<Entry> entries_;
  uint64_t clock_ = 0;
};

}  // namespace moe::engine
