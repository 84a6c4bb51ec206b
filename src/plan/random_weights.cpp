// random_weights.cpp: random tensors for `moe synth`, the exact way and the fast way (see random_weights.h).
//
// The fast way, per type: stored quants q come from popcounts of random bits (a binomial: bell-shaped and
// cheap), centred on the format's zero — by the decode offset for the signed formats (Q6_K: q - 32,
// Q3_K: q - 4, Q8_0: q) and by the min for the offset formats (Q2_K, Q4_K, Q5_K: each sub-block's min
// is d * sc * c with c the binomial's mean, written as dmin = f16(c * d), m = sc). Sub-block scales are
// uniform over the upper half of their range, super-block scales d0 * f with f uniform in [0.75, 1.25),
// so the kernels see varying scales as in a real file. The variance of a dequantized value is then
// d0^2 * E[f^2] * E[sc^2] * E[(q - c)^2], computed exactly from the distributions below, and d0 is chosen
// to make it the variance of the exact way.
#include "plan/random_weights.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <map>
#include <mutex>
#include <type_traits>
#include <utility>
#include <vector>

#include "plan/progress.h"
#include "quant/blocks.h"
#include "quant/quant.h"
#include "util/error.h"
#include "util/fp16.h"

namespace moe::plan {
namespace {

uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

struct Rng {
  uint64_t state;
  uint64_t next() { return splitmix64(state); }
  // Uniform in [lo, hi] (hi - lo + 1 <= 64: the modulo bias of 64 random bits is nil).
  int uniform(int lo, int hi) { return lo + static_cast<int>(next() % static_cast<uint64_t>(hi - lo + 1)); }
  // The super-block scale factor f, uniform in [0.75, 1.25).
  float factor() { return 0.75f + 0.5f * static_cast<float>(next() >> 40) / 16777216.0f; }
};

int popcount(uint64_t x) { return std::popcount(x); }

// How one type's blocks are drawn: stored quant distribution (pmf over 0..L-1 after adding `offset` to
// the decoded integer for the signed formats), the decode centre c, and the sub-block scale range.
struct DrawSpec {
  std::vector<double> pmf;  // probability of each stored quant value 0..size-1
  double centre = 0;        // the value of q that decodes to 0 (binomial mean or format offset)
  int sc_lo = 1, sc_hi = 1; // sub-block scales uniform in [sc_lo, sc_hi] (Q8_0: none, 1)
  bool random_sign = false; // Q3_K: the scale's sign is drawn too (its clamped binomial is not centred)
  double unit_variance = 0; // E[f^2] * E[sc^2] * E[(q - c)^2]: the variance at d0 = 1
};

std::vector<double> binomial(int k) {
  std::vector<double> p(static_cast<size_t>(k) + 1);
  double c = 1;  // C(k, i)
  for (int i = 0; i <= k; ++i) {
    p[static_cast<size_t>(i)] = c * std::ldexp(1.0, -k);
    c = c * (k - i) / (i + 1);
  }
  return p;
}

// Binomial(k) with the top value folded into the one below (values 0..k-1).
std::vector<double> clamped_binomial(int k) {
  std::vector<double> p = binomial(k);
  p[static_cast<size_t>(k) - 1] += p.back();
  p.pop_back();
  return p;
}

// Q8_0's quant: trunc((b0 + b1 + b2 + b3 - 510) / 4) for four random bytes, stored + 127 (0..254).
std::vector<double> q8_0_pmf() {
  std::vector<double> s(1, 1.0);
  for (int b = 0; b < 4; ++b) {
    std::vector<double> t(s.size() + 255, 0.0);
    for (size_t i = 0; i < s.size(); ++i)
      for (size_t j = 0; j < 256; ++j) t[i + j] += s[i] / 256.0;
    s = std::move(t);
  }
  std::vector<double> p(255, 0.0);
  for (size_t i = 0; i < s.size(); ++i) p[static_cast<size_t>((static_cast<int>(i) - 510) / 4 + 127)] += s[i];
  return p;
}

DrawSpec make_spec(GgmlType type) {
  DrawSpec s;
  switch (type) {
    case GgmlType::Q8_0: s.pmf = q8_0_pmf(); s.centre = 127; break;
    case GgmlType::Q2_K: s.pmf = binomial(3); s.centre = 1.5; s.sc_lo = 8; s.sc_hi = 15; break;
    case GgmlType::Q3_K: s.pmf = clamped_binomial(8); s.centre = 4; s.sc_lo = 16; s.sc_hi = 31; s.random_sign = true; break;
    case GgmlType::Q4_K: s.pmf = binomial(15); s.centre = 7.5; s.sc_lo = 32; s.sc_hi = 63; break;
    case GgmlType::Q5_K: s.pmf = binomial(31); s.centre = 15.5; s.sc_lo = 32; s.sc_hi = 63; break;
    case GgmlType::Q6_K: s.pmf = clamped_binomial(64); s.centre = 32; s.sc_lo = 64; s.sc_hi = 127; break;
    default: fail("internal error: no random block drawing for ", type_name(type));
  }
  double q2 = 0;
  for (size_t i = 0; i < s.pmf.size(); ++i) q2 += s.pmf[i] * (static_cast<double>(i) - s.centre) * (static_cast<double>(i) - s.centre);
  double sc2 = 0;
  for (int sc = s.sc_lo; sc <= s.sc_hi; ++sc) sc2 += static_cast<double>(sc) * sc;
  sc2 /= (s.sc_hi - s.sc_lo + 1);
  const double f2 = 0.75 * 0.75 + 0.75 * 0.5 + 0.25 / 3.0;  // E[(0.75 + 0.5 u)^2], u uniform in [0, 1)
  s.unit_variance = f2 * sc2 * q2;
  return s;
}

const DrawSpec& spec_of(GgmlType type) {
  static std::mutex mu;
  static std::map<GgmlType, DrawSpec> specs;
  std::lock_guard<std::mutex> lock(mu);
  auto it = specs.find(type);
  if (it == specs.end()) it = specs.emplace(type, make_spec(type)).first;
  return it->second;
}

// The packed six-bit scales and mins of Q4_K/Q5_K (the inverse of quant::ref's unpack_k4_scale_min).
void pack_k4_scales(const int* sc, const int* m, uint8_t* packed) {
  for (int j = 0; j < 4; ++j) {
    packed[j] = static_cast<uint8_t>(sc[j] | (sc[j + 4] >> 4) << 6);
    packed[j + 4] = static_cast<uint8_t>(m[j] | (m[j + 4] >> 4) << 6);
    packed[j + 8] = static_cast<uint8_t>((sc[j + 4] & 15) | (m[j + 4] & 15) << 4);
  }
}

// The packed Q3_K scales (stored = scale + 32, six bits: low nibble in byte i%8 at nibble i/8, top two
// bits in byte 8 + i%4 at bit 2*(i/4)).
void pack_q3_scales(const int* scales, uint8_t* packed) {
  std::fill(packed, packed + 12, uint8_t{0});
  for (int i = 0; i < 16; ++i) {
    const int v = scales[i] + 32;
    packed[i % 8] = static_cast<uint8_t>(packed[i % 8] | (v & 15) << (4 * (i / 8)));
    packed[8 + i % 4] = static_cast<uint8_t>(packed[8 + i % 4] | (v >> 4) << (2 * (i / 4)));
  }
}

uint16_t half(double x) { return fp32_to_fp16(static_cast<float>(x)); }

void draw_q8_0(Rng& rng, double d0, quant::BlockQ8_0* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    b[i].d = half(d0 * rng.factor());
    for (int j = 0; j < quant::kQK; j += 2) {
      const uint64_t r = rng.next();
      const int s0 = static_cast<int>((r & 0xff) + ((r >> 8) & 0xff) + ((r >> 16) & 0xff) + ((r >> 24) & 0xff));
      const int s1 = static_cast<int>(((r >> 32) & 0xff) + ((r >> 40) & 0xff) + ((r >> 48) & 0xff) + (r >> 56));
      b[i].qs[j] = static_cast<int8_t>((s0 - 510) / 4);
      b[i].qs[j + 1] = static_cast<int8_t>((s1 - 510) / 4);
    }
  }
}

void draw_q2_K(Rng& rng, const DrawSpec& s, double d0, quant::BlockQ2_K* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const double d = d0 * rng.factor();
    b[i].d = half(d);
    b[i].dmin = half(s.centre * d);
    for (int k = 0; k < 16; ++k) {
      const int sc = rng.uniform(s.sc_lo, s.sc_hi);
      b[i].scales[k] = static_cast<uint8_t>(sc | sc << 4);  // min = scale: the sub-block is centred
    }
    uint8_t q[quant::kQKK];
    for (int p = 0; p < quant::kQKK; p += 16) {
      const uint64_t r = rng.next();
      for (int l = 0; l < 16; ++l) q[p + l] = static_cast<uint8_t>(popcount((r >> (4 * l)) & 7));
    }
    std::fill(std::begin(b[i].qs), std::end(b[i].qs), uint8_t{0});
    for (int p = 0; p < quant::kQKK; ++p)
      b[i].qs[(p / 128) * 32 + p % 32] = static_cast<uint8_t>(b[i].qs[(p / 128) * 32 + p % 32] | q[p] << (2 * ((p % 128) / 32)));
  }
}

