// copy_words.comp: dst = src, 16 bytes per invocation, grid-stride: the bandwidth probe of the
// device's memory (ops.h copy_words). uvec4 loads so that each invocation moves one full vector.
#version 450
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer Src { uvec4 src[]; };
layout(std430, binding = 1) writeonly buffer Dst { uvec4 dst[]; };
layout(push_constant) uniform Push { uint n_vec; } pc;  // 16-byte vectors to copy
void main() {
  uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  for (uint i = gl_GlobalInvocationID.x; i < pc.n_vec; i += stride) dst[i] = src[i];
}
