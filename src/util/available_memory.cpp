// available_memory.cpp: MemAvailable and cgroup memory limits (see available_memory.h). The cgroup
// directories are found the way the kernel publishes them: the process's cgroup path from
// /proc/self/cgroup, made relative to the cgroup mount's own root from /proc/self/mountinfo (inside a
// container the mount root is the container's cgroup), then walked up to the mount point.
#include "util/available_memory.h"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "util/error.h"

namespace moe {
namespace {

namespace fs = std::filesystem;

// Above this a cgroup v1 limit means "no limit" (the kernel writes 2^63 - 4096 rounded to pages).
constexpr uint64_t kNoLimit = uint64_t{1} << 62;

std::optional<std::string> read_first_line(const fs::path& p) {
  std::ifstream in(p);
  std::string line;
  if (!in || !std::getline(in, line)) return std::nullopt;
  return line;
}

std::optional<uint64_t> parse_u64(const std::string& s) {
  if (s.empty() || s.size() > 20) return std::nullopt;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    const uint64_t d = static_cast<uint64_t>(c - '0');
    if (v > (UINT64_MAX - d) / 10) return std::nullopt;
    v = v * 10 + d;
  }
  return v;
}

std::optional<uint64_t> read_u64(const fs::path& p) {
  auto line = read_first_line(p);
  if (!line) return std::nullopt;
  while (!line->empty() && (line->back() == ' ' || line->back() == '\r')) line->pop_back();
  return parse_u64(*line);
}

// The value of `key` in a "key value" file (memory.stat), or nullopt.
std::optional<uint64_t> stat_value(const fs::path& p, const std::string& key) {
  std::ifstream in(p);
  std::string k;
  std::string v;
  while (in >> k >> v)
    if (k == key) return parse_u64(v);
  return std::nullopt;
}

// "MemAvailable:   20798516 kB" -> bytes.
std::optional<uint64_t> meminfo_value(const std::string& text, const std::string& key) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + ":", 0) != 0) continue;
    std::istringstream fields(line.substr(key.size() + 1));
    std::string number, unit;
    fields >> number >> unit;
    auto v = parse_u64(number);
    if (!v) return std::nullopt;
    if (unit.empty()) return v;
    if (unit != "kB" || *v > (UINT64_MAX >> 10)) return std::nullopt;
    return *v << 10;
  }
  return std::nullopt;
}

struct Mount {
  std::string root;        // the cgroup path that the mount shows as its top
  std::string mountpoint;  // where it is mounted
};

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s) {
    if (c == sep) {
      out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  out.push_back(cur);
  return out;
}

// The cgroup v2 mount (version 2) or the v1 mount carrying the memory controller (version 1).
std::optional<Mount> find_mount(const std::string& root, int version) {
  std::ifstream in(root + "/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    const size_t dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    const auto pre = split(line.substr(0, dash), ' ');
    const auto post = split(line.substr(dash + 3), ' ');
    if (pre.size() < 5 || post.size() < 3) continue;
    if (version == 2 && post[0] == "cgroup2") return Mount{pre[3], pre[4]};
    if (version == 1 && post[0] == "cgroup")
      for (const auto& opt : split(post[2], ','))
        if (opt == "memory") return Mount{pre[3], pre[4]};
  }
  return std::nullopt;
}

// This process's cgroup path for the v2 hierarchy ("0::/path") or the v1 memory controller.
std::optional<std::string> cgroup_path(const std::string& root, int version) {
  std::ifstream in(root + "/proc/self/cgroup");
  std::string line;
  while (std::getline(in, line)) {
    const size_t a = line.find(':');
    const size_t b = a == std::string::npos ? a : line.find(':', a + 1);
    if (b == std::string::npos) continue;
    const std::string id = line.substr(0, a), controllers = line.substr(a + 1, b - a - 1), path = line.substr(b + 1);
    if (version == 2 && id == "0" && controllers.empty()) return path;
    if (version == 1)
      for (const auto& c : split(controllers, ','))
        if (c == "memory") return path;
  }
  return std::nullopt;
}

// The limit and working-set usage of one cgroup directory, when it sets a limit.
std::optional<CgroupMemory> read_level(const fs::path& dir, int version) {
  CgroupMemory m;
  m.version = version;
  m.path = dir.string();
  if (version == 2) {
    auto max = read_first_line(dir / "memory.max");
    if (!max || *max == "max") return std::nullopt;
    auto limit = parse_u64(*max);
    auto current = read_u64(dir / "memory.current");
    if (!limit || !current) return std::nullopt;
    m.limit = *limit;
    const uint64_t cache = stat_value(dir / "memory.stat", "inactive_file").value_or(0);
    m.usage = *current > cache ? *current - cache : 0;
  } else {
    auto limit = read_u64(dir / "memory.limit_in_bytes");
    auto usage = read_u64(dir / "memory.usage_in_bytes");
    if (!limit || *limit >= kNoLimit || !usage) return std::nullopt;
    m.limit = *limit;
    auto cache = stat_value(dir / "memory.stat", "total_inactive_file");
    if (!cache) cache = stat_value(dir / "memory.stat", "inactive_file");
    m.usage = *usage > cache.value_or(0) ? *usage - cache.value_or(0) : 0;
  }
  return m;
}

// The tightest limit from the process's cgroup up to the mount point, for one hierarchy.
std::optional<CgroupMemory> tightest_in(const std::string& root, int version) {
  auto mount = find_mount(root, version);
  auto path = cgroup_path(root, version);
  if (!mount || !path) return std::nullopt;
  std::string rel = *path;
  if (mount->root != "/" && rel.rfind(mount->root, 0) == 0) rel = rel.substr(mount->root.size());
  const fs::path top = fs::path(root + mount->mountpoint);
  fs::path dir = top / fs::path(rel).relative_path();
  std::error_code ec;
  // A cgroup namespace can show a path the mount does not have; then the mount's top is ours.
  if (!fs::is_directory(dir, ec)) dir = top;
  std::optional<CgroupMemory> best;
  for (int depth = 0; depth < 64; ++depth) {
    if (auto level = read_level(dir, version))
      if (!best || level->room() < best->room()) best = level;
    if (dir == top || !dir.has_parent_path() || dir.parent_path() == dir) break;
    dir = dir.parent_path();
  }
  return best;
}

}  // namespace

std::string AvailableMemory::source() const {
  if (cgroup && cgroup->room() < mem_available) return "cgroup v" + std::to_string(cgroup->version) + " " + cgroup->path;
  return "MemAvailable";
}

AvailableMemory read_available_memory(const std::string& root) {
  std::ifstream in(root + "/proc/meminfo");
  if (!in) fail("cannot read ", root, "/proc/meminfo to size the KV pool (give --memory-available BYTES)");
  std::stringstream text;
  text << in.rdbuf();
  AvailableMemory a;
  auto avail = meminfo_value(text.str(), "MemAvailable");
  if (!avail) fail(root, "/proc/meminfo has no MemAvailable line (give --memory-available BYTES)");
  a.mem_available = *avail;
  a.mem_total = meminfo_value(text.str(), "MemTotal").value_or(0);
  for (int version : {2, 1}) {
    auto c = tightest_in(root, version);
    if (c && (!a.cgroup || c->room() < a.cgroup->room())) a.cgroup = c;
  }
  a.bytes = a.mem_available;
  if (a.cgroup && a.cgroup->room() < a.bytes) a.bytes = a.cgroup->room();
  return a;
}

}  // namespace moe
