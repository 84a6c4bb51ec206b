// fuzz_test.cpp: grammars and schemas are request input, so any text must compile or throw a
// GrammarError: never a crash, a hang, unbounded memory or another exception type (scripts/test-asan.sh
// runs these under AddressSanitizer + UBSan). Generators: GBNF token soup, byte-level mutations of real
// grammars (json_object, compiled schemas, regexes), random JSON schemas from the keyword vocabulary, and
// mutated schemas. What compiles is then run: random bytes through the matcher, and from every live state
// the shortest completion must be accepted and end in an accepting state. A schema that compiles must
// give GBNF that parses (a syntax error there is a compiler bug). Deterministic seeds; a time budget keeps
// each test to a few seconds.
#include <gtest/gtest.h>

#include <chrono>
#include <random>

#include "grammar/grammar.h"

namespace moe::grammar {
namespace {

using json = nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;

const char* const kGbnfFragments[] = {
    "root", " ::= ", "::=", "a", "b-c", "x", " ", "\n", "|", "(", ")", "*", "+", "?", "{", "}", "{2}", "{1,3}", "{0,}",
    "\"", "\"ab\"", "\"\\n\"", "\"\\x41\"", "\"\\u00e9\"", "\\", "[", "]", "[a-z]", "[^\"]", "[\\]-]", "^", "-", ".",
    "#c\n", "root ::= ", "a ::= ", "x ::= ", " a", " x", "\"é\"", "\xff", "\xc3", "{99999}", "<[1]>", "\"\"",
};

Limits small_limits() {
  Limits l;
  l.max_rules = 2000;
  l.max_elements = 20000;
  l.max_repetition = 64;
  l.max_compile_seconds = 0.5;
  l.max_stacks = 256;
  l.max_stack_depth = 256;
  return l;
}

// Runs random bytes (biased to bytes the state takes) through the grammar, checking the completion invariant.
void exercise(const std::shared_ptr<const Grammar>& g, std::mt19937& rng) {
  Matcher m(g);
  for (int step = 0; step < 40; ++step) {
    if (!m.dead()) {
      std::string close = m.shortest_completion();
      Matcher copy = m;
      const bool ok = copy.advance(close) && copy.accepting();
      // A matching limit may cut the completion's parses (counted); otherwise it must be accepted.
      if (copy.limit_hits() == m.limit_hits()) {
        ASSERT_TRUE(ok) << "completion refused or not accepting";
      }
    }
    std::string b(1, static_cast<char>(rng() % 256));
    if (rng() % 3) {
      std::string close = m.shortest_completion();
      if (!close.empty()) b = close.substr(0, 1);
    }
    m.advance(b);  // refused bytes leave the state as it was
  }
}

std::string mutate(std::string s, std::mt19937& rng, const char* const* fragments, size_t n_fragments) {
  int edits = 1 + static_cast<int>(rng() % 4);
  for (int e = 0; e < edits && !s.empty(); ++e) {
    size_t at = rng() % s.size();
    switch (rng() % 4) {
      case 0: s.erase(at, 1 + rng() % 4); break;
      case 1: s.insert(at, fragments[rng() % n_fragments]); break;
      case 2: s[at] = static_cast<char>(rng() % 256); break;
      default: s.insert(at, s.substr(rng() % s.size(), 1 + rng() % 8)); break;
    }
  }
  return s;
}

TEST(GrammarFuzz, GbnfSoupAndMutations) {
  std::mt19937 rng(1234);
  const auto limits = small_limits();
  std::vector<std::string> seeds = {
      json_object_gbnf(),
      json_schema_to_gbnf(json::parse(R"({"type":"object","properties":{"a":{"type":"integer","minimum":3,"maximum":300},
        "b":{"type":"array","items":{"type":"string","maxLength":4}},"c":{"enum":["x",1,null]}},"required":["a"],
        "additionalProperties":{"type":"boolean"}})")),
      regex_to_gbnf("[A-Z][a-z]{1,4}(-\\d+)?|x.y"),
      "root ::= item (\",\" item)*\nitem ::= [a-c]+ digit?\ndigit ::= [0-9]\n",
  };
  const size_t n_frag = sizeof(kGbnfFragments) / sizeof(kGbnfFragments[0]);
  auto deadline = Clock::now() + std::chrono::seconds(4);
  int compiled = 0, refused = 0;
  for (int iter = 0; iter < 4000 && Clock::now() < deadline; ++iter) {
    std::string text;
    if (iter % 2) {
      text = mutate(seeds[rng() % seeds.size()], rng, kGbnfFragments, n_frag);
    } else {
      text = "root ::= ";
      int n = 1 + static_cast<int>(rng() % 24);
      for (int i = 0; i < n; ++i) text += kGbnfFragments[rng() % n_frag];
    }
    try {
      auto g = compile_gbnf(text, limits);
      ++compiled;
      exercise(g, rng);
      if (HasFatalFailure()) {
        ADD_FAILURE() << "grammar:\n" << text;
        return;
      }
    } catch (const GrammarError&) {
      ++refused;
    }
  }
  EXPECT_GT(compiled, 50);
  EXPECT_GT(refused, 50);
}

json random_schema(std::mt19937& rng, int depth) {
  static const char* const types[] = {"object", "array", "string", "integer", "number", "boolean", "null", "bogus"};
  json s = json::object();
  int n = static_cast<int>(rng() % 4);
  for (int i = 0; i < n; ++i) {
    switch (rng() % 22) {
      case 0: s["type"] = types[rng() % 8]; break;
      case 1: s["type"] = json::array({types[rng() % 8], types[rng() % 8]}); break;
      case 2: if (depth < 4) s["properties"] = {{"p" + std::to_string(rng() % 3), random_schema(rng, depth + 1)}, {"q", random_schema(rng, depth + 1)}}; break;
      case 3: s["required"] = json::array({"p0", "q"}); break;
      case 4: s["additionalProperties"] = rng() % 2 ? json(false) : (depth < 4 ? random_schema(rng, depth + 1) : json(true)); break;
      case 5: if (depth < 4) s["items"] = random_schema(rng, depth + 1); break;
      case 6: s["minItems"] = static_cast<int>(rng() % 5) - 1; break;
      case 7: s["maxItems"] = static_cast<int>(rng() % 5); break;
      case 8: s["enum"] = json::array({"a", static_cast<int>(rng() % 9), nullptr, json::array({1})}); break;
      case 9: s["const"] = rng() % 2 ? json("k\"\\") : json(3.5); break;
      case 10: if (depth < 4) s["anyOf"] = json::array({random_schema(rng, depth + 1), random_schema(rng, depth + 1)}); break;
      case 11: if (depth < 4) s["oneOf"] = json::array({random_schema(rng, depth + 1)}); break;
      case 12: s["$ref"] = rng() % 2 ? "#" : "#/$defs/d"; break;
      case 13: if (depth < 3) s["$defs"] = {{"d", random_schema(rng, depth + 1)}}; break;
      case 14: s["minLength"] = static_cast<int>(rng() % 4); break;
      case 15: s["maxLength"] = static_cast<int>(rng() % 6); break;
      case 16: s["minimum"] = static_cast<int>(rng() % 200) - 100; break;
      case 17: s["maximum"] = static_cast<double>(rng() % 2000) / 10.0 - 50; break;
      case 18: s["exclusiveMinimum"] = static_cast<int>(rng() % 10); break;
      case 19: s["pattern"] = rng() % 2 ? "^[a-c]+x?$" : "(a+)+|\\d{2,}"; break;
      case 20: s["nullable"] = true; break;
      default: s[rng() % 2 ? "uniqueItems" : "format"] = rng() % 2 ? json("date") : json(true); break;
    }
  }
  return s;
}

TEST(GrammarFuzz, JsonSchemas) {
  std::mt19937 rng(99);
  const auto limits = small_limits();
  auto deadline = Clock::now() + std::chrono::seconds(4);
  int compiled = 0;
  for (int iter = 0; iter < 3000 && Clock::now() < deadline; ++iter) {
    json schema = random_schema(rng, 0);
    if (iter % 3 == 0) {
      // Mutate the serialized schema; keep only what still parses as JSON.
      std::string text = mutate(schema.dump(), rng, kGbnfFragments, 10);
      schema = json::parse(text, nullptr, false);
      if (schema.is_discarded()) continue;
    }
    std::string gbnf;
    try {
      gbnf = json_schema_to_gbnf(schema, "root", limits);
    } catch (const GrammarError&) {
      continue;
    }
    try {
      auto g = compile_gbnf(gbnf, limits);
      ++compiled;
      exercise(g, rng);
      if (HasFatalFailure()) {
        ADD_FAILURE() << "schema: " << schema.dump();
        return;
      }
    } catch (const GrammarError& e) {
      // Limits and schemas that can never finish are fine; a syntax error in our own output is a bug.
      ASSERT_EQ(std::string(e.what()).find("grammar line"), std::string::npos) << e.what() << "\nschema: " << schema.dump() << "\n" << gbnf;
    }
  }
  EXPECT_GT(compiled, 100);
}

TEST(GrammarFuzz, RegexMutations) {
  std::mt19937 rng(5);
  const char* const frags[] = {"(", ")", "|", "*", "+", "?", "{2}", "{1,}", "[", "]", "^", "$", "\\d", "\\w", "\\", ".", "a", "(?:", "[^a]", "{", "é"};
  const std::vector<std::string> seeds = {"^[A-Z]{2}-\\d{3}$", "(ab|cd)+e?", "[^\"\\\\]{0,5}x", "a.b*c"};
  auto deadline = Clock::now() + std::chrono::seconds(3);
  for (int iter = 0; iter < 3000 && Clock::now() < deadline; ++iter) {
    std::string p = mutate(seeds[rng() % seeds.size()], rng, frags, sizeof(frags) / sizeof(frags[0]));
    try {
      auto g = compile_gbnf(regex_to_gbnf(p, "root", small_limits()), small_limits());
      exercise(g, rng);
      if (HasFatalFailure()) return;
    } catch (const GrammarError& e) {
      ASSERT_EQ(std::string(e.what()).find("grammar line"), std::string::npos) << e.what() << "\npattern: " << p;
    }
  }
}

}  // namespace
}  // namespace moe::grammar
