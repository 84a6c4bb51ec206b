// defaults_e2e_test.cpp: `moe serve` on real machines (issue 19): the KV pool sized from the memory
// that is there (--memory-available, and the real MemAvailable / cgroup figure by default), the refusal
// at start of a context that cannot fit, the start-up lines, /metrics and `moe plan --serve` agreeing,
// every flag alias and environment variable of run, chat and serve, the warning for a server open beyond
// loopback without a key, `moe help` and `moe --version`. All on the bundled model; each server is
// started on port 0, read until its "listening on" line, asked over a plain socket, and stopped with
// SIGTERM (exit 0).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "testutil/fixtures.h"
#include "util/available_memory.h"

namespace moe {
namespace {

using moe::testing::run_moe_args;

// A `moe serve` child: started with `args` (after "serve"), stderr read until it listens or exits.
class Server {
 public:
  explicit Server(const std::vector<std::string>& args) {
    std::vector<std::string> words = {moe::testing::moe_binary(), "serve"};
    words.insert(words.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& w : words) argv.push_back(w.data());
    argv.push_back(nullptr);
    int fds[2];
    if (::pipe(fds) != 0) throw std::runtime_error("pipe failed");
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      const int devnull = ::open("/dev/null", O_RDWR);
      ::dup2(devnull, 0);
      ::dup2(devnull, 1);
      ::dup2(fds[1], 2);
      ::close(fds[0]);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    ::close(fds[1]);
    err_fd_ = fds[0];
    const std::regex listening(R"(listening on http://([^ \n]+):(\d+))");
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < deadline) {
      std::smatch m;
      if (std::regex_search(err_, m, listening)) {
        host_ = m[1];
        port_ = std::stoi(m[2]);
        return;
      }
      if (!read_some(1000)) break;  // the child closed stderr: it exited
    }
    finish();
  }
  ~Server() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (err_fd_ >= 0) ::close(err_fd_);
  }

  bool listening() const { return port_ > 0; }
  int port() const { return port_; }
  const std::string& host() const { return host_; }
  const std::string& err() const { return err_; }
  int exit_status() const { return status_; }

  // GET `path` over a plain HTTP/1.0 socket; returns the status code and the body.
  std::pair<int, std::string> get(const std::string& path, const std::string& headers = "") const {
    const int s = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port_));
    ::inet_pton(AF_INET, host_ == "0.0.0.0" ? "127.0.0.1" : host_.c_str(), &a.sin_addr);
    if (::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      ::close(s);
      return {-1, ""};
    }
    const std::string req = "GET " + path + " HTTP/1.0\r\nHost: x\r\n" + headers + "\r\n";
    if (::write(s, req.data(), req.size()) != static_cast<ssize_t>(req.size())) {
      ::close(s);
      return {-1, ""};
    }
    std::string resp;
    char buf[65536];
    for (ssize_t n; (n = ::read(s, buf, sizeof buf)) > 0;) resp.append(buf, static_cast<size_t>(n));
    ::close(s);
    const size_t body = resp.find("\r\n\r\n");
    if (resp.size() < 12 || body == std::string::npos) return {-1, resp};
    return {std::stoi(resp.substr(9, 3)), resp.substr(body + 4)};
  }

  // /metrics as name -> value (unlabelled samples only).
  std::map<std::string, double> metrics() const {
    std::map<std::string, double> m;
    std::istringstream in(get("/metrics").second);
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty() || line[0] == '#' || line.find('{') != std::string::npos) continue;
      const size_t sp = line.rfind(' ');
      m[line.substr(0, sp)] = std::stod(line.substr(sp + 1));
    }
    return m;
  }

  // SIGTERM, then the exit status; stderr is read to the end.
  int stop() {
    if (pid_ > 0) ::kill(pid_, SIGTERM);
    finish();
    return status_;
  }

 private:
  bool read_some(int timeout_ms) {
    pollfd p{err_fd_, POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) <= 0) return true;
    char buf[4096];
    const ssize_t n = ::read(err_fd_, buf, sizeof buf);
    if (n <= 0) return false;
    err_.append(buf, static_cast<size_t>(n));
    return true;
  }
  void finish() {
    if (pid_ <= 0) return;
    char buf[4096];
    for (ssize_t n; (n = ::read(err_fd_, buf, sizeof buf)) > 0;) err_.append(buf, static_cast<size_t>(n));
    int st = 0;
    ::waitpid(pid_, &st, 0);
    status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    pid_ = -1;
  }

  pid_t pid_ = -1;
  int err_fd_ = -1;
  std::string err_;
  std::string host_;
  int port_ = 0;
  int status_ = -1;
};

