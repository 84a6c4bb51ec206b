// bandwidth.cpp: memory read bandwidth measurement (see bandwidth.h). The probe's buffer is first
// written by the threads that will read it (so each page is touched by its reader); each measurement
// reads it once untimed, then times its passes. Work is handed out in chunks of 4 MiB so a thread
// delayed by another process does not hold a whole pass back; the best pass is the machine's ceiling.
#include "util/bandwidth.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <unistd.h>

#include "util/available_memory.h"
#include "util/error.h"

namespace moe {

namespace detail {

uint64_t sum_words_scalar(const uint64_t* words, size_t n_words) {
  // Four independent sums so that the additions do not serialise; the compiler vectorises this with
  // the baseline's SSE2 as well.
  uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  size_t i = 0;
  for (; i + 4 <= n_words; i += 4) {
    s0 += words[i];
    s1 += words[i + 1];
    s2 += words[i + 2];
    s3 += words[i + 3];
  }
  for (; i < n_words; ++i) s0 += words[i];
  return s0 + s1 + s2 + s3;
}

}  // namespace detail

uint64_t sum_words(const uint64_t* words, size_t n_words, Isa isa) {
  if (isa > detected_isa()) isa = detected_isa();
  switch (isa) {
    case Isa::AVX512: return detail::sum_words_avx512(words, n_words);
    case Isa::AVX2: return detail::sum_words_avx2(words, n_words);
    case Isa::Scalar: break;
  }
  return detail::sum_words_scalar(words, n_words);
}

namespace {

// "32768K", "1M" or plain bytes, as /sys writes cache sizes; 0 when unparsable.
uint64_t parse_cache_size(const std::string& size) {
  if (size.empty()) return 0;
  char* end = nullptr;
  const unsigned long long value = std::strtoull(size.c_str(), &end, 10);
  if (end == size.c_str()) return 0;
  uint64_t bytes = value;
  if (*end == 'K') bytes = value << 10;
  else if (*end == 'M') bytes = value << 20;
  else if (*end == 'G') bytes = value << 30;
  return bytes;
}

}  // namespace

uint64_t last_level_cache_bytes() {
  uint64_t best = 0;
  int best_level = 0;
  for (int index = 0; index < 16; ++index) {
    const std::string dir = cat("/sys/devices/system/cpu/cpu0/cache/index", index, "/");
    std::ifstream level_in(dir + "level"), type_in(dir + "type"), size_in(dir + "size");
    if (!level_in || !size_in) break;
    int level = 0;
    std::string type, size;
    level_in >> level;
    type_in >> type;
    size_in >> size;
    if (type == "Instruction" || size.empty()) continue;
    const uint64_t bytes = parse_cache_size(size);
    if (level > best_level || (level == best_level && bytes > best)) {
      best_level = level;
      best = bytes;
    }
  }
  return best;
}

CacheTopology read_cache_topology(const std::string& root) {
  CacheTopology t;
  std::set<std::string> domains;  // shared_cpu_list of each instance of the level found
  const std::filesystem::path cpus = root + "/sys/devices/system/cpu";
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(cpus, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.size() < 4 || name.rfind("cpu", 0) != 0 ||
        name.find_first_not_of("0123456789", 3) != std::string::npos)
      continue;
    for (int index = 0; index < 16; ++index) {
      const std::string dir = (entry.path() / "cache" / cat("index", index)).string() + "/";
      std::ifstream level_in(dir + "level"), type_in(dir + "type"), size_in(dir + "size"), shared_in(dir + "shared_cpu_list");
      if (!level_in || !size_in) break;
      int level = 0;
      std::string type, size, shared;
      level_in >> level;
      type_in >> type;
      size_in >> size;
      shared_in >> shared;
      const uint64_t bytes = parse_cache_size(size);
      if (type == "Instruction" || bytes == 0) continue;
      if (level > t.llc_level) {
        t.llc_level = level;
        t.llc_bytes = bytes;
        domains.clear();
      }
      if (level == t.llc_level) {
        t.llc_bytes = std::max(t.llc_bytes, bytes);
        domains.insert(shared.empty() ? name : shared);  // no list: count it per CPU
      }
    }
  }
  t.llc_instances = static_cast<int>(domains.size());
  if (t.llc_instances == 0 && root.empty()) {
    for (auto [key, level] : {std::pair{_SC_LEVEL3_CACHE_SIZE, 3}, std::pair{_SC_LEVEL2_CACHE_SIZE, 2}}) {
      const long v = ::sysconf(key);
      if (v > 0) {
        t.llc_bytes = static_cast<uint64_t>(v);
        t.llc_level = level;
        t.llc_instances = 1;
        break;
      }
    }
  }
  return t;
}

