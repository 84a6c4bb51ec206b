// mm_dequant.glsl: decoding of one "unit" (32 consecutive values of a row) of every weight type the
// matrix products and get_rows take, from the raw GGUF bytes. Included by mm.comp and get_rows.comp.
//
// Why units of 32: every block format splits into them (a legacy block is one unit, a K-quant
// super-block eight), so one loop shape serves all types, and a unit's values are produced in the same
// order by every shader — the reduction order of a product is then fixed by the unit-to-lane assignment
// alone (mm.comp).
//
// Why uint words: the weights are the packed GGUF rows (e.g. 18-byte Q4_0 blocks), so fields sit at any
// even byte offset. Reading 32-bit words and shifting needs no 8/16-bit storage extension and runs on
// every Vulkan 1.2 device. Every field of every format is at an even offset (all block sizes are even),
// so 16-bit reads never straddle a word and 32-bit reads straddle at most two.
//
// Values are computed with the float operations of quant/dequant_ref.cpp, in its order: the K-quant
// factor d*sc is rounded to float first, then value = (d*sc)*q - dmin*m. Each product there is exact in
// float (a half times a small integer times a small integer), so fusing it with the subtraction cannot
// change a rounding, and the result equals the CPU decoder bit for bit.
//
// Expects before inclusion: TYPE (the GgmlType id) and a buffer `w_words` (uint[]) at binding 0.

#define T_F32 0
#define T_F16 1
#define T_Q4_0 2
#define T_Q4_1 3
#define T_Q5_0 6
#define T_Q5_1 7
#define T_Q8_0 8
#define T_Q2_K 10
#define T_Q3_K 11
#define T_Q4_K 12
#define T_Q5_K 13
#define T_Q6_K 14
#define T_BF16 30

// The byte at byte offset off.
uint rd8(uint off) { return (w_words[off >> 2] >> (8u * (off & 3u))) & 0xFFu; }
// The little-endian 16-bit value at an even byte offset.
uint rd16(uint off) { return (w_words[off >> 2] >> (8u * (off & 2u))) & 0xFFFFu; }
// The little-endian 32-bit value at an even byte offset (one word, or the halves of two).
uint rd32(uint off) {
  uint i = off >> 2;
  if ((off & 2u) == 0u) return w_words[i];
  return (w_words[i] >> 16) | (w_words[i + 1u] << 16);
}
float half_at(uint off) { return unpackHalf2x16(rd16(off)).x; }
// Byte j (0..31) of 32 bytes held as 8 words.
#define BYTE_OF(words, j) (((words)[(j) >> 2] >> (8u * ((j) & 3u))) & 0xFFu)

// Values per row unit and the number of units of a row of `cols` values.
uint units_of(uint cols) { return (cols + 31u) / 32u; }

