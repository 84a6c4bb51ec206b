// spec.cpp: reading a ModelSpec from GGUF (the checks live in HParams::from_gguf and Weights::from_gguf).
#include "model/spec.h"

#include "hf/hf.h"

namespace moe::model {

std::shared_ptr<const ModelSpec> ModelSpec::from_file(gguf::File file) {
  auto spec = std::make_shared<ModelSpec>();
  spec->file = std::make_shared<const gguf::File>(std::move(file));
  spec->hp = HParams::from_gguf(*spec->file);
  spec->weights = Weights::from_gguf(*spec->file, spec->hp, spec->file);
  return spec;
}

std::shared_ptr<const ModelSpec> ModelSpec::load(const std::string& path) { return from_file(hf::open_model_file(path)); }

}  // namespace moe::model
