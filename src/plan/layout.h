// layout.h: the bytes of a GGUF file before it is written: which type each tensor gets, how many bytes
// the tensor data and the whole file take (header, metadata, tensor infos, alignment padding, laid out
// exactly as gguf::Writer lays them out), and the metadata that `moe quantize` and `moe synth` write.
// The planner sizes models with these functions and the writers write with them, so a planned size is
// the size of the file (tests compare the two byte for byte).
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "gguf/gguf.h"
#include "model/hparams.h"
#include "plan/geometry.h"
#include "plan/quant_mix.h"

namespace moe::plan {

using Metadata = std::vector<std::pair<std::string, gguf::Value>>;

struct PlannedTensor {
  std::string name;
  std::vector<int64_t> ne;  // ggml order
  GgmlType type;            // what the file holds (or will hold)
  GgmlType wanted;          // what the mix asked for before a block-size fallback
  uint64_t bytes = 0;       // tensor data bytes (unpadded)
};

struct WeightsLayout {
  std::vector<PlannedTensor> tensors;
  uint64_t tensor_bytes = 0;  // sum of the tensors' data bytes: what the weights take in memory
  uint64_t file_bytes = 0;    // the whole GGUF file, as gguf::Writer writes it
  uint64_t alignment = 32;
};

// Bytes of one metadata value / one key-value entry as serialised in a GGUF file.
uint64_t serialized_value_bytes(const gguf::Value& v);
// The file size gguf::Writer produces for this metadata and these tensors (alignment from
// general.alignment in `kv`, else 32). Fills tensor_bytes/file_bytes; tensors keep their order.
WeightsLayout layout_file(const Metadata& kv, std::vector<PlannedTensor> tensors);

// The tensors of an existing file as they are (types from the file).
WeightsLayout layout_of_file(const gguf::File& file);
// What `moe quantize FILE OUT <mix>` writes: the file's metadata with general.file_type (and
// general.quantization_version) set, each tensor's type chosen by the mix.
Metadata quantized_metadata(const gguf::File& file, const QuantMix& mix);
WeightsLayout layout_of_quantized_file(const gguf::File& file, const model::HParams& hp, const QuantMix& mix);

// A vocabulary to write as tokenizer.ggml.* metadata.
struct Vocab {
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<int32_t> types;  // tokenizer::TokenType values: 1 normal, 2 unknown, 3 control, 6 byte, ...
  int32_t bos_id = 1, eos_id = 2, unk_id = 0;
  bool add_bos = true, add_eos = false;
};
// A byte-level vocabulary of n tokens: <unk>, <s>, </s>, the 256 byte tokens <0x00>..<0xFF>, then
// distinct printable pieces ("▁" + letters, ...) with decreasing scores. moe::Error if n < 259.
Vocab synthetic_vocab(int64_t n_vocab);

// The metadata `moe synth` writes: general.*, llama.* hyperparameters (counts as UINT32 as the
// converters write them), general.file_type of the mix, and the tokenizer.
Metadata synth_metadata(const model::HParams& hp, const QuantMix& mix, const std::string& name, const Vocab& vocab);
// The tensors `moe synth` writes for hp with the mix (geometry.h's tensor list).
WeightsLayout layout_of_synth(const model::HParams& hp, const QuantMix& mix, const Vocab& vocab,
                              const std::string& name = "synth");

}  // namespace moe::plan
