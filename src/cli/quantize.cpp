// quantize.cpp: `moe quantize IN.gguf OUT.gguf TYPE [-t N]`: rewrites a model with the per-tensor types
// of a quantization mix (src/plan/quant_mix.h: Q4_K_M etc., llama.cpp's choices). Reads any type the
// engine reads (F32, F16, BF16 and every block format), streams the output tensor by tensor through the
// GGUF writer (a tensor is dequantized and requantized row by row on all threads, never held whole as
// floats), copies all metadata with general.file_type set to the mix, and prints what it did: any
// tensor that fell back to another type because its rows do not fit the block size, and sizes before
// and after. The result is re-opened with the validating reader before success is reported.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <string>

#include "cli/command.h"
#include "cli/quantize.h"
#include "gguf/gguf.h"
#include "model/hparams.h"
#include "plan/encode.h"
#include "plan/layout.h"
#include "plan/memory.h"
#include "plan/progress.h"
#include "plan/quant_mix.h"
#include "quant/quant.h"
#include "util/error.h"
#include "util/thread_pool.h"

namespace moe::cli {
namespace {

struct QuantizeOpts {
  std::string in, out, type;
  int threads = 0;
  bool quiet = false;
};

int run_quantize(const QuantizeOpts& o) {
  namespace fs = std::filesystem;
  const plan::QuantMix& mix = plan::find_mix(o.type);
  std::error_code ec;
  if (fs::exists(o.out, ec) && fs::equivalent(o.in, o.out, ec))
    fail("the output '", o.out, "' is the input file; write to another path");
  const auto t0 = std::chrono::steady_clock::now();

  const gguf::File in = gguf::File::open(o.in);
  const model::HParams hp = model::HParams::from_gguf(in);
  const plan::WeightsLayout layout = plan::layout_of_quantized_file(in, hp, mix);
  const auto& src = in.tensors();

  bool requantizing = false;
  for (size_t k = 0; k < src.size(); ++k) {
    if (!quant::is_supported(src[k].type))
      fail("tensor '", src[k].name, "' has type ", type_name(src[k].type), ", which this engine cannot read");
    const plan::PlannedTensor& t = layout.tensors[k];
    if (t.type != t.wanted)
      std::fprintf(stderr, "moe quantize: %s: rows of %lld do not fit %s blocks; writing %s\n", t.name.c_str(),
                   static_cast<long long>(t.ne[0]), type_name(t.wanted).c_str(), type_name(t.type).c_str());
    const TypeTraits* tr = type_traits(src[k].type);
    if (tr && tr->block_size > 1 && src[k].type != t.type) requantizing = true;
  }
  if (requantizing)
    std::fprintf(stderr, "moe quantize: warning: the input is already quantized; requantizing adds the error of both "
                         "formats (quantize from F16/BF16/F32 for best quality)\n");

  gguf::Writer w;
  for (const auto& [key, value] : plan::quantized_metadata(in, mix)) w.set(key, value);
  for (const auto& t : layout.tensors) w.add_tensor(t.name, t.type, t.ne);

  ThreadPool pool(o.threads > 0 ? o.threads : physical_core_count());
  uint64_t total_elements = 0;
  for (const auto& t : src) total_elements += t.n_elements;
  plan::Progress progress("moe quantize", total_elements, !o.quiet);
  w.write(o.out, [&](size_t k, std::span<uint8_t> out) {
    const gguf::TensorInfo& s = src[k];
    progress.set_detail(s.name);
    plan::convert_tensor(pool, s.type, s.data, layout.tensors[k].type, s.ne[0], static_cast<int64_t>(s.rows()), out,
                         &progress);
  });
  progress.finish();

  // The file must pass our own validating reader, and be the size the planner says it is.
  const gguf::File check = gguf::File::open(o.out);
  if (check.file_size() != layout.file_bytes)
    fail("internal error: wrote ", check.file_size(), " bytes, the layout planned ", layout.file_bytes);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  std::map<std::string, int> counts;
  for (const auto& t : layout.tensors) ++counts[type_name(t.type)];
  std::string types;
  for (const auto& [name, n] : counts) types += cat(types.empty() ? "" : ", ", n, " ", name);
  uint64_t params = 0;
  for (const auto& t : src) params += t.n_elements;
  std::fprintf(stderr, "moe quantize: %s -> %s (%s)\n", o.in.c_str(), o.out.c_str(), mix.name.c_str());
  std::fprintf(stderr, "  tensors   %zu: %s\n", layout.tensors.size(), types.c_str());
  std::fprintf(stderr, "  before    %s (%.2f bits/weight)\n", plan::format_bytes(in.file_size()).c_str(),
               8.0 * static_cast<double>(in.file_size() - in.data_offset()) / static_cast<double>(params));
  std::fprintf(stderr, "  after     %s (%.2f bits/weight), %.2fx smaller, in %.1f s\n",
               plan::format_bytes(check.file_size()).c_str(),
               8.0 * static_cast<double>(layout.tensor_bytes) / static_cast<double>(params),
               static_cast<double>(in.file_size()) / static_cast<double>(check.file_size()), secs);
  return 0;
}

}  // namespace

int quantize_gguf(const std::string& in, const std::string& out, const std::string& type, int threads, bool quiet) {
  QuantizeOpts o;
  o.in = in;
  o.out = out;
  o.type = type;
  o.threads = threads;
  o.quiet = quiet;
  return run_quantize(o);
}

namespace {

Registrar reg("quantize", "Quantize a GGUF model to Q2_K ... Q8_0 (llama.cpp's per-tensor mixes)", [](CLI::App& sub) {
  auto o = std::make_shared<QuantizeOpts>();
  sub.add_option("input", o->in, "input GGUF (F32, F16, BF16 or quantized)")->required();
  sub.add_option("output", o->out, "output GGUF")->required();
  sub.add_option("type", o->type, "quantization: " + plan::mix_names())->required();
  sub.add_option("-t,--threads", o->threads, "threads (default: physical cores)");
  sub.add_flag("-q,--quiet", o->quiet, "no progress output");
  return [o] { return run_quantize(*o); };
});

}  // namespace
}  // namespace moe::cli
