// engine_text_test.cpp: stop strings.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <random>

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

}  // namespace
}  // namespace moe::engine
