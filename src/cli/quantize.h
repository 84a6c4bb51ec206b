// quantize.h: `moe quantize`'s pipeline for other subcommands (`moe convert --type`, `--quantize` on
// load of a Hugging Face checkpoint): IN (a GGUF file) rewritten as OUT with the quantization mix TYPE.
#pragma once
#include <string>

namespace moe::cli {

// Throws moe::Error naming what is wrong; returns 0. threads 0: physical cores.
int quantize_gguf(const std::string& in, const std::string& out, const std::string& type, int threads, bool quiet);

}  // namespace moe::cli
