// model_test.cpp: the forward pass against a naive float64 reference written here, independently of
// the engine's kernels (its own RMSNorm, RoPE, attention, router and experts, all in double over the
// dequantized weights), on random tiny models this test writes with gguf::Writer: dense and MoE (4 and
// 8 experts, top-1 and top-2), GQA ratios 1, 2 and 4, stacked and per-expert expert tensors, tied and
// untied output, float and block weight types. Also: a prompt in one batch equals token by token, a
// multi-sequence batch equals each sequence alone (bit for bit), and bad inputs give moe::Error.
//
// Tolerance of Exact precision (F32 KV) against the float64 reference, per position, as a relative L2
// error of the logits: the engine accumulates every dot product in double, so its only errors are the
// float32 roundings (relative 2^-24) of the activations it stores between operations. A layer stores
// about 12 vectors (norm, q, k, v, roped q/k, attention output, projection, residual, norm, expert
// gate/up/SwiGLU/down, weighted sum, residual), the head 2; roundings add at most linearly (in
// practice like a random walk), and a random network with variance-preserving weights amplifies
// relative errors by a small factor: 4 is allowed. So tol = 4 * (12 * n_layer + 2) * 2^-24, 6.2e-6 for
// 2 layers; measured errors are 0.8e-7 to 2e-7.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <filesystem>
#include <map>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gguf/gguf.h"
#include "kv/cache.h"
#include "model/model.h"
#include "quant/lanes.h"
#include "quant/quant.h"
#include "util/error.h"

