// chat_e2e_test.cpp: `moe chat` driven through its standard input on the bundled model.
#include <gtest/gtest.h>

#include "testutil/fixtures.h"

namespace moe {
namespace {

using moe::testing::run_moe;

TEST(ChatCli, MultiTurnWithCommands) {
  auto r = run_moe("chat --temp 0 -n 12 -t 1", "Hello there\n/system You tell stories.\nTell me a story\n/reset\nHi\n/exit\nnever read\n");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("built-in 'chatml'"), std::string::npos) << r.err;  // the model has no template
  EXPECT_NE(r.out.find("[system message set; conversation reset]\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("[conversation reset]\n"), std::string::npos) << r.out;
  // Three replies, each ended by a newline; greedy, so the first and the one after /reset (same
  // single-message conversation "Hello there" vs "Hi") are deterministic: run again and compare.
  auto again = run_moe("chat --temp 0 -n 12 -t 1", "Hello there\n/system You tell stories.\nTell me a story\n/reset\nHi\n/exit\n");
  EXPECT_EQ(again.out, r.out);
}

TEST(ChatCli, EndOfInputEndsTheSessionAndBadTemplateIsAnError) {
  auto r = run_moe("chat --temp 0 -n 4 -t 1", "Hi\n");
  EXPECT_EQ(r.status, 0) << r.err;
  auto bad = run_moe("chat --chat-template no-such-template -t 1", "Hi\n");
  EXPECT_EQ(bad.status, 1);
  EXPECT_NE(bad.err.find("no-such-template"), std::string::npos) << bad.err;
}

}  // namespace
}  // namespace moe
