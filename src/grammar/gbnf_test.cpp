// gbnf_test.cpp: the GBNF compiler and the byte matcher: what each construct accepts and refuses, the
// rejection of bad grammars (each with the message it should give), limits on hostile input, the
// shortest completion, and the token mask against a small vocabulary (compared with a brute-force
// check of every token through the matcher).
#include <gtest/gtest.h>

#include <chrono>
#include <random>

#include "grammar/grammar.h"

namespace moe::grammar {
namespace {

bool matches(const std::shared_ptr<const Grammar>& g, std::string_view text) {
  Matcher m(g);
  return m.advance(text) && m.accepting();
}
bool prefix_ok(const std::shared_ptr<const Grammar>& g, std::string_view text) { return Matcher(g).advance(text); }

std::string error_of(std::string_view gbnf, const Limits& limits = {}) {
  try {
    compile_gbnf(gbnf, limits);
  } catch (const GrammarError& e) {
    return e.what();
  }
  return "(compiled)";
}

TEST(Gbnf, LiteralsAndAlternation) {
  auto g = compile_gbnf(R"(root ::= "yes" | "no" # a comment
)");
  EXPECT_TRUE(matches(g, "yes"));
  EXPECT_TRUE(matches(g, "no"));
  EXPECT_FALSE(matches(g, "ye"));
  EXPECT_TRUE(prefix_ok(g, "ye"));
  EXPECT_FALSE(prefix_ok(g, "yes!"));
  EXPECT_FALSE(prefix_ok(g, "x"));
}

TEST(Gbnf, RulesGroupsAndRepetition) {
  auto g = compile_gbnf(R"(
root ::= item ("," item)*
item ::= [a-c]+ digit?
digit ::= [0-9]
)");
  EXPECT_TRUE(matches(g, "a"));
  EXPECT_TRUE(matches(g, "abc1,b,cc9"));
  EXPECT_FALSE(matches(g, "a,"));
  EXPECT_FALSE(matches(g, "a12"));
  EXPECT_FALSE(matches(g, ""));
  EXPECT_FALSE(prefix_ok(g, "d"));
}

TEST(Gbnf, CountedRepetition) {
  auto g = compile_gbnf(R"(root ::= "x"{2,4} "y"{3} "z"{1,})");
  EXPECT_FALSE(matches(g, "xyyyz"));
  EXPECT_TRUE(matches(g, "xxyyyz"));
  EXPECT_TRUE(matches(g, "xxxxyyyzzz"));
  EXPECT_FALSE(matches(g, "xxxxxyyyz"));
  EXPECT_FALSE(matches(g, "xxyyz"));
  EXPECT_FALSE(matches(g, "xxyyy"));
  auto h = compile_gbnf(R"(root ::= ("ab"){0,2})");
  EXPECT_TRUE(matches(h, ""));
  EXPECT_TRUE(matches(h, "abab"));
  EXPECT_FALSE(matches(h, "ababab"));
  EXPECT_FALSE(matches(h, "aba"));
}

TEST(Gbnf, CharacterClassesAndEscapes) {
  auto g = compile_gbnf(R"(root ::= [^"\\\n]* "\"" [\x41-\x43] "\u00e9" [é-ë] "\t")");
  EXPECT_TRUE(matches(g, "hello wörld\"Béë\t"));
  EXPECT_TRUE(matches(g, "\"Aéé\t"));
  EXPECT_FALSE(matches(g, "a\nb\"Aéé\t"));
  EXPECT_FALSE(matches(g, "\"Déé\t"));
  EXPECT_FALSE(matches(g, "\"Aéì\t"));
  auto any = compile_gbnf(R"(root ::= . . .)");
  EXPECT_TRUE(matches(any, "a\n€"));
  EXPECT_TRUE(matches(any, "日本語"));
  EXPECT_FALSE(matches(any, "ab"));
  // Multi-byte characters are matched byte by byte, and only valid UTF-8 passes.
  Matcher m(any);
  EXPECT_TRUE(m.advance("\xE6"));
  EXPECT_TRUE(m.advance("\x97"));
  EXPECT_FALSE(m.accepts("\x41"));
  EXPECT_TRUE(m.advance("\xA5"));
  EXPECT_FALSE(Matcher(any).accepts("\xC0\x80"));      // overlong
  EXPECT_FALSE(Matcher(any).accepts("\xED\xA0\x80"));  // surrogate
  EXPECT_FALSE(Matcher(any).accepts("\xF4\x90\x80\x80"));  // above U+10FFFF
  auto neg = compile_gbnf(R"(root ::= [^a-z]+)");
  EXPECT_TRUE(matches(neg, "A1é"));
  EXPECT_FALSE(matches(neg, "Ab"));
}

TEST(Gbnf, RecursionAndCompletion) {
  auto g = compile_gbnf(R"(
root ::= value
value ::= "[" (value ("," value)*)? "]" | [0-9]
)");
  EXPECT_TRUE(matches(g, "[[1,[2]],3]"));
  EXPECT_FALSE(matches(g, "[[1,[2]],3"));
  Matcher m(g);
  ASSERT_TRUE(m.advance("[[1,[2"));
  EXPECT_EQ(m.shortest_completion(), "]]]");
  EXPECT_FALSE(m.complete());
  ASSERT_TRUE(m.advance("]]]"));
  EXPECT_TRUE(m.complete());
  EXPECT_EQ(m.shortest_completion(), "");
}

TEST(Gbnf, NullableRulesAndAccepting) {
  auto g = compile_gbnf(R"(root ::= a b "!"
a ::= "x"?
b ::= ("y" | ))");
  EXPECT_TRUE(matches(g, "!"));
  EXPECT_TRUE(matches(g, "xy!"));
  EXPECT_TRUE(matches(g, "y!"));
  auto opt = compile_gbnf(R"(root ::= "a" "b"*)");
  Matcher m(opt);
  ASSERT_TRUE(m.advance("a"));
  EXPECT_TRUE(m.accepting());
  EXPECT_FALSE(m.complete());  // more b's may follow
}

TEST(Gbnf, LongRepetitionKeepsConstantState) {
  // x* is a tail call: thousands of repetitions must not grow the stacks.
  auto g = compile_gbnf(R"(root ::= "\"" [a-z]* "\"")");
  Matcher m(g);
  ASSERT_TRUE(m.advance("\""));
  for (int i = 0; i < 100000; ++i) ASSERT_TRUE(m.advance("q"));
  ASSERT_TRUE(m.advance("\""));
  EXPECT_TRUE(m.complete());
}

// Thousands of distinct states (one per nesting depth) make the matcher rebuild its tables from the
// current state; matching goes on exactly as before.
TEST(Gbnf, DeepNestingSurvivesTableRebuilds) {
  auto g = compile_gbnf(R"(root ::= "[" root? "]")");
  Matcher m(g);
  for (int i = 0; i < 3000; ++i) ASSERT_TRUE(m.advance("[")) << i;
  EXPECT_EQ(m.shortest_completion(), std::string(3000, ']'));
  for (int i = 0; i < 2999; ++i) {
    ASSERT_TRUE(m.advance("]")) << i;
    ASSERT_FALSE(m.accepting());
  }
  EXPECT_FALSE(m.accepts("["));  // only the outermost "]" is left
  ASSERT_TRUE(m.advance("]"));
  EXPECT_TRUE(m.complete());
  // Past the stack-depth limit a path is dropped (bounded memory), not crashed on.
  Limits shallow;
  shallow.max_stack_depth = 64;
  Matcher s(compile_gbnf(R"(root ::= "[" root? "]")", shallow));
  int taken = 0;
  while (taken < 200 && s.advance("[")) ++taken;
  EXPECT_LT(taken, 200);
  EXPECT_GT(taken, 30);
}

TEST(GbnfReject, BadGrammarsNameTheProblem) {
  EXPECT_NE(error_of("").find("empty"), std::string::npos);
  EXPECT_NE(error_of("root ::= foo").find("undefined rule 'foo'"), std::string::npos);
  EXPECT_NE(error_of("start ::= \"a\"").find("no 'root' rule"), std::string::npos);
  EXPECT_NE(error_of("root ::= root \"a\" | \"b\"").find("left recursion: root -> root"), std::string::npos);
  EXPECT_NE(error_of("root ::= x\nx ::= y \"a\"\ny ::= \"\" | x").find("left recursion"), std::string::npos);
  EXPECT_NE(error_of("root ::= e? root \"a\" | \"b\"\ne ::= \"c\"").find("left recursion"), std::string::npos);
  EXPECT_NE(error_of("root ::= (\"a\" | \"b\"").find("unbalanced '('"), std::string::npos);
  EXPECT_NE(error_of("root ::= \"a\")").find("unbalanced ')'"), std::string::npos);
  EXPECT_NE(error_of("root ::= \"abc").find("unterminated string"), std::string::npos);
  EXPECT_NE(error_of("root ::= [abc").find("unterminated character class"), std::string::npos);
  EXPECT_NE(error_of("root ::= \"\\q\"").find("bad escape '\\q'"), std::string::npos);
  EXPECT_NE(error_of("root ::= \"\\x4\"").find("hex digits"), std::string::npos);
  EXPECT_NE(error_of("root ::= \"\\uD800\"").find("not a Unicode scalar"), std::string::npos);
  EXPECT_NE(error_of("root ::= [z-a]").find("reversed range"), std::string::npos);
  EXPECT_NE(error_of("root ::= * \"a\"").find("nothing to repeat"), std::string::npos);
  EXPECT_NE(error_of("root ::= \"a\"{3,2}").find("n < m"), std::string::npos);
  EXPECT_NE(error_of("root ::= \"a\"{2").find("unterminated {m,n}"), std::string::npos);
  EXPECT_NE(error_of("root ::= \"a\"\nroot ::= \"b\"").find("defined twice"), std::string::npos);
  EXPECT_NE(error_of("root ::= \"a\" root").find("can never finish"), std::string::npos);
  EXPECT_NE(error_of("root \"a\"").find("expected '::='"), std::string::npos);
  EXPECT_NE(error_of("root ::= <[123]>").find("token references"), std::string::npos);
  EXPECT_NE(error_of("root ::= \"\xff\"").find("invalid UTF-8"), std::string::npos);
  EXPECT_NE(error_of("root ::= [^\\x00-\\U0010FFFF]").find("empty character class"), std::string::npos);
  // Messages carry the position.
  EXPECT_NE(error_of("root ::= \"a\"\nb ::= c").find("line 2"), std::string::npos);
}

TEST(GbnfReject, LimitsBoundHostileInput) {
  Limits small;
  small.max_repetition = 100;
  EXPECT_NE(error_of("root ::= \"a\"{101}", small).find("repetition count"), std::string::npos);
  EXPECT_NE(error_of("root ::= \"a\"{99999999999999999999}").find("repetition count"), std::string::npos);
  // Nested counted repetition multiplies: caught by the element limit, quickly.
  auto t0 = std::chrono::steady_clock::now();
  // Groups are rules, so nesting does not multiply the elements; the needed length does, and a grammar
  // that needs more than 2^30 bytes is refused.
  EXPECT_NE(error_of("root ::= ((((\"ab\"){1000}){1000}){1000})").find("never finish"), std::string::npos);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 2.0);
  std::string deep = "root ::= " + std::string(5000, '(') + "\"a\"" + std::string(5000, ')');
  EXPECT_NE(error_of(deep).find("nest deeper"), std::string::npos);
  Limits tiny;
  tiny.max_input_bytes = 10;
  EXPECT_NE(error_of("root ::= \"abcdef\"", tiny).find("bytes"), std::string::npos);
  try {
    compile_gbnf("root ::= \"a\"{101}", small);
    FAIL();
  } catch (const GrammarError& e) {
    EXPECT_EQ(e.keyword, "max_repetition");
  }
}

