// common_flags.h: the flags `run`, `chat` and `serve` share, declared once so they are spelled the same
// everywhere and accept the spellings people bring from llama.cpp and vLLM:
//   MODEL / -m, --model                      (MOE_MODEL when neither is given: see model_or_default)
//   -c, --ctx-size  (also --ctx, --max-model-len)    context length
//   -np, --parallel (also --max-num-seqs)            sequences at once (serve)
//   --memory-utilization (also --gpu-memory-utilization)
// CLI11 takes one-letter short options only, so the llama.cpp spelling `-np` is rewritten to
// `--parallel` before parsing (translate_argv), which keeps CLI11's own error messages and help for it.
#pragma once
#include <CLI/CLI.hpp>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace moe::grammar { class Grammar; }

namespace moe::cli {

// argv with `-np` / `-np=N` rewritten to `--parallel` / `--parallel=N` (not after `--`).
std::vector<std::string> translate_argv(int argc, const char* const* argv);

// The model as a positional argument or -m/--model; model() says which was given (an error if both
// name different files), empty when neither.
//
// With --quantize TYPE the model must be a Hugging Face checkpoint directory: model() then converts it
// once (per process) into a temporary GGUF of that quantization mix, through `moe convert --type`'s
// pipeline, and returns that file's path; the file is removed when the process exits. The weights are
// then mapped from it like any GGUF (its size on disk is the cost; TMPDIR chooses where).
struct ModelArg {
  std::string positional;
  std::string option;
  std::string quantize;
  std::string model() const;
};
void add_model_options(CLI::App& sub, ModelArg& model, const std::string& help);

// -c/--ctx-size with its aliases --ctx and --max-model-len, into `ctx`.
CLI::Option* add_context_option(CLI::App& sub, int64_t& ctx, const std::string& help);

// --grammar-file FILE (GBNF) and --json-schema FILE_OR_TEXT (run, chat): the output constraint.
struct GrammarArgs {
  std::string grammar_file;
  std::string json_schema;
  // The compiled grammar (null when neither flag was given); a bad file or grammar fails with a message
  // naming the flag.
  std::shared_ptr<const grammar::Grammar> load() const;
};
void add_grammar_options(CLI::App& sub, GrammarArgs& args);

// --device cpu|vulkan|vulkan:N and --gpu-memory SIZE (run, chat, serve, bench, logits, perplexity,
// batch): where the forward pass runs and, on a Vulkan device, how much of its memory it may take.
struct DeviceArgs {
  std::string device = "cpu";
  std::string gpu_memory;  // "12G", "500M", "12GiB", bytes; empty: the device's memory less a reserve
  // The budget in bytes (0 when not given); a bad size is a moe::Error naming --gpu-memory.
  uint64_t gpu_memory_bytes() const;
};
void add_device_options(CLI::App& sub, DeviceArgs& args);

// --no-repack (run, chat, serve, bench): use the Q2_K/Q3_K/Q4_K/Q6_K/Q8_0 weights in place from the map instead of
// repacking them at load for the AVX-512 kernels (model::ModelOptions::repack; same results).
void add_repack_option(CLI::App& sub, bool& no_repack);

// The footer of `moe SUBCOMMAND --help` listing the environment variables a command reads.
std::string environment_footer(const std::vector<std::string>& variables);

}  // namespace moe::cli
