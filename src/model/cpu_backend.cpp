// cpu_backend.cpp: the forward pass on the CPU (see cpu_backend.h). It reads top to bottom: embed, then
// per layer attention_block and ffn_block, then the output head for the wanted tokens.
#include "model/cpu_backend.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "kernels/attention.h"
#include "kernels/ops.h"
#include "quant/quant.h"
#include "util/checked.h"
#include "util/error.h"

namespace moe::model {

using kernels::Activations;

// ---------------------------------------------------------------------------------------------------
// Workspace: every buffer of the forward pass, carved from one 64-byte-aligned arena. layout() is the
// single definition of their sizes: workspace_bytes() (the planner) and the allocation use it.

struct CpuBackend::Workspace {
  struct Layout {
    size_t x, xn, q, k, v, att, proj, router, topk_id, topk_w, order, order_w, offsets, cursor, gather, gate, up, down;
    size_t act, act2, deq, attn, rope;
    size_t act_bytes = 0, attn_bytes_per_thread = 0, deq_floats_per_thread = 0;
    size_t total = 0;
  };

  static Layout layout(const HParams& hp, int64_t B, int n_threads) {
    Layout L;
    const uint64_t b = static_cast<uint64_t>(B);
    const uint64_t E = static_cast<uint64_t>(hp.n_embd), F = static_cast<uint64_t>(hp.n_ff);
    const uint64_t QD = static_cast<uint64_t>(hp.n_head * hp.head_dim), KD = static_cast<uint64_t>(hp.n_head_kv * hp.head_dim);
    const uint64_t NE = static_cast<uint64_t>(std::max<int64_t>(hp.n_expert, 1));
    const uint64_t K = static_cast<uint64_t>(std::max<int64_t>(hp.n_expert_used, 1));
    const uint64_t T = static_cast<uint64_t>(std::max(n_threads, 1));
    const int64_t max_cols = std::max({hp.n_embd, hp.n_head * hp.head_dim, hp.n_ff});
    uint64_t off = 0;
    auto take = [&](uint64_t count, uint64_t elem, const char* what) {
      uint64_t at = off;
      uint64_t bytes = checked_mul(count, elem, what);
      auto end = align_up(checked_add(off, bytes, what), 64);
      if (!end) fail(what, ": workspace size overflows");
      off = *end;
      return static_cast<size_t>(at);
    };
    L.x = take(checked_mul(b, E, "workspace"), 4, "residual stream");
    L.xn = take(checked_mul(b, E, "workspace"), 4, "normed activations");
    L.q = take(checked_mul(b, QD, "workspace"), 4, "queries");
    L.k = take(checked_mul(b, KD, "workspace"), 4, "keys");
    L.v = take(checked_mul(b, KD, "workspace"), 4, "values");
    L.att = take(checked_mul(b, QD, "workspace"), 4, "attention output");
    L.proj = take(checked_mul(b, E, "workspace"), 4, "projection output");
    L.router = take(checked_mul(b, NE, "workspace"), 4, "router logits");
    L.topk_id = take(checked_mul(b, K, "workspace"), 4, "chosen experts");
    L.topk_w = take(checked_mul(b, K, "workspace"), 4, "expert weights");
    L.order = take(checked_mul(b, K, "workspace"), 4, "tokens by expert");
    L.order_w = take(checked_mul(b, K, "workspace"), 4, "weights by expert");
    L.offsets = take(NE + 1, 8, "expert offsets");
    L.cursor = take(NE, 8, "expert cursors");
    L.gather = take(checked_mul(b, E, "workspace"), 4, "gathered tokens");
    L.gate = take(checked_mul(b, F, "workspace"), 4, "expert gate");
    L.up = take(checked_mul(b, F, "workspace"), 4, "expert up");
    L.down = take(checked_mul(b, E, "workspace"), 4, "expert down");
    L.act_bytes = checked_mul(b, kernels::max_activation_row_bytes(max_cols), "quantized activations");
    L.act = take(L.act_bytes, 1, "quantized activations");
    // A second layout of the same input (Q4_K_M's Q6_K V beside Q4_K Q/K), so both exist at once and
    // the projections run in one parallel region.
    L.act2 = take(L.act_bytes, 1, "second quantized activations");
    L.deq_floats_per_thread = static_cast<size_t>(max_cols);
    L.deq = take(checked_mul(T, static_cast<uint64_t>(max_cols), "workspace"), 4, "dequantized rows");
    L.attn_bytes_per_thread = *align_up(kernels::attention_scratch_bytes(hp.head_dim), 64);
    L.attn = take(T, L.attn_bytes_per_thread, "attention scratch");
    L.rope = take(checked_mul(b, static_cast<uint64_t>(std::max<int64_t>(hp.n_rot, 2)), "workspace"), 4, "rope table");
    L.total = off;
    return L;
  }

