// vulkan_backend.cpp: the forward pass on a Vulkan device (see vulkan_backend.h). It reads top to
// bottom like cpu_backend.cpp: the device state (weights, workspace, staging), then a step: inputs up,
// embed, per layer attention_block and ffn_block, the output head for the wanted rows, results down.
// Placement (which experts are on the card) and the CPU experts are in vulkan_placement.cpp.
#include "model/vulkan_backend.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/attention.h"
#include "model/vulkan_backend_impl.h"
#include "util/error.h"

namespace moe::model {

// ---------------------------------------------------------------------------------------------------
// Device state

int parse_device(const std::string& device) {
  if (device == "cpu") return kCpuDevice;
  if (device == "vulkan") return kPreferredVulkanDevice;
  if (device.rfind("vulkan:", 0) == 0) {
    const std::string n = device.substr(7);
    if (!n.empty() && n.size() <= 4 && std::all_of(n.begin(), n.end(), [](char c) { return c >= '0' && c <= '9'; }))
      return std::stoi(n);
  }
  fail("unknown device '", device, "' (expected cpu, vulkan or vulkan:N; `moe info --devices` lists them)");
}

VulkanBackend::Impl::Workspace VulkanBackend::Impl::layout(const HParams& hp, int64_t B) {
  Workspace L;
  const uint64_t b = static_cast<uint64_t>(B), f = 4;
  const uint64_t E = static_cast<uint64_t>(hp.n_embd), F = static_cast<uint64_t>(hp.n_ff);
  const uint64_t QD = static_cast<uint64_t>(hp.n_head * hp.head_dim), KD = static_cast<uint64_t>(hp.n_head_kv * hp.head_dim);
  const uint64_t NE = static_cast<uint64_t>(std::max<int64_t>(hp.n_expert, 1));
  const uint64_t K = static_cast<uint64_t>(std::max<int64_t>(hp.n_expert_used, 1));
  const uint64_t V = static_cast<uint64_t>(hp.n_vocab);
  L.sizes = {
      {"token ids", b * f},        {"positions", b * f},           {"table starts", b * f},
      {"output rows", b * f},      {"residual stream", b * E * f}, {"normed activations", b * E * f},
      {"queries", b * QD * f},     {"keys", b * KD * f},           {"values", b * KD * f},
      {"attention output", b * QD * f}, {"projection output", b * E * f}, {"router logits", b * NE * f},
      {"chosen experts", b * K * f}, {"expert weights", b * K * f}, {"expert offsets", (NE + 1) * f},
      {"slot tokens", b * K * f},  {"token slots", b * K * f},     {"expert gate", b * K * F * f},
      {"expert up", b * K * F * f}, {"expert down", b * K * E * f}, {"output rows normed", b * E * f},
      {"logits", b * V * f},
  };
  for (auto& [name, bytes] : L.sizes) L.total += (bytes + 255) / 256 * 256;
  return L;
}

uint64_t VulkanBackend::device_workspace_bytes(const HParams& hp, int64_t max_batch_tokens) {
  return Impl::layout(hp, max_batch_tokens).total;
}

uint64_t VulkanBackend::default_budget(const vk::DeviceInfo& info) {
  // The driver, the display and other programs keep some memory: leave a tenth, at least 512 MiB.
  const uint64_t reserve = std::max<uint64_t>(info.device_local_bytes / 10, 512ull << 20);
  return info.device_local_bytes > reserve ? info.device_local_bytes - reserve : 0;
}

vk::DeviceMatrix VulkanBackend::Impl::DevMatrix::mat() const {
  vk::DeviceMatrix m;
  m.type = type;
  m.rows = rows;
  m.cols = cols;
  m.data = vk::BufferRef(buf, 0, bytes);
  return m;
}

VulkanBackend::Impl::DevMatrix VulkanBackend::Impl::upload(const TensorView& v, const std::string& what) {
  if (!vk::matmul_supported(v.type))
    fail(what, " has type ", type_name(v.type), ", which the Vulkan shaders do not run");
  if (v.repacked)  // a spec shared with a CPU model that repacked it (model/repack.h): not the GGUF bytes
    fail(what, " is repacked for the CPU kernels; a Vulkan model needs a spec loaded without repacking");
  const uint64_t bytes = v.rows * v.row_bytes;
  if (bytes > ctx->info().max_storage_buffer_range)
    fail(what, " takes ", bytes, " bytes, more than one storage buffer binding of ", ctx->info().name, " spans (",
         ctx->info().max_storage_buffer_range, " bytes)");
  DevMatrix d;
  d.type = v.type;
  d.rows = v.rows;
  d.cols = v.cols;
  d.bytes = bytes;
  d.buf = ctx->buffer((bytes + 15) / 16 * 16, vk::MemoryKind::Device);
  ctx->upload(vk::BufferRef(d.buf, 0, bytes), v.data);
  return d;
}

vk::Buffer VulkanBackend::Impl::upload_vector(const TensorView& v) {
  const uint64_t bytes = static_cast<uint64_t>(v.cols) * sizeof(float);
  vk::Buffer b = ctx->buffer((bytes + 15) / 16 * 16, vk::MemoryKind::Device);
  ctx->upload(vk::BufferRef(b, 0, bytes), v.data);
  return b;
}

VulkanBackend::VulkanBackend(std::shared_ptr<const ModelSpec> spec, ThreadPool& pool, int64_t max_batch_tokens,
                             Precision precision, int device_index, uint64_t gpu_memory)
    : spec_(std::move(spec)), hp_(spec_->hp), w_(spec_->weights), pool_(&pool), max_batch_(max_batch_tokens),
      precision_(precision), im_(std::make_unique<Impl>()), expert_counts_(hp_.n_layer, hp_.n_expert) {
  std::string why;
  const std::vector<vk::DeviceInfo> devices = vk::list_devices(&why);
  if (devices.empty()) fail("no Vulkan device: ", why);
  if (device_index == kPreferredVulkanDevice) device_index = vk::preferred_device(devices);
  if (device_index < 0 || device_index >= static_cast<int>(devices.size()))
    fail("no Vulkan device ", device_index, ": this machine has ", devices.size(), " (vulkan:0 to vulkan:",
         devices.size() - 1, "; `moe info --devices` lists them)");
  Impl& I = *im_;
  I.ctx = std::make_unique<vk::Context>(device_index);
  I.stream = std::make_unique<vk::Stream>(*I.ctx);
  const vk::DeviceInfo& info = I.ctx->info();
  budget_ = gpu_memory ? gpu_memory : default_budget(info);

  // Which experts fit (the KV mirror is added when the first cache arrives: bind_cache re-places then).
  I.ws = Impl::layout(hp_, max_batch_);
  I.sizes = placement_sizes(hp_, w_);
  placement_ = place_experts(I.sizes, budget_, I.ws.total, 0, {});

  // The workspace: one buffer per activation, each within one binding's range.
  for (const auto& [name, bytes] : I.ws.sizes) {
    if (bytes > info.max_storage_buffer_range)
      fail("the Vulkan workspace's ", name, " for ", max_batch_, " tokens takes ", bytes, " bytes, more than one ",
           "storage buffer binding of ", info.name, " spans (", info.max_storage_buffer_range,
           " bytes): use a smaller batch (--batch-size)");
    I.bufs.push_back(std::make_unique<vk::Buffer>(I.ctx->buffer(std::max<uint64_t>(bytes, 16), vk::MemoryKind::Device)));
  }

  // Staging: the step's inputs up, its results (and, for split placement, the CPU experts' inputs) down.
  const uint64_t B = static_cast<uint64_t>(max_batch_), E = static_cast<uint64_t>(hp_.n_embd);
  const uint64_t K = static_cast<uint64_t>(std::max<int64_t>(hp_.n_expert_used, 1));
  const uint64_t NE = static_cast<uint64_t>(std::max<int64_t>(hp_.n_expert, 1));
  const uint64_t L = static_cast<uint64_t>(hp_.n_layer), KD = static_cast<uint64_t>(hp_.n_head_kv * hp_.head_dim);
  I.up_inputs = I.ctx->buffer(4 * B * 4, vk::MemoryKind::Upload);
  I.up_down = I.ctx->buffer(B * K * E * 4, vk::MemoryKind::Upload);
  I.rb_logits = I.ctx->buffer(B * static_cast<uint64_t>(hp_.n_vocab) * 4, vk::MemoryKind::Readback);
  I.rb_hidden = I.ctx->buffer(B * E * 4, vk::MemoryKind::Readback);
  I.rb_route = I.ctx->buffer(L * B * K * 8, vk::MemoryKind::Readback);
  I.rb_offsets = I.ctx->buffer(L * (NE + 1) * 4, vk::MemoryKind::Readback);
  I.rb_kv = I.ctx->buffer(L * 2 * B * KD * 4, vk::MemoryKind::Readback);
  I.rb_xn = I.ctx->buffer(B * E * 4, vk::MemoryKind::Readback);
  I.rb_slots = I.ctx->buffer(B * K * 4, vk::MemoryKind::Readback);

  // The weights: everything but the experts, then the experts placement_ put on the card.
  I.token_embd = I.upload(w_.token_embd, "the token embedding");
  I.output_norm = I.upload_vector(w_.output_norm);
  if (!w_.output_tied) I.output = I.upload(w_.output, "the output head");
  I.layers.resize(static_cast<size_t>(hp_.n_layer));
  for (int64_t l = 0; l < hp_.n_layer; ++l) {
    const LayerWeights& W = w_.layers[static_cast<size_t>(l)];
    Impl::Layer& D = I.layers[static_cast<size_t>(l)];
    const std::string at = cat(" of layer ", l);
    D.attn_norm = I.upload_vector(W.attn_norm);
    D.ffn_norm = I.upload_vector(W.ffn_norm);
    D.wq = I.upload(W.wq, "attn_q" + at);
    D.wk = I.upload(W.wk, "attn_k" + at);
    D.wv = I.upload(W.wv, "attn_v" + at);
    D.wo = I.upload(W.wo, "attn_output" + at);
    if (hp_.is_moe()) D.router = I.upload(W.router, "the router" + at);
    D.gate.resize(W.ffn_gate.size());
    D.up.resize(W.ffn_up.size());
    D.down.resize(W.ffn_down.size());
  }
  for (int64_t l = 0; l < hp_.n_layer; ++l)
    for (size_t e = 0; e < placement_.on_card[static_cast<size_t>(l)].size(); ++e)
      if (placement_.on_card[static_cast<size_t>(l)][e]) upload_expert(l, static_cast<int64_t>(e));
  I.cpu_experts_any = placement_.experts_on_card < placement_.experts_total;
}

// Impl declares the context first, so its buffers are freed before it.
VulkanBackend::~VulkanBackend() = default;

const vk::DeviceInfo& VulkanBackend::device() const { return im_->ctx->info(); }
vk::Context& VulkanBackend::context() { return *im_->ctx; }

uint64_t VulkanBackend::workspace_bytes() const { return im_->ws.total; }

std::vector<std::vector<int64_t>> VulkanBackend::expert_token_counts() const { return expert_counts_.snapshot(); }

void VulkanBackend::reset_expert_token_counts() { expert_counts_.reset(); }

// The device mirror of `cache`: made (and filled from the host blocks, which every step keeps current)
// when a cache other than the last one arrives.
void VulkanBackend::bind_cache(kv::Cache& cache) {
  Impl& I = *im_;
  if (I.kv_cache == &cache && I.kv_data == cache.data() && I.kv_blocks == cache.n_blocks() && I.kv.valid()) return;
  I.kv = {};
  I.kv_cache = nullptr;
  const uint64_t bytes = cache.bytes();
  if (bytes > I.ctx->info().max_storage_buffer_range)
    fail("the KV cache takes ", bytes, " bytes, more than one storage buffer binding of ", I.ctx->info().name,
         " spans (", I.ctx->info().max_storage_buffer_range, " bytes): use a shorter context");
  if (bytes != placement_.kv_bytes) {
    // Room for the mirror: fewer experts on the card if need be (the same choice rule as at load).
    DevicePlacement p = place_experts(I.sizes, budget_, I.ws.total, bytes, expert_token_counts());
    if (p.on_card != placement_.on_card) place(p.on_card);
    placement_.kv_bytes = bytes;
  }
  I.kv = I.ctx->buffer((bytes + 15) / 16 * 16, vk::MemoryKind::Device);
  I.ctx->upload(vk::BufferRef(I.kv, 0, bytes), cache.data());
  I.kv_cache = &cache;
  I.kv_data = cache.data();
  I.kv_blocks = cache.n_blocks();
}

void VulkanBackend::Impl::see(std::initializer_list<const vk::Buffer*> readbacks) {
  uint8_t word[16];
  for (const vk::Buffer* b : readbacks) ctx->download(vk::BufferRef(*b, 0, std::min<uint64_t>(16, b->bytes())), word);
}

vk::PagedKv VulkanBackend::Impl::paged(const kv::Cache& cache, int64_t layer) const {
  vk::PagedKv p;
  p.data = vk::BufferRef(kv, 0, cache.bytes());
  p.element = cache.element_type();
  p.block_bytes = cache.block_bytes();
  p.row_bytes = cache.row_bytes();
  p.k_offset = cache.k_offset(layer);
  p.v_offset = cache.v_offset(layer);
  p.block_tokens = kv::kBlockTokens;
  return p;
}

// ---------------------------------------------------------------------------------------------------
// Forward

void VulkanBackend::forward(const Batch& b, kv::Cache& cache, ForwardResult& result, const ForwardOptions& options) {
  for (const LoraAdapter* a : b.adapters)
    if (a) fail("LoRA adapters run on the CPU backend only (--device cpu); the Vulkan backend does not apply them");
  bind_cache(cache);
  const int64_t n = b.size();
  for (int64_t begin = 0; begin < n; begin += max_batch_)
    run_chunk(b, begin, std::min(n, begin + max_batch_), cache, result, options);
}

void VulkanBackend::run_chunk(const Batch& b, int64_t begin, int64_t end, kv::Cache& cache, ForwardResult& result,
                              const ForwardOptions& options) {
  Impl& I = *im_;
  vk::Stream& s = *I.stream;
  const int64_t n = end - begin, E = hp_.n_embd, B = max_batch_;
  const int64_t k = std::max<int64_t>(hp_.n_expert_used, 1), L = hp_.n_layer;

  // Inputs: token ids, positions, where each token's block table starts, the output rows, and the
  // step's block tables (each sequence's once).
  auto* in = static_cast<int32_t*>(I.up_inputs.mapped());
  int32_t *ids = in, *pos = in + B, *tstart = in + 2 * B, *outs = in + 3 * B;
  I.seq_start.clear();
  I.table_words.clear();
  int64_t m = 0;
  for (int64_t t = 0; t < n; ++t) {
    const int32_t seq = b.seq_ids[begin + t];
    ids[t] = b.tokens[begin + t];
    pos[t] = b.positions[begin + t];
    int32_t start = -1;
    for (const auto& [sq, st] : I.seq_start)
      if (sq == seq) start = st;
    if (start < 0) {
      start = static_cast<int32_t>(I.table_words.size());
      const std::vector<int32_t>& table = cache.block_table(seq);
      I.table_words.insert(I.table_words.end(), table.begin(), table.end());
      I.seq_start.emplace_back(seq, start);
    }
    tstart[t] = start;
    if (b.want_logits[begin + t]) outs[m++] = static_cast<int32_t>(t);
  }
  const uint64_t table_bytes = std::max<uint64_t>(I.table_words.size(), 4) * 4;
  if (!I.tables.valid() || I.tables.bytes() < table_bytes) {
    const uint64_t cap = std::max<uint64_t>(table_bytes * 2, 4096);
    I.tables = I.ctx->buffer(cap, vk::MemoryKind::Device);
    I.up_tables = I.ctx->buffer(cap, vk::MemoryKind::Upload);
  }
  std::memcpy(I.up_tables.mapped(), I.table_words.data(), I.table_words.size() * 4);

  const uint64_t nb = static_cast<uint64_t>(n) * 4;
  s.copy(vk::BufferRef(I.up_inputs, 0, nb), I.ref(Impl::kIds, nb));
  s.copy(vk::BufferRef(I.up_inputs, static_cast<uint64_t>(B) * 4, nb), I.ref(Impl::kPos, nb));
  s.copy(vk::BufferRef(I.up_inputs, static_cast<uint64_t>(2 * B) * 4, nb), I.ref(Impl::kTableStart, nb));
  if (m > 0) s.copy(vk::BufferRef(I.up_inputs, static_cast<uint64_t>(3 * B) * 4, static_cast<uint64_t>(m) * 4), I.ref(Impl::kOutRows, static_cast<uint64_t>(m) * 4));
  s.copy(vk::BufferRef(I.up_tables, 0, table_bytes), vk::BufferRef(I.tables, 0, table_bytes));
  s.barrier();

  // Embeddings.
  vk::get_rows(s, I.token_embd.mat(), I.ref(Impl::kIds), I.ref(Impl::kX), n);
  s.barrier();

  for (int64_t l = 0; l < L; ++l) {
    attention_block(s, l, n, cache);
    ffn_block(s, l, n);
  }

  // Output head for the wanted rows: gathered, normed, multiplied; only those rows come back.
  const auto V = static_cast<uint64_t>(hp_.n_vocab);
  if (m > 0) {
    vk::gather_rows(s, I.ref(Impl::kX), I.ref(Impl::kOutRows), I.ref(Impl::kOutNormed), m, E);
    s.barrier();
    vk::rms_norm(s, I.ref(Impl::kOutNormed), vk::BufferRef(I.output_norm), I.ref(Impl::kOutNormed), m, E,
                 hp_.rms_norm_eps);
    s.barrier();
    const uint64_t hb = static_cast<uint64_t>(m * E) * 4, lb = static_cast<uint64_t>(m) * V * 4;
    if (options.hidden) s.copy(I.ref(Impl::kOutNormed, hb), vk::BufferRef(I.rb_hidden, 0, hb));
    if (options.logits) {
      vk::matmul(s, (w_.output_tied ? I.token_embd : I.output).mat(), I.ref(Impl::kOutNormed), I.ref(Impl::kLogits), m);
      s.barrier();
      s.copy(I.ref(Impl::kLogits, lb), vk::BufferRef(I.rb_logits, 0, lb));
    }
  }
  s.barrier();
  s.run();

  // Results: outputs, the K/V rows into the host cache, the expert counts and the routing trace.
  const int64_t out0 = result.n_outputs;
  if (m > 0 && options.logits)
    I.ctx->download(vk::BufferRef(I.rb_logits, 0, static_cast<uint64_t>(m) * V * 4),
                    result.logits.data() + out0 * static_cast<int64_t>(V));
  if (m > 0 && options.hidden)
    I.ctx->download(vk::BufferRef(I.rb_hidden, 0, static_cast<uint64_t>(m * E) * 4), result.hidden.data() + out0 * E);
  I.see({&I.rb_kv, &I.rb_offsets, &I.rb_route});
  const int64_t KD = hp_.n_head_kv * hp_.head_dim;
  const auto* kvrows = static_cast<const float*>(I.rb_kv.mapped());
  const GgmlType kvt = cache.element_type();
  for (int64_t l = 0; l < L; ++l)
    for (int64_t t = 0; t < n; ++t) {
      const int32_t* table = cache.block_table(b.seq_ids[begin + t]).data();
      const float* kr = kvrows + ((l * 2 + 0) * B + t) * KD;
      const float* vr = kvrows + ((l * 2 + 1) * B + t) * KD;
      kernels::store_kv_row(kvt, kr, KD, cache.row_for_write(table, l, kv::Cache::Part::K, pos[t]));
      kernels::store_kv_row(kvt, vr, KD, cache.row_for_write(table, l, kv::Cache::Part::V, pos[t]));
    }
  const int64_t ne = std::max<int64_t>(hp_.n_expert, 1);
  const auto* offs = static_cast<const uint32_t*>(I.rb_offsets.mapped());
  for (int64_t l = 0; l < L; ++l)
    for (int64_t e = 0; e < ne; ++e) {
      const int64_t c = hp_.is_moe() ? static_cast<int64_t>(offs[l * (ne + 1) + e + 1]) - offs[l * (ne + 1) + e] : n;
      expert_counts_.add(l, e, c);
    }
  if (options.routing && m > 0) {
    const auto* rid = static_cast<const int32_t*>(I.rb_route.mapped());
    const auto* rw = reinterpret_cast<const float*>(rid + L * B * k);
    for (int64_t i = 0; i < m; ++i) {
      const int64_t t = outs[i];
      for (int64_t l = 0; l < L; ++l) {
        const auto dst = static_cast<size_t>(((out0 + i) * L + l) * k);
        for (int64_t j = 0; j < k; ++j) {
          result.routing_experts[dst + static_cast<size_t>(j)] = hp_.is_moe() ? rid[(l * B + t) * k + j] : 0;
          result.routing_weights[dst + static_cast<size_t>(j)] = hp_.is_moe() ? rw[(l * B + t) * k + j] : 1.0f;
        }
      }
    }
  }
  result.n_outputs += m;
}

void VulkanBackend::attention_block(vk::Stream& s, int64_t l, int64_t n, kv::Cache& cache) {
  Impl& I = *im_;
  const Impl::Layer& D = I.layers[static_cast<size_t>(l)];
  const int64_t E = hp_.n_embd, hd = hp_.head_dim, nh = hp_.n_head, nkv = hp_.n_head_kv, KD = nkv * hd;
  const int64_t B = max_batch_;

  vk::rms_norm(s, I.ref(Impl::kX), vk::BufferRef(D.attn_norm), I.ref(Impl::kXn), n, E, hp_.rms_norm_eps);
  s.barrier();
  vk::matmul(s, D.wq.mat(), I.ref(Impl::kXn), I.ref(Impl::kQ), n);
  vk::matmul(s, D.wk.mat(), I.ref(Impl::kXn), I.ref(Impl::kK), n);
  vk::matmul(s, D.wv.mat(), I.ref(Impl::kXn), I.ref(Impl::kV), n);
  s.barrier();
  vk::rope(s, I.ref(Impl::kQ), I.ref(Impl::kPos), n, nh, hd, hp_.n_rot, hp_.rope_freq_base, hp_.rope_rotate_half);
  vk::rope(s, I.ref(Impl::kK), I.ref(Impl::kPos), n, nkv, hd, hp_.n_rot, hp_.rope_freq_base, hp_.rope_rotate_half);
  s.barrier();

  // K and V into the mirror at each token's position, and (for the host cache) into the readback.
  vk::TokenPages pages;
  pages.tables = vk::BufferRef(I.tables);
  pages.table_start = I.ref(Impl::kTableStart);
  pages.positions = I.ref(Impl::kPos);
  pages.n_tok = n;
  const vk::PagedKv kv = I.paged(cache, l);
  vk::kv_store(s, kv, pages, I.ref(Impl::kK), I.ref(Impl::kV), KD);
  const uint64_t rb = static_cast<uint64_t>(n * KD) * 4, stride = static_cast<uint64_t>(B * KD) * 4;
  s.copy(I.ref(Impl::kK, rb), vk::BufferRef(I.rb_kv, static_cast<uint64_t>(l * 2) * stride, rb));
  s.copy(I.ref(Impl::kV, rb), vk::BufferRef(I.rb_kv, static_cast<uint64_t>(l * 2 + 1) * stride, rb));
  s.barrier();

  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
  vk::attention(s, kv, pages, I.ref(Impl::kQ), I.ref(Impl::kAtt), nh, nkv, hd, scale);
  s.barrier();
  vk::matmul(s, D.wo.mat(), I.ref(Impl::kAtt), I.ref(Impl::kProj), n);
  s.barrier();
  vk::add(s, I.ref(Impl::kX), I.ref(Impl::kProj), n * E);
  s.barrier();
}

void VulkanBackend::ffn_block(vk::Stream& s, int64_t l, int64_t n) {
  Impl& I = *im_;
  const Impl::Layer& D = I.layers[static_cast<size_t>(l)];
  const int64_t E = hp_.n_embd, F = hp_.n_ff, B = max_batch_;
  const int64_t ne = std::max<int64_t>(hp_.n_expert, 1), k = std::max<int64_t>(hp_.n_expert_used, 1);

  vk::rms_norm(s, I.ref(Impl::kX), vk::BufferRef(D.ffn_norm), I.ref(Impl::kXn), n, E, hp_.rms_norm_eps);
  s.barrier();

  if (!hp_.is_moe()) {
    // A dense model: its one FFN over every token, added to the residual (weight 1).
    if (!D.gate[0].buf.valid()) {  // placed on the CPU
      s.copy(I.ref(Impl::kXn, static_cast<uint64_t>(n * E) * 4), vk::BufferRef(I.rb_xn, 0, static_cast<uint64_t>(n * E) * 4));
      s.barrier();
      s.run();
      cpu_experts(l, n);
    } else {
      vk::matmul(s, D.gate[0].mat(), I.ref(Impl::kXn), I.ref(Impl::kGate), n);
      vk::matmul(s, D.up[0].mat(), I.ref(Impl::kXn), I.ref(Impl::kUp), n);
      s.barrier();
      vk::swiglu(s, I.ref(Impl::kGate), I.ref(Impl::kUp), n * F);
      s.barrier();
      vk::matmul(s, D.down[0].mat(), I.ref(Impl::kGate), I.ref(Impl::kDown), n);
    }
    s.barrier();
    vk::add(s, I.ref(Impl::kX), I.ref(Impl::kDown), n * E);
    s.barrier();
    return;
  }

  // Routing: softmax, top k, renormalised weights; then the slots grouped by expert.
  vk::matmul(s, D.router.mat(), I.ref(Impl::kXn), I.ref(Impl::kRouter), n);
  s.barrier();
  vk::router_top_k(s, I.ref(Impl::kRouter), n, ne, k, I.ref(Impl::kTopkId), I.ref(Impl::kTopkW));
  s.barrier();
  vk::group_by_expert(s, I.ref(Impl::kTopkId), n, k, ne, I.ref(Impl::kOffsets), I.ref(Impl::kSlotTokens),
                      I.ref(Impl::kTokenSlots));
  // The routing (for the trace) and the offsets (for the expert counts) come back with the step.
  const uint64_t rk = static_cast<uint64_t>(n * k) * 4;
  s.copy(I.ref(Impl::kTopkId, rk), vk::BufferRef(I.rb_route, static_cast<uint64_t>(l * B * k) * 4, rk));
  s.copy(I.ref(Impl::kTopkW, rk),
         vk::BufferRef(I.rb_route, static_cast<uint64_t>((hp_.n_layer + l) * B * k) * 4, rk));
  s.barrier();
  const uint64_t ob = static_cast<uint64_t>(ne + 1) * 4;
  s.copy(I.ref(Impl::kOffsets, ob), vk::BufferRef(I.rb_offsets, static_cast<uint64_t>(l) * ob, ob));

  // The card's experts, each over its slots: gate and up, SwiGLU, down into the slot rows.
  for (int64_t e = 0; e < ne; ++e) {
    if (!D.gate[static_cast<size_t>(e)].buf.valid()) continue;
    vk::matmul_expert(s, D.gate[static_cast<size_t>(e)].mat(), static_cast<int32_t>(e), I.ref(Impl::kXn), true,
                      I.ref(Impl::kSlotTokens), I.ref(Impl::kOffsets), n, I.ref(Impl::kGate));
    vk::matmul_expert(s, D.up[static_cast<size_t>(e)].mat(), static_cast<int32_t>(e), I.ref(Impl::kXn), true,
                      I.ref(Impl::kSlotTokens), I.ref(Impl::kOffsets), n, I.ref(Impl::kUp));
  }
  s.barrier();
  vk::swiglu(s, I.ref(Impl::kGate), I.ref(Impl::kUp), n * k * F);
  s.barrier();
  for (int64_t e = 0; e < ne; ++e) {
    if (!D.down[static_cast<size_t>(e)].buf.valid()) continue;
    vk::matmul_expert(s, D.down[static_cast<size_t>(e)].mat(), static_cast<int32_t>(e), I.ref(Impl::kGate), false,
                      I.ref(Impl::kSlotTokens), I.ref(Impl::kOffsets), n, I.ref(Impl::kDown));
  }

  // Split placement: the CPU's experts need the FFN input and the slot plan; their outputs go into
  // their slot rows before the combine.
  if (I.cpu_experts_any) {
    const uint64_t xb = static_cast<uint64_t>(n * E) * 4;
    s.copy(I.ref(Impl::kXn, xb), vk::BufferRef(I.rb_xn, 0, xb));
    s.copy(I.ref(Impl::kSlotTokens, rk), vk::BufferRef(I.rb_slots, 0, rk));
    s.barrier();
    s.run();
    cpu_experts(l, n);
  }
  s.barrier();
  vk::moe_combine(s, I.ref(Impl::kDown), I.ref(Impl::kTopkId), I.ref(Impl::kTopkW), I.ref(Impl::kTokenSlots), n, k,
                  E, I.ref(Impl::kX));
  s.barrier();
}

}  // namespace moe::model
