// install_e2e_test.cpp: `cmake --install` of this build into a fresh temporary prefix, then the
// installed `moe run`, started from an unrelated directory with no arguments and no MOE_* variables,
// finds its bundled model relative to its own location (PREFIX/share/moe/models) and writes a story.
// Nothing of the source or build tree is reachable from there: the prefix and the working directory
// are both under a new temporary directory.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <string>

#include "testutil/fixtures.h"

namespace moe {
namespace {

namespace fs = std::filesystem;
using moe::testing::TempDir;

int shell(const std::string& cmd) {
  const int st = std::system(cmd.c_str());
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

TEST(Install, InstalledRunFindsItsBundledModelFromAnotherDirectory) {
  // The build tree is the folder of the `moe` under test (MOE_BIN, else MOE_BINARY_DIR/moe, else
  // build/moe of the source tree: fixtures.h), where CMake writes cmake_install.cmake.
  const std::string build = fs::path(moe::testing::moe_binary()).parent_path().string();
  ASSERT_TRUE(fs::exists(build + "/cmake_install.cmake")) << build << " is not a CMake build tree";
  TempDir tmp;
  const std::string prefix = tmp.file("prefix"), elsewhere = tmp.file("elsewhere");
  fs::create_directories(elsewhere);
  std::ostringstream install;
  install << "cmake --install '" << build << "' --prefix '" << prefix << "' >'" << tmp.file("install.log") << "' 2>&1";
  ASSERT_EQ(shell(install.str()), 0) << moe::testing::read_file(tmp.file("install.log"));
  ASSERT_TRUE(fs::exists(prefix + "/bin/moe"));
  ASSERT_TRUE(fs::exists(prefix + "/share/moe/models/stories260K-moe.gguf"));
  ASSERT_TRUE(fs::exists(prefix + "/share/moe/models/README.md"));  // the model's licence travels with it

  std::ostringstream run;
  run << "cd '" << elsewhere << "' && env -u MOE_DEFAULT_MODEL -u MOE_MODEL -u MOE_BIN '" << prefix
      << "/bin/moe' run >'" << tmp.file("out") << "' 2>'" << tmp.file("err") << "'";
  ASSERT_EQ(shell(run.str()), 0) << moe::testing::read_file(tmp.file("err"));
  const std::string out = moe::testing::read_file(tmp.file("out"));
  const std::string err = moe::testing::read_file(tmp.file("err"));
  EXPECT_EQ(out.rfind("Once upon a time", 0), 0u) << out;
  EXPECT_GT(out.size(), std::string("Once upon a time").size() + 40) << out;  // a story, not just the prompt
  EXPECT_NE(err.find("generated: "), std::string::npos) << err;

  // The installed binary says what it is, from anywhere.
  std::ostringstream version;
  version << "cd '" << elsewhere << "' && '" << prefix << "/bin/moe' --version >'" << tmp.file("v") << "'";
  ASSERT_EQ(shell(version.str()), 0);
  EXPECT_EQ(moe::testing::read_file(tmp.file("v")).rfind("moe 0.1.0\ncommit  ", 0), 0u);
}

}  // namespace
}  // namespace moe
