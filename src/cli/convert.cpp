// convert.cpp: `moe convert HF_DIR OUT.gguf [--type TYPE]`: a Hugging Face checkpoint directory as a
// GGUF file with llama.cpp's conventions (src/hf/convert.h), tensors as stored (F16/BF16/F32) or, with
// --type, through `moe quantize`'s pipeline (the same per-tensor mixes). The result is re-opened with the
// validating reader before success is reported. With --lora, PEFT adapters are merged into the weights
// they target on the way out (W' = W + scale·B·A computed in float, then written as F16 (F32 for an F32
// checkpoint), or kept in F32 for --type to quantize): the single-file alternative to the run-time side path.
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "cli/command.h"
#include "cli/convert.h"
#include "cli/quantize.h"
#include "gguf/gguf.h"
#include "hf/convert.h"
#include "hf/hf.h"
#include "plan/memory.h"
#include "engine/lora_loader.h"
#include "model/hparams.h"
#include "model/lora.h"
#include "util/error.h"
#include "util/fp16.h"

namespace moe::cli {
namespace {

// The adapters of `--lora`, bound to the checkpoint's geometry with B's q/k rows in GGUF order (the
// order convert writes the base's rows in), each with its scale (alpha/r or alpha/√r, times :SCALE).
struct Merge {
  std::vector<model::LoraAdapter::Part> parts;

  // The pairs targeting the GGUF tensor `name`, one per stacked matrix (null where a part has none).
  std::vector<const model::LoraPair*> pairs(const model::LoraWeights& w, const std::string& name) const {
    if (name.rfind("blk.", 0) != 0) return {};
    const size_t dot = name.find('.', 4);
    const size_t layer = std::stoul(name.substr(4, dot - 4));
    if (layer >= w.layers.size()) return {};
    const model::LoraLayer& L = w.layers[layer];
    const std::string kind = name.substr(dot + 1);
    auto one = [](const model::LoraPair& p) { return std::vector<const model::LoraPair*>{p.present() ? &p : nullptr}; };
    auto each = [](const std::vector<model::LoraPair>& v) {
      std::vector<const model::LoraPair*> out;
      for (const auto& p : v) out.push_back(p.present() ? &p : nullptr);
      return out;
    };
    if (kind == "attn_q.weight") return one(L.q);
    if (kind == "attn_k.weight") return one(L.k);
    if (kind == "attn_v.weight") return one(L.v);
    if (kind == "attn_output.weight") return one(L.o);
    if (kind == "ffn_gate_exps.weight" || kind == "ffn_gate.weight") return each(L.gate);
    if (kind == "ffn_up_exps.weight" || kind == "ffn_up.weight") return each(L.up);
    if (kind == "ffn_down_exps.weight" || kind == "ffn_down.weight") return each(L.down);
    return {};
  }

  bool edits(const std::string& name) const {
    for (const auto& part : parts)
      for (const auto* p : pairs(*part.weights, name))
        if (p) return true;
    return false;
  }

