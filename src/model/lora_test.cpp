// lora_test.cpp: the LoRA side path (lora.h). The side path's arithmetic against its scalar reference on
// fresh random inputs (tolerance derived below); bind_lora's checks, each failure naming the tensor; the
// Q/K row permutation against numpy's reshape/swapaxes definition (llama.cpp's converter); and a whole
// forward pass: a random tiny Mixtral with an adapter on every projection must give the logits of the
// same model with the adapter merged into its weights (W + scale·B·A, written as a GGUF here), and a
// batch mixing sequences of two adapters, a stack of both and the base must give each sequence's logits
// alone, bit for bit.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "kv/cache.h"
#include "model/lora.h"
#include "model/model.h"
#include "quant/quant.h"
#include "util/error.h"
#include "util/fp16.h"

namespace moe::model {
namespace {

// ---- helpers ---------------------------------------------------------------------------------------

// A tensor in one of the float dtypes, made from floats (the values it really holds are read back).
struct HostTensor {
  GgmlType type = GgmlType::F32;
  int64_t rows = 0, cols = 0;
  std::vector<uint8_t> bytes;
  std::vector<float> values;  // what the bytes hold, row-major
};

HostTensor make_tensor(GgmlType type, int64_t rows, int64_t cols, std::mt19937& rng, float scale) {
  std::normal_distribution<float> normal(0.0f, scale);
  HostTensor t;
  t.type = type;
  t.rows = rows;
  t.cols = cols;
  std::vector<float> v(static_cast<size_t>(rows * cols));
  for (float& x : v) x = normal(rng);
  const size_t rb = *row_bytes(type, static_cast<uint64_t>(cols));
  t.bytes.resize(rb * static_cast<size_t>(rows));
  t.values.resize(v.size());
  for (int64_t r = 0; r < rows; ++r) {
    quant::quantize_row(type, v.data() + r * cols, t.bytes.data() + r * rb, cols);
    quant::dequantize_row(type, t.bytes.data() + r * rb, t.values.data() + r * cols, cols);
  }
  return t;
}

TensorView view_of(const HostTensor& t) {
  TensorView v;
  v.type = t.type;
  v.data = t.bytes.data();
  v.rows = t.rows;
  v.cols = t.cols;
  v.row_bytes = t.bytes.size() / static_cast<size_t>(t.rows);
  v.matrix_bytes = t.bytes.size();
  return v;
}

LoraTensor lora_tensor(const std::string& name, const HostTensor& t) {
  return LoraTensor{name, t.type, {t.rows, t.cols}, t.bytes.data(), t.bytes.size()};
}

// ---- the side path's arithmetic -------------------------------------------------------------------

// Tolerance, per output element, of the float path against the double reference. h_j = Σ_c A_jc x_c is
// a float dot product of `in` terms in some order: |error| ≤ γ_in · Σ_c |A_jc x_c| (γ_n = n·u / (1 − n·u),
// u = 2^-24), then one rounding of h_j and one of scale·h_j (2u|scale·h_j|). The output is a dot of r
// terms over the rounded h: γ_r · Σ_j |B_oj · scale·h_j| plus Σ_j |B_oj| times the error of scale·h_j;
// and the final y + out is one more rounding, u·|y + out|. Twice that bound is allowed.
TEST(LoraApply, MatchesTheScalarReferenceOnRandomInputs) {
  const double u = std::ldexp(1.0, -24);
  auto gamma = [&](int64_t n) { return static_cast<double>(n) * u / (1 - static_cast<double>(n) * u); };
  ThreadPool pool(3);
  uint32_t seed = 1;
  for (GgmlType type : {GgmlType::F32, GgmlType::F16, GgmlType::BF16})
    for (auto [in, out, r, n] : {std::tuple{256, 128, 8, 5}, std::tuple{96, 200, 4, 1}, std::tuple{64, 64, 16, 33}})
      for (kernels::Precision prec : {kernels::Precision::Fast, kernels::Precision::Exact}) {
        SCOPED_TRACE(cat(type_name(type), " in ", in, " out ", out, " r ", r, " n ", n,
                         prec == kernels::Precision::Fast ? " fast" : " exact"));
        std::mt19937 rng(seed++);
        HostTensor a = make_tensor(type, r, in, rng, 0.2f), b = make_tensor(type, out, r, rng, 0.3f);
        const LoraPair p{view_of(a), view_of(b)};
        HostTensor x = make_tensor(GgmlType::F32, n, in, rng, 1.0f), y0 = make_tensor(GgmlType::F32, n, out, rng, 1.0f);
        const float scale = 1.75f;
        std::vector<float> y = y0.values;
        std::vector<float> h(static_cast<size_t>(n * r)), tmp(static_cast<size_t>(n * out)),
            deq(static_cast<size_t>(pool.size() * std::max(in, r)));
        lora_apply(p, scale, x.values.data(), n, y.data(), prec, pool, h.data(), tmp.data(), deq.data());
        std::vector<double> ref(y0.values.begin(), y0.values.end());
        lora_apply_reference(p, scale, x.values.data(), n, ref.data());
        double worst = 0;
        for (int64_t t = 0; t < n; ++t) {
          std::vector<double> habs(static_cast<size_t>(r)), hval(static_cast<size_t>(r));
          for (int64_t j = 0; j < r; ++j) {
            double s = 0, sv = 0;
            for (int64_t c = 0; c < in; ++c) {
              s += std::fabs(a.values[j * in + c] * x.values[t * in + c]);
              sv += static_cast<double>(a.values[j * in + c]) * x.values[t * in + c];
            }
            habs[j] = s;
            hval[j] = sv * scale;
          }
          for (int64_t o = 0; o < out; ++o) {
            double bound = 0;
            for (int64_t j = 0; j < r; ++j) {
              const double bo = std::fabs(b.values[o * r + j]);
              bound += bo * (std::fabs(scale) * gamma(in) * habs[j] + 2 * u * std::fabs(hval[j])) +
                       gamma(r) * bo * std::fabs(hval[j]);
            }
            const size_t i = static_cast<size_t>(t * out + o);
            bound = 2 * (bound + u * std::fabs(ref[i]));
            const double err = std::fabs(y[i] - ref[i]);
            worst = std::max(worst, err / bound);
            ASSERT_LE(err, bound) << "token " << t << " row " << o;
          }
        }
        ::testing::Test::RecordProperty(cat("worst_error_over_bound_", type_name(type), "_", in), cat(worst));
      }
}

// ---- Q/K row order -------------------------------------------------------------------------------

// llama.cpp's converter: w.reshape(n_head, 2, hd/2, cols).swapaxes(1, 2).reshape(rows, cols), i.e. the
// converted row at flat index ((h·(hd/2) + i)·2 + s) is the HF row (h·2 + s)·(hd/2) + i.
TEST(LoraBind, QkRowPermutationIsTheConvertersReshape) {
  for (int64_t hd : {2, 8, 128})
    for (int64_t heads : {1, 4}) {
      std::vector<int64_t> gguf_of_hf(static_cast<size_t>(heads * hd), -1);
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t i = 0; i < hd / 2; ++i)
          for (int64_t s = 0; s < 2; ++s) {
            const int64_t converted = (h * (hd / 2) + i) * 2 + s, hf = (h * 2 + s) * (hd / 2) + i;
            gguf_of_hf[static_cast<size_t>(hf)] = converted;
          }
      for (int64_t r = 0; r < heads * hd; ++r) EXPECT_EQ(gguf_qk_row(r, hd), gguf_of_hf[static_cast<size_t>(r)]) << r;
    }
}

// ---- a tiny Mixtral ----------------------------------------------------------------------------------

HParams tiny_hparams() {
  HParams hp;
  hp.n_vocab = 60;
  hp.n_ctx_train = 256;
  hp.n_embd = 64;
  hp.n_layer = 2;
  hp.n_ff = 48;
  hp.n_head = 4;
  hp.n_head_kv = 2;
  hp.head_dim = 16;
  hp.n_rot = 16;
  hp.n_expert = 4;
  hp.n_expert_used = 2;
  return hp;
}

// The base's weights in HF terms ([out][in] floats, q/k rows in GGUF order as the file holds them).
struct TinyBase {
  std::map<std::string, std::vector<float>> w;  // GGUF tensor name -> values, row-major
  std::map<std::string, std::vector<int64_t>> ne;
};

TinyBase make_base(const HParams& hp, uint32_t seed) {
  TinyBase b;
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto add = [&](const std::string& name, std::vector<int64_t> ne, float scale, float offset) {
    int64_t n = 1;
    for (int64_t d : ne) n *= d;
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = offset + scale * normal(rng);
    b.w[name] = std::move(v);
    b.ne[name] = std::move(ne);
  };
  const int64_t E = hp.n_embd, QD = hp.n_head * hp.head_dim, KD = hp.n_head_kv * hp.head_dim, F = hp.n_ff;
  const float ws = 1.0f / std::sqrt(static_cast<float>(E)), fs = 1.0f / std::sqrt(static_cast<float>(F));
  add("token_embd.weight", {E, hp.n_vocab}, 1.0f, 0.0f);
  add("output_norm.weight", {E}, 0.1f, 1.0f);
  add("output.weight", {E, hp.n_vocab}, ws, 0.0f);
  for (int64_t l = 0; l < hp.n_layer; ++l) {
    const std::string p = cat("blk.", l, ".");
    add(p + "attn_norm.weight", {E}, 0.1f, 1.0f);
    add(p + "attn_q.weight", {E, QD}, ws, 0.0f);
    add(p + "attn_k.weight", {E, KD}, ws, 0.0f);
    add(p + "attn_v.weight", {E, KD}, ws, 0.0f);
    add(p + "attn_output.weight", {QD, E}, ws, 0.0f);
    add(p + "ffn_norm.weight", {E}, 0.1f, 1.0f);
    add(p + "ffn_gate_inp.weight", {E, hp.n_expert}, ws * 3, 0.0f);
    add(p + "ffn_gate_exps.weight", {E, F, hp.n_expert}, ws, 0.0f);
    add(p + "ffn_up_exps.weight", {E, F, hp.n_expert}, ws, 0.0f);
    add(p + "ffn_down_exps.weight", {F, E, hp.n_expert}, fs, 0.0f);
  }
  return b;
}

std::string write_base(const HParams& hp, const TinyBase& b, const std::string& stem) {
  gguf::Writer wr;
  if (hp.rope_rotate_half) wr.set("moe.rope.rotate_half", gguf::Value::boolean(true));  // Q/K rows in HF order
  wr.set("general.architecture", gguf::Value::string("llama"));
  wr.set("llama.context_length", gguf::Value::uint32(static_cast<uint32_t>(hp.n_ctx_train)));
  wr.set("llama.embedding_length", gguf::Value::uint32(static_cast<uint32_t>(hp.n_embd)));
  wr.set("llama.block_count", gguf::Value::uint32(static_cast<uint32_t>(hp.n_layer)));
  wr.set("llama.feed_forward_length", gguf::Value::uint32(static_cast<uint32_t>(hp.n_ff)));
  wr.set("llama.attention.head_count", gguf::Value::uint32(static_cast<uint32_t>(hp.n_head)));
  wr.set("llama.attention.head_count_kv", gguf::Value::uint32(static_cast<uint32_t>(hp.n_head_kv)));
  wr.set("llama.rope.freq_base", gguf::Value::float32(10000.0f));
  wr.set("llama.attention.layer_norm_rms_epsilon", gguf::Value::float32(1e-5f));
  wr.set("llama.expert_count", gguf::Value::uint32(static_cast<uint32_t>(hp.n_expert)));
  wr.set("llama.expert_used_count", gguf::Value::uint32(static_cast<uint32_t>(hp.n_expert_used)));
  for (const auto& [name, v] : b.w) {
    std::vector<uint8_t> bytes(v.size() * 4);
    std::memcpy(bytes.data(), v.data(), bytes.size());
    wr.add_tensor(name, GgmlType::F32, b.ne.at(name), std::move(bytes));
  }
  const std::string path =
      (std::filesystem::temp_directory_path() / cat("moe-lora-test-", ::getpid(), "-", stem, ".gguf")).string();
  wr.write(path);
  return path;
}

// A random adapter on every projection: its tensors (HF names, q/k B rows in HF order) and values.
struct TinyAdapter {
  LoraConfig config;
  std::map<std::string, HostTensor> tensors;
  std::vector<LoraTensor> list() const {
    std::vector<LoraTensor> out;
    for (const auto& [name, t] : tensors) out.push_back(lora_tensor(name, t));
    return out;
  }
};

TinyAdapter make_adapter(const HParams& hp, int64_t r, GgmlType type, uint32_t seed, bool rslora) {
  TinyAdapter a;
  a.config.rank = r;
  a.config.alpha = 2.0 * static_cast<double>(r);
  a.config.rslora = rslora;
  a.config.target_modules = {"q_proj", "k_proj", "v_proj", "o_proj", "w1", "w2", "w3"};
  std::mt19937 rng(seed);
  const int64_t E = hp.n_embd, QD = hp.n_head * hp.head_dim, KD = hp.n_head_kv * hp.head_dim, F = hp.n_ff;
  auto pair = [&](const std::string& module, int64_t in, int64_t out) {
    a.tensors[module + ".lora_A.weight"] = make_tensor(type, r, in, rng, 1.0f / std::sqrt(static_cast<float>(in)));
    a.tensors[module + ".lora_B.weight"] = make_tensor(type, out, r, rng, 0.15f);
  };
  for (int64_t l = 0; l < hp.n_layer; ++l) {
    const std::string p = cat("base_model.model.model.layers.", l, ".");
    pair(p + "self_attn.q_proj", E, QD);
    pair(p + "self_attn.k_proj", E, KD);
    pair(p + "self_attn.v_proj", E, KD);
    pair(p + "self_attn.o_proj", QD, E);
    for (int64_t e = 0; e < hp.n_expert; ++e) {
      const std::string x = cat(p, "block_sparse_moe.experts.", e, ".");
      pair(x + "w1", E, F);
      pair(x + "w3", E, F);
      pair(x + "w2", F, E);
    }
  }
  return a;
}

// The base with the adapter merged: W += scale · P(B)·A, where P puts q/k rows in the GGUF order by the
// converter's reshape (written out here, not gguf_qk_row).
TinyBase merge(const HParams& hp, TinyBase b, const TinyAdapter& a, double scale) {
  const int64_t hd = hp.head_dim;
  auto add = [&](const std::string& gguf_name, size_t offset, const std::string& module, int64_t heads) {
    const HostTensor& A = a.tensors.at(module + ".lora_A.weight");
    const HostTensor& B = a.tensors.at(module + ".lora_B.weight");
    std::vector<float>& w = b.w.at(gguf_name);
    for (int64_t o = 0; o < B.rows; ++o) {
      int64_t row = o;
      if (heads > 0 && !hp.rope_rotate_half) {  // HF row (h·2 + s)·(hd/2) + i goes to ((h·(hd/2) + i)·2 + s)
        const int64_t h = o / hd, s = (o % hd) / (hd / 2), i = o % (hd / 2);
        row = (h * (hd / 2) + i) * 2 + s;
      }
      for (int64_t c = 0; c < A.cols; ++c) {
        double d = 0;
        for (int64_t j = 0; j < A.rows; ++j) d += static_cast<double>(B.values[o * B.cols + j]) * A.values[j * A.cols + c];
        float& dst = w[offset + static_cast<size_t>(row * A.cols + c)];
        dst = static_cast<float>(dst + scale * d);
      }
    }
  };
  for (int64_t l = 0; l < hp.n_layer; ++l) {
    const std::string g = cat("blk.", l, "."), p = cat("base_model.model.model.layers.", l, ".");
    add(g + "attn_q.weight", 0, p + "self_attn.q_proj", hp.n_head);
    add(g + "attn_k.weight", 0, p + "self_attn.k_proj", hp.n_head_kv);
    add(g + "attn_v.weight", 0, p + "self_attn.v_proj", 0);
    add(g + "attn_output.weight", 0, p + "self_attn.o_proj", 0);
    for (int64_t e = 0; e < hp.n_expert; ++e) {
      const std::string x = cat(p, "block_sparse_moe.experts.", e, ".");
      const size_t ff = static_cast<size_t>(e * hp.n_ff * hp.n_embd);
      add(g + "ffn_gate_exps.weight", ff, x + "w1", 0);
      add(g + "ffn_up_exps.weight", ff, x + "w3", 0);
      add(g + "ffn_down_exps.weight", ff, x + "w2", 0);
    }
  }
  return b;
}

std::vector<int32_t> random_tokens(int64_t n, int64_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> d(0, static_cast<int32_t>(vocab - 1));
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = d(rng);
  return t;
}

// Logits of one sequence run as one batch (chunked by the model's max batch).
std::vector<float> run_sequence(Model& m, const std::vector<int32_t>& tokens, const LoraAdapter* adapter) {
  kv::Cache cache(m.kv_geometry(kv::KvType::F32), 8);
  Batch b;
  for (size_t i = 0; i < tokens.size(); ++i) b.add(tokens[i], static_cast<int32_t>(i), 0, true, adapter);
  ForwardResult r;
  m.forward(b, cache, r);
  return r.logits;
}

double rel_l2(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    den += static_cast<double>(b[i]) * b[i];
  }
  return std::sqrt(num / den);
}

