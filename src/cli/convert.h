// convert.h: `moe convert`'s pipeline for other subcommands (`--quantize TYPE` on load of a Hugging Face
// checkpoint): the checkpoint directory IN written as the GGUF file OUT with llama.cpp's conventions,
// quantized to the mix TYPE through `moe quantize`'s pipeline when TYPE is not empty.
#pragma once
#include <string>
#include <vector>

namespace moe::cli {

// Throws moe::Error naming what is wrong. threads 0: physical cores. `loras`: PEFT adapter directories
// (`DIR[:SCALE]`, as `--lora`) merged into the weights written (W + scale·B·A, in float).
void convert_checkpoint(const std::string& in, const std::string& out, const std::string& type, int threads, bool quiet,
                        const std::vector<std::string>& loras = {});

}  // namespace moe::cli