  // values (ne {in, out, stack}) += Σ_parts scale · B·A, matrix by matrix.
  void apply(const std::string& name, const std::vector<int64_t>& ne, std::span<float> values) const {
    const int64_t in = ne[0], out = ne[1], stack = ne.size() > 2 ? ne[2] : 1;
    for (const auto& part : parts) {
      const auto ps = pairs(*part.weights, name);
      if (ps.empty()) continue;
      if (static_cast<int64_t>(ps.size()) != stack)
        fail(part.weights->source, ": ", name, " stacks ", stack, " matrices but the adapter has ", ps.size());
      for (int64_t m = 0; m < stack; ++m) {
        const model::LoraPair* p = ps[static_cast<size_t>(m)];
        if (!p) continue;
        if (p->a.cols != in || p->b.rows != out || p->a.rows != p->b.cols)
          fail(part.weights->source, ": the adapter of ", name, " (A ", p->a.rows, "x", p->a.cols, ", B ", p->b.rows,
               "x", p->b.cols, ") does not fit ", out, "x", in);
        const int64_t r = p->a.rows;
        std::vector<float> a(static_cast<size_t>(r * in)), b(static_cast<size_t>(out * r));
        auto rows_f32 = [](const kernels::TensorView& t, float* dst) {
          for (int64_t i = 0; i < t.rows; ++i)
            for (int64_t c = 0; c < t.cols; ++c) {
              const uint8_t* row = t.row(i);
              uint16_t h = 0;
              float v = 0;
              if (t.type == GgmlType::F32) {
                std::memcpy(&v, row + 4 * c, 4);
              } else {
                std::memcpy(&h, row + 2 * c, 2);
                v = t.type == GgmlType::F16 ? fp16_to_fp32(h) : bf16_to_fp32(h);
              }
              dst[i * t.cols + c] = v;
            }
        };
        rows_f32(p->a, a.data());
        rows_f32(p->b, b.data());
        float* w = values.data() + static_cast<size_t>(m * out * in);
        for (int64_t o = 0; o < out; ++o)
          for (int64_t j = 0; j < r; ++j) {
            const float c = part.scale * b[static_cast<size_t>(o * r + j)];
            const float* arow = a.data() + static_cast<size_t>(j * in);
            float* wrow = w + static_cast<size_t>(o * in);
            for (int64_t i = 0; i < in; ++i) wrow[i] += c * arow[i];
          }
      }
    }
  }
};

}  // namespace

void convert_checkpoint(const std::string& in, const std::string& out, const std::string& type, int threads, bool quiet,
                        const std::vector<std::string>& loras) {
  namespace fs = std::filesystem;
  if (!hf::is_checkpoint_dir(in)) fail("'", in, "' is not a Hugging Face checkpoint directory (no config.json)");
  const gguf::File view = hf::open_checkpoint(in);
  Merge merge;
  hf::TensorEdit edit;
  if (!loras.empty()) {
    const model::HParams hp = model::HParams::from_gguf(view);
    for (const std::string& arg : loras) {
      const engine::LoraArg a = engine::parse_lora_arg(arg);
      auto w = engine::load_lora(a.path, hp, model::QkRowOrder::Interleaved);
      merge.parts.push_back({w, w->scale * a.scale});
      if (!quiet) std::fprintf(stderr, "moe convert: merging %s (scale %g)\n", a.path.c_str(), double(w->scale * a.scale));
    }
    edit.f32 = !type.empty();  // quantized from the float values, not from an F16 rounding of them
    edit.edits = [&merge](const std::string& name) { return merge.edits(name); };
    edit.apply = [&merge](const std::string& name, const std::vector<int64_t>& ne, std::span<float> v) {
      merge.apply(name, ne, v);
    };
  }
  gguf::Writer::Producer producer;
  const gguf::Writer w = hf::gguf_writer_for(view, producer, loras.empty() ? nullptr : &edit);
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
  std::vector<std::string> loras;
  int threads = 0;
  bool quiet = false;
};

int run_convert(const ConvertOpts& o) {
  convert_checkpoint(o.in, o.out, o.type, o.threads, o.quiet, o.loras);
  return 0;
}

Registrar reg("convert", "Convert a Hugging Face checkpoint directory to GGUF (llama.cpp's conventions)", [](CLI::App& sub) {
  auto o = std::make_shared<ConvertOpts>();
  sub.add_option("input", o->in, "Hugging Face checkpoint directory (config.json, safetensors, tokenizer.model)")->required();
  sub.add_option("output", o->out, "output GGUF")->required();
  sub.add_option("--type", o->type, "quantize to this mix (as moe quantize: Q4_K_M, Q8_0, ...); default: as stored");
  sub.add_option("--lora", o->loras,
                 "merge this PEFT adapter directory into the weights (DIR[:SCALE], repeatable; W + scale*B*A in float)");
  sub.add_option("-t,--threads", o->threads, "threads for --type (default: physical cores)");
  sub.add_flag("-q,--quiet", o->quiet, "no progress output");
  return [o] { return run_convert(*o); };
});

}  // namespace
}  // namespace moe::cli
