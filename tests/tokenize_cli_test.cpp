// tokenize_cli_test.cpp: `moe tokenize` and `moe detokenize` end to end: ids of the golden Mixtral cases
// from the .model file (plain, --no-bos, --json, --special), ids of the stories prompts from the GGUF,
// the text coming back byte for byte (no added newline) from space-, comma- or JSON-separated ids, and
// user errors (a bad id, an unreadable file) as exit status 1 with a message on stderr.
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "testutil/fixtures.h"

namespace moe::tokenize_cli_test {
namespace {

using ::moe::testing::fixture;

using Result = ::moe::testing::CommandResult;

// Runs `moe args...` (no shell) with `input` on stdin.
Result run_moe(const std::vector<std::string>& args, const std::string& input) {
  return ::moe::testing::run_moe_args(args, input);
}

std::string join(const std::vector<int>& ids, const char* sep) {
  std::string s;
  for (size_t i = 0; i < ids.size(); ++i) s += (i ? sep : "") + std::to_string(ids[i]);
  return s;
}

TEST(TokenizeCli, MixtralGoldenCasesBothWays) {
  MOE_REQUIRE_FIXTURE("models/mixtral-tokenizer.model");
  MOE_REQUIRE_FIXTURE("golden/mixtral-tokenizer.cases.jsonl");
  const std::string model = fixture("models/mixtral-tokenizer.model");
  std::istringstream cases(moe::testing::read_file(fixture("golden/mixtral-tokenizer.cases.jsonl")));
  int n = 0;
  for (std::string line; std::getline(cases, line) && n < 6; ++n) {
    const auto c = nlohmann::json::parse(line);
    const std::string text = c["text"];
    const auto ids = c["ids"].get<std::vector<int>>();
    const auto with_bos = c["ids_with_bos"].get<std::vector<int>>();
    SCOPED_TRACE(text);
    auto r = run_moe({"tokenize", model}, text);
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.out, join(with_bos, " ") + "\n");
    r = run_moe({"tokenize", model, "--no-bos", "--json"}, text);
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(nlohmann::json::parse(r.out).get<std::vector<int>>(), ids);
    EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1);
    r = run_moe({"detokenize", model}, join(with_bos, ", "));
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.out, c["decoded"].get<std::string>());
    r = run_moe({"detokenize", model}, nlohmann::json(ids).dump());
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.out, c["decoded"].get<std::string>());
  }
  EXPECT_EQ(n, 6);
}

TEST(TokenizeCli, SpecialTokensOnlyWithFlag) {
  MOE_REQUIRE_FIXTURE("models/mixtral-tokenizer.model");
  const std::string model = fixture("models/mixtral-tokenizer.model");
  auto r = run_moe({"tokenize", model, "--no-bos", "--special"}, "<s>[INST]");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "1 733 16289 28793\n");
  r = run_moe({"tokenize", model, "--no-bos"}, "<s>[INST]");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out.rfind("1 ", 0), std::string::npos) << r.out;
}

TEST(TokenizeCli, StoriesGgufPrompt) {
  MOE_REQUIRE_FIXTURE("models/stories260K.gguf");
  const std::string model = fixture("models/stories260K.gguf");
  auto r = run_moe({"tokenize", model}, "Once upon a time");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "1 403 407 261 378\n");
  r = run_moe({"detokenize", model}, "1 403 407 261 378 13");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "Once upon a time\n");
}

TEST(TokenizeCli, UserErrors) {
  MOE_REQUIRE_FIXTURE("models/stories260K.gguf");
  const std::string model = fixture("models/stories260K.gguf");
  auto r = run_moe({"detokenize", model}, "1 2 99999");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("99999"), std::string::npos) << r.err;
  r = run_moe({"detokenize", model}, "1 x2");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("'x2' is not a token id"), std::string::npos) << r.err;
  r = run_moe({"detokenize", model}, "[1, \"a\"]");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("not an integer"), std::string::npos) << r.err;
  r = run_moe({"tokenize", "/nonexistent/tokenizer.model"}, "hi");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("/nonexistent/tokenizer.model"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace moe::tokenize_cli_test