namespace moe::model {
namespace {

// ------------------------------------------------------------------------------------------------
// A random tiny model: its spec, the file, and its weights dequantized (what the reference uses).

struct Spec {
  int64_t n_embd = 64, n_layer = 2, n_head = 4, n_head_kv = 2, n_ff = 96, n_vocab = 80;
  int64_t n_expert = 4, n_used = 2, n_rot = 0;  // n_rot 0: head_dim
  bool stacked = true, tied = false;
  GgmlType wtype = GgmlType::F32;  // type of the big matrices (norms stay F32)
  std::optional<GgmlType> down_type;  // ffn_down's type where it differs (llama.cpp's Q2_K mix: Q3_K)
  float rope_base = 10000.0f;
  uint32_t seed = 1;
};

struct Tensor {
  std::vector<int64_t> ne;  // ggml order
  GgmlType type;
  std::vector<uint8_t> bytes;
  std::vector<double> deq;  // dequantized values, row-major as stored
};

struct TinyModel {
  Spec spec;
  std::string path;
  std::map<std::string, Tensor> tensors;
  const std::vector<double>& w(const std::string& name) const { return tensors.at(name).deq; }
  bool has(const std::string& name) const { return tensors.count(name) != 0; }
};

std::string temp_model_path(const std::string& stem) {
  static int counter = 0;
  auto dir = std::filesystem::temp_directory_path();
  return (dir / cat("moe-model-test-", ::getpid(), "-", stem, "-", counter++, ".gguf")).string();
}

TinyModel make_model(const Spec& s) {
  TinyModel m;
  m.spec = s;
  std::mt19937 rng(s.seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t hd = s.n_embd / s.n_head;

  auto add = [&](const std::string& name, std::vector<int64_t> ne, GgmlType type, float scale, float offset) {
    Tensor t;
    t.ne = ne;
    t.type = type;
    const int64_t cols = ne[0];
    int64_t rows = 1;
    for (size_t i = 1; i < ne.size(); ++i) rows *= ne[i];
    std::vector<float> vals(static_cast<size_t>(cols * rows));
    for (auto& v : vals) v = offset + scale * normal(rng);
    const size_t rb = *row_bytes(type, static_cast<uint64_t>(cols));
    t.bytes.resize(rb * static_cast<size_t>(rows));
    std::vector<float> tmp(static_cast<size_t>(cols));
    t.deq.resize(vals.size());
    for (int64_t r = 0; r < rows; ++r) {
      quant::quantize_row(type, vals.data() + r * cols, t.bytes.data() + r * rb, cols);
      quant::dequantize_row(type, t.bytes.data() + r * rb, tmp.data(), cols);
      std::copy(tmp.begin(), tmp.end(), t.deq.begin() + r * cols);
    }
    m.tensors[name] = std::move(t);
  };
  const float ws = 1.0f / std::sqrt(static_cast<float>(s.n_embd));
  const float fs = 1.0f / std::sqrt(static_cast<float>(s.n_ff));
  add("token_embd.weight", {s.n_embd, s.n_vocab}, s.wtype, 1.0f, 0.0f);
  add("output_norm.weight", {s.n_embd}, GgmlType::F32, 0.1f, 1.0f);
  if (!s.tied) add("output.weight", {s.n_embd, s.n_vocab}, s.wtype, ws, 0.0f);
  for (int64_t l = 0; l < s.n_layer; ++l) {
    const std::string p = cat("blk.", l, ".");
    add(p + "attn_norm.weight", {s.n_embd}, GgmlType::F32, 0.1f, 1.0f);
    add(p + "attn_q.weight", {s.n_embd, s.n_head * hd}, s.wtype, ws, 0.0f);
    add(p + "attn_k.weight", {s.n_embd, s.n_head_kv * hd}, s.wtype, ws, 0.0f);
    add(p + "attn_v.weight", {s.n_embd, s.n_head_kv * hd}, s.wtype, ws, 0.0f);
    add(p + "attn_output.weight", {s.n_head * hd, s.n_embd}, s.wtype, ws, 0.0f);
    add(p + "ffn_norm.weight", {s.n_embd}, GgmlType::F32, 0.1f, 1.0f);
    if (s.n_expert == 0) {
      add(p + "ffn_gate.weight", {s.n_embd, s.n_ff}, s.wtype, ws, 0.0f);
      add(p + "ffn_up.weight", {s.n_embd, s.n_ff}, s.wtype, ws, 0.0f);
      add(p + "ffn_down.weight", {s.n_ff, s.n_embd}, s.wtype, fs, 0.0f);
      continue;
    }
    add(p + "ffn_gate_inp.weight", {s.n_embd, s.n_expert}, GgmlType::F32, ws * 3, 0.0f);
    add(p + "ffn_gate_exps.weight", {s.n_embd, s.n_ff, s.n_expert}, s.wtype, ws, 0.0f);
    add(p + "ffn_up_exps.weight", {s.n_embd, s.n_ff, s.n_expert}, s.wtype, ws, 0.0f);
    add(p + "ffn_down_exps.weight", {s.n_ff, s.n_embd, s.n_expert}, s.down_type.value_or(s.wtype), fs, 0.0f);
    if (!s.stacked) {
      // The same values as one tensor per expert (the December 2023 layout).
      for (const char* which : {"gate", "up", "down"}) {
        const std::string stacked_name = cat(p, "ffn_", which, "_exps.weight");
        Tensor st = std::move(m.tensors.at(stacked_name));
        m.tensors.erase(stacked_name);
        const size_t nb = st.bytes.size() / static_cast<size_t>(s.n_expert);
        const size_t nv = st.deq.size() / static_cast<size_t>(s.n_expert);
        for (int64_t e = 0; e < s.n_expert; ++e) {
          Tensor t;
          t.ne = {st.ne[0], st.ne[1]};
          t.type = st.type;
          t.bytes.assign(st.bytes.begin() + e * nb, st.bytes.begin() + (e + 1) * nb);
          t.deq.assign(st.deq.begin() + e * nv, st.deq.begin() + (e + 1) * nv);
          m.tensors[cat(p, "ffn_", which, ".", e, ".weight")] = std::move(t);
        }
      }
    }
  }

  gguf::Writer wr;
  wr.set("general.architecture", gguf::Value::string("llama"));
  wr.set("llama.context_length", gguf::Value::uint32(256));
  wr.set("llama.embedding_length", gguf::Value::uint32(static_cast<uint32_t>(s.n_embd)));
  wr.set("llama.block_count", gguf::Value::uint32(static_cast<uint32_t>(s.n_layer)));
  wr.set("llama.feed_forward_length", gguf::Value::uint32(static_cast<uint32_t>(s.n_ff)));
  wr.set("llama.attention.head_count", gguf::Value::uint32(static_cast<uint32_t>(s.n_head)));
  wr.set("llama.attention.head_count_kv", gguf::Value::uint32(static_cast<uint32_t>(s.n_head_kv)));
  if (s.n_rot) wr.set("llama.rope.dimension_count", gguf::Value::uint32(static_cast<uint32_t>(s.n_rot)));
  wr.set("llama.rope.freq_base", gguf::Value::float32(s.rope_base));
  wr.set("llama.attention.layer_norm_rms_epsilon", gguf::Value::float32(1e-5f));
  if (s.n_expert) {
    wr.set("llama.expert_count", gguf::Value::uint32(static_cast<uint32_t>(s.n_expert)));
    wr.set("llama.expert_used_count", gguf::Value::uint32(static_cast<uint32_t>(s.n_used)));
  }
  for (auto& [name, t] : m.tensors) wr.add_tensor(name, t.type, t.ne, t.bytes);
  m.path = temp_model_path("tiny");
  wr.write(m.path);
  return m;
}

struct ModelFile {
  TinyModel m;
  explicit ModelFile(const Spec& s) : m(make_model(s)) {}
  ~ModelFile() { std::filesystem::remove(m.path); }
};

// ------------------------------------------------------------------------------------------------
// The float64 reference forward pass over one sequence: logits [n][vocab].

std::vector<double> matvec(const std::vector<double>& W, size_t offset, int64_t rows, int64_t cols, const std::vector<double>& x) {
  std::vector<double> y(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    double s = 0;
    for (int64_t c = 0; c < cols; ++c) s += W[offset + static_cast<size_t>(r * cols + c)] * x[static_cast<size_t>(c)];
    y[static_cast<size_t>(r)] = s;
  }
  return y;
}

std::vector<double> rms(const std::vector<double>& x, const std::vector<double>& w) {
  double ss = 0;
  for (double v : x) ss += v * v;
  const double k = 1.0 / std::sqrt(ss / static_cast<double>(x.size()) + 1e-5);
  std::vector<double> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * k * w[i];
  return y;
}

std::vector<double> reference_logits(const TinyModel& m, const std::vector<int32_t>& tokens) {
  const Spec& s = m.spec;
  const int64_t E = s.n_embd, hd = E / s.n_head, n_rot = s.n_rot ? s.n_rot : hd;
  const int64_t n = static_cast<int64_t>(tokens.size());
  std::vector<std::vector<std::vector<double>>> K(static_cast<size_t>(s.n_layer)), V(static_cast<size_t>(s.n_layer));
  std::vector<double> out;
  for (int64_t pos = 0; pos < n; ++pos) {
    std::vector<double> x(m.w("token_embd.weight").begin() + tokens[pos] * E,
                          m.w("token_embd.weight").begin() + (tokens[pos] + 1) * E);
    auto rope = [&](std::vector<double>& v, int64_t heads) {
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t i = 0; i < n_rot / 2; ++i) {
          const double th = static_cast<double>(pos) * std::pow(static_cast<double>(s.rope_base), -2.0 * i / n_rot);
          double& a = v[static_cast<size_t>(h * hd + 2 * i)];
          double& b = v[static_cast<size_t>(h * hd + 2 * i + 1)];
          const double a2 = a * std::cos(th) - b * std::sin(th), b2 = a * std::sin(th) + b * std::cos(th);
          a = a2;
          b = b2;
        }
    };
    for (int64_t l = 0; l < s.n_layer; ++l) {
      const std::string p = cat("blk.", l, ".");
      auto xn = rms(x, m.w(p + "attn_norm.weight"));
      auto q = matvec(m.w(p + "attn_q.weight"), 0, s.n_head * hd, E, xn);
      auto k = matvec(m.w(p + "attn_k.weight"), 0, s.n_head_kv * hd, E, xn);
      auto v = matvec(m.w(p + "attn_v.weight"), 0, s.n_head_kv * hd, E, xn);
      rope(q, s.n_head);
      rope(k, s.n_head_kv);
      K[l].push_back(k);
      V[l].push_back(v);
      std::vector<double> att(static_cast<size_t>(s.n_head * hd), 0.0);
      for (int64_t h = 0; h < s.n_head; ++h) {
        const int64_t g = h / (s.n_head / s.n_head_kv);
        std::vector<double> sc(static_cast<size_t>(pos + 1));
        double mx = -1e300;
        for (int64_t j = 0; j <= pos; ++j) {
          double d = 0;
          for (int64_t i = 0; i < hd; ++i) d += q[h * hd + i] * K[l][j][g * hd + i];
          sc[j] = d / std::sqrt(static_cast<double>(hd));
          mx = std::max(mx, sc[j]);
        }
        double z = 0;
        for (auto& v2 : sc) z += (v2 = std::exp(v2 - mx));
        for (int64_t j = 0; j <= pos; ++j)
          for (int64_t i = 0; i < hd; ++i) att[h * hd + i] += sc[j] / z * V[l][j][g * hd + i];
      }
      auto o = matvec(m.w(p + "attn_output.weight"), 0, E, s.n_head * hd, att);
      for (int64_t i = 0; i < E; ++i) x[i] += o[i];

      xn = rms(x, m.w(p + "ffn_norm.weight"));
      auto expert = [&](const std::string& gate, const std::string& up, const std::string& down, size_t off_gu, size_t off_d) {
        auto g = matvec(m.w(gate), off_gu, s.n_ff, E, xn);
        auto u = matvec(m.w(up), off_gu, s.n_ff, E, xn);
        for (int64_t i = 0; i < s.n_ff; ++i) g[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
        return matvec(m.w(down), off_d, E, s.n_ff, g);
      };
      if (s.n_expert == 0) {
        auto y = expert(p + "ffn_gate.weight", p + "ffn_up.weight", p + "ffn_down.weight", 0, 0);
        for (int64_t i = 0; i < E; ++i) x[i] += y[i];
        continue;
      }
      auto r = matvec(m.w(p + "ffn_gate_inp.weight"), 0, s.n_expert, E, xn);
      const double mx = *std::max_element(r.begin(), r.end());
      double z = 0;
      for (auto& v2 : r) z += (v2 = std::exp(v2 - mx));
      for (auto& v2 : r) v2 /= z;
      std::vector<int> order(static_cast<size_t>(s.n_expert));
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return r[a] > r[b]; });
      double wsum = 0;
      for (int64_t j = 0; j < s.n_used; ++j) wsum += r[order[j]];
      for (int64_t j = 0; j < s.n_used; ++j) {
        const int e = order[j];
        std::vector<double> y;
        if (s.stacked) {
          const auto gu = static_cast<size_t>(e * s.n_ff * E), d = static_cast<size_t>(e * E * s.n_ff);
          y = expert(p + "ffn_gate_exps.weight", p + "ffn_up_exps.weight", p + "ffn_down_exps.weight", gu, d);
        } else {
          y = expert(cat(p, "ffn_gate.", e, ".weight"), cat(p, "ffn_up.", e, ".weight"), cat(p, "ffn_down.", e, ".weight"), 0, 0);
        }
        for (int64_t i = 0; i < E; ++i) x[i] += r[e] / wsum * y[i];
      }
    }
    auto xn = rms(x, m.w("output_norm.weight"));
    auto logits = matvec(m.w(s.tied ? "token_embd.weight" : "output.weight"), 0, s.n_vocab, E, xn);
    out.insert(out.end(), logits.begin(), logits.end());
  }
  return out;
}

// ------------------------------------------------------------------------------------------------

std::vector<int32_t> random_tokens(int64_t n, int64_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& v : t) v = static_cast<int32_t>(rng() % static_cast<uint32_t>(vocab));
  return t;
}

