// matmul.cpp: batched matrix-vector products over GGUF block formats (see matmul.h for the contract).
// Loops run row-outer, token-inner so one weight row is read from memory once for the whole batch.
// Dispatch happens once per call: quant::kernels_for() resolves the weight type's kernels for the active
// ISA and the path (one token, many tokens, lane kernels) is chosen once; rows and tiles then call the
// resolved function pointers without further checks.
#include "kernels/matmul.h"

#include <algorithm>
#include <vector>

#include "kernels/ops.h"
#include "quant/blocks.h"
#include "quant/lanes.h"
#include "quant/quant.h"
#include "util/error.h"

namespace moe::kernels {
namespace {

bool is_float_type(GgmlType t) { return t == GgmlType::F32 || t == GgmlType::F16 || t == GgmlType::BF16; }

double dot_double(const float* a, const float* b, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(a[i]) * static_cast<double>(b[i]);
  return s;
}

// Rows per parallel chunk: enough multiply-adds per chunk (~64K, tens of microseconds) that waking a
// worker costs little next to it; a small matrix then runs on the calling thread alone.
int64_t row_grain(int64_t cols, int64_t n_tok) {
  int64_t work = std::max<int64_t>(1, cols * n_tok);
  return std::max<int64_t>(1, 65536 / work);
}

// Row r of w as GGUF blocks: the row itself, or a repacked row converted back into `scratch`.
const uint8_t* gguf_row(const TensorView& w, int64_t r, std::vector<uint8_t>& scratch) {
  if (!w.repacked) return w.row(r);
  scratch.resize(w.row_bytes);
  quant::unrepack_row(w.type, w.row(r), scratch.data(), w.cols);
  return scratch.data();
}
// Tokens per parallel chunk of activation quantization, on the same measure: a decode step's few rows
// (one per chosen expert) are quantized on the calling thread instead of costing a synchronisation.
int64_t token_grain(int64_t cols) { return std::max<int64_t>(1, 65536 / std::max<int64_t>(1, cols)); }

}  // namespace

size_t max_activation_row_bytes(int64_t cols) {
  size_t best = 0;  // float activations are used in place, never copied here
  for (GgmlType t : {GgmlType::Q8_0, GgmlType::Q8_1, GgmlType::Q8_K}) {
    const TypeTraits* tr = type_traits(t);
    uint64_t blocks = (static_cast<uint64_t>(cols) + tr->block_size - 1) / tr->block_size;
    best = std::max<size_t>(best, blocks * tr->type_size);
  }
  if (cols > 0 && cols % quant::kQKK == 0)  // the lane layouts (16-value sub-blocks take the most)
    best = std::max({best, quant::lanes_row_bytes(16, cols), quant::lanes_row_bytes(32, cols)});
  return best;
}

bool activations_fit(const Activations& a, GgmlType weight_type, Precision p) {
  if (p == Precision::Exact || is_float_type(weight_type)) return true;  // floats are always there
  if (a.q == nullptr) return false;
  // A lane layout is its sub-block size and its levels (Q4_K's 32-value lanes hold Q8_K levels, Q8_0's
  // Q8_0 levels: the same size, different numbers), and a row length the lanes take.
  const GgmlType levels = quant::activation_type(weight_type);
  if (quant::use_lanes(weight_type, a.cols))
    return a.lanes_sub == quant::lanes_sub_block(weight_type) && a.qtype == levels;
  return a.lanes_sub == 0 && a.qtype == levels;
}

Activations prepare_activations(const float* x, int64_t n_tok, int64_t cols, GgmlType weight_type, Precision p,
                                uint8_t* buf, size_t buf_bytes, ThreadPool& pool) {
  Activations a;
  a.x = x;
  a.n_tok = n_tok;
  a.cols = cols;
  if (p == Precision::Exact || is_float_type(weight_type)) return a;
  GgmlType act = quant::activation_type(weight_type);
  if (quant::use_lanes(weight_type, cols)) {
    const int sub = quant::lanes_sub_block(weight_type);
    const size_t rb = quant::lanes_row_bytes(sub, cols);
    if (static_cast<uint64_t>(n_tok) * rb > buf_bytes)
      fail("internal: activation buffer of ", buf_bytes, " bytes is too small for ", n_tok, " x ", rb);
    a.qtype = act;
    a.q = buf;
    a.q_row_bytes = rb;
    a.lanes_sub = sub;
    pool.parallel_for(n_tok, token_grain(cols), [&](int64_t b, int64_t e, int) {
      for (int64_t t = b; t < e; ++t) quant::quantize_activations_lanes(sub, act, x + t * cols, buf + t * rb, cols);
    });
    return a;
  }
  auto rb = row_bytes(act, static_cast<uint64_t>(cols));
  if (!rb) fail("activation row of ", cols, " values does not fit ", type_name(act), " blocks");
  if (static_cast<uint64_t>(n_tok) * *rb > buf_bytes)
    fail("internal: activation buffer of ", buf_bytes, " bytes is too small for ", n_tok, " x ", *rb);
  a.qtype = act;
  a.q = buf;
  a.q_row_bytes = *rb;
  const size_t stride = *rb;
  quant::check_row("quantize_activations", act, cols);
  const quant::QuantizeFn quantize = quant::activation_quantizer(act, active_isa());
  pool.parallel_for(n_tok, token_grain(cols), [&](int64_t b, int64_t e, int) {
    for (int64_t t = b; t < e; ++t) quantize(x + t * cols, buf + t * stride, cols);
  });
  return a;
}

ThreadPool::Loop matmul_loop(const TensorView& w, const Activations& a, float* y, Precision p, float* deq_scratch) {
  if (w.cols != a.cols) fail("internal: matmul of a ", w.cols, "-column matrix with ", a.cols, "-value activations");
  const int64_t n_tok = a.n_tok, cols = w.cols, rows = w.rows;
  if (n_tok == 0 || rows == 0) return {};
  const int64_t grain = row_grain(cols, n_tok);

  if (p == Precision::Exact) {
    return {rows, grain, [=](int64_t r0, int64_t r1, int thread) {
      float* row = deq_scratch + static_cast<size_t>(thread) * cols;
      thread_local std::vector<uint8_t> blocks;  // a repacked row as GGUF blocks
      for (int64_t r = r0; r < r1; ++r) {
        quant::dequantize_row(w.type, gguf_row(w, r, blocks), row, cols);
        for (int64_t t = 0; t < n_tok; ++t) y[t * rows + r] = static_cast<float>(dot_double(row, a.x + t * cols, cols));
      }
    }};
  }

  const quant::Kernels k = quant::kernels_for(w.type, active_isa());  // throws for a type without a dot
  quant::check_row("matmul", w.type, cols);
  if (is_float_type(w.type)) {
    return {rows, grain, [=](int64_t r0, int64_t r1, int) {
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t t = 0; t < n_tok; ++t) y[t * rows + r] = k.dot(cols, w.row(r), a.x + t * cols);
    }};
  }