struct TempFile {
  std::string path;
  ~TempFile() { std::filesystem::remove(path); }
};

// Adapter on the side = adapter merged into the weights. Exact precision, F32 KV: the two differ by the
// float roundings of the merged weights (2^-24 relative each) and of the side path's two stored vectors
// per projection; as in model_test.cpp, 4 · (12 · n_layer + 2) · 2^-24 per stored vector, doubled for the
// merged weights' own rounding: 1.3e-5 for 2 layers. Without the Q/K permutation (or with a wrong scale)
// the error is of order 1e-1.
TEST(LoraForward, SidePathEqualsTheMergedModel) {
  const HParams hp = tiny_hparams();
  const TinyBase base = make_base(hp, 7);
  TempFile base_file{write_base(hp, base, "base")};
  const auto tokens = random_tokens(11, hp.n_vocab, 3);
  for (GgmlType type : {GgmlType::F32, GgmlType::BF16})
    for (bool rslora : {false, true}) {
      SCOPED_TRACE(cat(type_name(type), rslora ? " rslora" : ""));
      const TinyAdapter ad = make_adapter(hp, 4, type, 11, rslora);
      const auto tensors = ad.list();
      auto weights = bind_lora(hp, ad.config, tensors, QkRowOrder::Interleaved, "tiny");
      EXPECT_FLOAT_EQ(weights->scale, rslora ? 8.0f / 2.0f : 2.0f);
      LoraAdapter adapter("tiny", {{weights, weights->scale}});
      TempFile merged_file{write_base(hp, merge(hp, base, ad, weights->scale), "merged")};
      ModelOptions o;
      o.n_threads = 2;
      o.precision = Precision::Exact;
      o.max_batch_tokens = 4;
      auto m = Model::load(base_file.path, o);
      auto merged = Model::load(merged_file.path, o);
      const auto got = run_sequence(*m, tokens, &adapter);
      const auto want = run_sequence(*merged, tokens, nullptr);
      const auto plain = run_sequence(*m, tokens, nullptr);
      const double tol = 2 * 4.0 * (12.0 * static_cast<double>(hp.n_layer) + 2.0) * std::ldexp(1.0, -24);
      EXPECT_LE(rel_l2(got, want), tol);
      EXPECT_GT(rel_l2(plain, want), 100 * tol);  // the adapter does change the model
      ::testing::Test::RecordProperty(cat("merged_error_", type_name(type)), cat(rel_l2(got, want)));
      // Bound for a base that keeps HF order: refused by this (GGUF-order) base.
      auto unpermuted = bind_lora(hp, ad.config, tensors, QkRowOrder::RotateHalf, "tiny");
      LoraAdapter wrong("wrong", {{unpermuted, unpermuted->scale}});
      EXPECT_THROW(run_sequence(*m, tokens, &wrong), Error);
    }
}