TEST(Gbnf, AmbiguousGrammarStaysBounded) {
  // Exponentially many parses of "aaaa...": states stay small because stacks are shared.
  auto g = compile_gbnf(R"(root ::= x*
x ::= "a" | "aa" | "a" "a" | y
y ::= "a"+)");
  Matcher m(g);
  for (int i = 0; i < 2000; ++i) ASSERT_TRUE(m.advance("a"));
  EXPECT_TRUE(m.accepting());
}

// The grammar fuzzer's find: each character may end `[^"\\]*` or be one of the 83, so the live stacks
// grow with the length until max_stacks refuses a byte the grammar allows; the shortest completion then
// cannot be followed. The matcher counts such steps (limit_hits), so the refusal is told apart from a
// wrong completion, and with a larger limit the same completion is accepted.
TEST(Gbnf, StackLimitRefusalsAreCounted) {
  const std::string gbnf = R"(root ::= [^"\\]* "" .{83})";
  Limits small;
  small.max_stacks = 256;
  for (const Limits& limits : {small, Limits{}}) {
    Matcher m(compile_gbnf(gbnf, limits));
    ASSERT_TRUE(m.advance("\xd6"));
    EXPECT_EQ(m.limit_hits(), 0u);
    const std::string close = m.shortest_completion();
    ASSERT_EQ(close.size(), 83u);  // the rest of the two-byte character, then 82 more
    Matcher copy = m;
    const bool ok = copy.advance(close) && copy.accepting();
    if (limits.max_stacks == small.max_stacks) {
      EXPECT_FALSE(ok) << "this limit cannot hold the completion's parses";
      EXPECT_GT(copy.limit_hits(), 0u);
      // Byte by byte: every refusal is a counted limit step.
      Matcher step = m;
      for (char c : close) {
        const uint64_t before = step.limit_hits();
        if (!step.advance(std::string(1, c))) {
          EXPECT_GT(step.limit_hits(), before);
          break;
        }
      }
    } else {
      EXPECT_TRUE(ok);
      EXPECT_EQ(copy.limit_hits(), 0u);
    }
  }
}

