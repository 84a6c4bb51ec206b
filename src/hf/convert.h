// convert.h: writing a Hugging Face checkpoint (opened as a view by hf.h) as the GGUF file llama.cpp's
// own converter writes: tensor names blk.N.attn_q.weight …, experts stacked into one tensor per kind
// (blk.N.ffn_gate_exps.weight, ne {n_embd, n_ff, n_expert}, expert e's rows after expert e-1's), Q/K
// rows permuted back from HF's rotate-half order into GGUF's interleaved order (HF row k*hd/2 + i of a
// head becomes row 2i + k), the `llama.*`, `tokenizer.ggml.*` and `tokenizer.chat_template` metadata,
// and the tensors in llama.cpp's order (non-layer tensors by name, then each layer's by name). Tensor
// bytes are copied as stored (F16, BF16, F32; AWQ as its exact F32 expansion).
#pragma once
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "gguf/gguf.h"

namespace moe::hf {

// A change to some output tensors on their way out (`moe convert --lora` merges adapters this way). An
// edited tensor is handed to `apply` as F32 values in the output's layout (ggml ne, experts stacked, Q/K
// rows already in GGUF order) and written as F32 when stored as F32 or when `f32` is set (an intermediate
// file quantized afterwards, so the edited values are rounded once), F16 otherwise (a merged value is no
// longer a BF16 value; F16 keeps 3 more mantissa bits).
struct TensorEdit {
  bool f32 = false;
  std::function<bool(const std::string& gguf_name)> edits;
  std::function<void(const std::string& gguf_name, const std::vector<int64_t>& ne, std::span<float> values)> apply;
};

// The GGUF writer for `view` (a File from open_checkpoint), tensors produced on demand from the view's
// bytes; `view` (and `edit`, when given) must outlive the writer's write().
gguf::Writer gguf_writer_for(const gguf::File& view, gguf::Writer::Producer& producer, const TensorEdit* edit = nullptr);

}  // namespace moe::hf