// Logits of a sequence run as one batch (chunked by max_batch_tokens inside the model).
std::vector<float> run_batch(Model& model, const std::vector<int32_t>& tokens, kv::KvType kvt = kv::KvType::F32) {
  kv::Cache cache(model.kv_geometry(kvt), kv::Cache::blocks_for_tokens(static_cast<int64_t>(tokens.size())));
  Batch b;
  for (size_t i = 0; i < tokens.size(); ++i) b.add(tokens[i], static_cast<int32_t>(i), 7, true);
  ForwardResult r;
  model.forward(b, cache, r);
  EXPECT_EQ(r.n_outputs, static_cast<int64_t>(tokens.size()));
  return r.logits;
}

std::vector<float> run_one_by_one(Model& model, const std::vector<int32_t>& tokens, kv::KvType kvt = kv::KvType::F32) {
  kv::Cache cache(model.kv_geometry(kvt), kv::Cache::blocks_for_tokens(static_cast<int64_t>(tokens.size())));
  std::vector<float> all;
  ForwardResult r;
  for (size_t i = 0; i < tokens.size(); ++i) {
    Batch b;
    b.add(tokens[i], static_cast<int32_t>(i), 3, true);
    model.forward(b, cache, r);
    all.insert(all.end(), r.logits.begin(), r.logits.end());
  }
  return all;
}

double tolerance(const Spec& s) { return 4.0 * (12.0 * static_cast<double>(s.n_layer) + 2.0) * std::ldexp(1.0, -24); }

// Worst per-position relative L2 error of `got` against the reference.
double worst_position_error(const std::vector<float>& got, const std::vector<double>& ref, int64_t vocab) {
  double worst = 0;
  for (size_t p = 0; p * vocab < ref.size(); ++p) {
    double num = 0, den = 0;
    for (int64_t v = 0; v < vocab; ++v) {
      const double r = ref[p * vocab + v], d = got[p * vocab + v] - r;
      num += d * d;
      den += r * r;
    }
    worst = std::max(worst, std::sqrt(num / den));
  }
  return worst;
}

std::string describe(const Spec& s) {
  return cat("embd ", s.n_embd, " layers ", s.n_layer, " heads ", s.n_head, "/", s.n_head_kv, " experts ", s.n_expert,
             " top-", s.n_used, s.stacked ? " stacked" : " per-expert", s.tied ? " tied" : " untied", " ",
             type_name(s.wtype), " seed ", s.seed);
}