// The values of unit u of the row whose bytes start at byte rb of w_words: v[0..nv), nv = 32 except in
// the last unit of an F32/F16/BF16 row whose length is not a multiple of 32.
void decode_unit(uint rb, uint u, uint cols, out float v[32], out uint nv) {
#if TYPE == T_F32 || TYPE == T_F16 || TYPE == T_BF16
  nv = min(32u, cols - 32u * u);
  for (uint i = 0u; i < 32u; ++i) {
    if (i < nv) {
#if TYPE == T_F32
      v[i] = uintBitsToFloat(w_words[(rb >> 2) + 32u * u + i]);  // rb is a multiple of 4 (host-checked)
#elif TYPE == T_F16
      v[i] = unpackHalf2x16(rd16(rb + 2u * (32u * u + i))).x;
#else
      v[i] = uintBitsToFloat(rd16(rb + 2u * (32u * u + i)) << 16);
#endif
    } else {
      v[i] = 0.0;
    }
  }
#elif TYPE == T_Q4_0 || TYPE == T_Q4_1 || TYPE == T_Q5_0 || TYPE == T_Q5_1
  nv = 32u;
#if TYPE == T_Q4_0
  const uint b = rb + 18u * u, qs = b + 2u;
#elif TYPE == T_Q4_1
  const uint b = rb + 20u * u, qs = b + 4u;
  const float m = half_at(b + 2u);
#elif TYPE == T_Q5_0
  const uint b = rb + 22u * u, qs = b + 6u;
  const uint qh = rd32(b + 2u);
#else
  const uint b = rb + 24u * u, qs = b + 8u;
  const float m = half_at(b + 2u);
  const uint qh = rd32(b + 4u);
#endif
  const float d = half_at(b);
  uint q[4];
  for (uint k = 0u; k < 4u; ++k) q[k] = rd32(qs + 4u * k);
  for (uint j = 0u; j < 16u; ++j) {
    uint byte = BYTE_OF(q, j);
    uint lo = byte & 15u, hi = byte >> 4;
#if TYPE == T_Q5_0 || TYPE == T_Q5_1
    lo |= ((qh >> j) & 1u) << 4;
    hi |= ((qh >> (j + 16u)) & 1u) << 4;
#endif
#if TYPE == T_Q4_0
    v[j] = float(int(lo) - 8) * d;
    v[j + 16u] = float(int(hi) - 8) * d;
#elif TYPE == T_Q5_0
    v[j] = float(int(lo) - 16) * d;
    v[j + 16u] = float(int(hi) - 16) * d;
#else
    v[j] = float(lo) * d + m;
    v[j + 16u] = float(hi) * d + m;
#endif
  }
#elif TYPE == T_Q8_0
  nv = 32u;
  const uint b = rb + 34u * u;
  const float d = half_at(b);
  for (uint k = 0u; k < 8u; ++k) {
    int word = int(rd32(b + 2u + 4u * k));
    for (uint i = 0u; i < 4u; ++i) v[4u * k + i] = float(bitfieldExtract(word, int(8u * i), 8)) * d;
  }
#elif TYPE == T_Q2_K
  // Super-block u/8, sub-blocks 2j and 2j+1 (16 values each) of unit j = u%8.
  nv = 32u;
  const uint j = u & 7u, b = rb + 84u * (u >> 3);
  const float d = half_at(b + 80u), dmin = half_at(b + 82u);
  const uint sc2 = rd16(b + 2u * j);  // scales[2j] | scales[2j+1] << 8
  const float dl0 = d * float(sc2 & 15u), ml0 = dmin * float((sc2 >> 4) & 15u);
  const float dl1 = d * float((sc2 >> 8) & 15u), ml1 = dmin * float(sc2 >> 12);
  const uint shift = 2u * (j & 3u);
  uint q[8];
  for (uint k = 0u; k < 8u; ++k) q[k] = rd32(b + 16u + 32u * (j >> 2) + 4u * k);
  for (uint l = 0u; l < 32u; ++l) {
    float qv = float((BYTE_OF(q, l) >> shift) & 3u);
    v[l] = l < 16u ? dl0 * qv - ml0 : dl1 * qv - ml1;
  }
#elif TYPE == T_Q3_K
  nv = 32u;
  const uint j = u & 7u, b = rb + 110u * (u >> 3);
  const float d = half_at(b + 108u);
  // Signed six-bit scales 2j and 2j+1: low nibble in byte i%8 (high nibble for i >= 8), high two bits
  // in byte 8 + i%4 at bit 2*(i/4).
  float dl[2];
  for (uint h = 0u; h < 2u; ++h) {
    uint i = 2u * j + h;
#ifdef MM_MUTANT
    uint low = (rd8(b + 97u + (i & 7u)) >> (4u * (i >> 3))) & 15u;  // test-only: scales one byte off
#else
    uint low = (rd8(b + 96u + (i & 7u)) >> (4u * (i >> 3))) & 15u;
#endif
    uint high = (rd8(b + 96u + 8u + (i & 3u)) >> (2u * (i >> 2))) & 3u;
    dl[h] = d * float(int(low | (high << 4)) - 32);
  }
  const uint shift = 2u * (j & 3u);
  uint q[8], hm[8];
  for (uint k = 0u; k < 8u; ++k) {
    q[k] = rd32(b + 32u + 32u * (j >> 2) + 4u * k);
    hm[k] = rd32(b + 4u * k);
  }
  for (uint l = 0u; l < 32u; ++l) {
    int low = int((BYTE_OF(q, l) >> shift) & 3u);
    int high_clear = ((BYTE_OF(hm, l) >> j) & 1u) != 0u ? 0 : 4;
    v[l] = dl[l >> 4] * float(low - high_clear);
  }
#elif TYPE == T_Q4_K || TYPE == T_Q5_K
  nv = 32u;
#if TYPE == T_Q4_K
  const uint j = u & 7u, b = rb + 144u * (u >> 3), qs = b + 16u;
#else
  const uint j = u & 7u, b = rb + 176u * (u >> 3), qs = b + 48u;
#endif
  const float d = half_at(b), dmin = half_at(b + 2u);
  // Six-bit scale and min of sub-block j from the 12 packed bytes at b + 4.
  uint sc, mn;
  if (j < 4u) {
    sc = rd8(b + 4u + j) & 63u;
    mn = rd8(b + 8u + j) & 63u;
  } else {
    uint hi = rd8(b + 8u + j);
    sc = (hi & 15u) | ((rd8(b + j) >> 6) << 4);
    mn = (hi >> 4) | ((rd8(b + 4u + j) >> 6) << 4);
  }
  const float d1 = d * float(sc), m1 = dmin * float(mn);
  const uint shift = 4u * (j & 1u);
  uint q[8];
  for (uint k = 0u; k < 8u; ++k) q[k] = rd32(qs + 32u * (j >> 1) + 4u * k);
#if TYPE == T_Q5_K
  uint qh[8];
  for (uint k = 0u; k < 8u; ++k) qh[k] = rd32(b + 16u + 4u * k);
#endif
  for (uint l = 0u; l < 32u; ++l) {
    uint qv = (BYTE_OF(q, l) >> shift) & 15u;
#if TYPE == T_Q5_K
    qv |= ((BYTE_OF(qh, l) >> j) & 1u) << 4;
#endif
    v[l] = d1 * float(qv) - m1;
  }
#elif TYPE == T_Q6_K
  // Unit j = 4n + k: low nibble in ql[64n + 32(k%2) + l] (high nibble for k >= 2), high two bits at bit
  // 2k of qh[32n + l], signed 8-bit scales 2j and 2j+1.
  nv = 32u;
  const uint j = u & 7u, b = rb + 210u * (u >> 3);
  const uint n = j >> 2, k4 = j & 3u;
  const float d = half_at(b + 208u);
  const int sc2 = int(rd16(b + 192u + 2u * j));
  const float dl0 = d * float(bitfieldExtract(sc2, 0, 8)), dl1 = d * float(bitfieldExtract(sc2, 8, 8));
  const uint lshift = 4u * (k4 >> 1), hshift = 2u * k4;
  uint ql[8], qh[8];
  for (uint k = 0u; k < 8u; ++k) {
    ql[k] = rd32(b + 64u * n + 32u * (k4 & 1u) + 4u * k);
    qh[k] = rd32(b + 128u + 32u * n + 4u * k);
  }
  for (uint l = 0u; l < 32u; ++l) {
    uint qv = ((BYTE_OF(ql, l) >> lshift) & 15u) | (((BYTE_OF(qh, l) >> hshift) & 3u) << 4);
    v[l] = (l < 16u ? dl0 : dl1) * float(int(qv) - 32);
  }
#else
#error "mm_dequant.glsl: unsupported TYPE"
#endif
}
