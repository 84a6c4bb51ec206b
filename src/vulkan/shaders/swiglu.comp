// swiglu.comp: gate[i] = silu(gate[i]) * up[i], silu(g) = g / (1 + exp(-g)) (ops.h swiglu,
// kernels::silu_mul), grid-stride over i.
#version 450
layout(local_size_x = 256) in;
layout(std430, binding = 0) buffer Gate { float gate[]; };
layout(std430, binding = 1) readonly buffer Up { float up[]; };
layout(push_constant) uniform Push { uint n; } pc;

void main() {
  uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  for (uint i = gl_GlobalInvocationID.x; i < pc.n; i += stride) {
    float g = gate[i];
    gate[i] = g / (1.0 + exp(-g)) * up[i];
  }
}
