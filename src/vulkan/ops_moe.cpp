// ops_moe.cpp: the mixture-of-experts ops of ops.h (router_top_k, group_by_expert, moe_combine):
// argument checks, then one dispatch each of the shaders of the same names. The shaders reproduce the
// CPU backend's routing (src/model/cpu_backend.cpp ffn_block): softmax, top k with ties to the lower
// expert id, renormalised weights; slots ordered by expert then token; outputs summed in expert order.
#include <algorithm>
#include <cstdint>

#include "vulkan/ops.h"
#include "vulkan/ops_args.h"

namespace moe::vk {

using detail::need;
using detail::u32;
using detail::u32_product;

namespace {
constexpr int64_t kMaxK = 32;          // router_top_k.comp's MAX_K
constexpr int64_t kMaxExperts = 2048;  // group_by_expert.comp's MAX_EXPERTS (its shared cursors)
}  // namespace

void router_top_k(Stream& s, const BufferRef& logits, int64_t n_tok, int64_t n_expert, int64_t k, const BufferRef& ids,
                  const BufferRef& weights) {
  const char* op = "router_top_k";
  if (n_expert <= 0) fail(op, ": n_expert ", n_expert, " must be positive");
  if (k <= 0 || k > n_expert || k > kMaxK)
    fail(op, ": k = ", k, " experts per token must be in [1, min(n_expert = ", n_expert, ", ", kMaxK, ")]");
  struct Push {
    uint32_t n_tok, n_expert, k;
  } pc{u32(op, "n_tok", n_tok), u32(op, "n_expert", n_expert), static_cast<uint32_t>(k)};
  need(op, "logits", logits, uint64_t{u32_product(op, "n_tok * n_expert", n_tok, n_expert)} * 4);
  const uint64_t chosen = uint64_t{u32_product(op, "n_tok * k", n_tok, k)} * 4;
  need(op, "ids", ids, chosen);
  need(op, "weights", weights, chosen);
  if (n_tok == 0) return;
  const Pipeline& p = s.context().pipeline("router_top_k", 3, sizeof(Push));
  s.dispatch(p, {logits, ids, weights}, &pc, sizeof pc, detail::stride_groups(pc.n_tok, 64));
}

void group_by_expert(Stream& s, const BufferRef& ids, int64_t n_tok, int64_t k, int64_t n_expert,
                     const BufferRef& expert_offsets, const BufferRef& slot_tokens, const BufferRef& token_slots) {
  const char* op = "group_by_expert";
  if (n_expert <= 0 || n_expert > kMaxExperts) fail(op, ": n_expert ", n_expert, " must be in [1, ", kMaxExperts, "]");
  if (k <= 0 || k > n_expert) fail(op, ": k = ", k, " must be in [1, n_expert = ", n_expert, "]");
  const uint64_t slots = uint64_t{u32_product(op, "n_tok * k", n_tok, k)};
  need(op, "ids", ids, slots * 4);
  need(op, "expert_offsets", expert_offsets, uint64_t(n_expert + 1) * 4);
  need(op, "slot_tokens", slot_tokens, slots * 4);
  need(op, "token_slots", token_slots, slots * 4);
  struct Push {
    uint32_t n_tok, k, n_expert;
  } pc{static_cast<uint32_t>(n_tok), static_cast<uint32_t>(k), static_cast<uint32_t>(n_expert)};
  // Runs even for 0 tokens: the offsets (all 0) are still written.
  const Pipeline& p = s.context().pipeline("group_by_expert", 4, sizeof(Push));
  s.dispatch(p, {ids, expert_offsets, slot_tokens, token_slots}, &pc, sizeof pc, 1);
}

void moe_combine(Stream& s, const BufferRef& y, const BufferRef& ids, const BufferRef& weights,
                 const BufferRef& token_slots, int64_t n_tok, int64_t k, int64_t n, const BufferRef& x) {
  const char* op = "moe_combine";
  if (n <= 0) fail(op, ": row length ", n, " must be positive");
  if (k <= 0) fail(op, ": k ", k, " must be positive");
  const uint32_t total = u32_product(op, "n_tok * n", n_tok, n);
  const uint32_t slots = u32_product(op, "n_tok * k", n_tok, k);
  need(op, "ids", ids, uint64_t{slots} * 4);
  need(op, "weights", weights, uint64_t{slots} * 4);
  need(op, "token_slots", token_slots, uint64_t{slots} * 4);
  need(op, "x", x, uint64_t{total} * 4);
  need(op, "y", y, uint64_t{u32(op, "n", n)} * 4);
  // Slots the shader may read: the rows inside y's binding (a slot outside them is skipped).
  const uint64_t y_rows = std::min<uint64_t>(y.size() / (uint64_t(n) * 4), UINT32_MAX / uint64_t(n));
  struct Push {
    uint32_t n_tok, k, n, n_slots;
  } pc{static_cast<uint32_t>(n_tok), static_cast<uint32_t>(k), static_cast<uint32_t>(n), static_cast<uint32_t>(y_rows)};
  if (n_tok == 0) return;
  const Pipeline& p = s.context().pipeline("moe_combine", 5, sizeof(Push));
  s.dispatch(p, {y, ids, weights, token_slots, x}, &pc, sizeof pc, detail::stride_groups(total));
}

}  // namespace moe::vk