TEST(Gbnf, Literal) {
  auto g = compile_gbnf("root ::= " + gbnf_literal("a\"b\\c\nd\x01é"));
  EXPECT_TRUE(matches(g, "a\"b\\c\nd\x01é"));
  auto c = compile_gbnf(choice_to_gbnf({"red", "green", "\"quoted\""}));
  EXPECT_TRUE(matches(c, "green"));
  EXPECT_TRUE(matches(c, "\"quoted\""));
  EXPECT_FALSE(matches(c, "blue"));
}

// The mask equals, token by token, what the matcher says about each token's text.
TEST(GrammarProcessor, MaskEqualsBruteForce) {
  std::vector<std::string> vocab = {"", "{", "}", "\"", "a", "ab", "\"a", "\":", ":", " ", "1", "12", "\xC3", "\xA9", "é", "\"}", ",", "[", "]", "null", "true"};
  for (int b = 0; b < 256; ++b) vocab.push_back(std::string(1, static_cast<char>(b)));
  auto v = std::make_shared<const Vocabulary>(vocab);
  auto g = compile_gbnf(json_object_gbnf());
  GrammarProcessor p(g, v, {0});
  Matcher shadow(g);
  std::mt19937 rng(7);
  for (int step = 0; step < 60; ++step) {
    std::vector<int32_t> allowed = p.allowed_tokens();
    std::vector<int32_t> expect;
    for (int32_t id = 0; id < static_cast<int32_t>(vocab.size()); ++id) {
      if (id == 0 ? shadow.accepting() : (!vocab[static_cast<size_t>(id)].empty() && shadow.accepts(vocab[static_cast<size_t>(id)])))
        expect.push_back(id);
    }
    ASSERT_EQ(allowed, expect) << "step " << step;
    if (allowed.empty() || p.complete()) break;
    int32_t pick = allowed[rng() % allowed.size()];
    if (pick == 0) break;
    p.accept(pick);
    ASSERT_TRUE(shadow.advance(vocab[static_cast<size_t>(pick)]));
  }
}

