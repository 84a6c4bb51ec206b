// grammar_fuzz.cpp: libFuzzer target for the GBNF compiler and the byte matcher (src/grammar). The input
// is GBNF text, optionally followed by a NUL and bytes to feed the compiled grammar. Compiling must give a
// grammar or a GrammarError, never anything else; feeding bytes must keep the invariant that the
// shortest completion of every live state is accepted and ends in an accepting state, unless a matching
// limit (max_stacks, max_stack_depth) cut parses on the way, which the matcher counts.
// fuzz-link: moe_grammar
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "grammar/grammar.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view all(reinterpret_cast<const char*>(data), size);
  size_t nul = all.find('\0');
  std::string_view text = all.substr(0, nul);
  std::string_view feed = nul == std::string_view::npos ? std::string_view() : all.substr(nul + 1);
  moe::grammar::Limits limits;
  limits.max_rules = 4000;
  limits.max_elements = 40000;
  limits.max_repetition = 100;
  limits.max_compile_seconds = 1.0;
  limits.max_stacks = 256;
  limits.max_stack_depth = 512;
  std::shared_ptr<const moe::grammar::Grammar> g;
  try {
    g = moe::grammar::compile_gbnf(text, limits);
  } catch (const moe::grammar::GrammarError&) {
    return 0;
  }
  moe::grammar::Matcher m(g);
  for (size_t i = 0; i < feed.size() && i < 256; ++i) {
    m.advance(feed.substr(i, 1));
    if (m.dead()) break;
    moe::grammar::Matcher copy = m;
    // Exact unless a matching limit cut parses on the completion's way (limit_hits counts those steps).
    if ((!copy.advance(m.shortest_completion()) || !copy.accepting()) && copy.limit_hits() == m.limit_hits())
      __builtin_trap();
  }
  return 0;
}
