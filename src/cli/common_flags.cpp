// common_flags.cpp: shared flag declarations and the argv rewrite for `-np` (see common_flags.h).
#include "cli/common_flags.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "cli/command.h"
#include "cli/convert.h"
#include "grammar/grammar.h"
#include "hf/hf.h"
#include "plan/memory.h"
#include "util/error.h"

namespace moe::cli {

std::vector<std::string> translate_argv(int argc, const char* const* argv) {
  std::vector<std::string> out;
  bool options_ended = false;
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    if (i > 0 && !options_ended) {
      if (a == "--") options_ended = true;
      else if (a == "-np") a = "--parallel";
      else if (a.rfind("-np=", 0) == 0) a = "--parallel=" + a.substr(4);
    }
    out.push_back(std::move(a));
  }
  return out;
}

namespace {

// The temporary GGUF files made for --quantize, removed at exit.
struct QuantizedOnLoad {
  std::map<std::pair<std::string, std::string>, std::string> made;  // (source, type) -> temp path
  ~QuantizedOnLoad() {
    for (const auto& [key, path] : made) {
      std::error_code ec;
      std::filesystem::remove(path, ec);
    }
  }
};

std::string quantized_on_load(const std::string& source, const std::string& type) {
  static QuantizedOnLoad cache;
  if (!hf::is_checkpoint_dir(source))
    fail("--quantize applies to a Hugging Face checkpoint directory; '", source,
         "' is not one (quantize a GGUF file with moe quantize)");
  auto it = cache.made.find({source, type});
  if (it != cache.made.end()) return it->second;
  std::error_code ec;
  const std::filesystem::path dir = std::filesystem::temp_directory_path(ec);
  if (ec) fail("--quantize: no temporary directory: ", ec.message());
  const std::string out = (dir / cat("moe-quantize-", ::getpid(), "-", cache.made.size(), ".gguf")).string();
  std::fprintf(stderr, "moe: quantizing %s to %s on load\n", source.c_str(), type.c_str());
  cache.made[{source, type}] = out;  // registered first, so a failure half-way is cleaned up too
  convert_checkpoint(source, out, type, 0, true);
  return out;
}

}  // namespace

std::string ModelArg::model() const {
  if (!positional.empty() && !option.empty() && positional != option)
    fail("two models given: '", positional, "' and -m '", option, "' (give one)");
  const std::string path = positional.empty() ? option : positional;
  if (quantize.empty()) return path;
  return quantized_on_load(model_or_default(path), quantize);
}

void add_model_options(CLI::App& sub, ModelArg& model, const std::string& help) {
  sub.add_option("model", model.positional, help);
  sub.add_option("-m,--model", model.option, help + "; the same as the positional MODEL");
  sub.add_option("--quantize", model.quantize,
                 "quantize a Hugging Face checkpoint on load to this mix (Q4_K_M, Q8_0, ... as moe quantize)");
}

CLI::Option* add_context_option(CLI::App& sub, int64_t& ctx, const std::string& help) {
  return sub.add_option("-c,--ctx-size,--ctx,--max-model-len", ctx, help)
      ->check(CLI::Range(int64_t(0), int64_t(1) << 24));
}

void add_repack_option(CLI::App& sub, bool& no_repack) {
  sub.add_flag("--no-repack", no_repack,
               "use Q2_K/Q3_K/Q4_K/Q6_K/Q8_0 weights in place from the file instead of repacking them at load for the AVX-512 "
               "kernels (same results and memory; repacking makes decode and small batches faster)");
}

std::string environment_footer(const std::vector<std::string>& variables) {
  std::string s = "Environment:\n";
  for (const auto& v : variables) {
    if (v == "MOE_MODEL") s += "  MOE_MODEL           the model when none is given (before the bundled one)\n";
    else if (v == "MOE_HOST") s += "  MOE_HOST            --host when not given\n";
    else if (v == "MOE_PORT") s += "  MOE_PORT            --port when not given\n";
    else if (v == "MOE_API_KEY") s += "  MOE_API_KEY         --api-key when neither --api-key nor --api-key-file is given\n";
    else if (v == "MOE_ISA") s += "  MOE_ISA             cap the kernels: scalar, avx2 or avx512\n";
    else s += "  " + v + "\n";
  }
  s += "Run `moe help` for every subcommand, `moe --version` for the build and the kernels this CPU uses.";
  return s;
}

namespace {
std::string read_flag_file(const std::string& flag, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(flag, ": cannot open '", path, "'");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
}  // namespace

void add_grammar_options(CLI::App& sub, GrammarArgs& args) {
  auto* g = sub.add_option("--grammar-file", args.grammar_file, "constrain the output to a GBNF grammar (llama.cpp's format)");
  auto* j = sub.add_option("--json-schema", args.json_schema,
                           "constrain the output to a JSON schema: a file, or the schema's text (starting with '{')");
  g->excludes(j);
}

std::shared_ptr<const grammar::Grammar> GrammarArgs::load() const {
  try {
    if (!grammar_file.empty()) return grammar::compile_gbnf(read_flag_file("--grammar-file", grammar_file));
    if (!json_schema.empty()) {
      size_t first = json_schema.find_first_not_of(" \t\r\n");
      std::string text = first != std::string::npos && json_schema[first] == '{' ? json_schema
                                                                                 : read_flag_file("--json-schema", json_schema);
      auto schema = nlohmann::ordered_json::parse(text, nullptr, false);
      if (schema.is_discarded()) fail("--json-schema: not valid JSON");
      return grammar::compile_gbnf(grammar::json_schema_to_gbnf(schema));
    }
  } catch (const grammar::GrammarError& e) {
    fail(grammar_file.empty() ? "--json-schema: " : "--grammar-file: ", e.what());
  }
  return nullptr;
}

uint64_t DeviceArgs::gpu_memory_bytes() const {
  if (gpu_memory.empty()) return 0;
  try {
    return plan::parse_size(gpu_memory);
  } catch (const Error& e) {
    fail("--gpu-memory: ", e.what());
  }
}

void add_device_options(CLI::App& sub, DeviceArgs& args) {
  sub.add_option("--device", args.device,
                 "where the forward pass runs: cpu, vulkan (the preferred Vulkan device) or vulkan:N "
                 "(`moe info --devices` lists them)")
      ->capture_default_str();
  sub.add_option("--gpu-memory", args.gpu_memory,
                 "Vulkan: device memory the model may take (12G, 500M, bytes; default: the device's memory "
                 "less a reserve); experts that do not fit run on the CPU");
}

}  // namespace moe::cli