  if (!activations_fit(a, w.type, p))
    fail("internal: activations quantized as ", type_name(a.qtype), " (lanes ", a.lanes_sub, ") for ",
         type_name(w.type), " weights");
  // Bands of rows meet tiles of tokens (sizes below) so both operands stay in the core's L2.
  const int64_t band_rows = std::max<int64_t>(2, (int64_t{128} << 10) / static_cast<int64_t>(w.row_bytes));
  const int64_t tile_tok = std::max<int64_t>(8, (int64_t{256} << 10) / static_cast<int64_t>(a.q_row_bytes));
  if (w.repacked && a.lanes_sub == 0)
    fail("the ", type_name(w.type), " weights were repacked for the AVX-512 lane kernels, which ", isa_name(k.isa),
         " does not run (load with repacking off)");
  if (a.lanes_sub != 0) {
    const quant::LanesRowsFn lanes_rows = w.repacked ? k.lanes_rows_repacked : k.lanes_rows;
    if (lanes_rows == nullptr) fail("internal: lane-layout activations for ", type_name(w.type), " on ", isa_name(k.isa));
    // The lane path unpacks each row once per tile of tokens, so its tiles take most of the L2.
    const int64_t lane_tile = std::max<int64_t>(8, (int64_t{640} << 10) / static_cast<int64_t>(a.q_row_bytes));
    return {rows, grain, [=](int64_t r0, int64_t r1, int) {
      for (int64_t b0 = r0; b0 < r1; b0 += band_rows) {
        const int64_t b1 = std::min(r1, b0 + band_rows);
        for (int64_t t0 = 0; t0 < n_tok; t0 += lane_tile) {
          const int64_t nt = std::min(lane_tile, n_tok - t0);
          lanes_rows(cols, w.row(b0), w.row_bytes, b1 - b0, a.q + static_cast<size_t>(t0) * a.q_row_bytes, a.q_row_bytes,
                       nt, y + t0 * rows + b0, static_cast<size_t>(rows));
        }
      }
    }};
  }
  if (n_tok == 1) {
    return {rows, grain, [=](int64_t r0, int64_t r1, int) {
      for (int64_t r = r0; r < r1; ++r) y[r] = k.dot(cols, w.row(r), a.q);
    }};
  }
  // Many tokens: each weight row meets a group of tokens at once (the many-token kernels unpack the row's
  // blocks once per group). A band of rows (~128 KiB of weights) is swept by the tokens a tile (~256 KiB
  // of activations) at a time, so weights are read from memory once and activations from L2/L3 once per
  // band rather than once per row.
  return {rows, grain, [=](int64_t r0, int64_t r1, int) {
    for (int64_t b0 = r0; b0 < r1; b0 += band_rows) {
      const int64_t b1 = std::min(r1, b0 + band_rows);
      for (int64_t t0 = 0; t0 < n_tok; t0 += tile_tok) {
        const int64_t nt = std::min(tile_tok, n_tok - t0);
        const uint8_t* x = a.q + static_cast<size_t>(t0) * a.q_row_bytes;
        for (int64_t r = b0; r < b1; ++r)
          k.dot_many(cols, w.row(r), x, a.q_row_bytes, nt, y + t0 * rows + r, static_cast<size_t>(rows));
      }
    }
  }};
}

