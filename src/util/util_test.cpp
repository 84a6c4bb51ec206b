// util_test.cpp: checked arithmetic, half/bfloat conversions, the thread pool.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <mutex>
#include <random>
#include <set>
#include <vector>

#include "util/checked.h"
#include "util/cpu.h"
#include "util/fp16.h"
#include "util/thread_pool.h"

namespace moe {
namespace {

TEST(Checked, DetectsOverflow) {
  EXPECT_FALSE(mul_u64(UINT64_MAX / 2 + 1, 2).has_value());
  EXPECT_EQ(*mul_u64(1u << 20, 1u << 20), 1ull << 40);
  EXPECT_FALSE(add_u64(UINT64_MAX, 1).has_value());
  EXPECT_THROW(checked_mul(1ull << 33, 1ull << 33, "x"), Error);
  EXPECT_EQ(*align_up(33, 32), 64u);
  EXPECT_FALSE(align_up(UINT64_MAX - 3, 32).has_value());
}

// Reference half->float by the definition value = (-1)^s * 2^(e-15) * (1 + m/1024).
double half_value(uint16_t h) {
  int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
  double v = e == 0 ? std::ldexp(m, -24) : std::ldexp(1.0 + m / 1024.0, e - 15);
  return s ? -v : v;
}

TEST(Fp16, AllFiniteHalvesRoundTrip) {
  for (uint32_t h = 0; h < 65536; ++h) {
    if (((h >> 10) & 31) == 31) continue;  // inf/nan checked below
    float f = fp16_to_fp32(static_cast<uint16_t>(h));
    ASSERT_EQ(static_cast<double>(f), half_value(static_cast<uint16_t>(h))) << h;
    ASSERT_EQ(fp32_to_fp16(f), h) << h;
  }
  EXPECT_TRUE(std::isinf(fp16_to_fp32(0x7c00)));
  EXPECT_TRUE(std::isnan(fp16_to_fp32(0x7e00)));
  EXPECT_EQ(fp32_to_fp16(1e6f), 0x7c00);
}

TEST(Fp16, RoundsToNearestEven) {
  // Between every pair of adjacent halves, values round to the nearer; ties go to the even mantissa.
  std::mt19937 rng(1);
  for (int i = 0; i < 200000; ++i) {
    uint16_t h = rng() & 0x7bff;  // finite, positive, below the largest
    double lo = half_value(h), hi = half_value(static_cast<uint16_t>(h + 1));
    double t = std::uniform_real_distribution<double>(0, 1)(rng);
    float x = static_cast<float>(lo + t * (hi - lo));
    uint16_t r = fp32_to_fp16(x);
    double dx = static_cast<double>(x);
    uint16_t expect = (dx - lo < hi - dx) ? h : (dx - lo > hi - dx) ? static_cast<uint16_t>(h + 1) : ((h & 1) ? static_cast<uint16_t>(h + 1) : h);
    ASSERT_EQ(r, expect) << "x=" << x;
  }
}

TEST(Bf16, RoundTripAndRounding) {
  for (uint32_t h = 0; h < 65536; h += 7) {
    float f = bf16_to_fp32(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(fp32_to_bf16(f), h);
  }
  EXPECT_EQ(fp32_to_bf16(bits_to_f32(0x3f808000)), 0x3f80);  // tie to even
  EXPECT_EQ(fp32_to_bf16(bits_to_f32(0x3f818000)), 0x3f82);
}

TEST(ThreadPool, CoversEveryTaskOnce) {
  for (int threads : {1, 2, 3, 8}) {
    ThreadPool pool(threads);
    for (int64_t n : {0, 1, 5, 1000}) {
      std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
      for (int rep = 0; rep < 50; ++rep) pool.run(n, [&](int64_t t, int th) {
        ASSERT_GE(th, 0);
        ASSERT_LT(th, threads);
        hits[static_cast<size_t>(t)]++;
      });
      for (auto& h : hits) ASSERT_EQ(h.load(), 50);
      std::vector<std::atomic<int>> cover(static_cast<size_t>(n));
      pool.parallel_for(n, 3, [&](int64_t b, int64_t e, int) { for (int64_t i = b; i < e; ++i) cover[static_cast<size_t>(i)]++; });
      for (auto& c : cover) ASSERT_EQ(c.load(), 1);
    }
  }
}

TEST(ThreadPool, ParallelForAllChunksEachLoopAsParallelForInOneRegion) {
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    const std::vector<std::pair<int64_t, int64_t>> shapes = {{1000, 7}, {0, 1}, {5, 100}, {64, 1}, {3, 1}};
    // The ranges parallel_for hands out for each loop alone, and the regions it takes.
    std::vector<std::set<std::pair<int64_t, int64_t>>> alone(shapes.size());
    std::mutex mu;
    const uint64_t r0 = pool.regions();
    for (size_t i = 0; i < shapes.size(); ++i)
      pool.parallel_for(shapes[i].first, shapes[i].second, [&](int64_t b, int64_t e, int) {
        std::lock_guard<std::mutex> lock(mu);
        alone[i].insert({b, e});
      });
    const uint64_t separate = pool.regions() - r0;
    std::vector<std::set<std::pair<int64_t, int64_t>>> fused(shapes.size());
    std::vector<ThreadPool::Loop> loops;
    for (size_t i = 0; i < shapes.size(); ++i)
      loops.push_back({shapes[i].first, shapes[i].second, [&, i](int64_t b, int64_t e, int th) {
                         ASSERT_LT(th, threads);
                         std::lock_guard<std::mutex> lock(mu);
                         EXPECT_TRUE(fused[i].insert({b, e}).second) << "range handed out twice";
                       }});
    const uint64_t r1 = pool.regions();
    pool.parallel_for_all(loops);
    EXPECT_EQ(fused, alone) << threads << " threads";
    EXPECT_EQ(pool.regions() - r1, threads == 1 ? 0u : 1u);
    EXPECT_EQ(separate, threads == 1 ? 0u : 3u);  // {0, 1} is empty, {5, 100} one chunk: no workers woken
  }
}

TEST(ThreadPool, RethrowsTaskError) {
  ThreadPool pool(2);
  EXPECT_THROW(pool.run(100, [](int64_t t, int) { if (t == 57) throw Error("boom"); }), Error);
  std::atomic<int> n{0};
  pool.run(10, [&](int64_t, int) { n++; });  // still usable
  EXPECT_EQ(n.load(), 10);
}

TEST(Cpu, ForcingCapsAtDetected) {
  Isa d = detected_isa();
  force_isa(Isa::AVX512);
  EXPECT_EQ(active_isa(), d);
  force_isa(Isa::Scalar);
  EXPECT_EQ(active_isa(), Isa::Scalar);
  force_isa(d);
  EXPECT_GE(physical_core_count(), 1);
}

}  // namespace
}  // namespace moe