  Workspace(const HParams& hp, int64_t B, int n_threads) : L(layout(hp, B, n_threads)) {
    arena = static_cast<uint8_t*>(std::aligned_alloc(64, std::max<size_t>(L.total, 64)));
    if (!arena) fail("cannot allocate ", L.total, " bytes of forward-pass workspace");
    x = f(L.x); xn = f(L.xn); q = f(L.q); k = f(L.k); v = f(L.v); att = f(L.att); proj = f(L.proj);
    router = f(L.router); topk_w = f(L.topk_w); order_w = f(L.order_w);
    topk_id = reinterpret_cast<int32_t*>(arena + L.topk_id);
    order = reinterpret_cast<int32_t*>(arena + L.order);
    offsets = reinterpret_cast<int64_t*>(arena + L.offsets);
    cursor = reinterpret_cast<int64_t*>(arena + L.cursor);
    gather = f(L.gather); gate = f(L.gate); up = f(L.up); down = f(L.down);
    act = arena + L.act; act2 = arena + L.act2; deq = f(L.deq); attn = arena + L.attn; rope = f(L.rope);
  }
  ~Workspace() { std::free(arena); }
  float* f(size_t off) { return reinterpret_cast<float*>(arena + off); }

  Layout L;
  uint8_t* arena = nullptr;
  float *x, *xn, *q, *k, *v, *att, *proj;    // [B][n_embd] / [B][q_dim] / [B][kv_dim]
  float *router, *topk_w, *order_w;          // [B][n_expert], [B][k], [B*k]
  int32_t *topk_id, *order;                  // [B][k], [B*k] token index, grouped by expert
  int64_t* offsets;                          // [n_expert + 1] start of each expert's group in order
  int64_t* cursor;                           // [n_expert] insertion points while grouping
  float *gather, *gate, *up, *down;          // [B][n_embd], [B][n_ff], [B][n_ff], [B][n_embd]
  uint8_t* act;                              // quantized activations
  uint8_t* act2;                             // a second quantization of the same rows (another layout)
  float* deq;                                // [threads][max cols] dequantized weight rows (Exact)
  uint8_t* attn;                             // [threads] attention scratch
  float* rope;                               // [B][n_rot] cos/sin per token
};

uint64_t CpuBackend::workspace_bytes(const HParams& hp, int64_t max_batch_tokens, int n_threads) {
  return Workspace::layout(hp, max_batch_tokens, n_threads).total;
}

uint64_t CpuBackend::workspace_bytes() const { return ws_->L.total; }

namespace {

// Every view the CPU kernels will read must be addressable from the CPU.
void check_host_readable(const Weights& w) {
  auto check = [](const WeightView& v, const char* what, int64_t layer) {
    if (v.data && v.residency == Residency::Device)
      fail("the CPU backend cannot read ", what, layer >= 0 ? cat(" of layer ", layer) : std::string(),
           ": its bytes are in device memory");
  };
  check(w.token_embd, "the token embedding", -1);
  check(w.output_norm, "the output norm", -1);
  check(w.output, "the output head", -1);
  for (size_t l = 0; l < w.layers.size(); ++l) {
    const LayerWeights& L = w.layers[l];
    const auto li = static_cast<int64_t>(l);
    for (const WeightView* v : {&L.attn_norm, &L.wq, &L.wk, &L.wv, &L.wo, &L.ffn_norm, &L.router}) check(*v, "a weight", li);
    for (const auto* experts : {&L.ffn_gate, &L.ffn_up, &L.ffn_down})
      for (const WeightView& v : *experts) check(v, "an expert weight", li);
  }
}

}  // namespace

CpuBackend::CpuBackend(std::shared_ptr<const ModelSpec> spec, ThreadPool& pool, int64_t max_batch_tokens,
                       Precision precision)
    : spec_(std::move(spec)), hp_(spec_->hp), w_(spec_->weights), pool_(&pool), max_batch_(max_batch_tokens),
      precision_(precision), expert_counts_(hp_.n_layer, hp_.n_expert) {
  check_host_readable(w_);
  ws_ = std::make_unique<Workspace>(hp_, max_batch_, pool_->size());
}

CpuBackend::~CpuBackend() = default;

std::vector<std::vector<int64_t>> CpuBackend::expert_token_counts() const { return expert_counts_.snapshot(); }

void CpuBackend::reset_expert_token_counts() { expert_counts_.reset(); }

// ---------------------------------------------------------------------------------------------------
// Forward

Activations CpuBackend::activations(const float* x, int64_t n, int64_t cols, const TensorView& w) {
  return kernels::prepare_activations(x, n, cols, w.type, precision_, ws_->act, ws_->L.act_bytes, *pool_);
}

void CpuBackend::matmul(const TensorView& w, Activations& a, float* y) {
  // Consecutive matmuls over the same input (Q, K, V; gate, up) share one quantization unless their
  // weight types want different activation blocks (Q4_K_M files mix Q4_K and Q8_0, say).
  if (!kernels::activations_fit(a, w.type, precision_)) a = activations(a.x, a.n_tok, a.cols, w);
  kernels::matmul(w, a, y, precision_, *pool_, ws_->deq);
}

Activations CpuBackend::activations_in(uint8_t* buf, const float* x, int64_t n, int64_t cols, const TensorView& w) {
  return kernels::prepare_activations(x, n, cols, w.type, precision_, buf, ws_->L.act_bytes, *pool_);
}

Activations CpuBackend::slice(const Activations& a, int64_t first, int64_t m) {
  Activations s = a;
  s.x = a.x + first * a.cols;
  if (a.q) s.q = a.q + static_cast<size_t>(first) * a.q_row_bytes;
  s.n_tok = m;
  return s;
}

void CpuBackend::run_matmuls(const std::vector<MatmulJob>& jobs) {
  std::vector<ThreadPool::Loop> loops;
  loops.reserve(jobs.size());
  for (const MatmulJob& j : jobs) loops.push_back(kernels::matmul_loop(*j.w, j.a, j.y, precision_, ws_->deq));
  pool_->parallel_for_all(loops);
}

void CpuBackend::matmuls_same_input(const float* x, int64_t n, int64_t cols,
                                    std::initializer_list<std::pair<const TensorView*, float*>> outs) {
  // Quantize x once per activation layout the matrices need (two buffers), and run every product whose
  // activations exist in one region; a third layout (not seen in practice) flushes the first two.
  uint8_t* bufs[2] = {ws_->act, ws_->act2};
  std::vector<Activations> made;
  std::vector<MatmulJob> jobs;
  for (const auto& [w, y] : outs) {
    const Activations* fit = nullptr;
    for (const Activations& a : made)
      if (kernels::activations_fit(a, w->type, precision_)) fit = &a;
    if (!fit) {
      if (made.size() == 2) {
        run_matmuls(jobs);
        jobs.clear();
        made.clear();
      }
      made.push_back(activations_in(bufs[made.size()], x, n, cols, *w));
      fit = &made.back();
    }
    jobs.push_back({w, *fit, y});
  }
  run_matmuls(jobs);
}

void CpuBackend::forward(const Batch& b, kv::Cache& cache, ForwardResult& result, const ForwardOptions& options) {
  const int64_t n = b.size();
  for (int64_t begin = 0; begin < n; begin += max_batch_)
    run_chunk(b, begin, std::min(n, begin + max_batch_), cache, result, options);
}

void CpuBackend::run_chunk(const Batch& b, int64_t begin, int64_t end, kv::Cache& cache, ForwardResult& result,
                      const ForwardOptions& options) {
  Workspace& W = *ws_;
  const int64_t n = end - begin, E = hp_.n_embd;

  tables_.resize(static_cast<size_t>(n));
  chunk_pos_.resize(static_cast<size_t>(n));
  chunk_lora_.assign(static_cast<size_t>(n), nullptr);
  chunk_adapters_.clear();
  for (int64_t t = 0; t < n; ++t) {
    tables_[t] = cache.block_table(b.seq_ids[begin + t]).data();
    chunk_pos_[t] = b.positions[begin + t];
    if (!b.adapters.empty() && b.adapters[begin + t]) {
      const LoraAdapter* a = b.adapters[begin + t];
      chunk_lora_[t] = a;
      if (std::find(chunk_adapters_.begin(), chunk_adapters_.end(), a) == chunk_adapters_.end())
        chunk_adapters_.push_back(a);
    }
  }

  // Embeddings and each token's RoPE rotation.
  const TensorView& emb = w_.token_embd;
  for (int64_t t = 0; t < n; ++t) {
    quant::dequantize_row(emb.type, emb.row(b.tokens[begin + t]), W.x + t * E, E);
    kernels::rope_table(chunk_pos_[t], hp_.n_rot, hp_.rope_freq_base, W.rope + t * std::max<int64_t>(hp_.n_rot, 2));
  }

  for (int64_t l = 0; l < hp_.n_layer; ++l) {
    attention_block(l, n, cache);
    ffn_block(l, n);
    // Routing trace (opt-in, ForwardOptions::routing): copy this layer's top-k of each output entry.
    if (options.routing) {
      const int64_t k = std::max<int64_t>(hp_.n_expert_used, 1);
      int64_t row = result.n_outputs;
      for (int64_t t = 0; t < n; ++t) {
        if (!b.want_logits[begin + t]) continue;
        const auto dst = static_cast<size_t>((row * hp_.n_layer + l) * k);
        std::copy(W.topk_id + t * k, W.topk_id + (t + 1) * k, result.routing_experts.begin() + dst);
        std::copy(W.topk_w + t * k, W.topk_w + (t + 1) * k, result.routing_weights.begin() + dst);
        ++row;
      }
    }
  }

  // Output head for the wanted entries of this chunk, gathered into contiguous rows.
  int64_t m = 0;
  for (int64_t t = 0; t < n; ++t) {
    if (!b.want_logits[begin + t]) continue;
    kernels::rmsnorm(W.x + t * E, w_.output_norm.f32(), hp_.rms_norm_eps, E, W.gather + m * E);
    ++m;
  }
  if (m == 0) return;
  const int64_t out0 = result.n_outputs;
  if (options.hidden) std::memcpy(result.hidden.data() + out0 * E, W.gather, static_cast<size_t>(m * E) * sizeof(float));
  if (options.logits) {
    Activations a = activations(W.gather, m, E, w_.output);
    matmul(w_.output, a, result.logits.data() + out0 * hp_.n_vocab);
  }
  result.n_outputs += m;
}

void CpuBackend::attention_block(int64_t l, int64_t n, kv::Cache& cache) {
  Workspace& W = *ws_;
  const LayerWeights& L = w_.layers[static_cast<size_t>(l)];
  const int64_t E = hp_.n_embd, hd = hp_.head_dim, nh = hp_.n_head, nkv = hp_.n_head_kv;
  const int64_t QD = nh * hd, KD = nkv * hd, rope_stride = std::max<int64_t>(hp_.n_rot, 2);

  for (int64_t t = 0; t < n; ++t) kernels::rmsnorm(W.x + t * E, L.attn_norm.f32(), hp_.rms_norm_eps, E, W.xn + t * E);
  matmuls_same_input(W.xn, n, E, {{&L.wq, W.q}, {&L.wk, W.k}, {&L.wv, W.v}});  // one parallel region
  if (!chunk_adapters_.empty()) {  // LoRA side paths, before RoPE (they change the projections themselves)
    lora_add(l, LoraWhich::Q, 0, W.xn, n, E, W.q, QD, nullptr);
    lora_add(l, LoraWhich::K, 0, W.xn, n, E, W.k, KD, nullptr);
    lora_add(l, LoraWhich::V, 0, W.xn, n, E, W.v, KD, nullptr);
  }

  // RoPE, then each token's K and V into its sequence's block at its position.
  const GgmlType kvt = cache.element_type();
  using Part = kv::Cache::Part;
  for (int64_t t = 0; t < n; ++t) {
    const float* cs = W.rope + t * rope_stride;
    const auto rope = hp_.rope_rotate_half ? kernels::rope_apply_rotate_half : kernels::rope_apply;
    rope(W.q + t * QD, nh, hd, hp_.n_rot, cs);
    rope(W.k + t * KD, nkv, hd, hp_.n_rot, cs);
    const int64_t pos = chunk_pos_[t];
    kernels::store_kv_row(kvt, W.k + t * KD, KD, cache.row_for_write(tables_[t], l, Part::K, pos));
    kernels::store_kv_row(kvt, W.v + t * KD, KD, cache.row_for_write(tables_[t], l, Part::V, pos));
  }

  // Causal attention: token t attends to positions [0, pos] of its own sequence.
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
  const int64_t group = nh / nkv;
  auto head = [&](int64_t task, int thread) {
    const int64_t t = task / nh, h = task % nh;
    const kv::PagedRows K = cache.rows(tables_[t], l, Part::K);
    const kv::PagedRows V = cache.rows(tables_[t], l, Part::V);
    kernels::attend_head(W.q + t * QD + h * hd, K, V, (h / group) * hd, hd, chunk_pos_[t] + 1, scale,
                         W.att + t * QD + h * hd, W.attn + static_cast<size_t>(thread) * W.L.attn_bytes_per_thread,
                         precision_);
  };
  // Small work (a short context on a tiny model) is not worth waking the workers for.
  int64_t work = 0;
  for (int64_t t = 0; t < n; ++t) work += (chunk_pos_[t] + 1) * 2 * QD;
  if (work < 65536) {
    for (int64_t task = 0; task < n * nh; ++task) head(task, 0);
  } else {
    pool_->run(n * nh, head);
  }

  Activations ao = activations(W.att, n, QD, L.wo);
  matmul(L.wo, ao, W.proj);
  if (!chunk_adapters_.empty()) lora_add(l, LoraWhich::O, 0, W.att, n, QD, W.proj, E, nullptr);
  for (int64_t t = 0; t < n; ++t) kernels::add(W.x + t * E, W.proj + t * E, E);
}

void CpuBackend::ffn_block(int64_t l, int64_t n) {
  Workspace& W = *ws_;
  const LayerWeights& L = w_.layers[static_cast<size_t>(l)];
  const int64_t E = hp_.n_embd, F = hp_.n_ff;
  const int64_t n_exp = std::max<int64_t>(hp_.n_expert, 1), k = std::max<int64_t>(hp_.n_expert_used, 1);

  for (int64_t t = 0; t < n; ++t) kernels::rmsnorm(W.x + t * E, L.ffn_norm.f32(), hp_.rms_norm_eps, E, W.xn + t * E);

  // Routing: softmax over the router logits, the top k (ties to the lower expert id), their weights
  // renormalised to sum 1. A dense model sends every token to its one FFN with weight 1.
  if (hp_.is_moe()) {
    Activations ar = activations(W.xn, n, E, L.router);
    matmul(L.router, ar, W.router);
    for (int64_t t = 0; t < n; ++t)
      kernels::route_top_k(W.router + t * n_exp, n_exp, k, W.topk_id + t * k, W.topk_w + t * k);
  } else {
    for (int64_t t = 0; t < n; ++t) {
      W.topk_id[t] = 0;
      W.topk_w[t] = 1.0f;
    }
  }

  // Group the tokens by expert (a counting sort: tokens keep batch order inside each group).
  std::fill(W.offsets, W.offsets + n_exp + 1, 0);
  for (int64_t i = 0; i < n * k; ++i) ++W.offsets[W.topk_id[i] + 1];
  for (int64_t e = 0; e < n_exp; ++e) W.offsets[e + 1] += W.offsets[e];
  for (int64_t e = 0; e < n_exp; ++e)
    expert_counts_.add(l, e, W.offsets[e + 1] - W.offsets[e]);
  std::copy(W.offsets, W.offsets + n_exp, W.cursor);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t j = 0; j < k; ++j) {
      const int32_t e = W.topk_id[t * k + j];
      W.order[W.cursor[e]] = static_cast<int32_t>(t);
      W.order_w[W.cursor[e]] = W.topk_w[t * k + j];
      ++W.cursor[e];
    }

