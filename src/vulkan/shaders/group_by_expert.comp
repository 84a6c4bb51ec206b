// group_by_expert.comp: orders the n_tok * k (token, choice) pairs by expert, then by token (ops.h
// group_by_expert), in one workgroup so that the order is deterministic: count per expert (shared
// atomics: the counts do not depend on the order of the adds), exclusive prefix sum by one invocation,
// then the pairs in chunks of 256 in index order, each pair's rank among the chunk's earlier pairs of
// its expert added to that expert's cursor. Pairs are indexed t * k + j, so index order is token
// order. An expert id outside [0, n_expert) gets no slot and token_slots -1 (router_top_k never writes
// one; the guard keeps a bad id from writing outside the buffers).
#version 450
#define MAX_EXPERTS 2048u
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer Ids { int ids[]; };            // [n_tok][k]
layout(std430, binding = 1) writeonly buffer Offsets { uint offsets[]; };  // [n_expert + 1]
layout(std430, binding = 2) writeonly buffer SlotTokens { int slot_tokens[]; };  // [n_tok * k]
layout(std430, binding = 3) writeonly buffer TokenSlots { int token_slots[]; };  // [n_tok][k]
layout(push_constant) uniform Push {
  uint n_tok;
  uint k;
  uint n_expert;
} pc;

shared uint cursor[MAX_EXPERTS];
shared int chunk_expert[256];

void main() {
  uint lane = gl_LocalInvocationID.x;
  uint n = pc.n_tok * pc.k;
  for (uint e = lane; e < pc.n_expert; e += 256u) cursor[e] = 0u;
  barrier();
  for (uint i = lane; i < n; i += 256u) {
    int e = ids[i];
    if (e >= 0 && uint(e) < pc.n_expert) atomicAdd(cursor[uint(e)], 1u);
  }
  barrier();
  if (lane == 0u) {
    uint off = 0u;
    for (uint e = 0u; e < pc.n_expert; ++e) {
      uint c = cursor[e];
      offsets[e] = off;
      cursor[e] = off;
      off += c;
    }
    offsets[pc.n_expert] = off;
  }
  barrier();
  for (uint c0 = 0u; c0 < n; c0 += 256u) {
    uint i = c0 + lane;
    int e = i < n ? ids[i] : -1;
    bool ok = e >= 0 && uint(e) < pc.n_expert;
    chunk_expert[lane] = ok ? e : -1;
    barrier();
    if (ok) {
      uint rank = 0u;
      for (uint j = 0u; j < lane; ++j) rank += chunk_expert[j] == e ? 1u : 0u;
      uint slot = cursor[uint(e)] + rank;
      slot_tokens[slot] = int(i / pc.k);
      token_slots[i] = int(slot);
    } else if (i < n) {
      token_slots[i] = -1;
    }
    barrier();
    if (ok) atomicAdd(cursor[uint(e)], 1u);
    barrier();
  }
}