void draw_q3_K(Rng& rng, const DrawSpec& s, double d0, quant::BlockQ3_K* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    b[i].d = half(d0 * rng.factor());
    int scales[16];
    for (int& sc : scales) {
      const uint64_t r = rng.next();
      sc = s.sc_lo + static_cast<int>((r >> 1) % static_cast<uint64_t>(s.sc_hi - s.sc_lo + 1));
      if (r & 1) sc = -sc;
    }
    pack_q3_scales(scales, b[i].scales);
    uint8_t q[quant::kQKK];  // stored value q + 4, 0..7
    for (int p = 0; p < quant::kQKK; p += 8) {
      const uint64_t r = rng.next();
      for (int l = 0; l < 8; ++l) q[p + l] = static_cast<uint8_t>(std::min(popcount((r >> (8 * l)) & 0xff), 7));
    }
    std::fill(std::begin(b[i].qs), std::end(b[i].qs), uint8_t{0});
    std::fill(std::begin(b[i].hmask), std::end(b[i].hmask), uint8_t{0});
    for (int p = 0; p < quant::kQKK; ++p) {
      const int at = (p / 128) * 32 + p % 32;
      b[i].qs[at] = static_cast<uint8_t>(b[i].qs[at] | (q[p] & 3) << (2 * ((p % 128) / 32)));
      b[i].hmask[p % 32] = static_cast<uint8_t>(b[i].hmask[p % 32] | (q[p] >> 2) << (p / 32));  // set: +0
    }
  }
}