void check_against_reference(const Spec& s, int64_t n_tokens = 12) {
  SCOPED_TRACE(describe(s));
  ModelFile f(s);
  ModelOptions o;
  o.n_threads = 2;
  o.precision = Precision::Exact;
  o.max_batch_tokens = 5;  // a 12-token prompt runs in chunks of 5, 5, 2
  auto model = Model::load(f.m.path, o);
  auto tokens = random_tokens(n_tokens, s.n_vocab, s.seed * 31 + 7);
  auto ref = reference_logits(f.m, tokens);
  auto got = run_batch(*model, tokens);
  ASSERT_EQ(got.size(), ref.size());
  const double err = worst_position_error(got, ref, s.n_vocab);
  EXPECT_LE(err, tolerance(s));
  ::testing::Test::RecordProperty(cat("worst_error_", type_name(s.wtype), "_seed", s.seed), cat(err));
  // The prompt token by token gives the same logits, bit for bit.
  auto one = run_one_by_one(*model, tokens);
  EXPECT_EQ(one, got);
}

// ------------------------------------------------------------------------------------------------

TEST(ModelReference, DenseGqaRatios) {
  for (int64_t kv : {4, 2, 1}) {  // GQA ratios 1, 2, 4
    Spec s;
    s.n_expert = 0;
    s.n_used = 0;
    s.n_head_kv = kv;
    s.seed = 10 + static_cast<uint32_t>(kv);
    check_against_reference(s);
  }
}

TEST(ModelReference, MoeExpertsAndTopK) {
  for (int64_t ne : {4, 8})
    for (int64_t k : {1, 2})
      for (uint32_t seed : {1u, 2u}) {
        Spec s;
        s.n_expert = ne;
        s.n_used = k;
        s.seed = seed * 100 + static_cast<uint32_t>(ne * 10 + k);
        check_against_reference(s);
      }
}

TEST(ModelReference, LayoutsTyingRopeAndGqa) {
  Spec s;
  s.stacked = false;
  s.n_head_kv = 1;
  s.seed = 5;
  check_against_reference(s);
  s.stacked = true;
  s.tied = true;
  s.n_head_kv = 4;
  s.n_rot = 8;  // partial rotary dimensions (head_dim 16)
  s.rope_base = 1e6f;
  s.seed = 6;
  check_against_reference(s);
}

TEST(ModelReference, BlockWeightTypes) {
  // K-quants need rows of 256 values.
  for (GgmlType t : {GgmlType::F16, GgmlType::Q8_0, GgmlType::Q4_1, GgmlType::Q4_K, GgmlType::Q6_K}) {
    Spec s;
    s.n_embd = 256;
    s.n_ff = 256;
    s.n_head = 4;
    s.n_head_kv = 2;
    s.n_layer = 1;
    s.n_vocab = 40;
    s.wtype = t;
    s.seed = 40 + static_cast<uint32_t>(t);
    check_against_reference(s, 6);
  }
}

// Repacking at load (model/repack.h) changes where the Q2_K/Q3_K/Q4_K/Q6_K/Q8_0 bytes are and their order, never a
// logit bit: batches and one token at a time, with rows of an odd number of 256-value blocks (half tiles).
TEST(Model, RepackedWeightsGiveTheSameLogits) {
  for (GgmlType t : {GgmlType::Q4_K, GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q6_K, GgmlType::Q8_0}) {
    Spec s;
    s.n_embd = 512;
    s.n_ff = 768;
    s.n_layer = 2;
    s.n_vocab = 60;
    s.wtype = t;
    s.seed = 90 + static_cast<uint32_t>(t);
    ModelFile f(s);
    ModelOptions o;
    o.n_threads = 2;
    o.repack = false;
    auto plain = Model::load(f.m.path, o);
    o.repack = true;
    auto packed = Model::load(f.m.path, o);
    EXPECT_EQ(plain->repack_stats().matrices, 0);
    EXPECT_EQ(plain->weights().layers[0].wq.residency, Residency::Mmap);
    if (quant::use_repacked(t)) {
      // wq, wk, wv, wo and 3 matrices per expert, in each layer, and the output head.
      EXPECT_EQ(packed->repack_stats().matrices, s.n_layer * (4 + 3 * s.n_expert) + 1) << type_name(t);
      const WeightView& wq = packed->weights().layers[0].wq;
      EXPECT_EQ(wq.residency, Residency::HostBuffer);
      EXPECT_TRUE(wq.repacked);
      EXPECT_EQ(wq.row_bytes, plain->weights().layers[0].wq.row_bytes);
      EXPECT_NE(std::memcmp(wq.data, plain->weights().layers[0].wq.data, wq.row_bytes), 0);
    } else {
      EXPECT_EQ(packed->repack_stats().matrices, 0) << "no AVX-512 lane kernels: nothing to repack for";
    }
    const auto tokens = random_tokens(11, s.n_vocab, 5);
    EXPECT_EQ(run_batch(*packed, tokens, kv::KvType::F16), run_batch(*plain, tokens, kv::KvType::F16)) << type_name(t);
    EXPECT_EQ(run_one_by_one(*packed, tokens, kv::KvType::F16), run_one_by_one(*plain, tokens, kv::KvType::F16))
        << type_name(t);
    packed->set_precision(Precision::Exact);  // the exact path reads repacked rows through unrepack_row
    plain->set_precision(Precision::Exact);
    EXPECT_EQ(run_batch(*packed, tokens), run_batch(*plain, tokens)) << type_name(t);
  }
}

