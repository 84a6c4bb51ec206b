// fixtures.cpp: fixture lookup for the tests.
#include "testutil/fixtures.h"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace moe::testing {

std::string source_dir() {
  const char* s = std::getenv("MOE_SOURCE_DIR");
  if (s && *s) return s;
  return MOE_TEST_SOURCE_DIR;
}

std::string fixtures_dir() {
  const char* f = std::getenv("MOE_FIXTURES");
  std::filesystem::path p = (f && *f) ? std::filesystem::path(f) : std::filesystem::path(source_dir()) / "../shared";
  std::error_code ec;
  auto c = std::filesystem::weakly_canonical(p, ec);
  return (ec ? p : c).string();
}

std::string fixture(const std::string& rel) { return fixtures_dir() + "/" + rel; }

bool fixture_exists(const std::string& rel) { return std::filesystem::exists(fixture(rel)); }

bool running_in_ci() {
  const char* ci = std::getenv("CI");
  return ci && (std::string(ci) == "true" || std::string(ci) == "1");
}

std::string moe_binary() {
  const char* b = std::getenv("MOE_BIN");
  if (b && *b) return b;
  const char* d = std::getenv("MOE_BINARY_DIR");
  return std::string(d && *d ? d : MOE_TEST_BINARY_DIR) + "/moe";
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string temp_path(const std::string& name) {
  std::ostringstream file;
  file << "moe-test-" << ::getpid() << "-" << name;
  return (std::filesystem::temp_directory_path() / file.str()).string();
}

CommandResult run_moe(const std::string& args, const std::string& stdin_text) {
  const std::string in = temp_path("stdin"), out = temp_path("stdout"), err = temp_path("stderr");
  {
    std::ofstream f(in, std::ios::binary);
    f << stdin_text;
  }
  // Built with a stream: GCC 12 reports a false -Wrestrict on long chains of std::string operator+.
  std::ostringstream cmd_stream;
  cmd_stream << "'" << moe_binary() << "' " << args << " <'" << in << "' >'" << out << "' 2>'" << err << "'";
  const std::string cmd = cmd_stream.str();
  const int st = std::system(cmd.c_str());
  CommandResult r;
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
  r.out = read_file(out);
  r.err = read_file(err);
  std::filesystem::remove(in);
  std::filesystem::remove(out);
  std::filesystem::remove(err);
  return r;
}

CommandResult run_moe_args(const std::vector<std::string>& args, const std::string& stdin_text) {
  TempDir dir;
  const std::string in = dir.write("stdin", stdin_text), out = dir.file("stdout"), err = dir.file("stderr");
  std::vector<std::string> words = {moe_binary()};
  words.insert(words.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& w : words) argv.push_back(w.data());
  argv.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    const int i = ::open(in.c_str(), O_RDONLY);
    const int o = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int e = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (i < 0 || o < 0 || e < 0) ::_exit(126);
    ::dup2(i, 0);
    ::dup2(o, 1);
    ::dup2(e, 2);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid) throw std::runtime_error("waitpid failed");
  CommandResult r;
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  r.out = read_file(out);
  r.err = read_file(err);
  return r;
}

TempDir::TempDir() {
  std::string p = (std::filesystem::temp_directory_path() / "moe-test-XXXXXX").string();
  if (!::mkdtemp(p.data())) throw std::runtime_error("mkdtemp failed");
  dir_ = p;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

std::string TempDir::write(const std::string& name, const std::string& text) const {
  const std::string path = file(name);
  std::ofstream f(path, std::ios::binary);
  f << text;
  if (!f) throw std::runtime_error("cannot write " + path);
  return path;
}

}  // namespace moe::testing