// Q4_K and Q5_K share the scale layout; bits = 4 or 5.
template <typename Block>
void draw_k45(Rng& rng, const DrawSpec& s, double d0, Block* b, int64_t nb, int bits) {
  const int field = (1 << bits) - 1;  // binomial over `field` random bits: 0..field, the quant's range
  const uint64_t mask = (uint64_t{1} << field) - 1;
  const int per_word = 64 / field;
  for (int64_t i = 0; i < nb; ++i) {
    const double d = d0 * rng.factor();
    b[i].d = half(d);
    b[i].dmin = half(s.centre * d);
    int sc[8];
    for (int& x : sc) x = rng.uniform(s.sc_lo, s.sc_hi);
    pack_k4_scales(sc, sc, b[i].scales);  // min = scale: the sub-block is centred
    uint8_t q[quant::kQKK];
    for (int p = 0; p < quant::kQKK;) {
      const uint64_t r = rng.next();
      for (int l = 0; l < per_word && p < quant::kQKK; ++l, ++p)
        q[p] = static_cast<uint8_t>(popcount((r >> (field * l)) & mask));
    }
    for (int j = 0; j < 8; j += 2)
      for (int l = 0; l < 32; ++l)
        b[i].qs[32 * (j / 2) + l] = static_cast<uint8_t>((q[32 * j + l] & 15) | (q[32 * (j + 1) + l] & 15) << 4);
    if constexpr (std::is_same_v<Block, quant::BlockQ5_K>) {
      for (int l = 0; l < 32; ++l) {
        uint8_t h = 0;
        for (int j = 0; j < 8; ++j) h = static_cast<uint8_t>(h | (q[32 * j + l] >> 4) << j);
        b[i].qh[l] = h;
      }
    }
  }
}

void draw_q6_K(Rng& rng, const DrawSpec& s, double d0, quant::BlockQ6_K* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    b[i].d = half(d0 * rng.factor());
    for (auto& sc : b[i].scales) sc = static_cast<int8_t>(rng.uniform(s.sc_lo, s.sc_hi));
    uint8_t q[quant::kQKK];  // stored value q + 32, 0..63
    for (int p = 0; p < quant::kQKK; ++p) q[p] = static_cast<uint8_t>(std::min(popcount(rng.next()), 63));
    std::fill(std::begin(b[i].ql), std::end(b[i].ql), uint8_t{0});
    std::fill(std::begin(b[i].qh), std::end(b[i].qh), uint8_t{0});
    for (int p = 0; p < quant::kQKK; ++p) {
      const int n = p / 128, k = (p % 128) / 32, l = p % 32;
      uint8_t& lo = b[i].ql[64 * n + 32 * (k % 2) + l];
      lo = static_cast<uint8_t>(lo | (q[p] & 15) << (4 * (k / 2)));
      b[i].qh[32 * n + l] = static_cast<uint8_t>(b[i].qh[32 * n + l] | (q[p] >> 4) << (2 * k));
    }
  }
}

}  // namespace

void fill_normal(uint64_t seed, float sigma, float* out, int64_t n) {
  uint64_t state = seed;
  const float scale = sigma * std::sqrt(3.0f) / 65536.0f;
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t r = splitmix64(state);
    const uint32_t sum = static_cast<uint32_t>(r & 0xffff) + static_cast<uint32_t>((r >> 16) & 0xffff) +
                         static_cast<uint32_t>((r >> 32) & 0xffff) + static_cast<uint32_t>(r >> 48);
    out[i] = (static_cast<float>(sum) - 131070.0f) * scale;
  }
}

