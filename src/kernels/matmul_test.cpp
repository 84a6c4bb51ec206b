// matmul_test.cpp: the batched matmul over every supported weight type against float64 references.
//  - Exact precision equals the float64 dot product of the dequantized row and the float activations up
//    to the final rounding to float (|err| <= 2^-24 |y| + the double accumulation's n 2^-53 sum|w x|).
//  - Fast precision is, bit for bit, quant::vec_dot of each row with that token's quantized activations
//    (the plumbing: right rows, tokens, activation type), and within a derived bound of the float64 dot
//    product with the dequantized activations: float accumulation, gamma_n sum|w x'|, plus for Q8_1
//    activations the f16 rounding of the block sums s (|m| |s| 2^-11 per block).
//  - Results do not depend on the thread count or on the other tokens in the batch.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/matmul.h"
#include "kernels/ops.h"
#include "quant/blocks.h"
#include "quant/lanes.h"
#include "quant/quant.h"
#include "util/error.h"
#include "util/fp16.h"

namespace moe::kernels {
namespace {

struct Weights {
  std::vector<uint8_t> bytes;
  TensorView view;
};

Weights random_weights(GgmlType type, int64_t rows, int64_t cols, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> vals(static_cast<size_t>(cols));
  Weights w;
  const size_t rb = *row_bytes(type, static_cast<uint64_t>(cols));
  w.bytes.resize(rb * static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    for (auto& v : vals) v = nd(rng);
    quant::quantize_row(type, vals.data(), w.bytes.data() + r * rb, cols);
  }
  w.view = TensorView{type, w.bytes.data(), cols, rows, 1, rb, rb * static_cast<size_t>(rows)};
  return w;
}

std::vector<float> random_x(int64_t n, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n));
  for (auto& v : x) v = nd(rng);
  return x;
}

std::vector<float> deq_row(GgmlType type, const void* row, int64_t n) {
  std::vector<float> out(static_cast<size_t>(n));
  quant::dequantize_row(type, row, out.data(), n);
  return out;
}

const GgmlType kTypes[] = {GgmlType::F32,  GgmlType::F16,  GgmlType::BF16, GgmlType::Q4_0, GgmlType::Q4_1,
                           GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q8_0, GgmlType::Q2_K, GgmlType::Q3_K,
                           GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K};

bool is_float(GgmlType t) { return t == GgmlType::F32 || t == GgmlType::F16 || t == GgmlType::BF16; }

class MatmulTypes : public ::testing::TestWithParam<GgmlType> {};