ThreadPool::Loop gate_up_silu_loop(const TensorView& gate, const TensorView& up, const Activations& a, float* gate_y,
                                   float* up_y, Precision p, float* deq_scratch) {
  if (gate.rows != up.rows || gate.cols != up.cols)
    fail("internal: fused gate/up of a ", gate.rows, "x", gate.cols, " and a ", up.rows, "x", up.cols, " matrix");
  const ThreadPool::Loop g = matmul_loop(gate, a, gate_y, p, deq_scratch);
  const ThreadPool::Loop u = matmul_loop(up, a, up_y, p, deq_scratch);
  if (g.n == 0) return {};
  // Same rows, columns and tokens, so both loops chunk [0, rows) alike; the fused loop keeps that grain.
  const int64_t rows = gate.rows, n_tok = a.n_tok;
  return {g.n, g.grain, [g, u, gate_y, up_y, rows, n_tok](int64_t r0, int64_t r1, int thread) {
    g.fn(r0, r1, thread);
    u.fn(r0, r1, thread);
    for (int64_t t = 0; t < n_tok; ++t) silu_mul(gate_y + t * rows + r0, up_y + t * rows + r0, r1 - r0);
  }};
}

void matmul(const TensorView& w, const Activations& a, float* y, Precision p, ThreadPool& pool, float* deq_scratch) {
  const ThreadPool::Loop loop = matmul_loop(w, a, y, p, deq_scratch);
  pool.parallel_for(loop.n, loop.grain, loop.fn);
}

void matmul_reference(const TensorView& w, const float* x, int64_t n_tok, double* y) {
  std::vector<float> row(static_cast<size_t>(w.cols));
  std::vector<uint8_t> blocks;
  for (int64_t r = 0; r < w.rows; ++r) {
    quant::dequantize_row(w.type, gguf_row(w, r, blocks), row.data(), w.cols);
    for (int64_t t = 0; t < n_tok; ++t) y[t * w.rows + r] = dot_double(row.data(), x + t * w.cols, w.cols);
  }
}

}  // namespace moe::kernels
