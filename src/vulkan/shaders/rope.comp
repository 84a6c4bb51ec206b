// rope.comp: rotary position embedding in place on x [n_tok][n_heads][head_dim] (ops.h rope), one
// invocation per (token, head, pair). theta_i = pos * base^(-2i / n_rot) is computed in f32 as
// pos * exp2(-2i * log2(base) / n_rot) (the host passes log2(base) / n_rot, rounded once from double)
// and reduced to [-pi, pi] by a two-part 2*pi (Cody-Waite) before cos and sin, whose accuracy Vulkan
// only bounds inside that range. Pairs are adjacent (x[2i], x[2i+1]) or, with rotate_half,
// (x[i], x[i + n_rot/2]), as kernels::rope_apply and rope_apply_rotate_half.
#version 450
layout(local_size_x = 256) in;
layout(std430, binding = 0) buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer Pos { int positions[]; };  // [n_tok]
layout(push_constant) uniform Push {
  uint n_tok;
  uint n_heads;
  uint head_dim;
  uint n_rot;
  uint rotate_half;
  float log2_base_over_n_rot;
} pc;

void main() {
  uint half_rot = pc.n_rot / 2u;
  uint total = pc.n_tok * pc.n_heads * half_rot;
  uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  for (uint g = gl_GlobalInvocationID.x; g < total; g += stride) {
    uint i = g % half_rot;
    uint th = g / half_rot;  // token * n_heads + head
    uint t = th / pc.n_heads;
    precise float theta = float(positions[t]) * exp2(-float(2u * i) * pc.log2_base_over_n_rot);
    // theta - k * 2pi with 2pi = C1 + C2, C1 = 6.28125 exact in 8 bits so k * C1 is exact for |k| < 2^16.
    precise float k = round(theta * 0.15915494309189535);
    precise float r = (theta - k * 6.28125) - k * 0.0019353071795864769;
    float c = cos(r), s = sin(r);
    uint base = th * pc.head_dim;
    uint i0 = base + (pc.rotate_half != 0u ? i : 2u * i);
    uint i1 = base + (pc.rotate_half != 0u ? i + half_rot : 2u * i + 1u);
    float x0 = x[i0], x1 = x[i1];
    x[i0] = x0 * c - x1 * s;
    x[i1] = x0 * s + x1 * c;
  }
}
