// bandwidth_test.cpp: the read-bandwidth measurement returns a plausible rate and really reads every
// word: the checksum is the exact sum of the buffer (word i holds i) times the passes, and every ISA's
// kernel gives the scalar sum on lengths that exercise the vector tails and unaligned starts.
#include "util/bandwidth.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "util/error.h"

namespace moe {
namespace {

TEST(Bandwidth, SmallBufferGivesPositiveRateAndExactChecksum) {
  ThreadPool pool(2);
  BandwidthOptions o;
  o.buffer_bytes = 4u << 20;
  o.passes = 3;
  const BandwidthResult r = measure_read_bandwidth(pool, o);
  EXPECT_TRUE(std::isfinite(r.best_bytes_per_s));
  EXPECT_GT(r.best_bytes_per_s, 0.0);
  EXPECT_GT(r.median_bytes_per_s, 0.0);
  EXPECT_LE(r.median_bytes_per_s, r.best_bytes_per_s);
  EXPECT_EQ(r.buffer_bytes, o.buffer_bytes);
  EXPECT_EQ(r.n_threads, 2);
  const uint64_t n = o.buffer_bytes / 8;
  const uint64_t sum_once = n * (n - 1) / 2;  // exact: n is even, no overflow at this size
  EXPECT_EQ(r.checksum, sum_once * 3);
}

TEST(Bandwidth, OddBufferSplitsWithoutLosingWords) {
  ThreadPool pool(3);
  BandwidthOptions o;
  o.buffer_bytes = 3 * 4096 * 8 + 8 * 7;  // not a multiple of the chunk or the vector width
  o.passes = 1;
  const BandwidthResult r = measure_read_bandwidth(pool, o);
  const uint64_t n = o.buffer_bytes / 8;
  EXPECT_EQ(r.checksum, n * (n - 1) / 2);
}

TEST(Bandwidth, ProbeMeasuresRepeatedlyFromOneBuffer) {
  ThreadPool pool(2);
  BandwidthProbe probe(pool, 1u << 20);
  EXPECT_EQ(probe.buffer_bytes(), 1u << 20);
  const uint64_t n = probe.buffer_bytes() / 8;
  for (int passes : {1, 2}) {
    const BandwidthResult r = probe.measure(passes);
    EXPECT_GT(r.best_bytes_per_s, 0.0);
    EXPECT_EQ(r.checksum, n * (n - 1) / 2 * static_cast<uint64_t>(passes));
  }
  EXPECT_THROW(probe.measure(0), Error);
  EXPECT_THROW(probe.measure(1001), Error);
}

TEST(Bandwidth, RejectsBadOptions) {
  ThreadPool pool(1);
  BandwidthOptions o;
  o.buffer_bytes = 100;
  EXPECT_THROW(measure_read_bandwidth(pool, o), Error);
  o.buffer_bytes = 1 << 20;
  o.passes = 0;
  EXPECT_THROW(measure_read_bandwidth(pool, o), Error);
}

TEST(Bandwidth, EveryIsaSumsLikeScalar) {
  std::mt19937_64 rng(7);
  std::vector<uint64_t> words(1000);
  for (auto& w : words) w = rng();
  for (Isa isa : {Isa::Scalar, Isa::AVX2, Isa::AVX512}) {
    if (!isa_supported(isa)) continue;
    for (size_t start : {0u, 1u, 3u}) {
      for (size_t n : {0u, 1u, 15u, 16u, 17u, 31u, 32u, 33u, 100u, 997u}) {
        const uint64_t want = std::accumulate(words.begin() + start, words.begin() + start + n, uint64_t{0});
        EXPECT_EQ(sum_words(words.data() + start, n, isa), want) << isa_name(isa) << " start " << start << " n " << n;
      }
    }
  }
}

TEST(Bandwidth, LastLevelCacheSizeIsSaneWhenKnown) {
  const uint64_t llc = last_level_cache_bytes();
  if (llc != 0) {
    EXPECT_GE(llc, 64u << 10);
    EXPECT_LE(llc, 4ull << 30);
  }
  const uint64_t buf = default_bandwidth_buffer_bytes();
  EXPECT_GE(buf, 256u << 20);
  EXPECT_LE(buf, 1u << 30);
}

}  // namespace
}  // namespace moe
