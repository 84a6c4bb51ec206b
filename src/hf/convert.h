// convert.h: writing a Hugging Face checkpoint (opened as a view by hf.h) as the GGUF file llama.cpp's
// own converter writes: tensor names blk.N.attn_q.weight …, experts stacked into one tensor per kind
// (blk.N.ffn_gate_exps.weight, ne {n_embd, n_ff, n_expert}, expert e's rows after expert e-1's), Q/K
// rows permuted back from HF's rotate-half order into GGUF's interleaved order (HF row k*hd/2 + i of a
// head becomes row 2i + k), the `llama.*`, `tokenizer.ggml.*` and `tokenizer.chat_template` metadata,
// and the tensors in llama.cpp's order (non-layer tensors by name, then each layer's by name). Tensor
// bytes are copied as stored (F16, BF16, F32; AWQ as its exact F32 expansion).
#pragma once
#include <string>

#include "gguf/gguf.h"

namespace moe::hf {

// The GGUF writer for `view` (a File from open_checkpoint), tensors produced on demand from the view's
// bytes; `view` must outlive the writer's write().
gguf::Writer gguf_writer_for(const gguf::File& view, gguf::Writer::Producer& producer);

}  // namespace moe::hf
