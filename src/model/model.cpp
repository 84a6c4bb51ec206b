// model.cpp: loading and the forward pass (see model.h). The pass reads top to bottom: embed, then per
// layer attention_block and ffn_block, then the output head for the wanted tokens. All buffers live in
// one Workspace allocated at load for max_batch_tokens; forward() allocates nothing large.
#include "model/model.h"

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
// single definition of their sizes: Model::workspace_bytes() (the planner) and the allocation use it.

struct Model::Workspace {
  struct Layout {
    size_t x, xn, q, k, v, att, proj, router, topk_id, topk_w, order, order_w, offsets, cursor, gather, gate, up, down;
    size_t act, deq, attn, rope;
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
    act = arena + L.act; deq = f(L.deq); attn = arena + L.attn; rope = f(L.rope);
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
  float* deq;                                // [threads][max cols] dequantized weight rows (Exact)
  uint8_t* attn;                             // [threads] attention scratch
  float* rope;                               // [B][n_rot] cos/sin per token
};

uint64_t Model::workspace_bytes(const HParams& hp, int64_t max_batch_tokens, int n_threads) {
  return Workspace::layout(hp, max_batch_tokens, n_threads).total;
}

// ---------------------------------------------------------------------------------------------------
// Loading

std::unique_ptr<Model> Model::load(const std::string& path, const ModelOptions& options) {
  return std::make_unique<Model>(gguf::File::open(path), options);
}

Model::Model(gguf::File file, const ModelOptions& options) : file_(std::move(file)) {
  hp_ = HParams::from_gguf(file_);
  w_ = Weights::from_gguf(file_, hp_);
  if (options.pool) {
    pool_ = options.pool;
  } else {
    own_pool_ = std::make_unique<ThreadPool>(options.n_threads > 0 ? options.n_threads : physical_core_count());
    pool_ = own_pool_.get();
  }
  if (options.max_batch_tokens < 1 || options.max_batch_tokens > (1 << 20))
    fail("max batch tokens ", options.max_batch_tokens, " is outside [1, 1048576]");
  max_batch_ = options.max_batch_tokens;
  precision_ = options.precision;
  ws_ = std::make_unique<Workspace>(hp_, max_batch_, pool_->size());
  n_counts_ = static_cast<size_t>(hp_.n_layer * std::max<int64_t>(hp_.n_expert, 1));
  expert_counts_ = std::make_unique<std::atomic<int64_t>[]>(n_counts_);
  reset_expert_token_counts();
}

Model::~Model() = default;

kv::Geometry Model::kv_geometry(kv::KvType type) const {
  return kv::Geometry{type, hp_.n_layer, hp_.n_head_kv, hp_.head_dim};
}

std::vector<std::vector<int64_t>> Model::expert_token_counts() const {
  const int64_t ne = std::max<int64_t>(hp_.n_expert, 1);
  std::vector<std::vector<int64_t>> out(static_cast<size_t>(hp_.n_layer));
  for (int64_t l = 0; l < hp_.n_layer; ++l)
    for (int64_t e = 0; e < ne; ++e)
      out[static_cast<size_t>(l)].push_back(expert_counts_[static_cast<size_t>(l * ne + e)].load(std::memory_order_relaxed));
  return out;
}

void Model::reset_expert_token_counts() {
  for (size_t i = 0; i < n_counts_; ++i) expert_counts_[i].store(0, std::memory_order_relaxed);
}

// ---------------------------------------------------------------------------------------------------
// Forward

namespace {

GgmlType kv_element_type(kv::KvType t) {
  switch (t) {
    case kv::KvType::F32: return GgmlType::F32;
    case kv::KvType::F16: return GgmlType::F16;
    case kv::KvType::BF16: return GgmlType::BF16;
    case kv::KvType::Q8_0: return GgmlType::Q8_0;
    default: fail("KV cache type ", kv::kv_type_name(t), " is not supported by the model");
  }
}

}  // namespace

Activations Model::activations(const float* x, int64_t n, int64_t cols, const TensorView& w) {
  return kernels::prepare_activations(x, n, cols, w.type, precision_, ws_->act, ws_->L.act_bytes, *pool_);
}

void Model::matmul(const TensorView& w, Activations& a, float* y) {
  // Consecutive matmuls over the same input (Q, K, V; gate, up) share one quantization unless their
  // weight types want different activation blocks (Q4_K_M files mix Q4_K and Q8_0, say).
  if (!kernels::activations_fit(a, w.type, precision_)) a = activations(a.x, a.n_tok, a.cols, w);
  kernels::matmul(w, a, y, precision_, *pool_, ws_->deq);
}

void Model::forward(const Batch& b, kv::Cache& cache, ForwardResult& result, const ForwardOptions& options) {
  const int64_t n = b.size();
  if (b.positions.size() != b.tokens.size() || b.seq_ids.size() != b.tokens.size() ||
      b.want_logits.size() != b.tokens.size())
    fail("batch fields have different lengths (tokens ", b.tokens.size(), ", positions ", b.positions.size(),
         ", seq_ids ", b.seq_ids.size(), ", want_logits ", b.want_logits.size(), ")");
  const kv::Geometry& g = cache.geometry();
  if (g.n_layer != hp_.n_layer || g.n_head_kv != hp_.n_head_kv || g.head_dim != hp_.head_dim)
    fail("the KV cache was made for another model (layers ", g.n_layer, ", KV heads ", g.n_head_kv, ", head size ",
         g.head_dim, ")");
  kv_element_type(g.type);

  // Check every entry, and each sequence's positions, before touching the cache. `next` tracks the
  // position each sequence expects next: the cached length at first, then one past its last entry.
  auto& next = next_pos_;  // (seq, next position): few sequences per batch
  next.clear();
  auto find_next = [&](int32_t seq) -> std::pair<int32_t, int64_t>* {
    for (auto& p : next)
      if (p.first == seq) return &p;
    return nullptr;
  };
  for (int64_t i = 0; i < n; ++i) {
    const int32_t tok = b.tokens[i], pos = b.positions[i], seq = b.seq_ids[i];
    if (tok < 0 || tok >= hp_.n_vocab) fail("batch entry ", i, ": token id ", tok, " is outside [0, ", hp_.n_vocab, ")");
    if (pos < 0) fail("batch entry ", i, ": negative position ", pos);
    auto* p = find_next(seq);
    if (!p) {
      const int64_t len = cache.length(seq);
      if (pos > len)
        fail("batch entry ", i, ": sequence ", seq, " starts at position ", pos, " but only ", len,
             " positions are cached (positions must be contiguous)");
      next.emplace_back(seq, pos + 1);
    } else {
      if (pos != p->second)
        fail("batch entry ", i, ": sequence ", seq, " has position ", pos, " after position ", p->second - 1,
             " (a sequence's entries must be consecutive and in order)");
      p->second = pos + 1;
    }
  }
  int64_t blocks = 0;
  for (auto& [seq, end] : next) blocks += cache.blocks_needed(seq, end);
  if (!cache.can_allocate(blocks))
    fail("KV cache is full: this batch needs ", blocks, " more blocks, ", cache.n_free_blocks(), " of ",
         cache.n_blocks(), " are free");
  for (auto& [seq, end] : next) cache.reserve(seq, end);

  result.n_outputs = 0;
  result.output_index.clear();
  for (int64_t i = 0; i < n; ++i)
    if (b.want_logits[i]) result.output_index.push_back(static_cast<int32_t>(i));
  const auto n_out = static_cast<int64_t>(result.output_index.size());
  result.logits.resize(options.logits ? static_cast<size_t>(n_out * hp_.n_vocab) : 0);
  result.hidden.resize(options.hidden ? static_cast<size_t>(n_out * hp_.n_embd) : 0);
  // Routing trace (opt-in): filled per layer by run_chunk from the router's top-k.
  const auto n_route = options.routing ? static_cast<size_t>(n_out * hp_.n_layer * std::max<int64_t>(hp_.n_expert_used, 1)) : 0;
  result.routing_experts.resize(n_route);
  result.routing_weights.resize(n_route);

  for (int64_t begin = 0; begin < n; begin += max_batch_)
    run_chunk(b, begin, std::min(n, begin + max_batch_), cache, result, options);
  for (auto& [seq, end] : next) cache.set_length(seq, end);
}

void Model::run_chunk(const Batch& b, int64_t begin, int64_t end, kv::Cache& cache, ForwardResult& result,
                      const ForwardOptions& options) {
  Workspace& W = *ws_;
  const int64_t n = end - begin, E = hp_.n_embd;

  tables_.resize(static_cast<size_t>(n));
  chunk_pos_.resize(static_cast<size_t>(n));
  for (int64_t t = 0; t < n; ++t) {
    tables_[t] = cache.block_table(b.seq_ids[begin + t]).data();
    chunk_pos_[t] = b.positions[begin + t];
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
        std::copy(ws_->topk_id + t * k, ws_->topk_id + (t + 1) * k, result.routing_experts.begin() + dst);
        std::copy(ws_->topk_w + t * k, ws_->topk_w + (t + 1) * k, result.routing_weights.begin() + dst);
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

void Model::attention_block(int64_t l, int64_t n, kv::Cache& cache) {
  Workspace& W = *ws_;
  const LayerWeights& L = w_.layers[static_cast<size_t>(l)];
  const int64_t E = hp_.n_embd, hd = hp_.head_dim, nh = hp_.n_head, nkv = hp_.n_head_kv;
  const int64_t QD = nh * hd, KD = nkv * hd, rope_stride = std::max<int64_t>(hp_.n_rot, 2);

  for (int64_t t = 0; t < n; ++t) kernels::rmsnorm(W.x + t * E, L.attn_norm.f32(), hp_.rms_norm_eps, E, W.xn + t * E);
  Activations a = activations(W.xn, n, E, L.wq);
  matmul(L.wq, a, W.q);
  matmul(L.wk, a, W.k);
  matmul(L.wv, a, W.v);

  // RoPE, then each token's K and V into its sequence's block at its position.
  const GgmlType kvt = kv_element_type(cache.geometry().type);
  uint8_t* pool = cache.data();
  const size_t bb = cache.block_bytes(), rb = cache.row_bytes(), koff = cache.k_offset(l), voff = cache.v_offset(l);
  for (int64_t t = 0; t < n; ++t) {
    const float* cs = W.rope + t * rope_stride;
    kernels::rope_apply(W.q + t * QD, nh, hd, hp_.n_rot, cs);
    kernels::rope_apply(W.k + t * KD, nkv, hd, hp_.n_rot, cs);
    const int64_t pos = chunk_pos_[t];
    uint8_t* block = pool + static_cast<size_t>(tables_[t][pos / kv::kBlockTokens]) * bb;
    const size_t in_block = static_cast<size_t>(pos % kv::kBlockTokens) * rb;
    kernels::store_kv_row(kvt, W.k + t * KD, KD, block + koff + in_block);
    kernels::store_kv_row(kvt, W.v + t * KD, KD, block + voff + in_block);
  }

  // Causal attention: token t attends to positions [0, pos] of its own sequence.
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
  const int64_t group = nh / nkv;
  auto head = [&](int64_t task, int thread) {
    const int64_t t = task / nh, h = task % nh;
    kernels::PagedRows K{pool, tables_[t], bb, koff, rb, kv::kBlockTokens, kvt};
    kernels::PagedRows V{pool, tables_[t], bb, voff, rb, kv::kBlockTokens, kvt};
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
  for (int64_t t = 0; t < n; ++t) kernels::add(W.x + t * E, W.proj + t * E, E);
}

void Model::ffn_block(int64_t l, int64_t n) {
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
    for (int64_t t = 0; t < n; ++t) {
      float* p = W.router + t * n_exp;
      kernels::softmax(p, n_exp);
      int32_t* ids = W.topk_id + t * k;
      float* ws = W.topk_w + t * k;
      double sum = 0;
      for (int64_t j = 0; j < k; ++j) {
        int32_t best = -1;
        for (int32_t e = 0; e < n_exp; ++e) {
          bool taken = false;
          for (int64_t i = 0; i < j; ++i) taken |= ids[i] == e;
          if (!taken && (best < 0 || p[e] > p[best])) best = e;
        }
        ids[j] = best;
        sum += p[best];
      }
      for (int64_t j = 0; j < k; ++j) ws[j] = static_cast<float>(p[ids[j]] / sum);
    }
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
    expert_counts_[static_cast<size_t>(l * n_exp + e)].fetch_add(W.offsets[e + 1] - W.offsets[e], std::memory_order_relaxed);
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
  std::fill(W.proj, W.proj + n * E, 0.0f);
  for (int64_t e = 0; e < n_exp; ++e) {
    const int64_t first = W.offsets[e], m = W.offsets[e + 1] - first;
    if (m == 0) continue;
    for (int64_t i = 0; i < m; ++i)
      std::memcpy(W.gather + i * E, W.xn + W.order[first + i] * E, static_cast<size_t>(E) * sizeof(float));
    Activations a = activations(W.gather, m, E, L.ffn_gate[e]);
    matmul(L.ffn_gate[e], a, W.gate);
    matmul(L.ffn_up[e], a, W.up);
    kernels::silu_mul(W.gate, W.up, m * F);
    Activations ad = activations(W.gate, m, F, L.ffn_down[e]);
    matmul(L.ffn_down[e], ad, W.down);
    for (int64_t i = 0; i < m; ++i) {
      float* dst = W.proj + W.order[first + i] * E;
      const float* src = W.down + i * E;
      const float wgt = W.order_w[first + i];
      for (int64_t c = 0; c < E; ++c) dst[c] += wgt * src[c];
    }
  }
  for (int64_t t = 0; t < n; ++t) kernels::add(W.x + t * E, W.proj + t * E, E);
}

}  // namespace moe::model