std::vector<std::string> with(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// The server's own block count from its start-up line ("KV pool ...: 1,234 blocks of 16 tokens").
int64_t startup_blocks(const std::string& err) {
  std::smatch m;
  if (!std::regex_search(err, m, std::regex(R"(KV pool [^:]+: ([0-9,]+) blocks of 16 tokens)"))) return -1;
  std::string digits;
  for (char c : m[1].str())
    if (c != ',') digits += c;
  return std::stoll(digits);
}

const std::vector<std::string> kQuick = {"--host", "127.0.0.1", "--port", "0", "-t", "1"};

TEST(ServeMemory, PoolIsSizedToFitTheGivenAvailableMemory) {
  // 64 MiB x 0.9, far less than -c 4096 x -np 256 (1,024 blocks of ... per sequence): the pool is what
  // is left beside the workspace, the overhead and the mapped weights.
  Server s(with(kQuick, {"--memory-available", "64MiB", "-c", "4096", "-np", "256"}));
  ASSERT_TRUE(s.listening()) << s.err();
  EXPECT_NE(s.err().find("available (--memory-available) x 0.9 utilization"), std::string::npos) << s.err();
  EXPECT_NE(s.err().find("(limited by available memory)"), std::string::npos) << s.err();
  auto m = s.metrics();
  const double block = m["moe_kv_block_bytes"];
  EXPECT_EQ(m["moe_memory_available_bytes"], 64.0 * 1024 * 1024);
  EXPECT_EQ(m["moe_memory_utilization"], 0.9);
  EXPECT_EQ(m["moe_memory_usable_bytes"], std::floor(64.0 * 1024 * 1024 * 0.9));
  // The engine allocated exactly the planned pool, and the start-up line says the same.
  EXPECT_EQ(m["moe_kv_pool_bytes"], m["moe_kv_blocks_total"] * block);
  EXPECT_EQ(startup_blocks(s.err()), static_cast<int64_t>(m["moe_kv_blocks_total"]));
  // Sized to fit: everything planned fits in the usable memory, and one more block would not.
  const double planned = m["moe_kv_pool_bytes"] + m["moe_weights_mapped_bytes"] + m["moe_workspace_bytes"] +
                         m["moe_memory_overhead_bytes"] + m["moe_weights_resident_bytes"];
  EXPECT_LE(planned, m["moe_memory_usable_bytes"]);
  EXPECT_GT(planned + block, m["moe_memory_usable_bytes"]);
  EXPECT_GT(m["moe_kv_blocks_total"], 256.0);  // at least one sequence of 4096 tokens
  EXPECT_LT(m["moe_kv_blocks_total"], 256.0 * 256);
  EXPECT_GT(m["moe_weights_mapped_bytes"], 0.0);
  EXPECT_EQ(m["moe_weights_paged_bytes"], 0.0);
  EXPECT_EQ(m["moe_max_model_len"], 4096.0);

  // `moe plan --serve` with the same options plans the same pool. The two processes measure their own
  // resident size at start (the runtime term of the overhead), which differs between them by an amount
  // that varies with the load (up to ~530 KiB seen under ctest -j2), so the block counts may differ by
  // exactly that overhead difference, to within the one block that rounding to whole blocks allows.
  auto p = run_moe_args({"plan", "--serve", "--json", "--memory-available", "64MiB", "-c", "4096", "-np", "256", "-t", "1"});
  ASSERT_EQ(p.status, 0) << p.err;
  const auto j = nlohmann::json::parse(p.out);
  EXPECT_EQ(j["usable_bytes"].get<double>(), m["moe_memory_usable_bytes"]);
  EXPECT_EQ(j["kv_block_bytes"].get<double>(), block);
  EXPECT_EQ(j["workspace_bytes"].get<double>(), m["moe_workspace_bytes"]);
  EXPECT_EQ(j["weights_mapped_bytes"].get<double>(), m["moe_weights_mapped_bytes"]);
  EXPECT_EQ(j["limited_by"], "available memory");
  const double pool_diff = (j["kv_blocks"].get<double>() - m["moe_kv_blocks_total"]) * block;
  const double overhead_diff = j["overhead_bytes"].get<double>() - m["moe_memory_overhead_bytes"];
  EXPECT_LT(std::abs(pool_diff + overhead_diff), block) << p.out;
  EXPECT_EQ(s.stop(), 0) << s.err();
}

TEST(ServeMemory, DefaultReadsTheRealAvailableMemory) {
  const AvailableMemory before = read_available_memory();
  Server s(with(kQuick, {"-c", "256", "-np", "2"}));
  ASSERT_TRUE(s.listening()) << s.err();
  const AvailableMemory after = read_available_memory();
  auto m = s.metrics();
  const std::string source = before.source();
  EXPECT_NE(s.err().find("available (" + source.substr(0, source.find(' ')) ), std::string::npos) << s.err();
  // The machine is shared while tests run: the server's reading lies near this process's two readings.
  const double lo = static_cast<double>(std::min(before.bytes, after.bytes)) - 2.0 * (1u << 30);
  const double hi = static_cast<double>(std::max(before.bytes, after.bytes)) + 2.0 * (1u << 30);
  EXPECT_GT(m["moe_memory_available_bytes"], std::max(lo, 0.0));
  EXPECT_LT(m["moe_memory_available_bytes"], hi);
  EXPECT_EQ(m["moe_kv_blocks_total"], 2.0 * 256 / 16);  // plenty of memory: capped by -c x -np
  EXPECT_NE(s.err().find("(limited by max-model-len x max-num-seqs)"), std::string::npos) << s.err();
  EXPECT_EQ(s.stop(), 0) << s.err();
}

TEST(ServeMemory, AContextThatCannotFitIsRefusedAtStart) {
  Server s(with(kQuick, {"--memory-available", "40MiB", "-c", "1000000"}));
  EXPECT_FALSE(s.listening()) << s.err();
  EXPECT_EQ(s.exit_status(), 1) << s.err();
  EXPECT_NE(s.err().find("moe serve: error: not even one sequence of 1,000,000 tokens fits in memory"),
            std::string::npos) << s.err();
  EXPECT_NE(s.err().find("what fits: one sequence of at most"), std::string::npos) << s.err();
  // The context it offers starts. (Less 128 blocks, 1.25 MiB here: each process plans with its own
  // resident size at start, which differed by up to ~530 KiB between processes under ctest -j2.)
  std::smatch m;
  ASSERT_TRUE(std::regex_search(s.err(), m, std::regex(R"(\(-c (\d+)\))"))) << s.err();
  const std::string offered = std::to_string(std::stoll(m[1]) - 128 * 16);
  Server ok(with(kQuick, {"--memory-available", "40MiB", "-c", offered}));
  ASSERT_TRUE(ok.listening()) << ok.err();
  EXPECT_EQ(ok.metrics()["moe_max_model_len"], std::stod(offered));
  EXPECT_EQ(ok.stop(), 0);
  // Memory too small for anything: refused too, saying so.
  Server none(with(kQuick, {"--memory-available", "1MiB"}));
  EXPECT_EQ(none.exit_status(), 1);
  EXPECT_NE(none.err().find("not even one KV block"), std::string::npos) << none.err();
}

TEST(ServeFlags, LlamaServerSpellingWorks) {
  const std::string model = moe::testing::source_dir() + "/models/stories260K-moe.gguf";
  Server s({"-m", model, "-c", "4096", "-np", "4", "--host", "127.0.0.1", "--port", "0", "-t", "1"});
  ASSERT_TRUE(s.listening()) << s.err();
  EXPECT_NE(s.err().find("(context 4096 tokens)"), std::string::npos) << s.err();
  EXPECT_NE(s.err().find("= 4 of 4 sequences at full context 4,096"), std::string::npos) << s.err();
  auto m = s.metrics();
  EXPECT_EQ(m["moe_kv_blocks_total"], 4.0 * 4096 / 16);
  EXPECT_EQ(m["moe_max_model_len"], 4096.0);
  EXPECT_EQ(s.get("/v1/models").first, 200);
  EXPECT_EQ(s.stop(), 0) << s.err();
}

TEST(ServeFlags, EveryAliasOfContextSequencesAndUtilization) {
  struct Case {
    std::vector<std::string> args;
    double ctx, seqs, utilization;
  };
  const std::vector<Case> cases = {
      {{"--ctx-size", "320", "--parallel", "3"}, 320, 3, 0.9},
      {{"--max-model-len", "256", "--max-num-seqs", "2"}, 256, 2, 0.9},
      {{"--ctx", "128", "-np=5", "--gpu-memory-utilization", "0.5"}, 128, 5, 0.5},
      {{"-c", "64", "-np", "1", "--memory-utilization", "0.75"}, 64, 1, 0.75},
  };
  for (const auto& c : cases) {
    Server s(with(kQuick, c.args));
    ASSERT_TRUE(s.listening()) << c.args[0] << "\n" << s.err();
    auto m = s.metrics();
    EXPECT_EQ(m["moe_max_model_len"], c.ctx) << c.args[0];
    EXPECT_EQ(m["moe_kv_blocks_total"], c.seqs * c.ctx / 16) << c.args[0];
    EXPECT_EQ(m["moe_memory_utilization"], c.utilization) << c.args[0];
    EXPECT_EQ(s.stop(), 0) << s.err();
  }
  // -np is rewritten only as an option: a wrong value is CLI11's own error about --parallel.
  auto bad = run_moe_args({"serve", "-np", "0"});
  EXPECT_NE(bad.status, 0);
  EXPECT_NE(bad.err.find("--parallel"), std::string::npos) << bad.err;
  auto two = run_moe_args({"serve", "a.gguf", "-m", "b.gguf"});
  EXPECT_EQ(two.status, 1);
  EXPECT_NE(two.err.find("two models given"), std::string::npos) << two.err;
  auto util = run_moe_args({"serve", "--memory-utilization", "1.5"});
  EXPECT_EQ(util.status, 1);
  EXPECT_NE(util.err.find("--memory-utilization 1.5 must be a fraction"), std::string::npos) << util.err;
}

TEST(ServeFlags, EnvironmentVariablesAndTheOpenServerWarning) {
  ::setenv("MOE_HOST", "127.0.0.2", 1);
  ::setenv("MOE_PORT", "0", 1);
  ::setenv("MOE_API_KEY", "sekrit", 1);
  {
    Server s({"-t", "1", "-c", "64", "-np", "1"});
    ASSERT_TRUE(s.listening()) << s.err();
    EXPECT_EQ(s.host(), "127.0.0.2");
    EXPECT_EQ(s.get("/v1/models").first, 401);
    EXPECT_EQ(s.get("/v1/models", "Authorization: Bearer sekrit\r\n").first, 200);
    EXPECT_EQ(s.err().find("warning"), std::string::npos) << s.err();
    EXPECT_EQ(s.stop(), 0);
  }
  // Flags win over the environment; beyond loopback with no key, a warning.
  ::unsetenv("MOE_API_KEY");
  {
    Server s({"--host", "0.0.0.0", "-t", "1", "-c", "64", "-np", "1"});
    ASSERT_TRUE(s.listening()) << s.err();
    EXPECT_EQ(s.host(), "0.0.0.0");
    EXPECT_NE(s.err().find("warning: listening on 0.0.0.0:" + std::to_string(s.port()) + " without an API key"),
              std::string::npos) << s.err();
    EXPECT_EQ(s.stop(), 0);
  }
  {
    Server s({"--host", "0.0.0.0", "--api-key", "k", "-t", "1", "-c", "64", "-np", "1"});
    ASSERT_TRUE(s.listening()) << s.err();
    EXPECT_EQ(s.err().find("warning"), std::string::npos) << s.err();
    EXPECT_EQ(s.stop(), 0);
  }
  ::unsetenv("MOE_HOST");
  ::unsetenv("MOE_PORT");
  // MOE_MODEL is the model when none is given, for every subcommand; an argument still wins.
  ::setenv("MOE_MODEL", "/nonexistent/from-env.gguf", 1);
  auto r = run_moe_args({"run", "-n", "2"});
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("/nonexistent/from-env.gguf"), std::string::npos) << r.err;
  auto given = run_moe_args({"run", "-n", "2", "--temp", "0", "-m",
                             moe::testing::source_dir() + "/models/stories260K-moe.gguf"});
  EXPECT_EQ(given.status, 0) << given.err;
  ::unsetenv("MOE_MODEL");
}