// The same over a base that keeps Q/K rows in Hugging Face order (rotate-half RoPE, as the HF loader
// binds a checkpoint): the adapter's rows are taken as they are, and the merged model adds B·A unpermuted.
TEST(LoraForward, SidePathEqualsTheMergedModelOnARotateHalfBase) {
  HParams hp = tiny_hparams();
  hp.rope_rotate_half = true;
  const TinyBase base = make_base(hp, 8);
  TempFile base_file{write_base(hp, base, "hf-base")};
  const auto tokens = random_tokens(9, hp.n_vocab, 4);
  const TinyAdapter ad = make_adapter(hp, 4, GgmlType::F16, 12, false);
  const auto tensors = ad.list();
  auto weights = bind_lora(hp, ad.config, tensors, qk_row_order(hp), "tiny-hf");
  LoraAdapter adapter("tiny-hf", {{weights, weights->scale}});
  TempFile merged_file{write_base(hp, merge(hp, base, ad, weights->scale), "hf-merged")};
  ModelOptions o;
  o.n_threads = 2;
  o.precision = Precision::Exact;
  auto m = Model::load(base_file.path, o);
  ASSERT_TRUE(m->hparams().rope_rotate_half);
  auto merged = Model::load(merged_file.path, o);
  const double tol = 2 * 4.0 * (12.0 * static_cast<double>(hp.n_layer) + 2.0) * std::ldexp(1.0, -24);
  EXPECT_LE(rel_l2(run_sequence(*m, tokens, &adapter), run_sequence(*merged, tokens, nullptr)), tol);
  // An adapter bound for a GGUF-order base is refused here.
  auto permuted = bind_lora(hp, ad.config, tensors, QkRowOrder::Interleaved, "tiny");
  LoraAdapter wrong("wrong", {{permuted, permuted->scale}});
  EXPECT_THROW(run_sequence(*m, tokens, &wrong), Error);
}