uint64_t bandwidth_buffer_bytes(uint64_t total_llc_bytes, uint64_t available_bytes) {
  constexpr uint64_t kMiB = 1ull << 20, kMin = 4 * kMiB, kFloor = 1ull << 30, kMax = 8ull << 30;
  const uint64_t llc = std::min<uint64_t>(total_llc_bytes, kMax);  // no overflow below
  uint64_t bytes = std::clamp<uint64_t>(kLlcMultiple * llc, kFloor, kMax);
  if (available_bytes > 0) bytes = std::min(bytes, available_bytes / 4);
  bytes = std::max(bytes, kMin);
  return bytes / kMiB * kMiB;
}

bool buffer_exceeds_caches(uint64_t buffer_bytes, uint64_t total_llc_bytes) {
  return total_llc_bytes == 0 || buffer_bytes / kLlcMultiple >= total_llc_bytes;
}

uint64_t default_bandwidth_buffer_bytes() {
  uint64_t available = 0;
  try {
    available = read_available_memory().bytes;
  } catch (const Error&) {
    // No MemAvailable (a very old kernel): no memory bound.
  }
  return bandwidth_buffer_bytes(read_cache_topology().total_llc_bytes(), available);
}

BandwidthProbe::BandwidthProbe(ThreadPool& pool, uint64_t buffer_bytes) : pool_(pool) {
  const int n_threads = pool.size();
  const uint64_t bytes = buffer_bytes ? buffer_bytes : default_bandwidth_buffer_bytes();
  if (bytes < 4096ull * static_cast<uint64_t>(n_threads) || bytes > (64ull << 30))
    fail("bandwidth buffer of ", bytes, " bytes is outside [4 KiB per thread, 64 GiB]");
  constexpr size_t kAlign = 4096;
  n_words_ = static_cast<size_t>(bytes / 8);
  const size_t alloc_bytes = (n_words_ * 8 + kAlign - 1) / kAlign * kAlign;
  words_ = static_cast<uint64_t*>(std::aligned_alloc(kAlign, alloc_bytes));
  if (!words_) fail("cannot allocate ", alloc_bytes, " bytes for the bandwidth measurement");

  // 4 MiB chunks (at least one per thread, so small test buffers still split).
  constexpr size_t kChunkWords = (4u << 20) / 8;
  n_chunks_ = std::max<size_t>((n_words_ + kChunkWords - 1) / kChunkWords, static_cast<size_t>(n_threads));
  chunk_words_ = (n_words_ + n_chunks_ - 1) / n_chunks_;
  // Written by the threads that will read it. Word i holds i, so the checksum is checkable:
  // passes * n(n-1)/2 mod 2^64.
  pool_.run(static_cast<int64_t>(n_chunks_), [&](int64_t c, int) {
    auto [begin, end] = chunk(c);
    for (size_t i = begin; i < end; ++i) words_[i] = i;
  });
}

BandwidthProbe::~BandwidthProbe() { std::free(words_); }

std::pair<size_t, size_t> BandwidthProbe::chunk(int64_t index) const {
  const size_t begin = std::min(n_words_, static_cast<size_t>(index) * chunk_words_);
  return {begin, std::min(n_words_, begin + chunk_words_)};
}

BandwidthResult BandwidthProbe::measure(int passes) {
  if (passes < 1 || passes > 1000) fail("bandwidth passes ", passes, " outside [1, 1000]");
  const Isa isa = active_isa();
  struct alignas(64) Partial { uint64_t sum = 0; };
  std::vector<Partial> partial(static_cast<size_t>(pool_.size()));
  auto read_pass = [&] {
    pool_.run(static_cast<int64_t>(n_chunks_), [&](int64_t c, int thread) {
      auto [begin, end] = chunk(c);
      partial[static_cast<size_t>(thread)].sum += sum_words(words_ + begin, end - begin, isa);
    });
  };
  read_pass();  // warm-up: TLB, pool threads awake
  for (auto& p : partial) p.sum = 0;

  std::vector<double> rates;
  for (int pass = 0; pass < passes; ++pass) {
    const auto t0 = std::chrono::steady_clock::now();
    read_pass();
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    rates.push_back(static_cast<double>(n_words_ * 8) / std::max(secs, 1e-9));
  }
  BandwidthResult r;
  for (const auto& p : partial) r.checksum += p.sum;
  std::sort(rates.begin(), rates.end());
  r.best_bytes_per_s = rates.back();
  const size_t mid = rates.size() / 2;
  r.median_bytes_per_s = rates.size() % 2 ? rates[mid] : 0.5 * (rates[mid - 1] + rates[mid]);
  r.buffer_bytes = n_words_ * 8;
  r.n_threads = pool_.size();
  r.passes = passes;
  return r;
}

BandwidthResult measure_read_bandwidth(ThreadPool& pool, const BandwidthOptions& options) {
  if (options.passes < 1 || options.passes > 1000) fail("bandwidth passes ", options.passes, " outside [1, 1000]");
  BandwidthProbe probe(pool, options.buffer_bytes);
  return probe.measure(options.passes);
}

}  // namespace moe
