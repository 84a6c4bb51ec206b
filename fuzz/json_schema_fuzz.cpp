// json_schema_fuzz.cpp: libFuzzer target for the JSON Schema and regex compilers (src/grammar). The input
// is a JSON schema (or, when it starts with "re:", a regex). Compiling must give GBNF or a GrammarError;
// GBNF we generated must then compile (a syntax error in it is a compiler bug: trap) or hit a limit.
// fuzz-link: moe_grammar
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "grammar/grammar.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  moe::grammar::Limits limits;
  limits.max_rules = 4000;
  limits.max_elements = 40000;
  limits.max_repetition = 100;
  limits.max_nesting = 32;
  limits.max_compile_seconds = 1.0;
  std::string gbnf;
  try {
    if (text.substr(0, 3) == "re:") {
      gbnf = moe::grammar::regex_to_gbnf(text.substr(3), "root", limits);
    } else {
      auto schema = nlohmann::ordered_json::parse(text, nullptr, false);
      if (schema.is_discarded()) return 0;
      gbnf = moe::grammar::json_schema_to_gbnf(schema, "root", limits);
    }
  } catch (const moe::grammar::GrammarError&) {
    return 0;
  }
  try {
    moe::grammar::compile_gbnf(gbnf, limits);
  } catch (const moe::grammar::GrammarError& e) {
    if (std::string_view(e.what()).find("grammar line") != std::string_view::npos) __builtin_trap();
  }
  return 0;
}
