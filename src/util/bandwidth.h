// bandwidth.h: the machine's memory READ bandwidth, measured. Decode speed is bounded by how fast the
// active weights stream from DRAM, so `moe bench` divides this by the active weight bytes per token to
// get the roofline. The measurement streams a buffer several times larger than the last-level cache
// with wide loads on every thread of a pool (each thread its own contiguous slice, as the matmul splits
// weight rows), reduces what it read into a checksum that is returned (so no load can be dropped), and
// keeps the best of several passes: the figure is the machine's ceiling, not its typical weather.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

#include "util/cpu.h"
#include "util/thread_pool.h"

namespace moe {

struct BandwidthOptions {
  uint64_t buffer_bytes = 0;  // 0: default_bandwidth_buffer_bytes()
  int passes = 8;             // timed passes over the whole buffer (after one untimed warm-up pass)
};

struct BandwidthResult {
  double best_bytes_per_s = 0;    // the fastest pass
  double median_bytes_per_s = 0;  // the median pass
  uint64_t buffer_bytes = 0;      // bytes read per pass
  int n_threads = 0;
  int passes = 0;
  uint64_t checksum = 0;          // sum of every 64-bit word read in the timed passes (keeps the loads)
};

// Size of the last-level data cache of CPU 0 from /sys (bytes), or 0 when it cannot be read.
uint64_t last_level_cache_bytes();

// The last-level cache as the CPU reports it: the highest-level data or unified cache of every CPU under
// root + /sys/devices/system/cpu, counted once per distinct shared_cpu_list (one L3 per socket, or per
// core complex on chiplet CPUs, so a thread pool spread over several sees all of them). Where /sys
// has no cache directories, sysconf(_SC_LEVEL3_CACHE_SIZE / _SC_LEVEL2_CACHE_SIZE) as one instance
// (only with the real root).
struct CacheTopology {
  uint64_t llc_bytes = 0;  // one instance (0: unknown)
  int llc_level = 0;       // 2 or 3 usually
  int llc_instances = 0;
  uint64_t total_llc_bytes() const { return llc_bytes * static_cast<uint64_t>(llc_instances); }
};
CacheTopology read_cache_topology(const std::string& root = "");

// How large the probe's buffer must be to measure DRAM and not a cache: kLlcMultiple times all the
// last-level cache the CPU reports and at least 1 GiB (so even a cache the CPU under-reports, such as a
// VM's, holds a small part of it), at most 8 GiB, and at most a quarter of the memory the process can
// still take (`available_bytes`, util/available_memory.h; 0: unknown, no bound) so the probe never
// crowds out the model; never below 4 MiB. A pure function, rounded down to whole MiB.
constexpr uint64_t kLlcMultiple = 4;
uint64_t bandwidth_buffer_bytes(uint64_t total_llc_bytes, uint64_t available_bytes);
// Whether a buffer of this size measures DRAM honestly: at least kLlcMultiple x the last-level cache
// (false when the memory bound forced it smaller).
bool buffer_exceeds_caches(uint64_t buffer_bytes, uint64_t total_llc_bytes);

// bandwidth_buffer_bytes() of this machine: read_cache_topology() and read_available_memory() (unknown
// when either cannot be read).
uint64_t default_bandwidth_buffer_bytes();

// A buffer allocated and written once, to measure with as often as wanted: `moe bench` measures right
// after each decode run, so each figure describes the machine as that run found it (on a shared host
// the bandwidth one VM gets varies from minute to minute). The buffer stays resident for the probe's
// lifetime: buffer_bytes() of the process's RSS are the probe's.
class BandwidthProbe {
 public:
  // Throws moe::Error when the buffer cannot be allocated or its size is out of range (< 4 KiB per
  // thread or > 64 GiB). buffer_bytes 0: default_bandwidth_buffer_bytes(). Word i holds i.
  BandwidthProbe(ThreadPool& pool, uint64_t buffer_bytes = 0);
  ~BandwidthProbe();
  BandwidthProbe(const BandwidthProbe&) = delete;
  BandwidthProbe& operator=(const BandwidthProbe&) = delete;

  // One untimed pass, then `passes` timed ones (moe::Error outside [1, 1000]) with all the pool's threads.
  BandwidthResult measure(int passes = 8);
  uint64_t buffer_bytes() const { return n_words_ * 8; }

 private:
  std::pair<size_t, size_t> chunk(int64_t index) const;
  ThreadPool& pool_;
  uint64_t* words_ = nullptr;
  size_t n_words_ = 0;
  size_t n_chunks_ = 0;
  size_t chunk_words_ = 0;
};

// A probe used once: measures with all of pool's threads. Throws as BandwidthProbe does.
BandwidthResult measure_read_bandwidth(ThreadPool& pool, const BandwidthOptions& options = {});

// The streaming kernel: the sum (mod 2^64) of n_words 64-bit words, read with the widest loads of
// `isa` (capped at what the CPU has). Exposed for tests: every ISA must give the same sum.
uint64_t sum_words(const uint64_t* words, size_t n_words, Isa isa = active_isa());

namespace detail {
uint64_t sum_words_scalar(const uint64_t* words, size_t n_words);
uint64_t sum_words_avx2(const uint64_t* words, size_t n_words);
uint64_t sum_words_avx512(const uint64_t* words, size_t n_words);
}  // namespace detail

}  // namespace moe