TEST(RunChatFlags, OneContextSpellingAcrossRunAndChat) {
  // run: a context of 8 tokens (the prompt is 5) is full after 3 generated tokens, whichever spelling.
  std::string first;
  for (const char* flag : {"-c", "--ctx-size", "--ctx", "--max-model-len"}) {
    auto r = run_moe_args({"run", flag, "8", "-n", "20", "--temp", "0", "-t", "1"});
    ASSERT_EQ(r.status, 0) << flag << r.err;
    EXPECT_NE(r.err.find("(context full)"), std::string::npos) << flag << r.err;
    if (first.empty()) first = r.out;
    EXPECT_EQ(r.out, first) << flag;
  }
  // chat: a chat prompt longer than a 16-token context is refused by the engine, naming the limit.
  for (const char* flag : {"-c", "--ctx-size", "--ctx", "--max-model-len"}) {
    auto r = run_moe_args({"chat", flag, "16", "-n", "4", "--temp", "0", "-t", "1"}, "Tell me a long story\n");
    EXPECT_EQ(r.status, 1) << flag << r.out;
    EXPECT_NE(r.err.find("16"), std::string::npos) << flag << r.err;
  }
  auto ok = run_moe_args({"chat", "--ctx-size", "512", "-n", "4", "--temp", "0", "-t", "1", "-m",
                          moe::testing::source_dir() + "/models/stories260K-moe.gguf"},
                         "Hi\n");
  EXPECT_EQ(ok.status, 0) << ok.err;
}