bool can_draw_blocks(GgmlType type) {
  switch (type) {
    case GgmlType::Q8_0:
    case GgmlType::Q2_K:
    case GgmlType::Q3_K:
    case GgmlType::Q4_K:
    case GgmlType::Q5_K:
    case GgmlType::Q6_K: return true;
    default: return false;
  }
}

double quantized_variance(GgmlType type, float sigma) {
  static std::mutex mu;
  static std::map<std::pair<GgmlType, float>, double> cache;
  {
    std::lock_guard<std::mutex> lock(mu);
    auto it = cache.find({type, sigma});
    if (it != cache.end()) return it->second;
  }
  constexpr int64_t kRow = 4096, kRows = 256;  // 2^20 values: the variance to about 0.15 %
  std::vector<float> x(kRow), y(kRow);
  std::vector<uint8_t> q(*row_bytes(type, kRow));
  double sum = 0, sq = 0;
  for (int64_t r = 0; r < kRows; ++r) {
    fill_normal(0x5eedull * 1000003ull + static_cast<uint64_t>(r), sigma, x.data(), kRow);
    quant::quantize_row(type, x.data(), q.data(), kRow);
    quant::dequantize_row(type, q.data(), y.data(), kRow);
    for (float v : y) {
      sum += v;
      sq += static_cast<double>(v) * v;
    }
  }
  const double n = static_cast<double>(kRow * kRows), mean = sum / n, var = sq / n - mean * mean;
  std::lock_guard<std::mutex> lock(mu);
  cache[{type, sigma}] = var;
  return var;
}

void draw_blocks(GgmlType type, uint64_t seed, double variance, uint8_t* out, int64_t n) {
  if (!can_draw_blocks(type)) fail("internal error: no random block drawing for ", type_name(type));
  if (n % type_traits(type)->block_size != 0) fail("draw_blocks: ", n, " elements are not whole ", type_name(type), " blocks");
  const DrawSpec& s = spec_of(type);
  const double d0 = std::sqrt(variance / s.unit_variance);
  Rng rng{seed};
  const int64_t nb = n / type_traits(type)->block_size;
  switch (type) {
    case GgmlType::Q8_0: return draw_q8_0(rng, d0, reinterpret_cast<quant::BlockQ8_0*>(out), nb);
    case GgmlType::Q2_K: return draw_q2_K(rng, s, d0, reinterpret_cast<quant::BlockQ2_K*>(out), nb);
    case GgmlType::Q3_K: return draw_q3_K(rng, s, d0, reinterpret_cast<quant::BlockQ3_K*>(out), nb);
    case GgmlType::Q4_K: return draw_k45(rng, s, d0, reinterpret_cast<quant::BlockQ4_K*>(out), nb, 4);
    case GgmlType::Q5_K: return draw_k45(rng, s, d0, reinterpret_cast<quant::BlockQ5_K*>(out), nb, 5);
    case GgmlType::Q6_K: return draw_q6_K(rng, s, d0, reinterpret_cast<quant::BlockQ6_K*>(out), nb);
    default: return;
  }
}

void draw_tensor(ThreadPool& pool, GgmlType type, int64_t n, int64_t rows, float sigma, std::span<uint8_t> out,
                 const std::function<uint64_t(int64_t row)>& row_seed, Progress* progress) {
  auto rb = row_bytes(type, static_cast<uint64_t>(n));
  if (!rb) fail("rows of ", n, " elements do not fit ", type_name(type), " blocks");
  const uint64_t row_b = *rb;
  if (row_b * static_cast<uint64_t>(rows) != out.size())
    fail("draw_tensor: output of ", out.size(), " bytes does not hold ", rows, " rows of ", row_b, " bytes");
  const double variance = quantized_variance(type, sigma);
  spec_of(type);  // built once, before the threads read it
  // Chunks of about 4M elements: the drawing is fast, so fewer hand-outs; still many per expert tensor.
  const int64_t rows_per_chunk = std::max<int64_t>(1, (int64_t{1} << 22) / std::max<int64_t>(n, 1));
  const int64_t n_chunks = (rows + rows_per_chunk - 1) / rows_per_chunk;
  pool.run(n_chunks, [&](int64_t chunk, int) {
    const int64_t begin = chunk * rows_per_chunk, end = std::min(rows, begin + rows_per_chunk);
    for (int64_t r = begin; r < end; ++r)
      draw_blocks(type, row_seed(r), variance, out.data() + static_cast<uint64_t>(r) * row_b, n);
    if (progress) progress->advance(static_cast<uint64_t>(end - begin) * static_cast<uint64_t>(n));
  });
}

}  // namespace moe::plan
