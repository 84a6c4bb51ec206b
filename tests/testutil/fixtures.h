// fixtures.h: where tests find ../shared (MOE_FIXTURES, default ../shared beside the source tree), and
// the rule for when it is missing: a user's fresh clone skips with a clear message, CI (CI=true) fails,
// because there the fixtures are always present and the tests must run.
#pragma once
#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace moe::testing {

// Absolute path of the fixtures root (no trailing slash).
std::string fixtures_dir();
// fixtures_dir() + "/" + rel.
std::string fixture(const std::string& rel);
bool fixture_exists(const std::string& rel);
bool running_in_ci();
// Path of the project source tree (for the bundled model) and of the built `moe` binary.
std::string source_dir();
std::string moe_binary();
// Reads a whole file (throws on failure).
std::string read_file(const std::string& path);

// Runs the built `moe` binary with `args` (shell words, quoted by the caller), feeding `stdin_text` to
// its standard input, and captures its exit status and output.
struct CommandResult {
  int status = -1;  // exit code, or 128 + signal
  std::string out, err;
};
CommandResult run_moe(const std::string& args, const std::string& stdin_text = "");
// The same without a shell: each element of `args` is one argument, passed as it is.
CommandResult run_moe_args(const std::vector<std::string>& args, const std::string& stdin_text = "");
// A path in the temp directory unique to this process and name.
std::string temp_path(const std::string& name);

// A fresh temporary directory, removed with everything in it when the object goes away.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return dir_ + "/" + name; }
  // Writes `text` to file(name) and returns that path.
  std::string write(const std::string& name, const std::string& text) const;
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
};

}  // namespace moe::testing

// Skips the test (or fails it in CI) when the fixture file is absent.
#define MOE_REQUIRE_FIXTURE(rel)                                                                   \
  do {                                                                                             \
    if (!::moe::testing::fixture_exists(rel)) {                                                    \
      if (::moe::testing::running_in_ci()) {                                                       \
        FAIL() << "fixture " << ::moe::testing::fixture(rel) << " is missing, and CI must run it"; \
      } else {                                                                                     \
        GTEST_SKIP() << "fixture " << ::moe::testing::fixture(rel)                                 \
                     << " not found (set MOE_FIXTURES to the shared/ folder to run this test)";   \
      }                                                                                            \
    }                                                                                              \
  } while (0)