// Above the byte bound nothing is repacked (the weights must stay pageable), and views stay mapped.
TEST(Model, RepackDeclinesAboveItsByteBound) {
  Spec s;
  s.n_embd = 256;
  s.n_ff = 512;
  s.n_layer = 1;
  s.wtype = GgmlType::Q4_K;
  s.seed = 17;
  ModelFile f(s);
  auto spec = std::make_shared<ModelSpec>(*ModelSpec::load(f.m.path));
  const RepackStats none = repack_weights(spec->weights, 1, /*drop_mapped=*/false, /*max_bytes=*/1000);
  EXPECT_EQ(none.matrices, 0);
  EXPECT_EQ(spec->weights.layers[0].wq.residency, Residency::Mmap);
  if (!quant::use_repacked(GgmlType::Q4_K)) return;
  EXPECT_GT(none.declined_bytes, 1000u);
  const RepackStats all = repack_weights(spec->weights, 2, /*drop_mapped=*/false, none.declined_bytes);
  EXPECT_EQ(all.bytes, none.declined_bytes);
  EXPECT_TRUE(spec->weights.layers[0].wq.repacked);
}

// Q2_K with Q3_K experts' down matrices (the Q2_K mix's shape) over the bound: the Q2_K matrices are
// repacked, the Q3_K ones stay mapped and are declined; with room for both, both are repacked.
TEST(Model, RepackKeepsWholeTypesWithinItsByteBound) {
  if (!quant::use_repacked(GgmlType::Q3_K)) GTEST_SKIP() << "repacking needs the AVX-512 lane kernels";
  Spec s;
  s.n_embd = 256;
  s.n_ff = 512;
  s.n_layer = 1;
  s.wtype = GgmlType::Q2_K;
  s.down_type = GgmlType::Q3_K;
  s.seed = 19;
  ModelFile f(s);
  const auto loaded = ModelSpec::load(f.m.path);
  uint64_t q2 = 0, q3 = 0;
  const LayerWeights& L0 = loaded->weights.layers[0];
  for (const WeightView* v : {&L0.wq, &L0.wk, &L0.wv, &L0.wo, &loaded->weights.output}) q2 += v->rows * v->row_bytes;
  for (const auto* experts : {&L0.ffn_gate, &L0.ffn_up, &L0.ffn_down})
    for (const WeightView& v : *experts) (v.type == GgmlType::Q3_K ? q3 : q2) += v.rows * v.row_bytes;
  ASSERT_GT(q3, 0u);
  auto spec = std::make_shared<ModelSpec>(*loaded);
  const RepackStats some = repack_weights(spec->weights, 2, /*drop_mapped=*/false, q2 + q3 - 1);
  EXPECT_EQ(some.bytes, q2);
  EXPECT_EQ(some.declined_bytes, q3);
  EXPECT_TRUE(spec->weights.layers[0].wq.repacked);
  EXPECT_TRUE(spec->weights.layers[0].ffn_gate[0].repacked);
  EXPECT_FALSE(spec->weights.layers[0].ffn_down[0].repacked);
  EXPECT_EQ(spec->weights.layers[0].ffn_down[0].residency, Residency::Mmap);
  auto spec2 = std::make_shared<ModelSpec>(*loaded);
  const RepackStats all = repack_weights(spec2->weights, 2, /*drop_mapped=*/false, q2 + q3);
  EXPECT_EQ(all.bytes, q2 + q3);
  EXPECT_EQ(all.declined_bytes, 0u);
  EXPECT_TRUE(spec2->weights.layers[0].ffn_down[0].repacked);
}

TEST(Model, StackedAndPerExpertFilesGiveTheSameLogits) {
  Spec s;
  s.seed = 77;
  ModelFile a(s);
  s.stacked = false;
  ModelFile b(s);  // same seed: the same values, written as one tensor per expert
  ModelOptions o;
  o.n_threads = 1;
  auto ma = Model::load(a.m.path, o), mb = Model::load(b.m.path, o);
  EXPECT_EQ(ma->weights().expert_layout, ExpertLayout::Stacked);
  EXPECT_EQ(mb->weights().expert_layout, ExpertLayout::PerExpert);
  auto tokens = random_tokens(9, s.n_vocab, 3);
  EXPECT_EQ(run_batch(*ma, tokens), run_batch(*mb, tokens));
}

// A token's output must not depend on what else is in the batch: three sequences of different lengths
// interleaved in one batch (then continued together) equal each sequence run alone, bit for bit, in
// both precisions, with several threads, in chunks.
TEST(Model, BatchInvarianceAcrossSequences) {
  for (Precision prec : {Precision::Fast, Precision::Exact}) {
    Spec s;
    s.n_embd = 256;
    s.n_ff = 256;
    s.n_layer = 1;
    s.n_expert = 8;
    s.n_used = 2;
    s.wtype = GgmlType::Q4_K;
    s.n_vocab = 50;
    s.seed = 123;
    ModelFile f(s);
    ModelOptions o;
    o.n_threads = 3;
    o.precision = prec;
    o.max_batch_tokens = 7;
    auto model = Model::load(f.m.path, o);
    std::vector<std::vector<int32_t>> seqs = {random_tokens(6, s.n_vocab, 1), random_tokens(3, s.n_vocab, 2),
                                              random_tokens(9, s.n_vocab, 3)};
    std::vector<std::vector<float>> alone;
    for (auto& q : seqs) alone.push_back(run_one_by_one(*model, q, kv::KvType::F16));

    // Together: first the first 2 tokens of each sequence interleaved, then the rest round-robin.
    kv::Cache cache(model->kv_geometry(kv::KvType::F16), 16);
    std::vector<std::vector<float>> together(seqs.size());
    std::vector<size_t> next(seqs.size(), 0);
    ForwardResult r;
    for (size_t step_tokens : {2, 1, 3, 1, 5}) {
      Batch b;
      std::vector<size_t> owner;
      for (size_t q = 0; q < seqs.size(); ++q)
        for (size_t i = 0; i < step_tokens && next[q] < seqs[q].size(); ++i, ++next[q]) {
          b.add(seqs[q][next[q]], static_cast<int32_t>(next[q]), static_cast<int32_t>(100 + q), true);
          owner.push_back(q);
        }
      if (b.size() == 0) continue;
      model->forward(b, cache, r);
      ASSERT_EQ(r.n_outputs, b.size());
      for (int64_t i = 0; i < r.n_outputs; ++i) {
        auto row = r.logits.begin() + i * s.n_vocab;
        together[owner[static_cast<size_t>(i)]].insert(together[owner[static_cast<size_t>(i)]].end(), row, row + s.n_vocab);
      }
    }
    for (size_t q = 0; q < seqs.size(); ++q) {
      ASSERT_EQ(next[q], seqs[q].size());
      EXPECT_EQ(together[q], alone[q]) << "sequence " << q << (prec == Precision::Fast ? " fast" : " exact");
    }
  }
}

