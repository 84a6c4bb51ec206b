// engine_text_test.cpp: stop strings and the JSON constraint.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <random>

#include "engine/json_constraint.h"
#include "engine/stop_matcher.h"

namespace moe::engine {
namespace {

std::string feed(StopMatcher& m, const std::vector<std::string>& chunks) {
  std::string out;
  for (const auto& c : chunks) out += m.push(c);
  return out + m.flush();
}

TEST(StopMatcher, StopsAcrossChunksAndHoldsBackPrefixes) {
  StopMatcher a({"</end>"});
  EXPECT_EQ(a.push("hello </"), "hello ");  // "</" might start the stop string
  EXPECT_EQ(a.push("en"), "");
  EXPECT_EQ(a.push("d> more"), "");
  EXPECT_TRUE(a.stopped());
  EXPECT_EQ(a.flush(), "");

  StopMatcher b({"</end>"});
  EXPECT_EQ(feed(b, {"a </", "x", "y"}), "a </xy");  // a false start is released
  EXPECT_FALSE(b.stopped());

  StopMatcher c({"\n\n", "User:"});
  EXPECT_EQ(feed(c, {"one\ntwo", "\n", "\nthree"}), "one\ntwo");
  StopMatcher d({"User:", "Us"});  // the earliest match wins
  EXPECT_EQ(feed(d, {"hi Use", "r:"}), "hi ");
  StopMatcher none({});
  EXPECT_EQ(feed(none, {"abc", "def"}), "abcdef");
}

TEST(StopMatcher, RandomChunkingAgreesWithWholeText) {
  std::mt19937 rng(7);
  const std::string alphabet = "ab\n";
  for (int iter = 0; iter < 2000; ++iter) {
    std::string text;
    int len = static_cast<int>(rng() % 30);
    for (int i = 0; i < len; ++i) text += alphabet[rng() % alphabet.size()];
    std::vector<std::string> stops = {"aab", "\n\n"};
    size_t first = std::min(text.find("aab"), text.find("\n\n"));
    std::string expect = first == std::string::npos ? text : text.substr(0, first);
    StopMatcher m(stops);
    std::vector<std::string> chunks;
    for (size_t i = 0; i < text.size();) {
      size_t n = 1 + rng() % 4;
      chunks.push_back(text.substr(i, n));
      i += n;
    }
    ASSERT_EQ(feed(m, chunks), expect) << text;
    ASSERT_EQ(m.stopped(), first != std::string::npos);
  }
}

bool accepts_whole(const std::string& s) {
  JsonConstraint j;
  return j.advance(s) && j.complete();
}

TEST(JsonConstraint, AcceptsObjectsRejectsOthers) {
  EXPECT_TRUE(accepts_whole(R"({})"));
  EXPECT_TRUE(accepts_whole(R"( {"a": [1, -2.5e+3, 0, true, false, null, "x\n\u00e9"], "b": {"c": {}}})"));
  EXPECT_FALSE(accepts_whole(R"([1])"));  // json_object: the top level is an object
  EXPECT_FALSE(accepts_whole(R"({"a" 1})"));
  EXPECT_FALSE(accepts_whole(R"({"a":01})"));
  EXPECT_FALSE(accepts_whole(R"({"a":1,})"));
  EXPECT_FALSE(accepts_whole(R"({"a":tru})"));
  EXPECT_FALSE(accepts_whole("{\"a\":\"\x01\"}"));
  EXPECT_FALSE(accepts_whole(R"({"a":"\x"})"));
  EXPECT_FALSE(accepts_whole(R"({} x)"));
  EXPECT_TRUE(accepts_whole(R"({"a":1e99})"));
  EXPECT_FALSE(accepts_whole(R"({"a":1e999})"));  // grammatical, but overflows a double
  JsonConstraint j;
  EXPECT_TRUE(j.advance("{\"k\": 12"));
  EXPECT_FALSE(j.complete());
  EXPECT_FALSE(j.advance("]"));  // rejected, state unchanged
  EXPECT_TRUE(j.advance("}"));
  EXPECT_TRUE(j.complete());
  EXPECT_FALSE(j.accepts(" "));  // nothing after the object
}

// From every reachable state, the closing suffix is accepted and completes the object.
TEST(JsonConstraint, ClosingSuffixAlwaysCompletes) {
  const std::vector<std::string> prefixes = {
      "", "{", "{\"", "{\"k", "{\"k\\", "{\"k\\u00", "{\"k\"", "{\"k\":", "{\"k\":-", "{\"k\":0", "{\"k\":12.",
      "{\"k\":1.5", "{\"k\":1e", "{\"k\":1e+", "{\"k\":1e5", "{\"k\":tr", "{\"k\":n", "{\"k\":\"v", "{\"k\":\"v\\",
      "{\"k\":[", "{\"k\":[1", "{\"k\":[1,", "{\"k\":[{\"a\":[[", "{\"k\":1,", "{\"k\":{}", "{\"k\":\"\\u1"};
  for (const auto& p : prefixes) {
    JsonConstraint j;
    ASSERT_TRUE(j.advance(p)) << p;
    std::string close = j.closing_suffix();
    ASSERT_TRUE(j.advance(close)) << p << " + " << close;
    ASSERT_TRUE(j.complete()) << p << " + " << close;
    auto parsed = nlohmann::json::parse(p + close, nullptr, false);
    EXPECT_TRUE(parsed.is_object()) << p + close;
  }
  JsonConstraint done;
  ASSERT_TRUE(done.advance("{}"));
  EXPECT_EQ(done.closing_suffix(), "");
}

TEST(JsonConstraint, BoundsWhitespaceAndDepth) {
  JsonConstraint j;
  EXPECT_TRUE(j.advance("{"));
  EXPECT_FALSE(j.accepts(std::string(JsonConstraint::kMaxWhitespaceRun + 1, ' ')));
  JsonConstraint deep;
  std::string open = "{\"a\":" + std::string(JsonConstraint::kMaxDepth - 1, '[');
  EXPECT_TRUE(deep.advance(open));
  EXPECT_FALSE(deep.accepts("["));
}

// Random generation under the constraint always yields JSON that nlohmann parses, and every valid
// document generated independently is accepted character by character.
TEST(JsonConstraint, ConstrainedRandomTextParses) {
  std::mt19937 rng(11);
  const std::vector<std::string> pieces = {"{", "}", "[", "]", ",", ":", "\"", "a", "\\", "n", "u", "0", "1",
                                           "9", ".", "e", "-", "+", " ", "true", "fal", "se", "null", "\"k\"", "12",
                                           "l", "r", "s", "t", "f"};  // single letters: no literal dead-ends
  int completed = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    JsonConstraint j;
    std::string out;
    for (int step = 0; step < 200 && !j.complete(); ++step) {
      std::vector<const std::string*> ok;
      for (const auto& p : pieces)
        if (j.accepts(p)) ok.push_back(&p);
      ASSERT_FALSE(ok.empty()) << "dead end after: " << out;
      const std::string& p = *ok[rng() % ok.size()];
      ASSERT_TRUE(j.advance(p));
      out += p;
    }
    if (j.complete()) {
      ++completed;
      auto parsed = nlohmann::json::parse(out, nullptr, false);
      ASSERT_FALSE(parsed.is_discarded()) << out;
      ASSERT_TRUE(parsed.is_object()) << out;
    }
  }
  EXPECT_GT(completed, 100);
  for (int iter = 0; iter < 500; ++iter) {
    nlohmann::json doc = {{"n", static_cast<int>(rng() % 1000) - 500}, {"f", (rng() % 1000) / 7.0},
                          {"s", std::string(1 + rng() % 5, static_cast<char>('a' + rng() % 26))},
                          {"l", {1, "x", nullptr, false}}, {"o", {{"k", {1.5e10}}}}};
    std::string text = doc.dump(iter % 2 ? 1 : -1);
    JsonConstraint j;
    for (char c : text) ASSERT_TRUE(j.advance(std::string_view(&c, 1))) << text;
    ASSERT_TRUE(j.complete());
  }
}

}  // namespace
}  // namespace moe::engine
