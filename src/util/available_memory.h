// available_memory.h: how much memory this process can still take before the kernel kills it, read
// (read-only) from /proc/meminfo's MemAvailable and from the memory limits of the process's cgroup
// (v2 memory.max, v1 memory.limit_in_bytes) and of every ancestor up to the mount's root, because a
// container or a systemd slice can cap a process far below what the machine has free. The serving KV
// pool is sized from this figure (plan/kv_pool.h).
//
// A cgroup's room is its limit minus what it uses, where the use leaves out the inactive file cache
// (memory.stat inactive_file; v1: total_inactive_file), which the kernel reclaims before it kills
// anyone; that is how container runtimes count a working set. The tightest level wins, then the
// smaller of it and MemAvailable.
//
// Every path is read under a root prefix ("" for the real system), so tests can build a fake /proc
// and /sys tree in a temporary directory.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

namespace moe {

struct CgroupMemory {
  int version = 0;          // 1 or 2
  std::string path;         // the limiting cgroup directory (as found, under the root prefix)
  uint64_t limit = 0;       // its memory limit in bytes
  uint64_t usage = 0;       // its usage less inactive file cache
  uint64_t room() const { return limit > usage ? limit - usage : 0; }
};

struct AvailableMemory {
  uint64_t bytes = 0;                  // what the process can still use: the smaller of the two below
  uint64_t mem_available = 0;          // /proc/meminfo MemAvailable
  uint64_t mem_total = 0;              // /proc/meminfo MemTotal
  std::optional<CgroupMemory> cgroup;  // the tightest cgroup limit, when one is set
  // "MemAvailable" or "cgroup v2 /sys/fs/cgroup/...": which figure `bytes` came from.
  std::string source() const;
};

// Reads the figures under `root` (default: the real /proc and /sys). Throws moe::Error when
// /proc/meminfo cannot be read or has no MemAvailable (Linux before 3.14); a cgroup file that is
// missing or unreadable only means that level sets no limit.
AvailableMemory read_available_memory(const std::string& root = "");

}  // namespace moe
