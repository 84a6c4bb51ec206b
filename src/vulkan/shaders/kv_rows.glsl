// kv_rows.glsl: the paged KV cache as the kv_store and attention shaders see it — one binding of 32-bit
// words holding every block (kv/cache.h's layout), the block tables, and the row codecs of
// kernels/attention.h (store_kv_row / load_kv_values) for F32, F16, BF16 and Q8_0.
//
// Why words and bit twiddling: 16-bit and 8-bit storage are optional Vulkan features, and rows of an
// odd number of halves (or of 34-byte Q8_0 blocks) start inside a word, so every access goes through
// 32-bit words. Stores use atomicAnd/atomicOr on the bytes they own, because two rows written by
// different invocations of one dispatch can share a word. The half conversions are done with integer
// operations so that they are bit-exact with util/fp16.h on every driver (no denormal flushing, round
// to nearest even, NaN kept).
//
// The including shader defines KV_TYPE (0 F32, 1 F16, 2 BF16, 3 Q8_0) and, for reading only,
// KV_READONLY. Bindings 0..3 are fixed: the blocks, the block tables, each token's table start and
// each token's position.

#define KV_F32 0
#define KV_F16 1
#define KV_BF16 2
#define KV_Q8_0 3

#ifdef KV_READONLY
layout(std430, binding = 0) readonly buffer KvWords { uint kvw[]; };
#else
layout(std430, binding = 0) buffer KvWords { uint kvw[]; };
#endif
layout(std430, binding = 1) readonly buffer Tables { int tables[]; };
layout(std430, binding = 2) readonly buffer TableStart { int table_start[]; };
layout(std430, binding = 3) readonly buffer Positions { int positions[]; };

// Where the rows live; the same fields in both shaders' push constants.
struct KvLayout {
  uint block_bytes;   // one block (all layers, K and V)
  uint row_bytes;     // one token's K (or V) row of one layer
  uint k_offset;      // this layer's K rows within a block
  uint v_offset;      // this layer's V rows within a block
  uint block_tokens;  // rows per block
  uint n_blocks;      // blocks in the binding (guards the block ids read from the tables)
  uint n_tables;      // int32 entries in the tables binding (guards the table reads)
};

// Byte offset of row `pos`'s block start plus its row within the block (add k_offset or v_offset), for
// the sequence whose table starts at `start`. False when the table entry or the block id is out of
// range: the caller then touches nothing (a bad table must not write or read outside the cache).
bool kv_row_base(KvLayout L, int start, int pos, out uint base) {
  base = 0u;
  if (start < 0 || pos < 0) return false;
  uint entry = uint(start) + uint(pos) / L.block_tokens;
  if (entry >= L.n_tables) return false;
  int block = tables[entry];
  if (block < 0 || uint(block) >= L.n_blocks) return false;
  base = uint(block) * L.block_bytes + (uint(pos) % L.block_tokens) * L.row_bytes;
  return true;
}

uint kv_u16(uint byte_off) {
  uint w = kvw[byte_off >> 2];
  return (byte_off & 2u) != 0u ? (w >> 16) : (w & 0xffffu);
}

uint kv_u8(uint byte_off) { return (kvw[byte_off >> 2] >> ((byte_off & 3u) * 8u)) & 0xffu; }

float half_bits_to_float(uint h) {
  uint sign = (h & 0x8000u) << 16;
  uint e = (h >> 10) & 0x1fu;
  uint m = h & 0x3ffu;
  if (e == 0u) {
    float v = float(m) * (1.0 / 16777216.0);  // subnormal: m * 2^-24, exact in f32
    return sign != 0u ? -v : v;
  }
  if (e == 31u) return uintBitsToFloat(sign | 0x7f800000u | (m << 13));
  return uintBitsToFloat(sign | ((e + 112u) << 23) | (m << 13));
}

// Value i of the row starting at byte row_off.
float kv_value(uint row_off, uint i) {
#if KV_TYPE == KV_F32
  return uintBitsToFloat(kvw[(row_off >> 2) + i]);
#elif KV_TYPE == KV_F16
  return half_bits_to_float(kv_u16(row_off + 2u * i));
#elif KV_TYPE == KV_BF16
  return uintBitsToFloat(kv_u16(row_off + 2u * i) << 16);
#else
  uint blk = row_off + (i >> 5) * 34u;  // BlockQ8_0: f16 scale, then 32 int8
  float d = half_bits_to_float(kv_u16(blk));
  int q = int(kv_u8(blk + 2u + (i & 31u)));
  return d * float(q >= 128 ? q - 256 : q);
#endif
}

#ifndef KV_READONLY
// util/fp16.h's fp32_to_fp16, bit for bit.
uint float_to_half_bits(float f) {
  uint x = floatBitsToUint(f);
  uint sign = (x >> 16) & 0x8000u;
  uint ex = (x >> 23) & 0xffu;
  uint man = x & 0x7fffffu;
  if (ex == 0xffu) return sign | 0x7c00u | (man != 0u ? (0x200u | (man >> 13)) : 0u);
  int e = int(ex) - 127 + 15;
  if (e >= 31) return sign | 0x7c00u;
  if (e <= 0) {
    if (e < -10) return sign;
    man |= 0x800000u;
    uint shift = uint(14 - e);
    uint half_ = man >> shift;
    uint rem = man & ((1u << shift) - 1u);
    uint mid = 1u << (shift - 1u);
    if (rem > mid || (rem == mid && (half_ & 1u) != 0u)) ++half_;
    return sign | half_;
  }
  uint h = sign | (uint(e) << 10) | (man >> 13);
  uint rem = man & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u) != 0u)) ++h;
  return h;
}

// util/fp16.h's fp32_to_bf16, bit for bit.
uint float_to_bf16_bits(float f) {
  uint x = floatBitsToUint(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (x >> 16) | 0x40u;
  x += 0x7fffu + ((x >> 16) & 1u);
  return x >> 16;
}

// Writes the low `bits` bits of v at byte offset off (bits 8 or 16, off aligned to them), leaving the
// word's other bytes to whoever owns them.
void kv_put(uint off, uint v, uint bits) {
  uint shift = (off & 3u) * 8u;
  uint mask = ((1u << bits) - 1u) << shift;
  atomicAnd(kvw[off >> 2], ~mask);
  atomicOr(kvw[off >> 2], (v << shift) & mask);
}
#endif
