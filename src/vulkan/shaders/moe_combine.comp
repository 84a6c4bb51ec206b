// moe_combine.comp: x[t] += sum of weights[t][j] * y[token_slots[t][j]] over the token's k choices in
// increasing expert id (ops.h moe_combine), the CPU backend's order: it runs the experts in id order
// and adds each one's weighted output to a zeroed sum, then adds the sum to the residual. One
// invocation per value of x; the choices are visited by a selection over the k ids (k is tiny).
#version 450
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer Y { float y[]; };              // [n_slots][n]
layout(std430, binding = 1) readonly buffer Ids { int ids[]; };            // [n_tok][k]
layout(std430, binding = 2) readonly buffer Weights { float wts[]; };      // [n_tok][k]
layout(std430, binding = 3) readonly buffer TokenSlots { int token_slots[]; };  // [n_tok][k]
layout(std430, binding = 4) buffer X { float x[]; };                       // [n_tok][n]
layout(push_constant) uniform Push {
  uint n_tok;
  uint k;
  uint n;
  uint n_slots;  // rows of y (guards the slots read from token_slots)
} pc;

void main() {
  uint total = pc.n_tok * pc.n;
  uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  for (uint g = gl_GlobalInvocationID.x; g < total; g += stride) {
    uint t = g / pc.n, c = g % pc.n;
    uint b = t * pc.k;
    float acc = 0.0;
    int prev = -2147483647 - 1;
    for (uint r = 0u; r < pc.k; ++r) {
      int best = -1;
      for (uint j = 0u; j < pc.k; ++j) {
        int e = ids[b + j];
        if (e > prev && (best < 0 || e < ids[b + uint(best)])) best = int(j);
      }
      if (best < 0) break;
      prev = ids[b + uint(best)];
      int slot = token_slots[b + uint(best)];
      if (slot >= 0 && uint(slot) < pc.n_slots) acc += wts[b + uint(best)] * y[uint(slot) * pc.n + c];
    }
    x[g] += acc;
  }
}
