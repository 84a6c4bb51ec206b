// available_memory_test.cpp: read_available_memory on fake /proc and /sys trees built in a temporary
// directory (cgroup v2 with the limit on an ancestor, v1 inside a container whose mount root is its own
// cgroup, no limit, a hybrid host), the errors for an unreadable /proc/meminfo, and the real machine.
#include "util/available_memory.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "testutil/fixtures.h"
#include "util/error.h"

namespace moe {
namespace {

using moe::testing::TempDir;
namespace fs = std::filesystem;

void put(const TempDir& t, const std::string& rel, const std::string& text) {
  fs::path p = fs::path(t.dir()) / fs::path(rel).relative_path();
  fs::create_directories(p.parent_path());
  std::ofstream(p) << text;
}

constexpr uint64_t kMiB = 1u << 20;

void put_meminfo(const TempDir& t, uint64_t total_kb, uint64_t avail_kb) {
  put(t, "/proc/meminfo",
      "MemTotal:       " + std::to_string(total_kb) + " kB\nMemFree:          123 kB\nMemAvailable:   " +
          std::to_string(avail_kb) + " kB\nBuffers:  1 kB\n");
}

TEST(AvailableMemory, NoCgroupLimitGivesMemAvailable) {
  TempDir t;
  put_meminfo(t, 24 * 1024 * 1024, 20 * 1024 * 1024);
  put(t, "/proc/self/cgroup", "0::/user.slice\n");
  put(t, "/proc/self/mountinfo", "41 31 0:38 / /sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw\n");
  put(t, "/sys/fs/cgroup/user.slice/memory.max", "max\n");
  put(t, "/sys/fs/cgroup/user.slice/memory.current", "1000\n");
  const AvailableMemory a = read_available_memory(t.dir());
  EXPECT_EQ(a.mem_available, 20ull * 1024 * kMiB);
  EXPECT_EQ(a.mem_total, 24ull * 1024 * kMiB);
  EXPECT_EQ(a.bytes, a.mem_available);
  EXPECT_FALSE(a.cgroup.has_value());
  EXPECT_EQ(a.source(), "MemAvailable");
}

TEST(AvailableMemory, CgroupV2LimitOnAnAncestorWinsAndInactiveFileIsReclaimable) {
  TempDir t;
  put_meminfo(t, 64 * 1024 * 1024, 60 * 1024 * 1024);
  put(t, "/proc/self/cgroup", "0::/system.slice/moe.service\n");
  put(t, "/proc/self/mountinfo",
      "22 1 0:20 / /proc rw - proc proc rw\n41 31 0:38 / /sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw,nsdelegate\n");
  // The service itself has no limit; its slice allows 8 GiB, of which 3 GiB are used, 1 GiB of that
  // inactive file cache; the root has no memory.max at all.
  put(t, "/sys/fs/cgroup/system.slice/moe.service/memory.max", "max\n");
  put(t, "/sys/fs/cgroup/system.slice/moe.service/memory.current", "1000\n");
  put(t, "/sys/fs/cgroup/system.slice/memory.max", std::to_string(8192 * kMiB) + "\n");
  put(t, "/sys/fs/cgroup/system.slice/memory.current", std::to_string(3072 * kMiB) + "\n");
  put(t, "/sys/fs/cgroup/system.slice/memory.stat",
      "anon 100\nfile 2000\nactive_file 5\ninactive_file " + std::to_string(1024 * kMiB) + "\n");
  const AvailableMemory a = read_available_memory(t.dir());
  ASSERT_TRUE(a.cgroup.has_value());
  EXPECT_EQ(a.cgroup->version, 2);
  EXPECT_EQ(a.cgroup->limit, 8192 * kMiB);
  EXPECT_EQ(a.cgroup->usage, 2048 * kMiB);
  EXPECT_EQ(a.bytes, 6144 * kMiB);
  EXPECT_NE(a.source().find("cgroup v2"), std::string::npos) << a.source();
  EXPECT_NE(a.source().find("system.slice"), std::string::npos) << a.source();
}

TEST(AvailableMemory, CgroupV1InsideAContainerUsesTheMountRoot) {
  TempDir t;
  put_meminfo(t, 64 * 1024 * 1024, 50 * 1024 * 1024);
  // The process's path is the host's name for the container's cgroup, which the container sees as the
  // mount's root.
  put(t, "/proc/self/cgroup", "5:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n0::/\n");
  put(t, "/proc/self/mountinfo",
      "35 31 0:32 /docker/abc /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
      "32 31 0:29 /docker/abc /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n");
  put(t, "/sys/fs/cgroup/memory/memory.limit_in_bytes", std::to_string(4096 * kMiB) + "\n");
  put(t, "/sys/fs/cgroup/memory/memory.usage_in_bytes", std::to_string(1536 * kMiB) + "\n");
  put(t, "/sys/fs/cgroup/memory/memory.stat",
      "inactive_file 1\ntotal_inactive_file " + std::to_string(512 * kMiB) + "\n");
  const AvailableMemory a = read_available_memory(t.dir());
  ASSERT_TRUE(a.cgroup.has_value());
  EXPECT_EQ(a.cgroup->version, 1);
  EXPECT_EQ(a.cgroup->usage, 1024 * kMiB);
  EXPECT_EQ(a.bytes, 3072 * kMiB);
  EXPECT_NE(a.source().find("cgroup v1"), std::string::npos);
}

TEST(AvailableMemory, HybridHostWithUnlimitedV1AndControllerlessV2) {
  // This is how the CI machine looks: cgroup2 mounted without the memory controller, v1 memory with
  // the kernel's "unlimited" value.
  TempDir t;
  put_meminfo(t, 24 * 1024 * 1024, 20 * 1024 * 1024);
  put(t, "/proc/self/cgroup", "4:memory:/process_api/x\n0::/\n");
  put(t, "/proc/self/mountinfo",
      "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
      "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n");
  put(t, "/sys/fs/cgroup/unified/cgroup.controllers", "hugetlb\n");
  put(t, "/sys/fs/cgroup/memory/process_api/x/memory.limit_in_bytes", "9223372036854771712\n");
  put(t, "/sys/fs/cgroup/memory/process_api/x/memory.usage_in_bytes", "370683904\n");
  put(t, "/sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n");
  put(t, "/sys/fs/cgroup/memory/memory.usage_in_bytes", "4881891328\n");
  const AvailableMemory a = read_available_memory(t.dir());
  EXPECT_FALSE(a.cgroup.has_value());
  EXPECT_EQ(a.bytes, 20ull * 1024 * kMiB);
}

TEST(AvailableMemory, ALimitAboveMemAvailableLeavesMemAvailable) {
  TempDir t;
  put_meminfo(t, 8 * 1024 * 1024, 2 * 1024 * 1024);
  put(t, "/proc/self/cgroup", "0::/a\n");
  put(t, "/proc/self/mountinfo", "41 31 0:38 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
  put(t, "/sys/fs/cgroup/a/memory.max", std::to_string(6144 * kMiB) + "\n");
  put(t, "/sys/fs/cgroup/a/memory.current", std::to_string(1024 * kMiB) + "\n");
  const AvailableMemory a = read_available_memory(t.dir());
  ASSERT_TRUE(a.cgroup.has_value());
  EXPECT_EQ(a.cgroup->room(), 5120 * kMiB);
  EXPECT_EQ(a.bytes, 2048 * kMiB);
  EXPECT_EQ(a.source(), "MemAvailable");
}

TEST(AvailableMemory, UnreadableOrIncompleteMeminfoIsAnErrorNamingTheFlag) {
  TempDir t;
  try {
    read_available_memory(t.dir());
    FAIL() << "no /proc/meminfo must throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--memory-available"), std::string::npos) << e.what();
  }
  put(t, "/proc/meminfo", "MemTotal: 1000 kB\nMemFree: 10 kB\n");
  try {
    read_available_memory(t.dir());
    FAIL() << "no MemAvailable must throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("MemAvailable"), std::string::npos) << e.what();
  }
  put(t, "/proc/meminfo", "MemAvailable: 12x4 kB\n");
  EXPECT_THROW(read_available_memory(t.dir()), Error);
}

TEST(AvailableMemory, TheRealMachineHasSomeMemoryAvailable) {
  const AvailableMemory a = read_available_memory();
  EXPECT_GT(a.mem_total, 0u);
  EXPECT_GT(a.bytes, 0u);
  EXPECT_LE(a.bytes, a.mem_available);
  EXPECT_LE(a.mem_available, a.mem_total);
}

}  // namespace
}  // namespace moe
