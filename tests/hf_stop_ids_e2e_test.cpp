// hf_stop_ids_e2e_test.cpp: generation_config.json's `eos_token_id` as a list (a base EOS plus chat
// end-of-turn ids, as Llama 3 and many fine-tunes ship it): every id in it stops generation, on the
// Hugging Face checkpoint and on its `moe convert` GGUF (which keeps the list), and a list entry that is
// not a token id is a clear error.
//
// The test copies the shared HF fixture into a directory of its own and writes generation_config.json
// itself: first with [2] (greedy run of 16 tokens, none of them EOS), then with [2, X] where X is one of
// those generated tokens; the second run must be the first one cut at X's first occurrence.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "hf/hf.h"
#include "testutil/fixtures.h"
#include "util/error.h"

namespace moe {
namespace {

using moe::testing::fixture;
using moe::testing::run_moe_args;

// The generated ids of `moe run --print-ids` (its second output line).
std::vector<int32_t> generated_ids(const std::string& model) {
  const auto r = run_moe_args({"run", model, "-p", "Once upon a time", "-n", "16", "--temp", "0", "--print-ids", "-t", "2"});
  EXPECT_EQ(r.status, 0) << r.err;
  std::istringstream lines(r.out);
  std::string prompt, gen;
  std::getline(lines, prompt);
  std::getline(lines, gen);
  std::vector<int32_t> ids;
  std::istringstream in(gen);
  for (std::string s; std::getline(in, s, ',');)
    if (!s.empty()) ids.push_back(std::stoi(s));
  return ids;
}

// A copy of the shared HF checkpoint with its own generation_config.json.
void copy_checkpoint(const moe::testing::TempDir& dir) {
  for (const auto& e : std::filesystem::directory_iterator(fixture("models/hf/tiny-mixtral-hf")))
    if (e.path().filename() != "generation_config.json")
      std::filesystem::copy_file(e.path(), dir.file(e.path().filename().string()));
}

TEST(HfStopIds, EveryEosIdOfGenerationConfigStopsGeneration) {
  MOE_REQUIRE_FIXTURE("models/hf/tiny-mixtral-hf/config.json");
  moe::testing::TempDir dir;
  copy_checkpoint(dir);
  dir.write("generation_config.json", R"({"bos_token_id": 1, "eos_token_id": [2]})");
  const auto full = generated_ids(dir.dir());
  ASSERT_EQ(full.size(), 16u);  // EOS (2) never comes in these 16 tokens, so the run goes to the limit
  // X: a generated token whose first occurrence is in the middle, so that stopping there is visible.
  size_t at = 4;
  while (at < full.size() && std::find(full.begin(), full.begin() + static_cast<long>(at), full[at]) != full.begin() + static_cast<long>(at))
    ++at;
  ASSERT_LT(at, full.size());
  const int32_t x = full[at];
  ASSERT_NE(x, 2);
  dir.write("generation_config.json", cat(R"({"bos_token_id": 1, "eos_token_id": [2, )", x, "]}"));
  const auto cut = generated_ids(dir.dir());
  // The same tokens up to X, and nothing after it (X itself may or may not be reported, as for EOS).
  ASSERT_GE(cut.size(), at);
  ASSERT_LE(cut.size(), at + 1);
  EXPECT_TRUE(std::equal(cut.begin(), cut.end(), full.begin())) << "the stopped run is not a prefix of the full one";

  // The converted GGUF keeps the list and stops the same way.
  const std::string out = dir.file("converted.gguf");
  const auto c = run_moe_args({"convert", dir.dir(), out, "-q"});
  ASSERT_EQ(c.status, 0) << c.err;
  const gguf::File f = gguf::File::open(out);
  EXPECT_EQ(f.get_int_array(hf::kEosIdsKey), (std::vector<int64_t>{2, x}));
  EXPECT_EQ(f.get_int("tokenizer.ggml.eos_token_id"), 2);
  EXPECT_EQ(generated_ids(out), cut);
}

TEST(HfStopIds, AnEosEntryThatIsNotATokenIdIsAnError) {
  MOE_REQUIRE_FIXTURE("models/hf/tiny-mixtral-hf/config.json");
  moe::testing::TempDir dir;
  copy_checkpoint(dir);
  for (const char* bad : {R"([2, "</s>"])", "[2, 512]", "[2, -1]"}) {
    dir.write("generation_config.json", cat(R"({"eos_token_id": )", bad, "}"));
    const auto r = run_moe_args({"info", dir.dir()});
    EXPECT_NE(r.status, 0) << bad;
    EXPECT_NE(r.err.find("generation_config.json: eos_token_id holds"), std::string::npos) << r.err;
  }
}

}  // namespace
}  // namespace moe
