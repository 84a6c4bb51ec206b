// rms_norm.comp: y = x / sqrt(mean(x^2) + eps) * w, one workgroup per row (ops.h rms_norm). Each
// invocation sums the squares of its strided values in f32, then a fixed tree in shared memory adds
// the 256 partial sums: the order depends only on the row length, so a row's result is the same
// whatever the number of rows (batch invariance). y may be x: every value is read before the barrier
// and written by the invocation that read it.
#version 450
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer X { float x[]; };  // [n_rows][n]
layout(std430, binding = 1) readonly buffer W { float w[]; };  // [n]
layout(std430, binding = 2) buffer Y { float y[]; };           // [n_rows][n]
layout(push_constant) uniform Push {
  uint n_rows;
  uint n;
  float eps;
} pc;

shared float part[256];

void main() {
  uint lane = gl_LocalInvocationID.x;
  uint row = gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x;
  if (row >= pc.n_rows) return;  // uniform over the workgroup
  uint base = row * pc.n;
  float s = 0.0;
  for (uint i = lane; i < pc.n; i += 256u) {
    float v = x[base + i];
    s += v * v;
  }
  part[lane] = s;
  barrier();
  for (uint w2 = 128u; w2 > 0u; w2 >>= 1) {
    if (lane < w2) part[lane] += part[lane + w2];
    barrier();
  }
  float scale = inversesqrt(part[0] / float(pc.n) + pc.eps);
  for (uint i = lane; i < pc.n; i += 256u) y[base + i] = x[base + i] * scale * w[i];
}