TEST(GrammarProcessor, BudgetForcesTheShortestClose) {
  std::vector<std::string> vocab = {"<eos>", "{", "}", "\"", "a", "\":", "1", "[", "]", ",", " ", "{\"a\": [[["};
  std::vector<std::string> texts = vocab;
  texts[0] = "";
  for (int b = 1; b < 128; ++b) texts.push_back(std::string(1, static_cast<char>(b)));  // byte fallback
  auto v = std::make_shared<const Vocabulary>(texts);
  auto g = compile_gbnf(json_object_gbnf());
  for (int64_t budget = 1; budget <= 12; ++budget) {
    for (uint32_t seed = 0; seed < 20; ++seed) {
      GrammarProcessor p(g, v, {0});
      Matcher shadow(g);
      std::mt19937 rng(seed);
      std::string out;
      for (int64_t left = budget; left > 0; --left) {
        std::vector<float> logits(texts.size());
        for (auto& x : logits) x = static_cast<float>(rng() % 1000) / 100.0f;
        sampling::SequenceContext ctx;
        ctx.tokens_left = left;
        p.apply(logits, ctx);
        std::vector<int32_t> ok;
        for (int32_t id = 0; id < static_cast<int32_t>(logits.size()); ++id)
          if (logits[static_cast<size_t>(id)] > -1e30f) ok.push_back(id);
        ASSERT_FALSE(ok.empty());
        int32_t pick = ok[rng() % ok.size()];
        if (pick == 0) break;
        p.accept(pick);
        out += texts[static_cast<size_t>(pick)];
        if (p.complete()) break;
      }
      // One-token budget cannot even open the object; from two tokens on it always closes.
      if (budget >= 2) {
        EXPECT_TRUE(shadow.advance(out) && shadow.accepting()) << "budget " << budget << ": " << out;
      }
    }
  }
}

}  // namespace
}  // namespace moe::grammar
