// lanes.cpp: the portable half of the sub-block lane path (see lanes.h): which types have it, the
// activation layout (a permutation of quantize_activations' Q8_K blocks), and the checked entry points of
// the AVX-512 kernels in lanes_avx512.cpp (matmul takes the kernel from quant::kernels_for instead).
#include "quant/lanes.h"

#include <algorithm>
#include <cstring>

#include "quant/blocks.h"
#include "quant/quant.h"
#include "quant/simd.h"
#include "util/cpu.h"
#include "util/error.h"

namespace moe::quant {

int lanes_sub_block(GgmlType weight_type) {
  switch (weight_type) {
    case GgmlType::Q4_K: return 32;
    case GgmlType::Q2_K: case GgmlType::Q3_K: return 16;
    default: return 0;
  }
}

bool use_lanes(GgmlType weight_type) { return lanes_sub_block(weight_type) != 0 && active_isa() >= Isa::AVX512; }

namespace {

void check_lanes_row(const char* what, int sub, int64_t n) {
  if (sub != 16 && sub != 32) fail(what, ": sub-block size ", sub, " is not 16 or 32");
  if (n < 0 || n % kQKK != 0) fail(what, ": ", n, " values is not a whole number of 256-value super-blocks");
}

int64_t tiles_of(int sub, int64_t n) {
  const int64_t nb = n / kQKK;
  return sub == 32 ? (nb + 1) / 2 : nb;
}

// One tile from `blocks` (1 or 2) consecutive Q8_K blocks; lanes of a missing second block stay zero.
template <int kSub>
void write_tile(const BlockQ8_K* x, int blocks, detail::LaneTile<kSub>* tile) {
  std::memset(tile, 0, sizeof(*tile));
  constexpr int kPerBlock = kQKK / kSub;  // sub-blocks (lanes) per super-block: 8 or 16
  for (int s = 0; s < blocks * kPerBlock; ++s) {
    const BlockQ8_K& b = x[s / kPerBlock];
    const int j = s % kPerBlock;
    for (int r = 0; r < kSub / 4; ++r) std::memcpy(&tile->q[r][4 * s], &b.qs[j * kSub + 4 * r], 4);
    int sum = 0;
    for (int g = 0; g < kSub / 16; ++g) sum += b.bsums[j * (kSub / 16) + g];
    tile->dy[s] = b.d;
    tile->bs[s] = static_cast<float>(sum);
  }
}

}  // namespace

size_t lanes_row_bytes(int sub, int64_t n) {
  check_lanes_row("lanes_row_bytes", sub, n);
  return static_cast<size_t>(tiles_of(sub, n)) * (sub == 32 ? sizeof(detail::LaneTile<32>) : sizeof(detail::LaneTile<16>));
}

void quantize_activations_lanes(int sub, const float* x, void* dst, int64_t n) {
  check_lanes_row("quantize_activations_lanes", sub, n);
  const QuantizeFn quantize_q8_K = activation_quantizer(GgmlType::Q8_K, active_isa());
  BlockQ8_K blocks[2];
  auto* out = static_cast<uint8_t*>(dst);
  const int64_t nb = n / kQKK;
  const int per_tile = sub == 32 ? 2 : 1;
  for (int64_t b = 0; b < nb; b += per_tile) {
    const int count = static_cast<int>(std::min<int64_t>(per_tile, nb - b));
    quantize_q8_K(x + b * kQKK, blocks, count * kQKK);
    if (sub == 32) {
      write_tile<32>(blocks, count, reinterpret_cast<detail::LaneTile<32>*>(out));
      out += sizeof(detail::LaneTile<32>);
    } else {
      write_tile<16>(blocks, count, reinterpret_cast<detail::LaneTile<16>*>(out));
      out += sizeof(detail::LaneTile<16>);
    }
  }
}

void vec_dot_lanes(GgmlType weight_type, int64_t n, const void* w, const void* x, size_t x_stride, int64_t n_tok,
                   float* out, size_t out_stride) {
  if (!use_lanes(weight_type)) fail("vec_dot_lanes: no lane kernel for ", type_name(weight_type), " on this CPU");
  check_lanes_row("vec_dot_lanes", lanes_sub_block(weight_type), n);
  if (n_tok < 0) fail("vec_dot_lanes: negative token count ", n_tok);
  detail::lanes_dot_avx512(weight_type)(n, w, x, x_stride, n_tok, out, out_stride);
}

void lanes_rows(GgmlType weight_type, int64_t n, const void* w, size_t w_row_bytes, int64_t n_rows, const void* x,
                size_t x_stride, int64_t n_tok, float* y, size_t y_stride) {
  if (!use_lanes(weight_type)) fail("lanes_rows: no lane kernel for ", type_name(weight_type), " on this CPU");
  check_lanes_row("lanes_rows", lanes_sub_block(weight_type), n);
  if (n_tok < 0 || n_rows < 0) fail("lanes_rows: negative count");
  if (n_tok == 0 || n_rows == 0) return;
  detail::lanes_rows_avx512(weight_type)(n, w, w_row_bytes, n_rows, x, x_stride, n_tok, y, y_stride);
}

}  // namespace moe::quant