// A decode step synchronises the threads once per parallel region: Q, K and V share one, every chosen
// expert's gate and up one, their down projections one, the attention output one (attention itself is
// on the calling thread at these sizes). Before the fusion a layer took 3 + 1 + 3 per expert = 10.
TEST(Model, DecodeStepUsesFourParallelRegionsPerLayer) {
  for (Precision prec : {Precision::Fast, Precision::Exact}) {
    Spec s;
    s.n_embd = 512;  // every matrix large enough to be split across the threads
    s.n_ff = 512;
    s.n_head = 8;
    s.n_head_kv = 8;
    s.n_layer = 2;
    s.n_expert = 8;
    s.n_used = 2;
    s.wtype = GgmlType::Q4_K;
    s.seed = 77;
    ModelFile f(s);
    ThreadPool pool(2);
    ModelOptions o;
    o.pool = &pool;
    o.precision = prec;
    auto model = Model::load(f.m.path, o);
    const std::vector<int32_t> tokens = random_tokens(4, s.n_vocab, 5);
    kv::Cache cache(model->kv_geometry(kv::KvType::F16), 4);
    ForwardResult r;
    Batch prompt;
    for (int32_t i = 0; i < 3; ++i) prompt.add(tokens[static_cast<size_t>(i)], i, 1, i == 2);
    model->forward(prompt, cache, r);
    Batch step;
    step.add(tokens[3], 3, 1, true);
    const uint64_t before = pool.regions();
    model->forward(step, cache, r);
    const uint64_t regions = pool.regions() - before;
    EXPECT_EQ(regions, static_cast<uint64_t>(4 * s.n_layer)) << (prec == Precision::Fast ? "fast" : "exact");
    // The decode logits are those of the same step on one thread (no regions at all).
    ThreadPool one(1);
    ModelOptions o1 = o;
    o1.pool = &one;
    auto alone = Model::load(f.m.path, o1);
    EXPECT_EQ(run_one_by_one(*alone, tokens, kv::KvType::F16), run_one_by_one(*model, tokens, kv::KvType::F16));
  }
}

TEST(Model, OutputsOnlyForWantedTokensAndHiddenStates) {
  Spec s;
  s.seed = 9;
  ModelFile f(s);
  ModelOptions o;
  o.n_threads = 1;
  auto model = Model::load(f.m.path, o);
  auto tokens = random_tokens(6, s.n_vocab, 4);
  auto all = run_batch(*model, tokens);
  kv::Cache cache(model->kv_geometry(kv::KvType::F32), 1);
  Batch b;
  for (size_t i = 0; i < tokens.size(); ++i) b.add(tokens[i], static_cast<int32_t>(i), 0, i == 2 || i == 5);
  ForwardResult r;
  ForwardOptions fo;
  fo.hidden = true;
  model->forward(b, cache, r, fo);
  ASSERT_EQ(r.n_outputs, 2);
  EXPECT_EQ(r.output_index, (std::vector<int32_t>{2, 5}));
  EXPECT_EQ(std::vector<float>(r.logits.begin(), r.logits.begin() + s.n_vocab),
            std::vector<float>(all.begin() + 2 * s.n_vocab, all.begin() + 3 * s.n_vocab));
  EXPECT_EQ(r.hidden.size(), static_cast<size_t>(2 * s.n_embd));
  // The hidden state is output-normed: applying the output head by hand gives the logits.
  const auto& W = f.m.w("output.weight");
  for (int64_t v = 0; v < s.n_vocab; v += 17) {
    double d = 0;
    for (int64_t c = 0; c < s.n_embd; ++c) d += W[v * s.n_embd + c] * r.hidden[s.n_embd + c];
    EXPECT_NEAR(d, r.logits[s.n_vocab + v], 1e-4 * (1 + std::fabs(d)));
  }
  EXPECT_EQ(cache.length(0), 6);
}

TEST(Model, ExpertCountsAddUp) {
  Spec s;
  s.n_expert = 8;
  s.n_used = 2;
  s.seed = 21;
  ModelFile f(s);
  ModelOptions o;
  o.n_threads = 1;
  auto model = Model::load(f.m.path, o);
  run_batch(*model, random_tokens(10, s.n_vocab, 5));
  auto counts = model->expert_token_counts();
  ASSERT_EQ(counts.size(), static_cast<size_t>(s.n_layer));
  for (const auto& layer : counts) {
    ASSERT_EQ(layer.size(), 8u);
    EXPECT_EQ(std::accumulate(layer.begin(), layer.end(), int64_t{0}), 10 * 2);
  }
  model->reset_expert_token_counts();
  EXPECT_EQ(model->expert_token_counts()[0][0], 0);
}

TEST(Model, KvRewindRecomputesTheSameLogits) {
  Spec s;
  s.seed = 31;
  ModelFile f(s);
  ModelOptions o;
  o.n_threads = 1;
  auto model = Model::load(f.m.path, o);
  auto tokens = random_tokens(8, s.n_vocab, 6);
  auto want = run_batch(*model, tokens, kv::KvType::F16);
  kv::Cache cache(model->kv_geometry(kv::KvType::F16), 2);
  Batch b;
  for (size_t i = 0; i < tokens.size(); ++i) b.add(static_cast<int32_t>((tokens[i] + 1) % s.n_vocab), static_cast<int32_t>(i), 0, true);
  ForwardResult r;
  model->forward(b, cache, r);  // a different continuation after position 2 ...
  cache.truncate(0, 3);         // ... rolled back to 3 tokens
  b.clear();
  for (size_t i = 0; i < 3; ++i) b.add(tokens[i], static_cast<int32_t>(i), 0, true);
  model->forward(b, cache, r);  // rewrite positions 0..2 with the real tokens
  b.clear();
  for (size_t i = 3; i < tokens.size(); ++i) b.add(tokens[i], static_cast<int32_t>(i), 0, true);
  model->forward(b, cache, r);
  EXPECT_EQ(std::vector<float>(r.logits.begin(), r.logits.end()), std::vector<float>(want.begin() + 3 * s.n_vocab, want.end()));
}

