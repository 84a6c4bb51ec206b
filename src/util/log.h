// log.h: minimal leveled logging to stderr (MOE_LOG=debug|info|warn|error, default info).
#pragma once
#include <string>

#include "util/error.h"

namespace moe {

enum class LogLevel { Debug = 0, Info = 1, Warn = 2, Error = 3, Quiet = 4 };
void set_log_level(LogLevel level);
LogLevel log_level();
void log_line(LogLevel level, const std::string& msg);

template <typename... Args> void log_debug(Args&&... a) { if (log_level() <= LogLevel::Debug) log_line(LogLevel::Debug, cat(std::forward<Args>(a)...)); }
template <typename... Args> void log_info(Args&&... a) { if (log_level() <= LogLevel::Info) log_line(LogLevel::Info, cat(std::forward<Args>(a)...)); }
template <typename... Args> void log_warn(Args&&... a) { if (log_level() <= LogLevel::Warn) log_line(LogLevel::Warn, cat(std::forward<Args>(a)...)); }
template <typename... Args> void log_error(Args&&... a) { if (log_level() <= LogLevel::Error) log_line(LogLevel::Error, cat(std::forward<Args>(a)...)); }

}  // namespace moe