TEST(HelpAndVersion, HelpPagesAndTheVersionNameTheBuild) {
  auto top = run_moe_args({"help"});
  ASSERT_EQ(top.status, 0) << top.err;
  for (const char* sub : {"run", "chat", "serve", "plan", "quantize", "help"})
    EXPECT_NE(top.out.find(sub), std::string::npos) << sub;
  EXPECT_NE(top.out.find("MOE_MODEL"), std::string::npos) << top.out;
  auto serve = run_moe_args({"help", "serve"});
  ASSERT_EQ(serve.status, 0);
  for (const char* s : {"-c,--ctx-size,--ctx,--max-model-len", "--parallel,--max-num-seqs", "-np N",
                        "--memory-utilization,--gpu-memory-utilization", "--memory-available", "MOE_HOST",
                        "MOE_PORT", "MOE_API_KEY", "MOE_MODEL", "-m,--model"})
    EXPECT_NE(serve.out.find(s), std::string::npos) << s << "\n" << serve.out;
  // `moe serve --help` is the same page (its usage line names the binary as it was called).
  const auto from_flag = run_moe_args({"serve", "--help"}).out;
  EXPECT_EQ(from_flag.substr(from_flag.find("Positionals:")), serve.out.substr(serve.out.find("Positionals:")));
  auto bad = run_moe_args({"help", "nosuch"});
  EXPECT_EQ(bad.status, 1);
  EXPECT_NE(bad.err.find("nosuch"), std::string::npos);

  auto v = run_moe_args({"--version"});
  ASSERT_EQ(v.status, 0) << v.err;
  EXPECT_EQ(v.out.rfind("moe 0.1.0\n", 0), 0u) << v.out;
  EXPECT_TRUE(std::regex_search(v.out, std::regex(R"(\nbuild   [A-Za-z]+, \w+ [0-9.]+\n)"))) << v.out;
  EXPECT_TRUE(std::regex_search(v.out, std::regex(R"(\nkernels (scalar|avx2|avx512-vnni): )"))) << v.out;
  // The commit is the checkout's own, when there is a git checkout to ask.
  const std::string cmd = "git -C '" + moe::testing::source_dir() + "' rev-parse --short=12 HEAD 2>/dev/null";
  if (FILE* f = ::popen(cmd.c_str(), "r")) {
    char buf[64] = {};
    const bool got = std::fgets(buf, sizeof buf, f) != nullptr;
    ::pclose(f);
    std::string head = buf;
    while (!head.empty() && head.back() == '\n') head.pop_back();
    if (got && head.size() == 12) {
      EXPECT_NE(v.out.find("commit  " + head), std::string::npos) << v.out;
    }
  }
  // MOE_ISA caps the kernels, and the version says so.
  ::setenv("MOE_ISA", "scalar", 1);
  auto capped = run_moe_args({"--version"});
  ::unsetenv("MOE_ISA");
  EXPECT_NE(capped.out.find("kernels scalar: the scalar reference kernels (capped by MOE_ISA=scalar)"),
            std::string::npos) << capped.out;
}

}  // namespace
}  // namespace moe
