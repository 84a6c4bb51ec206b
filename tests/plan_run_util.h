// plan_run_util.h: runs the `moe` binary as a child process for the plan/quantize/synth/perplexity
// end-to-end tests: arguments passed without a shell, stdout and stderr captured, and the child's peak
// resident set size, which is what `moe plan` is checked against.
//
// The peak is the exec'd image's own high-water mark (VmHWM), read from /proc while the child is held
// at its exit by ptrace (PTRACE_O_TRACEEXIT stops it before its memory is released). wait4's
// ru_maxrss would not do: Linux carries the pre-exec high-water mark across exec, and a forked child
// starts as a copy of this test process, whose heap may be larger than a small model's whole run.
// Where ptrace is not permitted, ru_maxrss is the fallback.
#pragma once
#include <fcntl.h>
#include <stdlib.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "testutil/fixtures.h"

namespace moe::plan_test {

struct ChildResult {
  int exit_code = -1;         // -1 when killed by a signal
  std::string out, err;
  uint64_t peak_rss_bytes = 0;
};

using ::moe::testing::TempDir;

// Runs `moe args...` and waits for it.
inline ChildResult run_moe(const std::vector<std::string>& args) {
  TempDir tmp;
  const std::string out_path = tmp.file("stdout"), err_path = tmp.file("stderr");
  std::vector<std::string> argv_s = {moe::testing::moe_binary()};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  ChildResult r;
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    int o = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int e = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (o < 0 || e < 0) ::_exit(126);
    ::dup2(o, 1);
    ::dup2(e, 2);
    ::ptrace(PTRACE_TRACEME, 0, nullptr, nullptr);  // if refused, the child simply runs untraced
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  int status = 0;
  struct rusage ru {};
  uint64_t hwm_kb = 0;
  bool traced = false;
  for (;;) {
    if (::wait4(pid, &status, 0, &ru) != pid) throw std::runtime_error("wait4 failed");
    if (WIFEXITED(status) || WIFSIGNALED(status)) break;
    if (!WIFSTOPPED(status)) continue;
    long deliver = 0;
    if (!traced) {
      traced = true;  // the stop after exec: ask to be stopped again at exit
      ::ptrace(PTRACE_SETOPTIONS, pid, nullptr, reinterpret_cast<void*>(PTRACE_O_TRACEEXIT));
    } else if ((status >> 8) == (SIGTRAP | (PTRACE_EVENT_EXIT << 8))) {
      std::ifstream in("/proc/" + std::to_string(pid) + "/status");
      std::string line;
      while (std::getline(in, line))
        if (line.rfind("VmHWM:", 0) == 0) hwm_kb = std::stoull(line.substr(6));
    } else {
      deliver = WSTOPSIG(status);  // a signal meant for the child: pass it on
    }
    ::ptrace(PTRACE_CONT, pid, nullptr, reinterpret_cast<void*>(deliver));
  }
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  // Linux reports kilobytes.
  r.peak_rss_bytes = (hwm_kb ? hwm_kb : static_cast<uint64_t>(ru.ru_maxrss)) * 1024;
  r.out = ::moe::testing::read_file(out_path);
  r.err = ::moe::testing::read_file(err_path);
  return r;
}

}  // namespace moe::plan_test