// Sequences of adapter A, adapter B, A and B stacked (B at half strength), and the base, interleaved in
// one batch over several steps: each gets exactly the logits it gets alone.
TEST(LoraForward, MixedBatchEqualsEachSequenceAlone) {
  const HParams hp = tiny_hparams();
  TempFile base_file{write_base(hp, make_base(hp, 9), "mixed")};
  const TinyAdapter ta = make_adapter(hp, 4, GgmlType::F16, 21, false), tb = make_adapter(hp, 8, GgmlType::BF16, 22, true);
  const auto la = ta.list(), lb = tb.list();
  auto wa = bind_lora(hp, ta.config, la, QkRowOrder::Interleaved, "a");
  auto wb = bind_lora(hp, tb.config, lb, QkRowOrder::Interleaved, "b");
  LoraAdapter A("a", {{wa, wa->scale}}), B("b", {{wb, wb->scale}}), AB("a+b", {{wa, wa->scale}, {wb, 0.5f * wb->scale}});
  EXPECT_NE(A.id(), B.id());
  EXPECT_EQ(AB.bytes(), wa->bytes + wb->bytes);
  const std::vector<const LoraAdapter*> adapters = {&A, nullptr, &B, &AB, &A};
  for (Precision prec : {Precision::Fast, Precision::Exact}) {
    ModelOptions o;
    o.n_threads = 3;
    o.precision = prec;
    o.max_batch_tokens = 7;
    auto m = Model::load(base_file.path, o);
    std::vector<std::vector<int32_t>> seqs;
    std::vector<std::vector<float>> alone;
    for (size_t q = 0; q < adapters.size(); ++q) {
      seqs.push_back(random_tokens(static_cast<int64_t>(4 + 3 * q), hp.n_vocab, static_cast<uint32_t>(40 + q)));
      alone.push_back(run_sequence(*m, seqs[q], adapters[q]));
    }
    kv::Cache cache(m->kv_geometry(kv::KvType::F32), 32);
    std::vector<std::vector<float>> together(seqs.size());
    std::vector<size_t> next(seqs.size(), 0);
    ForwardResult r;
    for (size_t step : {3, 1, 4, 1, 9}) {
      Batch b;
      std::vector<size_t> owner;
      for (size_t q = 0; q < seqs.size(); ++q)
        for (size_t i = 0; i < step && next[q] < seqs[q].size(); ++i, ++next[q]) {
          b.add(seqs[q][next[q]], static_cast<int32_t>(next[q]), static_cast<int32_t>(q), true, adapters[q]);
          owner.push_back(q);
        }
      if (b.size() == 0) continue;
      m->forward(b, cache, r);
      for (int64_t i = 0; i < r.n_outputs; ++i) {
        auto row = r.logits.begin() + i * hp.n_vocab;
        together[owner[static_cast<size_t>(i)]].insert(together[owner[static_cast<size_t>(i)]].end(), row, row + hp.n_vocab);
      }
    }
    for (size_t q = 0; q < seqs.size(); ++q) EXPECT_EQ(together[q], alone[q]) << "sequence " << q;
    EXPECT_NE(alone[0], run_sequence(*m, seqs[0], nullptr));
  }
}

