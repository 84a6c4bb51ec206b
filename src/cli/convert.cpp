// convert.cpp: `moe convert HF_DIR OUT.gguf [--type TYPE]`: a Hugging Face checkpoint directory as a
// GGUF file with llama.cpp's conventions (src/hf/convert.h), tensors as stored (F16/BF16/F32) or, with
// --type, through `moe quantize`'s pipeline (the same per-tensor mixes). The result is re-opened with the
// validating reader before success is reported.
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "cli/command.h"
#include "cli/convert.h"
#include "cli/quantize.h"
#include "gguf/gguf.h"
#include "hf/convert.h"
#include "hf/hf.h"
#include "plan/memory.h"
#include "util/error.h"

namespace moe::cli {

void convert_checkpoint(const std::string& in, const std::string& out, const std::string& type, int threads, bool quiet) {
  namespace fs = std::filesystem;
  if (!hf::is_checkpoint_dir(in)) fail("'", in, "' is not a Hugging Face checkpoint directory (no config.json)");
  const gguf::File view = hf::open_checkpoint(in);
  gguf::Writer::Producer producer;
  const gguf::Writer w = hf::gguf_writer_for(view, producer);
  const std::string direct = type.empty() ? out : out + ".unquantized.tmp";
  try {
    w.write(direct, producer);
    const gguf::File check = gguf::File::open(direct);
    if (!quiet)
      std::fprintf(stderr, "moe convert: %s -> %s: %zu tensors, %s\n", in.c_str(), direct.c_str(), check.tensors().size(),
                   plan::format_bytes(check.file_size()).c_str());
    if (!type.empty()) {
      quantize_gguf(direct, out, type, threads, quiet);
      fs::remove(direct);
    }
  } catch (...) {
    if (!type.empty()) {
      std::error_code ec;
      fs::remove(direct, ec);
    }
    throw;
  }
}

namespace {

struct ConvertOpts {
  std::string in, out, type;
  int threads = 0;
  bool quiet = false;
};

int run_convert(const ConvertOpts& o) {
  convert_checkpoint(o.in, o.out, o.type, o.threads, o.quiet);
  return 0;
}

Registrar reg("convert", "Convert a Hugging Face checkpoint directory to GGUF (llama.cpp's conventions)", [](CLI::App& sub) {
  auto o = std::make_shared<ConvertOpts>();
  sub.add_option("input", o->in, "Hugging Face checkpoint directory (config.json, safetensors, tokenizer.model)")->required();
  sub.add_option("output", o->out, "output GGUF")->required();
  sub.add_option("--type", o->type, "quantize to this mix (as moe quantize: Q4_K_M, Q8_0, ...); default: as stored");
  sub.add_option("-t,--threads", o->threads, "threads for --type (default: physical cores)");
  sub.add_flag("-q,--quiet", o->quiet, "no progress output");
  return [o] { return run_convert(*o); };
});

}  // namespace
}  // namespace moe::cli
