// log.cpp: leveled logging; one line per call, written whole so threads do not interleave.
#include "util/log.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace moe {
namespace {
LogLevel initial_level() {
  const char* v = std::getenv("MOE_LOG");
  if (!v) return LogLevel::Info;
  if (!std::strcmp(v, "debug")) return LogLevel::Debug;
  if (!std::strcmp(v, "warn")) return LogLevel::Warn;
  if (!std::strcmp(v, "error")) return LogLevel::Error;
  if (!std::strcmp(v, "quiet")) return LogLevel::Quiet;
  return LogLevel::Info;
}
std::atomic<int> g_level{static_cast<int>(initial_level())};
}  // namespace

void set_log_level(LogLevel level) { g_level.store(static_cast<int>(level)); }
LogLevel log_level() { return static_cast<LogLevel>(g_level.load(std::memory_order_relaxed)); }

void log_line(LogLevel level, const std::string& msg) {
  static const char* names[] = {"debug", "info", "warn", "error", ""};
  std::string line = std::string("moe: ") + (level == LogLevel::Info ? "" : std::string(names[static_cast<int>(level)]) + ": ") + msg + "\n";
  std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace moe