TEST(LoraForward, AnAdapterOfAnotherBaseIsRefused) {
  HParams other = tiny_hparams();
  other.n_ff = 32;
  const TinyAdapter t = make_adapter(other, 2, GgmlType::F32, 5, false);
  const auto l = t.list();
  auto w = bind_lora(other, t.config, l, QkRowOrder::Interleaved, "other");
  LoraAdapter a("other", {{w, w->scale}});
  const HParams hp = tiny_hparams();
  TempFile base_file{write_base(hp, make_base(hp, 1), "refuse")};
  auto m = Model::load(base_file.path, {});
  try {
    run_sequence(*m, {1, 2}, &a);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'other' was made for a base of another shape"), std::string::npos) << e.what();
  }
}

// ---- bind_lora's checks ------------------------------------------------------------------------------

std::string bind_error(const HParams& hp, const LoraConfig& c, const std::vector<LoraTensor>& t) {
  try {
    bind_lora(hp, c, t, QkRowOrder::Interleaved, "dir");
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(LoraBind, BadAdaptersNameWhatIsWrong) {
  const HParams hp = tiny_hparams();
  TinyAdapter good = make_adapter(hp, 2, GgmlType::F16, 3, false);
  const std::string q = "base_model.model.model.layers.1.self_attn.q_proj";
  const std::string w2 = "base_model.model.model.layers.0.block_sparse_moe.experts.3.w2";
  auto expect = [&](const TinyAdapter& a, const std::string& needle) {
    const std::string msg = bind_error(hp, a.config, a.list());
    EXPECT_NE(msg.find(needle), std::string::npos) << "want '" << needle << "' in: " << msg;
  };
  EXPECT_EQ(bind_error(hp, good.config, good.list()), "no error");
  {
    TinyAdapter a = good;
    a.config.rank = 0;
    expect(a, "rank r = 0");
  }
  {
    TinyAdapter a = good;
    a.config.target_modules.push_back("lm_head");
    expect(a, "unknown target module 'lm_head'");
  }
  {
    TinyAdapter a = good;
    a.config.target_modules = {"q_proj"};
    expect(a, "which adapter_config.json's target_modules does not list");
  }
  {
    TinyAdapter a = good;
    a.tensors["base_model.model.lm_head.lora_A.weight"] = a.tensors.at(q + ".lora_A.weight");
    expect(a, "tensor base_model.model.lm_head.lora_A.weight is not a LoRA A/B matrix");
  }
  {
    TinyAdapter a = good;
    a.tensors["base_model.model.model.layers.2.self_attn.v_proj.lora_A.weight"] = a.tensors.at(q + ".lora_A.weight");
    expect(a, "is for layer 2 but the base has 2");
  }
  {
    TinyAdapter a = good;
    a.tensors["base_model.model.model.layers.0.block_sparse_moe.experts.4.w1.lora_A.weight"] =
        a.tensors.at(w2 + ".lora_B.weight");
    expect(a, "is for expert 4 but the base has 4");
  }
  {
    TinyAdapter a = good;
    a.tensors.erase(w2 + ".lora_B.weight");
    expect(a, cat("tensor ", w2, ".lora_A.weight has no partner ", w2, ".lora_B.weight"));
  }
  {
    TinyAdapter a = good;
    std::mt19937 rng(1);
    a.tensors[q + ".lora_B.weight"] = make_tensor(GgmlType::F16, 32, 2, rng, 1.0f);  // q is 64 rows
    expect(a, cat("tensor ", q, ".lora_B.weight has shape [32, 2] but rank 2 on this base needs [64, 2]"));
  }
  {
    TinyAdapter a = good;
    std::mt19937 rng(1);
    a.tensors[q + ".lora_A.weight"] = make_tensor(GgmlType::F16, 3, 64, rng, 1.0f);  // rank 3, config says 2
    expect(a, "has shape [3, 64] but rank 2");
  }
  for (float bad : {NAN, INFINITY}) {
    TinyAdapter a = good;
    HostTensor& t = a.tensors.at(w2 + ".lora_A.weight");
    const uint16_t h = fp32_to_fp16(bad);
    std::memcpy(t.bytes.data() + 2 * (1 * t.cols + 5), &h, 2);
    expect(a, cat("tensor ", w2, ".lora_A.weight holds ", std::isnan(bad) ? "NaN" : "an infinity", " at row 1, column 5"));
  }
  {
    TinyAdapter a = good;
    std::mt19937 rng(1);
    a.tensors[q + ".lora_A.weight"] = make_tensor(GgmlType::Q8_0, 2, 64, rng, 1.0f);
    expect(a, "has dtype Q8_0 (F32, F16 or BF16 expected)");
  }
  {
    TinyAdapter a = good;
    a.tensors.clear();
    expect(a, "holds no tensors");
  }
}

}  // namespace
}  // namespace moe::model
