// gather_rows.comp: out[i] = x[idx[i]] for rows of cols floats (ops.h gather_rows: the rows whose
// logits are wanted). The indices live on the device, so a row index outside x (x_rows, from the
// binding's size) yields a row of NaN instead of a read outside the buffer: wrong input shows up as
// NaN logits, never as another row's values.
#version 450
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer X { float x[]; };       // [x_rows][cols]
layout(std430, binding = 1) readonly buffer Idx { int idx[]; };     // [n]
layout(std430, binding = 2) writeonly buffer Out { float o[]; };    // [n][cols]
layout(push_constant) uniform Push {
  uint n;
  uint cols;
  uint x_rows;
} pc;

void main() {
  uint total = pc.n * pc.cols;
  uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  for (uint g = gl_GlobalInvocationID.x; g < total; g += stride) {
    uint r = g / pc.cols, c = g % pc.cols;
    int src = idx[r];
    o[g] = src >= 0 && uint(src) < pc.x_rows ? x[uint(src) * pc.cols + c] : uintBitsToFloat(0x7fc00000u);
  }
}
