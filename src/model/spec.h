// spec.h: what a model is, apart from where and how it runs: its hyperparameters and its named weight
// views, read once from a GGUF file and shared (immutable) by every Model and backend built on it. Two
// engines, or a draft model's backend beside a target's, hold the same std::shared_ptr<const ModelSpec>
// and so the same mapped weights.
#pragma once
#include <memory>
#include <string>

#include "gguf/gguf.h"
#include "kv/cache.h"
#include "model/hparams.h"
#include "model/repack.h"
#include "model/weights.h"

namespace moe::model {

struct ModelSpec {
  std::shared_ptr<const gguf::File> file;  // the GGUF it was read from; owns the Mmap views' bytes
  HParams hp;
  Weights weights;                         // views with Residency::Mmap, owner = file (HostBuffer where
                                           // Model's load repacked them: model/repack.h)
  RepackStats repack;                      // what was repacked (zero: nothing)

  // Validates the file's hyperparameters and binds every tensor; throws moe::Error naming what is wrong.
  static std::shared_ptr<const ModelSpec> from_file(gguf::File file);
  static std::shared_ptr<const ModelSpec> load(const std::string& path);

  // The KV geometry of this model for a cache element type.
  kv::Geometry kv_geometry(kv::KvType type) const { return kv::Geometry{type, hp.n_layer, hp.n_head_kv, hp.head_dim}; }
};

}  // namespace moe::model
