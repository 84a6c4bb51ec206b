// plan_testing.h: what the planner's test suites share: a model preset at a quantization mix, laid out
// exactly as `moe synth` would write it (hyperparameters, tensor layout, metadata), without a file.
#pragma once
#include "model/hparams.h"
#include "plan/geometry.h"
#include "plan/layout.h"
#include "plan/quant_mix.h"

namespace moe::plan {

struct Planned {
  model::HParams hp;
  WeightsLayout weights;
  Metadata metadata;
};

inline Planned preset(const char* name, const char* mix) {
  Planned p;
  p.hp = find_preset(name).hp;
  Vocab vocab = synthetic_vocab(p.hp.n_vocab);
  p.metadata = synth_metadata(p.hp, find_mix(mix), name, vocab);
  p.weights = layout_of_synth(p.hp, find_mix(mix), vocab, name);
  return p;
}

}  // namespace moe::plan