  // Each expert once over its tokens: gather, gate and up, SwiGLU, down, weighted scatter-add. Experts
  // run in id order, so every token sums its experts' outputs in the same order whatever the batch.
  // Consecutive experts whose tokens fit the buffers together (a wave: all of them in decode) share
  // one parallel region for every gate and up product and one for every down product: each expert's
  // rows are a slice of the wave's, computed exactly as alone, so results do not depend on the waves.
  std::fill(W.proj, W.proj + n * E, 0.0f);
  std::vector<MatmulJob> jobs;
  for (int64_t e0 = 0; e0 < n_exp;) {
    int64_t e1 = e0;
    while (e1 < n_exp && W.offsets[e1 + 1] - W.offsets[e0] <= max_batch_) ++e1;
    const int64_t base = W.offsets[e0], rows = W.offsets[e1] - base;
    if (rows == 0) {
      e0 = e1;
      continue;
    }
    for (int64_t i = 0; i < rows; ++i)
      std::memcpy(W.gather + i * E, W.xn + W.order[base + i] * E, static_cast<size_t>(E) * sizeof(float));
    // Row range of expert e inside the wave's buffers.
    auto first = [&](int64_t e) { return W.offsets[e] - base; };
    auto count = [&](int64_t e) { return W.offsets[e + 1] - W.offsets[e]; };
    auto all_fit = [&](const Activations& a, const std::vector<WeightView>& mats) {
      for (int64_t e = e0; e < e1; ++e)
        if (count(e) > 0 && !kernels::activations_fit(a, mats[static_cast<size_t>(e)].type, precision_)) return false;
      return true;
    };

    // SwiGLU is fused into the gate/up region (each thread finishes the rows it computed) unless LoRA
    // adapters must first add their low-rank terms to the raw gate and up products.
    bool swiglu_done = false;
    Activations a = activations(W.gather, rows, E, L.ffn_gate[static_cast<size_t>(e0)]);
    if (all_fit(a, L.ffn_gate) && all_fit(a, L.ffn_up) && chunk_adapters_.empty()) {
      std::vector<ThreadPool::Loop> loops;
      for (int64_t e = e0; e < e1; ++e) {
        if (count(e) == 0) continue;
        loops.push_back(kernels::gate_up_silu_loop(L.ffn_gate[static_cast<size_t>(e)], L.ffn_up[static_cast<size_t>(e)],
                                                   slice(a, first(e), count(e)), W.gate + first(e) * F,
                                                   W.up + first(e) * F, precision_, ws_->deq));
      }
      pool_->parallel_for_all(loops);
      swiglu_done = true;
    } else if (all_fit(a, L.ffn_gate) && all_fit(a, L.ffn_up)) {
      jobs.clear();
      for (int64_t e = e0; e < e1; ++e) {
        if (count(e) == 0) continue;
        const Activations ae = slice(a, first(e), count(e));
        jobs.push_back({&L.ffn_gate[static_cast<size_t>(e)], ae, W.gate + first(e) * F});
        jobs.push_back({&L.ffn_up[static_cast<size_t>(e)], ae, W.up + first(e) * F});
      }
      run_matmuls(jobs);
    } else {  // experts of different types: one region per expert
      for (int64_t e = e0; e < e1; ++e)
        if (count(e) > 0)
          matmuls_same_input(W.gather + first(e) * E, count(e), E,
                             {{&L.ffn_gate[static_cast<size_t>(e)], W.gate + first(e) * F},
                              {&L.ffn_up[static_cast<size_t>(e)], W.up + first(e) * F}});
    }
    if (!chunk_adapters_.empty())
      for (int64_t e = e0; e < e1; ++e) {
        if (count(e) == 0) continue;
        const int32_t* toks = W.order + W.offsets[e];  // row i of this group is chunk token toks[i]
        lora_add(l, LoraWhich::Gate, e, W.gather + first(e) * E, count(e), E, W.gate + first(e) * F, F, toks);
        lora_add(l, LoraWhich::Up, e, W.gather + first(e) * E, count(e), E, W.up + first(e) * F, F, toks);
      }
    if (!swiglu_done) kernels::silu_mul(W.gate, W.up, rows * F);

    Activations ad = activations(W.gate, rows, F, L.ffn_down[static_cast<size_t>(e0)]);
    if (all_fit(ad, L.ffn_down)) {
      jobs.clear();
      for (int64_t e = e0; e < e1; ++e)
        if (count(e) > 0) jobs.push_back({&L.ffn_down[static_cast<size_t>(e)], slice(ad, first(e), count(e)), W.down + first(e) * E});
      run_matmuls(jobs);
    } else {
      for (int64_t e = e0; e < e1; ++e)
        if (count(e) > 0) {
          Activations ae = activations(W.gate + first(e) * F, count(e), F, L.ffn_down[static_cast<size_t>(e)]);
          matmul(L.ffn_down[static_cast<size_t>(e)], ae, W.down + first(e) * E);
        }
    }
    for (int64_t e = e0; e < e1; ++e) {
      if (count(e) == 0) continue;
      const int32_t* toks = W.order + W.offsets[e];
      if (!chunk_adapters_.empty())
        lora_add(l, LoraWhich::Down, e, W.gate + first(e) * F, count(e), F, W.down + first(e) * E, E, toks);
      for (int64_t i = 0; i < count(e); ++i) {
        float* dst = W.proj + toks[i] * E;
        const float* src = W.down + (first(e) + i) * E;
        const float wgt = W.order_w[W.offsets[e] + i];
        for (int64_t c = 0; c < E; ++c) dst[c] += wgt * src[c];
      }
    }
    e0 = e1;
  }
  for (int64_t t = 0; t < n; ++t) kernels::add(W.x + t * E, W.proj + t * E, E);
}