TEST_P(MatmulTypes, ExactAndFastAgainstFloat64) {
  const GgmlType type = GetParam();
  SCOPED_TRACE(type_name(type));
  std::mt19937 rng(static_cast<uint32_t>(type) + 1);
  const int64_t rows = 37, cols = 512, n_tok = 3;  // 37 rows: uneven thread chunks
  Weights w = random_weights(type, rows, cols, rng);
  std::vector<float> x = random_x(n_tok * cols, rng);
  ThreadPool pool(3);
  std::vector<uint8_t> act(static_cast<size_t>(n_tok) * max_activation_row_bytes(cols));
  std::vector<float> deq(static_cast<size_t>(pool.size() * cols));
  const double eps = std::ldexp(1.0, -24);

  // Exact.
  std::vector<float> y(static_cast<size_t>(n_tok * rows));
  Activations a = prepare_activations(x.data(), n_tok, cols, type, Precision::Exact, act.data(), act.size(), pool);
  matmul(w.view, a, y.data(), Precision::Exact, pool, deq.data());
  for (int64_t r = 0; r < rows; ++r) {
    auto wr = deq_row(type, w.view.row(r), cols);
    for (int64_t t = 0; t < n_tok; ++t) {
      double ref = 0, mag = 0;
      for (int64_t c = 0; c < cols; ++c) {
        ref += static_cast<double>(wr[c]) * x[t * cols + c];
        mag += std::fabs(static_cast<double>(wr[c]) * x[t * cols + c]);
      }
      EXPECT_LE(std::fabs(y[t * rows + r] - ref), eps * std::fabs(ref) + cols * std::ldexp(1.0, -53) * mag + 1e-30)
          << "exact row " << r << " token " << t;
    }
  }

  // Fast: bit-identical to vec_dot per (row, token), and close to the dequantized-activation dot.
  std::vector<float> yf(static_cast<size_t>(n_tok * rows));
  Activations af = prepare_activations(x.data(), n_tok, cols, type, Precision::Fast, act.data(), act.size(), pool);
  matmul(w.view, af, yf.data(), Precision::Fast, pool, nullptr);
  const GgmlType at = quant::activation_type(type);
  EXPECT_EQ(af.qtype, is_float(type) ? GgmlType::F32 : at);
  for (int64_t t = 0; t < n_tok; ++t) {
    std::vector<uint8_t> q;
    std::vector<float> xd(x.begin() + t * cols, x.begin() + (t + 1) * cols);
    const void* xin = x.data() + t * cols;
    if (!is_float(type)) {
      q.resize(*row_bytes(at, cols));
      quant::quantize_activations(at, x.data() + t * cols, q.data(), cols);
      xd = deq_row(at, q.data(), cols);
      xin = q.data();
    }
    // On AVX-512 the lane-kernel types are the single-token lane kernel's bits, elsewhere vec_dot's.
    std::vector<uint8_t> lanes;
    const bool use_lanes = quant::use_lanes(type, cols);
    if (use_lanes) {
      lanes.resize(quant::lanes_row_bytes(quant::lanes_sub_block(type), cols));
      quant::quantize_activations_lanes(quant::lanes_sub_block(type), at, x.data() + t * cols, lanes.data(), cols);
    }
    for (int64_t r = 0; r < rows; ++r) {
      float single = 0;
      if (use_lanes)
        quant::vec_dot_lanes(type, cols, w.view.row(r), lanes.data(), lanes.size(), 1, &single, 1);
      else
        single = quant::vec_dot(type, cols, w.view.row(r), xin);
      EXPECT_EQ(yf[t * rows + r], single) << "fast row " << r << " token " << t;
      auto wr = deq_row(type, w.view.row(r), cols);
      double ref = 0, mag = 0;
      for (int64_t c = 0; c < cols; ++c) {
        ref += static_cast<double>(wr[c]) * xd[c];
        mag += std::fabs(static_cast<double>(wr[c]) * xd[c]);
      }
      // Q8_0's lane kernels form d (w + 128) x and 128 d x (quant/lanes.h): those terms' size counts too.
      if (use_lanes && type == GgmlType::Q8_0)
        for (int64_t c = 0; c < cols; ++c) {
          const float d = fp16_to_fp32(reinterpret_cast<const quant::BlockQ8_0*>(w.view.row(r))[c / 32].d);
          mag += 2 * 128 * std::fabs(static_cast<double>(d) * xd[c]);
        }
      // float accumulation (blocks of integer dots scaled and summed in float): gamma_n sum |w x'|
      double tol = 2 * cols * eps * mag + 1e-30;
      if (at == GgmlType::Q8_1) {
        // m * s, with s = d * sum(q) rounded to f16: |m| |s| 2^-11 per block.
        const auto* xb = reinterpret_cast<const quant::BlockQ8_1*>(q.data());
        for (int64_t b = 0; b < cols / 32; ++b) {
          float m;
          if (type == GgmlType::Q4_1) {
            m = fp16_to_fp32(reinterpret_cast<const quant::BlockQ4_1*>(w.view.row(r))[b].m);
          } else {
            m = fp16_to_fp32(reinterpret_cast<const quant::BlockQ5_1*>(w.view.row(r))[b].m);
          }
          tol += std::fabs(m) * std::fabs(fp16_to_fp32(xb[b].s)) * std::ldexp(1.0, -11);
        }
      }
      EXPECT_LE(std::fabs(yf[t * rows + r] - ref), tol) << "fast row " << r << " token " << t;
    }
  }

  // Thread count and batch composition change nothing: one thread, one token at a time.
  ThreadPool one(1);
  for (Precision p : {Precision::Exact, Precision::Fast}) {
    const std::vector<float>& want = p == Precision::Exact ? y : yf;
    for (int64_t t = 0; t < n_tok; ++t) {
      std::vector<float> yt(static_cast<size_t>(rows));
      Activations at1 = prepare_activations(x.data() + t * cols, 1, cols, type, p, act.data(), act.size(), one);
      matmul(w.view, at1, yt.data(), p, one, deq.data());
      for (int64_t r = 0; r < rows; ++r) EXPECT_EQ(yt[r], want[t * rows + r]);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllTypes, MatmulTypes, ::testing::ValuesIn(kTypes),
                         [](const auto& info) { return type_name(info.param); });

TEST(Matmul, ActivationBufferBoundCoversEveryType) {
  for (int64_t cols : {32, 256, 4096, 14336})
    for (GgmlType t : kTypes) {
      if (is_float(t)) continue;
      const auto rb = row_bytes(quant::activation_type(t), static_cast<uint64_t>(cols));
      if (!rb) continue;  // 32 values are no whole Q8_K block
      EXPECT_GE(max_activation_row_bytes(cols), *rb) << type_name(t) << " " << cols;
      if (const int sub = quant::lanes_sub_block(t); sub != 0 && cols % 256 == 0) {
        EXPECT_GE(max_activation_row_bytes(cols), quant::lanes_row_bytes(sub, cols)) << type_name(t) << " lanes " << cols;
      }
    }
}

TEST(Matmul, ReusesActivationsOnlyForTheSameBlockType) {
  ThreadPool pool(1);
  std::vector<float> x(256, 1.0f);
  std::vector<uint8_t> buf(max_activation_row_bytes(256));
  Activations a = prepare_activations(x.data(), 1, 256, GgmlType::Q4_K, Precision::Fast, buf.data(), buf.size(), pool);
  // Q5_K/Q6_K dot the same Q8_K levels, but on AVX-512 Q4_K has them in its 32-value lane order.
  const bool lanes = quant::use_lanes(GgmlType::Q4_K);
  EXPECT_EQ(activations_fit(a, GgmlType::Q6_K, Precision::Fast), !lanes);
  EXPECT_EQ(activations_fit(a, GgmlType::Q5_K, Precision::Fast), !lanes);
  EXPECT_EQ(activations_fit(a, GgmlType::Q2_K, Precision::Fast), !lanes);  // 16-value lanes vs 32
  Activations a2 = prepare_activations(x.data(), 1, 256, GgmlType::Q2_K, Precision::Fast, buf.data(), buf.size(), pool);
  EXPECT_TRUE(activations_fit(a2, GgmlType::Q3_K, Precision::Fast));  // the same layout either way
  EXPECT_TRUE(activations_fit(a2, GgmlType::Q6_K, Precision::Fast));  // Q6_K: the 16-value lanes too
  EXPECT_FALSE(activations_fit(a, GgmlType::Q8_0, Precision::Fast));  // Q8_0 blocks
  EXPECT_TRUE(activations_fit(a, GgmlType::F16, Precision::Fast));     // floats
  EXPECT_TRUE(activations_fit(a, GgmlType::Q8_0, Precision::Exact));
}

// Q8_0 weights on the lane kernels read 32-value lanes of Q8_0 levels: the same layout size as Q4_K's
// lanes (Q8_K levels), which must not be taken for them, nor the Q8_0 blocks Q4_0 reads; rows of a length
// the lanes do not take (not a multiple of 256) stay on Q8_0 blocks, shared with Q4_0 and Q5_0.
TEST(Matmul, Q8_0LaneActivationsFitOnlyQ8_0) {
  ThreadPool pool(1);
  std::vector<float> x(512, 0.5f);
  std::vector<uint8_t> buf(max_activation_row_bytes(512)), buf2(max_activation_row_bytes(512));
  const bool lanes = quant::use_lanes(GgmlType::Q8_0);
  const Activations a8 = prepare_activations(x.data(), 1, 512, GgmlType::Q8_0, Precision::Fast, buf.data(), buf.size(), pool);
  const Activations a4 = prepare_activations(x.data(), 1, 512, GgmlType::Q4_K, Precision::Fast, buf2.data(), buf2.size(), pool);
  EXPECT_EQ(a8.lanes_sub, lanes ? 32 : 0);
  EXPECT_EQ(a8.qtype, GgmlType::Q8_0);
  EXPECT_TRUE(activations_fit(a8, GgmlType::Q8_0, Precision::Fast));
  EXPECT_FALSE(activations_fit(a8, GgmlType::Q4_K, Precision::Fast));  // same lanes, Q8_0 levels
  EXPECT_FALSE(activations_fit(a4, GgmlType::Q8_0, Precision::Fast));  // same lanes, Q8_K levels
  EXPECT_EQ(activations_fit(a8, GgmlType::Q4_0, Precision::Fast), !lanes);  // Q4_0 reads Q8_0 blocks
  const Activations a40 = prepare_activations(x.data(), 1, 512, GgmlType::Q4_0, Precision::Fast, buf2.data(), buf2.size(), pool);
  EXPECT_EQ(activations_fit(a40, GgmlType::Q8_0, Precision::Fast), !lanes);
  // 96 columns: no lanes, Q8_0 blocks for both types.
  const Activations b8 = prepare_activations(x.data(), 1, 96, GgmlType::Q8_0, Precision::Fast, buf.data(), buf.size(), pool);
  EXPECT_EQ(b8.lanes_sub, 0);
  EXPECT_TRUE(activations_fit(b8, GgmlType::Q8_0, Precision::Fast));
  EXPECT_TRUE(activations_fit(b8, GgmlType::Q4_0, Precision::Fast));
}

// Repacked weights (quant/lanes.h's repack_row, as model/repack.h makes them at load) give every
// (row, token) the bits of the same matrix used in place, in both precisions, for one token, groups and
// the many-token blocks, on 2 threads.
TEST(Matmul, RepackedWeightsGiveTheSameBits) {
  if (!quant::use_repacked(GgmlType::Q4_K)) GTEST_SKIP() << "repacked weights need the AVX-512 lane kernels";
  std::mt19937 rng(std::random_device{}());
  ThreadPool pool(2);
  for (GgmlType type : {GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::Q8_0})
    for (int64_t cols : {int64_t{768}, int64_t{4096}}) {
      const int64_t rows = 37;
      Weights w = random_weights(type, rows, cols, rng);
      std::vector<uint8_t> packed(w.bytes.size());
      for (int64_t r = 0; r < rows; ++r)
        quant::repack_row(type, w.view.row(r), packed.data() + static_cast<size_t>(r) * w.view.row_bytes, cols);
      TensorView rv = w.view;
      rv.data = packed.data();
      rv.repacked = true;
      for (int64_t n_tok : {int64_t{1}, int64_t{3}, int64_t{8}, int64_t{13}, int64_t{40}}) {
        const std::vector<float> x = random_x(n_tok * cols, rng);
        std::vector<uint8_t> buf(static_cast<size_t>(n_tok) * max_activation_row_bytes(cols));
        std::vector<float> deq(static_cast<size_t>(pool.size() * cols));
        for (Precision p : {Precision::Fast, Precision::Exact}) {
          const Activations a = prepare_activations(x.data(), n_tok, cols, type, p, buf.data(), buf.size(), pool);
          std::vector<float> want(static_cast<size_t>(n_tok * rows), -1.0f), got(want.size(), -2.0f);
          matmul(w.view, a, want.data(), p, pool, deq.data());
          matmul(rv, a, got.data(), p, pool, deq.data());
          EXPECT_EQ(std::memcmp(want.data(), got.data(), want.size() * sizeof(float)), 0)
              << type_name(type) << " cols " << cols << " tokens " << n_tok << (p == Precision::Fast ? " fast" : " exact");
        }
      }
      std::vector<double> ref(static_cast<size_t>(rows)), ref_packed(ref.size());
      const std::vector<float> x = random_x(cols, rng);
      matmul_reference(w.view, x.data(), 1, ref.data());
      matmul_reference(rv, x.data(), 1, ref_packed.data());
      EXPECT_EQ(ref, ref_packed) << type_name(type);
    }
}

// The fused gate/up/SwiGLU loop equals the two matmuls followed by silu_mul, bit for bit, for every
// token and row (the fused loop chunks rows as matmul does, and silu_mul is element-wise), in both
// precisions, one token, groups and many tokens, on 1 and 2 threads; up_y keeps the raw up product.
TEST(Matmul, FusedGateUpSiluEqualsTheUnfusedSteps) {
  std::mt19937 rng(std::random_device{}());
  for (int threads : {1, 2}) {
    ThreadPool pool(threads);
    for (GgmlType type : {GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::Q8_0, GgmlType::F16}) {
      const int64_t rows = 300, cols = 512;
      Weights gate = random_weights(type, rows, cols, rng), up = random_weights(type, rows, cols, rng);
      for (int64_t n_tok : {int64_t{1}, int64_t{5}, int64_t{19}}) {
        const std::vector<float> x = random_x(n_tok * cols, rng);
        std::vector<uint8_t> buf(static_cast<size_t>(n_tok) * max_activation_row_bytes(cols));
        std::vector<float> deq(static_cast<size_t>(pool.size() * cols));
        for (Precision p : {Precision::Fast, Precision::Exact}) {
          const Activations a = prepare_activations(x.data(), n_tok, cols, type, p, buf.data(), buf.size(), pool);
          const size_t n = static_cast<size_t>(n_tok * rows);
          std::vector<float> want_g(n, -1.0f), want_u(n, -1.0f), got_g(n, -2.0f), got_u(n, -2.0f);
          matmul(gate.view, a, want_g.data(), p, pool, deq.data());
          matmul(up.view, a, want_u.data(), p, pool, deq.data());
          silu_mul(want_g.data(), want_u.data(), static_cast<int64_t>(n));
          pool.parallel_for_all({gate_up_silu_loop(gate.view, up.view, a, got_g.data(), got_u.data(), p, deq.data())});
          EXPECT_EQ(std::memcmp(want_g.data(), got_g.data(), n * sizeof(float)), 0)
              << type_name(type) << " tokens " << n_tok << " threads " << threads;
          EXPECT_EQ(std::memcmp(want_u.data(), got_u.data(), n * sizeof(float)), 0) << type_name(type);
        }
      }
    }
  }
  Weights a = random_weights(GgmlType::Q4_K, 8, 512, rng), b = random_weights(GgmlType::Q4_K, 9, 512, rng);
  Activations act;
  EXPECT_THROW(gate_up_silu_loop(a.view, b.view, act, nullptr, nullptr, Precision::Fast, nullptr), moe::Error);
}

}  // namespace
}  // namespace moe::kernels