TEST(Model, TwoModelsShareOneSpecAndOneModelServesTwoThreads) {
  Spec s;
  s.seed = 33;
  ModelFile f(s);
  ModelOptions o;
  o.n_threads = 1;
  auto first = Model::load(f.m.path, o);
  const auto tokens = random_tokens(9, s.n_vocab, 8);
  const auto want = run_batch(*first, tokens, kv::KvType::F16);
  // A second model over the same spec: the same mapped weights (no second load), its own workspace.
  o.max_batch_tokens = 4;
  Model second(first->spec(), o);
  EXPECT_EQ(second.spec().get(), first->spec().get());
  EXPECT_EQ(second.weights().layers[0].wq.data, first->weights().layers[0].wq.data);
  EXPECT_EQ(second.file().file_size(), first->file().file_size());
  EXPECT_EQ(run_batch(second, tokens, kv::KvType::F16), want);
  // The views keep the mapped file alive: the spec outlives both models and the file's removal.
  std::shared_ptr<const ModelSpec> spec = first->spec();
  EXPECT_EQ(spec->weights.layers[0].wq.residency, Residency::Mmap);
  EXPECT_EQ(spec->weights.layers[0].wq.owner.get(), spec->file.get());
  first.reset();
  EXPECT_EQ(run_batch(second, tokens, kv::KvType::F16), want);
  // Two threads stepping their own caches through one model get what one thread gets.
  std::vector<float> a, b;
  std::thread ta([&] { for (int i = 0; i < 5; ++i) a = run_one_by_one(second, tokens, kv::KvType::F16); });
  std::thread tb([&] { for (int i = 0; i < 5; ++i) b = run_one_by_one(second, tokens, kv::KvType::F16); });
  ta.join();
  tb.join();
  EXPECT_EQ(a, want);
  EXPECT_EQ(b, want);
}

TEST(Model, CpuBackendRefusesDeviceViews) {
  Spec s;
  s.seed = 35;
  ModelFile f(s);
  auto loaded = ModelSpec::load(f.m.path);
  auto spec = std::make_shared<ModelSpec>(*loaded);
  spec->weights.layers[1].wo.residency = Residency::Device;
  ModelOptions o;
  o.n_threads = 1;
  try {
    Model m(std::shared_ptr<const ModelSpec>(spec), o);
    ADD_FAILURE() << "a device view was accepted by the CPU backend";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("layer 1"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("device memory"), std::string::npos) << e.what();
  }
}

TEST(Model, WorkspaceBytesGrowWithTheBatch) {
  HParams hp;
  hp.n_vocab = 32000;
  hp.n_embd = 4096;
  hp.n_layer = 32;
  hp.n_ff = 14336;
  hp.n_head = 32;
  hp.n_head_kv = 8;
  hp.head_dim = 128;
  hp.n_rot = 128;
  hp.n_expert = 8;
  hp.n_expert_used = 2;
  const uint64_t one = Model::workspace_bytes(hp, 1, 4), many = Model::workspace_bytes(hp, 513, 4);
  // Per batch token: the float buffers (residual, norm, gather, down, projection: n_embd each; q and
  // attention output: n_head * head_dim; k, v: n_head_kv * head_dim; gate, up: n_ff) and one quantized
  // activation row twice (two layouts of one input at once; at most 1.5 bytes per value: the 16-value
  // lane layout of quant/lanes.h), the RoPE table (n_rot floats), a few routing entries and 64-byte
  // alignment.
  const uint64_t floats = 5 * 4096 + 2 * 4096 + 2 * 1024 + 2 * 14336;
  const uint64_t per_token = (many - one) / 512;
  EXPECT_GE(per_token, floats * 4 + 2 * 14336);
  EXPECT_LE(per_token, floats * 4 + 2 * 14336 * 3 / 2 + 128 * 4 + 256);
  // Per thread: a dequantized row of the widest matrix (n_ff floats) and attention scratch.
  EXPECT_GE(Model::workspace_bytes(hp, 1, 5) - one, uint64_t{14336 * 4});
}

// ------------------------------------------------------------------------------------------------
// Errors a user can cause.

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(ModelErrors, BadInputsToForward) {
  Spec s;
  s.seed = 41;
  ModelFile f(s);
  ModelOptions o;
  o.n_threads = 1;
  auto model = Model::load(f.m.path, o);
  kv::Cache cache(model->kv_geometry(kv::KvType::F16), 1);
  ForwardResult r;
  auto run = [&](std::vector<std::array<int32_t, 3>> entries) {
    Batch b;
    for (auto& e : entries) b.add(e[0], e[1], e[2], true);
    model->forward(b, cache, r);
  };
  EXPECT_NE(error_of([&] { run({{static_cast<int32_t>(s.n_vocab), 0, 0}}); }).find("token id"), std::string::npos);
  EXPECT_NE(error_of([&] { run({{1, -1, 0}}); }).find("negative position"), std::string::npos);
  EXPECT_NE(error_of([&] { run({{1, 3, 0}}); }).find("contiguous"), std::string::npos);
  EXPECT_NE(error_of([&] { run({{1, 0, 0}, {2, 2, 0}}); }).find("consecutive"), std::string::npos);
  EXPECT_NE(error_of([&] { run({{1, 0, 0}, {1, 0, 1}}); }).find("KV cache is full"), std::string::npos);
  EXPECT_EQ(cache.n_used_blocks(), 0);  // nothing was reserved by the failed batches
  std::vector<std::array<int32_t, 3>> long_seq;
  for (int32_t i = 0; i < 17; ++i) long_seq.push_back({1, i, 0});
  EXPECT_NE(error_of([&] { run(long_seq); }).find("KV cache is full"), std::string::npos);
  kv::Cache other({kv::KvType::F16, s.n_layer + 1, s.n_head_kv, s.n_embd / s.n_head}, 1);
  Batch b;
  b.add(1, 0, 0, true);
  EXPECT_NE(error_of([&] { model->forward(b, other, r); }).find("another model"), std::string::npos);
}

