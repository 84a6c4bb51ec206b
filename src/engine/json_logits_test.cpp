// json_logits_test.cpp: the precomputed JSON mask against the rule it replaces (run the recogniser over
// every token's text: EOS only once complete, prefixes of the closing text when the budget is short,
// otherwise every non-empty accepted text), at states reached by random constrained walks over random
// vocabularies rich in JSON characters, whitespace runs and control bytes, with budgets from 1 up.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "engine/json_logits.h"

namespace moe::engine {
namespace {

std::vector<uint8_t> reference_mask(const JsonConstraint& j, int64_t tokens_left, const std::vector<std::string>& text,
                                    int32_t eos) {
  std::vector<uint8_t> ok(text.size(), 0);
  const bool complete = j.complete();
  const std::string closing = complete ? std::string() : j.closing_suffix();
  const bool force_close = !complete && tokens_left <= static_cast<int64_t>(closing.size());
  for (size_t id = 0; id < text.size(); ++id) {
    const std::string& t = text[id];
    ok[id] = complete      ? static_cast<int32_t>(id) == eos
             : force_close ? !t.empty() && closing.compare(0, t.size(), t) == 0
                           : !t.empty() && j.accepts(t);
  }
  return ok;
}

std::vector<std::string> random_vocabulary(std::mt19937& rng, int n) {
  const std::string alphabet = "{}[]\":,\\ \n\t\r-+.0123456789eEtrufalsn abcxyzU/\x01\x1f\xc3\xa9";
  std::vector<std::string> v = {"",    "{",     "}",    "[",      "]",   "\"",  ":",   ",",      " ",   "  ",
                                "\n",  " {",    "{\"",  "\":",    "\",", "true", "false", "null", "0",  "-",
                                "1",   "12",    ".5",   "e+",     "E9",  "\\",  "\\u",  "00e9",   "\"}", "]}",
                                " \"", "\t\n ", "        ", "         ", "a",  " the", " to", "ab\"c", "\x01", "\xc3"};
  std::uniform_int_distribution<size_t> pick(0, alphabet.size() - 1);
  std::uniform_int_distribution<int> len(1, 6), lead(0, 9);
  while (static_cast<int>(v.size()) < n) {
    std::string t;
    int spaces = lead(rng) < 3 ? lead(rng) % 3 + 1 : 0;  // many tokens start with whitespace, as in real ones
    t.append(static_cast<size_t>(spaces), ' ');
    for (int k = len(rng); k > 0; --k) t += alphabet[pick(rng)];
    v.push_back(t);
  }
  return v;
}

TEST(JsonVocabulary, MaskEqualsTheRecogniserOverEveryToken) {
  std::mt19937 rng(11);
  for (int vocab_round = 0; vocab_round < 3; ++vocab_round) {
    auto texts = std::make_shared<const std::vector<std::string>>(random_vocabulary(rng, 600));
    const int32_t eos = 0;  // the empty text, as a control token's
    JsonVocabulary vocab(texts, eos);
    std::vector<uint8_t> fast;
    int compared = 0, forced = 0, complete = 0, in_string = 0;
    for (int walk = 0; walk < 40; ++walk) {
      JsonConstraint j;
      for (int step = 0; step < 60; ++step) {
        for (int64_t left : {int64_t{1}, int64_t{2}, int64_t{5}, int64_t{1000}}) {
          std::vector<uint8_t> ref = reference_mask(j, left, *texts, eos);
          int64_t n = vocab.allowed(j, left, fast);
          ASSERT_EQ(fast, ref) << "walk " << walk << " step " << step << " left " << left;
          ASSERT_EQ(n, std::count(ref.begin(), ref.end(), uint8_t{1}));
          ++compared;
          forced += !j.complete() && left <= static_cast<int64_t>(j.closing_suffix().size());
        }
        complete += j.complete();
        in_string += j.in_string();
        // Move on by a random allowed token (unforced), as a sampler would.
        std::vector<uint8_t> ok = reference_mask(j, 1000, *texts, eos);
        std::vector<int32_t> ids;
        for (size_t id = 0; id < ok.size(); ++id)
          if (ok[id]) ids.push_back(static_cast<int32_t>(id));
        if (ids.empty() || j.complete()) break;
        j.advance((*texts)[static_cast<size_t>(ids[std::uniform_int_distribution<size_t>(0, ids.size() - 1)(rng)])]);
      }
    }
    // The walks reached the states that take the special paths.
    EXPECT_GT(compared, 1000);
    EXPECT_GT(forced, 50);
    EXPECT_GT(in_string, 50);
    EXPECT_GT(complete, 0);
  }
}

TEST(JsonLogitsProcessor, MasksForbiddenTokensFollowsChosenOnesAndLeavesAnImpossibleRowAlone) {
  auto texts = std::make_shared<const std::vector<std::string>>(std::vector<std::string>{"", "{", "}", "x", " {"});
  auto vocab = std::make_shared<const JsonVocabulary>(texts, 0);
  JsonLogitsProcessor p(vocab);
  std::vector<float> row = {1, 2, 3, 4, 5};
  sampling::SequenceContext ctx;
  p.apply(row, ctx);
  const float ninf = -std::numeric_limits<float>::infinity();
  EXPECT_EQ(row, (std::vector<float>{ninf, 2, ninf, ninf, 5}));
  p.accept(1);  // "{"
  row = {1, 2, 3, 4, 5};
  p.apply(row, ctx);
  EXPECT_EQ(row, (std::vector<float>{ninf, ninf, 3, ninf, ninf}));
  p.accept(2);  // "}": complete, only EOS (id 0)
  EXPECT_TRUE(p.state().complete());
  row = {1, 2, 3, 4, 5};
  p.apply(row, ctx);
  EXPECT_EQ(row, (std::vector<float>{1, ninf, ninf, ninf, ninf}));
  // A vocabulary that cannot start an object: the row is left as it is.
  auto none = std::make_shared<const JsonVocabulary>(
      std::make_shared<const std::vector<std::string>>(std::vector<std::string>{"a", "b"}), -1);
  JsonLogitsProcessor q(none);
  row = {1, 2};
  q.apply(row, ctx);
  EXPECT_EQ(row, (std::vector<float>{1, 2}));
  row = {1, 2, 3};
  EXPECT_ANY_THROW(q.apply(row, ctx));
}

}  // namespace
}  // namespace moe::engine
