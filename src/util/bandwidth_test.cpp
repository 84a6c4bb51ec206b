// bandwidth_test.cpp: the read-bandwidth measurement returns a plausible rate and really reads every
// word: the checksum is the exact sum of the buffer (word i holds i) times the passes, and every ISA's
// kernel gives the scalar sum on lengths that exercise the vector tails and unaligned starts. The buffer
// size rule is a pure function of the reported caches and memory, tested on fixed figures and a fake /sys.
#include "util/bandwidth.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>
#include <vector>

#include "testutil/fixtures.h"
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
  const CacheTopology topo = read_cache_topology();
  if (topo.llc_instances > 0) {
    EXPECT_GE(topo.llc_bytes, llc);  // CPU 0's is one of the instances
    EXPECT_GE(topo.llc_level, 2);
  }
  const uint64_t buf = default_bandwidth_buffer_bytes();
  EXPECT_GE(buf, 4u << 20);
  EXPECT_LE(buf, 8ull << 30);
}

constexpr uint64_t kMiB = 1ull << 20, kGiB = 1ull << 30;

// The sizing rule, as a pure function of what the CPU and the memory report.
TEST(Bandwidth, BufferSizeFollowsTheCachesAndTheMemory) {
  EXPECT_EQ(bandwidth_buffer_bytes(32 * kMiB, 20 * kGiB), 1 * kGiB);     // small cache: the 1 GiB floor
  EXPECT_EQ(bandwidth_buffer_bytes(260 * kMiB, 20 * kGiB), 1040 * kMiB); // the VM: 4 x 260 MiB
  EXPECT_EQ(bandwidth_buffer_bytes(2 * 384 * kMiB, 64 * kGiB), 3 * kGiB); // two sockets' L3 together
  EXPECT_EQ(bandwidth_buffer_bytes(4 * kGiB, 256 * kGiB), 8 * kGiB);    // at most 8 GiB
  EXPECT_EQ(bandwidth_buffer_bytes(0, 0), 1 * kGiB);                    // nothing known: the floor
  EXPECT_EQ(bandwidth_buffer_bytes(260 * kMiB, 2 * kGiB), 512 * kMiB);  // a quarter of what is left
  EXPECT_EQ(bandwidth_buffer_bytes(32 * kMiB, 8 * kMiB), 4 * kMiB);     // never below 4 MiB
  EXPECT_EQ(bandwidth_buffer_bytes(~0ull, 0), 8 * kGiB);                // no overflow
  EXPECT_EQ(bandwidth_buffer_bytes(100 * kMiB + 12345, 0) % kMiB, 0u);  // whole MiB
  EXPECT_TRUE(buffer_exceeds_caches(1040 * kMiB, 260 * kMiB));
  EXPECT_FALSE(buffer_exceeds_caches(512 * kMiB, 260 * kMiB));  // the memory bound made it too small
  EXPECT_TRUE(buffer_exceeds_caches(1 * kGiB, 0));
}

void write_file(const std::filesystem::path& p, const std::string& text) {
  std::filesystem::create_directories(p.parent_path());
  std::ofstream(p) << text << "\n";
}

// A fake /sys: four CPUs, private L1d/L1i/L2, an L3 of 32 MiB per pair of CPUs (two instances, as on a
// chiplet CPU), and a stray "cpufreq" directory that is not a CPU.
TEST(Bandwidth, CacheTopologyCountsEachSharedCacheOnce) {
  testing::TempDir tmp;
  const std::filesystem::path cpu = std::filesystem::path(tmp.dir()) / "sys/devices/system/cpu";
  for (int c = 0; c < 4; ++c) {
    const auto dir = cpu / ("cpu" + std::to_string(c)) / "cache";
    auto index = [&](int i, int level, const char* type, const char* size, const std::string& shared) {
      const auto d = dir / ("index" + std::to_string(i));
      write_file(d / "level", std::to_string(level));
      write_file(d / "type", type);
      write_file(d / "size", size);
      write_file(d / "shared_cpu_list", shared);
    };
    index(0, 1, "Data", "32K", std::to_string(c));
    index(1, 1, "Instruction", "32K", std::to_string(c));
    index(2, 2, "Unified", "1024K", std::to_string(c));
    index(3, 3, "Unified", "32768K", c < 2 ? "0-1" : "2-3");
  }
  std::filesystem::create_directories(cpu / "cpufreq");
  const CacheTopology t = read_cache_topology(tmp.dir());
  EXPECT_EQ(t.llc_level, 3);
  EXPECT_EQ(t.llc_bytes, 32 * kMiB);
  EXPECT_EQ(t.llc_instances, 2);
  EXPECT_EQ(t.total_llc_bytes(), 64 * kMiB);
  // No cache directories under a root: nothing known (sysconf is only asked for the real root).
  const CacheTopology none = read_cache_topology(tmp.file("empty"));
  EXPECT_EQ(none.llc_instances, 0);
  EXPECT_EQ(none.total_llc_bytes(), 0u);
}

}  // namespace
}  // namespace moe