// ---------------------------------------------------------------------------------------------------
// LoRA side path

void CpuBackend::lora_add(int64_t l, LoraWhich which, int64_t e, const float* x, int64_t m, int64_t in, float* y,
                          int64_t out, const int32_t* tok) {
  auto pick = [&](const LoraLayer& L) -> const LoraPair* {
    auto expert = [&](const std::vector<LoraPair>& v) { return static_cast<size_t>(e) < v.size() ? &v[static_cast<size_t>(e)] : nullptr; };
    switch (which) {
      case LoraWhich::Q: return &L.q;
      case LoraWhich::K: return &L.k;
      case LoraWhich::V: return &L.v;
      case LoraWhich::O: return &L.o;
      case LoraWhich::Gate: return expert(L.gate);
      case LoraWhich::Up: return expert(L.up);
      case LoraWhich::Down: return expert(L.down);
    }
    return nullptr;
  };
  for (const LoraAdapter* adapter : chunk_adapters_) {
    // This adapter's rows; all of them (the usual case of one adapter per step) need no gather.
    lora_rows_.clear();
    for (int64_t i = 0; i < m; ++i)
      if (chunk_lora_[static_cast<size_t>(tok ? tok[i] : i)] == adapter) lora_rows_.push_back(static_cast<int32_t>(i));
    const auto k = static_cast<int64_t>(lora_rows_.size());
    if (k == 0) continue;
    const bool all = k == m;
    for (const LoraAdapter::Part& part : adapter->parts()) {
      const LoraPair* p = pick(part.weights->layers[static_cast<size_t>(l)]);
      if (!p || !p->present()) continue;
      const int64_t r = p->a.rows;
      auto grow = [](std::vector<float>& v, int64_t count) {
        if (v.size() < static_cast<size_t>(count)) v.resize(static_cast<size_t>(count));
      };
      grow(lora_h_, k * r);
      grow(lora_out_, k * out);
      grow(lora_deq_, static_cast<int64_t>(pool_->size()) * std::max(in, r));
      if (all) {
        lora_apply(*p, part.scale, x, k, y, precision_, *pool_, lora_h_.data(), lora_out_.data(), lora_deq_.data());
        continue;
      }
      grow(lora_x_, k * in);
      grow(lora_y_, k * out);
      for (int64_t i = 0; i < k; ++i)
        std::memcpy(lora_x_.data() + i * in, x + lora_rows_[static_cast<size_t>(i)] * in, static_cast<size_t>(in) * sizeof(float));
      std::fill(lora_y_.begin(), lora_y_.begin() + k * out, 0.0f);
      lora_apply(*p, part.scale, lora_x_.data(), k, lora_y_.data(), precision_, *pool_, lora_h_.data(), lora_out_.data(),
                 lora_deq_.data());
      for (int64_t i = 0; i < k; ++i) {
        float* dst = y + lora_rows_[static_cast<size_t>(i)] * out;
        const float* src = lora_y_.data() + i * out;
        for (int64_t c = 0; c < out; ++c) dst[c] += src[c];
      }
    }
  }
}

}  // namespace moe::model