// Writes a model with one thing changed and returns the load error.
std::string load_error(const std::function<void(gguf::Writer&, TinyModel&)>& edit) {
  Spec s;
  s.seed = 51;
  TinyModel m = make_model(s);
  std::filesystem::remove(m.path);
  gguf::Writer wr;
  wr.set("general.architecture", gguf::Value::string("llama"));
  wr.set("llama.context_length", gguf::Value::uint32(256));
  wr.set("llama.embedding_length", gguf::Value::uint32(64));
  wr.set("llama.block_count", gguf::Value::uint32(2));
  wr.set("llama.feed_forward_length", gguf::Value::uint32(96));
  wr.set("llama.attention.head_count", gguf::Value::uint32(4));
  wr.set("llama.attention.head_count_kv", gguf::Value::uint32(2));
  wr.set("llama.expert_count", gguf::Value::uint32(4));
  wr.set("llama.expert_used_count", gguf::Value::uint32(2));
  edit(wr, m);
  for (auto& [name, t] : m.tensors) wr.add_tensor(name, t.type, t.ne, t.bytes);
  const std::string path = temp_model_path("bad");
  wr.write(path);
  std::string err = error_of([&] { Model::load(path, ModelOptions{1, nullptr, 4, Precision::Fast}); });
  std::filesystem::remove(path);
  return err;
}

TEST(ModelErrors, BadFilesNameWhatIsWrong) {
  auto has = [](const std::string& err, const std::string& what) {
    return err.find(what) != std::string::npos ? ::testing::AssertionSuccess()
                                               : ::testing::AssertionFailure() << "error was: " << err;
  };
  EXPECT_TRUE(has(load_error([](gguf::Writer&, TinyModel&) {}), "(no error)"));
  EXPECT_TRUE(has(load_error([](gguf::Writer& w, TinyModel&) { w.set("general.architecture", gguf::Value::string("gpt2")); }),
                  "general.architecture"));
  EXPECT_TRUE(has(load_error([](gguf::Writer& w, TinyModel&) { w.remove("llama.block_count"); }), "llama.block_count"));
  EXPECT_TRUE(has(load_error([](gguf::Writer& w, TinyModel&) { w.set("llama.block_count", gguf::Value::uint32(5000)); }),
                  "llama.block_count"));
  EXPECT_TRUE(has(load_error([](gguf::Writer& w, TinyModel&) { w.set("llama.attention.head_count_kv", gguf::Value::uint32(3)); }),
                  "head_count_kv"));
  EXPECT_TRUE(has(load_error([](gguf::Writer& w, TinyModel&) { w.set("llama.attention.head_count", gguf::Value::uint32(5)); }),
                  "head_count"));
  EXPECT_TRUE(has(load_error([](gguf::Writer& w, TinyModel&) { w.set("llama.expert_used_count", gguf::Value::uint32(5)); }),
                  "llama.expert_used_count"));
  EXPECT_TRUE(has(load_error([](gguf::Writer& w, TinyModel&) { w.set("llama.rope.dimension_count", gguf::Value::uint32(7)); }),
                  "rope.dimension_count"));
  EXPECT_TRUE(has(load_error([](gguf::Writer& w, TinyModel&) { w.set("llama.embedding_length", gguf::Value::string("x")); }),
                  "llama.embedding_length"));
  EXPECT_TRUE(has(load_error([](gguf::Writer&, TinyModel& m) { m.tensors.erase("blk.1.attn_k.weight"); }),
                  "blk.1.attn_k.weight"));
  EXPECT_TRUE(has(load_error([](gguf::Writer&, TinyModel& m) { m.tensors.erase("blk.0.ffn_gate_inp.weight"); }),
                  "blk.0.ffn_gate_inp.weight"));
  EXPECT_TRUE(has(load_error([](gguf::Writer&, TinyModel& m) {
                    auto t = m.tensors.at("blk.0.attn_q.weight");
                    t.ne = {64, 32};
                    t.bytes.resize(64 * 32 * 4);
                    m.tensors["blk.0.attn_q.weight"] = t;
                  }),
                  "blk.0.attn_q.weight"));
  EXPECT_TRUE(has(load_error([](gguf::Writer&, TinyModel& m) {
                    auto& t = m.tensors.at("output_norm.weight");
                    t.type = GgmlType::F16;
                    t.bytes.resize(64 * 2);
                  }),
                  "output_norm.weight"));
}

TEST(ModelErrors, NonFiniteNormsRoutersAndOutputAreRefusedNamingTheTensor) {
  // One NaN or infinity in these tensors reaches every token; a file holding one loaded silently before.
  auto poison = [](const std::string& name, size_t element, float value) {
    return [=](gguf::Writer&, TinyModel& m) {
      auto& t = m.tensors.at(name);
      ASSERT_EQ(t.type, GgmlType::F32);
      std::memcpy(t.bytes.data() + 4 * element, &value, 4);
    };
  };
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  struct Case {
    std::string tensor;
    size_t element;
    float value;
    std::string where;
  };
  for (const Case& c : {Case{"blk.1.ffn_norm.weight", 17, nan, "row 0, column 17"},
                        Case{"blk.0.attn_norm.weight", 0, -inf, "row 0, column 0"},
                        Case{"output_norm.weight", 63, inf, "row 0, column 63"},
                        Case{"blk.1.ffn_gate_inp.weight", 64 * 2 + 5, nan, "row 2, column 5"},
                        Case{"output.weight", 64 * 79 + 1, inf, "row 79, column 1"}}) {
    std::string err = load_error(poison(c.tensor, c.element, c.value));
    EXPECT_NE(err.find("tensor '" + c.tensor + "' holds a NaN or infinite value at " + c.where), std::string::npos)
        << err;
  }
  // A NaN in an expert matrix is not scanned (those are most of a file's bytes): it still loads.
  EXPECT_EQ(load_error(poison("blk.0.ffn_gate_exps.weight", 3, nan)), "(no error)");
}

}  // namespace
}  // namespace moe::model
