// grammar.h: constrained decoding. A grammar (GBNF, or JSON Schema / a regex / a list of choices turned
// into GBNF) is compiled into a pushdown automaton over BYTES, and a logits processor keeps a sequence's
// output a prefix of some sentence of that grammar by masking every token whose text would leave it.
//
// Public API (what the engine, the server and tool calling build on):
//
//   auto g = moe::grammar::compile_gbnf(R"(root ::= "yes" | "no")");     // throws GrammarError
//   engine::Request r; r.sampling.grammar = g;                            // the engine does the rest
//
//   std::string rules = json_schema_to_gbnf(schema, "f-args");  // entry rule "f-args", helpers "f-args-*"
//   auto g2 = compile_gbnf("root ::= \"<call>\" f-args \"</call>\"\n" + rules);
//
// * GBNF is llama.cpp's format: `name ::= alternatives` rules (names of letters, digits, '-' and '_'),
//   "literals" and [character classes] (ranges, ^ negation) with escapes \n \r \t \\ \" \' \] \[ \- \/
//   \xHH \uHHHH \UHHHHHHHH, `.` (any character), ( groups ), alternation |, postfix * + ? {m} {m,}
//   {m,n}, # comments; the entry rule is `root`. A rule may span lines. Characters are Unicode code points
//   matched as their UTF-8 bytes, so a token that ends inside a multi-byte character is handled exactly.
//   Refused with a GrammarError naming the problem: an undefined rule, a missing root, left recursion
//   (direct or through rules that can match nothing), a rule that can never finish, unbalanced brackets
//   or quotes, bad escapes, reversed ranges, repetition counts beyond Limits, and anything past Limits.
// * Every function here is bounded by Limits (input size, rules, elements, nesting, time), so hostile
//   input is a GrammarError, never a hang or unbounded memory. At decode time the number of live stacks
//   and their depth are bounded too (a path past them is treated as not matching).
// * json_schema_to_gbnf / regex_to_gbnf / choice_to_gbnf return GBNF rule text whose entry rule is
//   `name` and whose helper rules all start with `name` + "-", so several can be concatenated into one
//   grammar. JSON Schema support and the regex subset are documented in json_schema.cpp / regex.cpp.
// * The engine hook: engine::SamplingParams::grammar. When set, the engine adds a GrammarProcessor as a
//   constraint: only tokens that keep the output a grammar prefix; end-of-sequence (EOS, end-of-turn and
//   the request's stop tokens) only where the grammar accepts; when the output reaches an accepting state
//   from which no byte can continue, the sequence finishes ("stop"). When the tokens left are too few for
//   what the model might open, only tokens from which the grammar can still be closed within the budget
//   are allowed (the shortest completion is forced at the end), so the output always matches the grammar;
//   a sequence that the budget forced this way finishes with "length" even though its output is complete.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "sampling/logits_processor.h"

namespace moe::grammar {

// A grammar, schema or regex that is refused. `keyword` names what is at fault where one thing is: a
// JSON Schema keyword ("pattern", "minimum", "$ref" ...), a regex feature, a GBNF rule name, or a limit
// ("max_rules" ...); empty when nothing narrower than the whole input applies.
struct GrammarError : std::runtime_error {
  GrammarError(std::string keyword_, const std::string& message) : std::runtime_error(message), keyword(std::move(keyword_)) {}
  std::string keyword;
};

// Bounds on compiling and matching; the defaults serve a public server.
struct Limits {
  size_t max_input_bytes = 2u << 20;      // GBNF text / regex
  size_t max_schema_bytes = 256u << 10;   // a JSON schema (its keys, strings and scalars)
  size_t max_rules = 20000;               // rules after expansion (groups and repetitions make rules)
  size_t max_elements = 400000;           // symbols in all rules after expansion
  uint32_t max_repetition = 1000;         // m and n of {m,n}; minItems/maxItems; string lengths
  uint32_t max_nesting = 256;             // ( ) depth in GBNF/regex, nesting depth of a JSON schema
  double max_compile_seconds = 2.0;       // wall-clock budget of one compile
  size_t max_stacks = 2048;               // live parse stacks in one state while matching
  uint32_t max_stack_depth = 4096;        // depth of one stack while matching
};

// A compiled grammar: immutable, shared by every sequence that uses it.
class Grammar {
 public:
  struct Impl;
  explicit Grammar(std::unique_ptr<Impl> impl);
  ~Grammar();
  const Impl& impl() const { return *impl_; }
  size_t n_rules() const;
  size_t n_elements() const;
  const Limits& limits() const;

 private:
  std::unique_ptr<Impl> impl_;
};

std::shared_ptr<const Grammar> compile_gbnf(std::string_view text, const Limits& limits = {});

// JSON Schema -> GBNF rules (entry rule `root_name`, helpers prefixed `root_name` + "-").
std::string json_schema_to_gbnf(const nlohmann::ordered_json& schema, std::string_view root_name = "root",
                                const Limits& limits = {});
// A regex of the subset in regex.cpp, matched against the whole output (implicitly anchored at both ends).
std::string regex_to_gbnf(std::string_view pattern, std::string_view name = "root", const Limits& limits = {});
// Exactly one of `choices`.
std::string choice_to_gbnf(const std::vector<std::string>& choices, std::string_view name = "root");
// Any one JSON object (response_format json_object): bounded whitespace, nesting and exponent digits.
std::string json_object_gbnf(std::string_view name = "root");
// A GBNF string literal ("...", escaped) spelling `text` exactly.
std::string gbnf_literal(std::string_view text);

// One sequence's position in a grammar: the set of parse stacks after the bytes fed so far. Copyable.
class Matcher {
 public:
  explicit Matcher(std::shared_ptr<const Grammar> grammar);
  Matcher(const Matcher&);
  Matcher& operator=(const Matcher&);
  ~Matcher();
  // Appends `bytes`; false (state unchanged) when they leave the grammar.
  bool advance(std::string_view bytes);
  // Whether `bytes` could be appended (state unchanged either way).
  bool accepts(std::string_view bytes) const;
  bool accepting() const;   // the bytes so far are a sentence of the grammar
  bool complete() const;    // accepting, and no byte can follow
  bool dead() const;        // no sentence starts with the bytes so far (only after a failed internal step)
  // The shortest bytes that make the output a sentence from here ("" when accepting).
  std::string shortest_completion() const;
  // How many of the steps fed so far (advance calls' bytes, including refused ones) met a matching
  // limit (Limits::max_stacks, max_stack_depth) and lost parses to it. While it stays 0 the matcher is
  // exact: the shortest completion is always accepted. A limit can refuse a byte the grammar allows.
  uint64_t limit_hits() const;

  struct Impl;
  Impl& impl() { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

// The token texts of a vocabulary as a byte trie, built once per model and shared by every sequence.
class Vocabulary {
 public:
  // `token_text[id]`: the bytes the output gains when `id` is emitted (empty for control tokens).
  explicit Vocabulary(std::vector<std::string> token_text);
  ~Vocabulary();
  int32_t n_vocab() const;
  const std::string& text(int32_t id) const;
  struct Impl;
  const Impl& impl() const { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

// The logits processor (a sampling constraint) for one sequence. `end_ids`: tokens that end the
// sequence (EOS, end-of-turn, the request's stop ids); they are allowed only where the grammar accepts.
class GrammarProcessor : public sampling::LogitsProcessor {
 public:
  GrammarProcessor(std::shared_ptr<const Grammar> grammar, std::shared_ptr<const Vocabulary> vocabulary,
                   std::vector<int32_t> end_ids);
  ~GrammarProcessor() override;
  void apply(std::span<float> logits, const sampling::SequenceContext& context) override;
  void accept(int32_t token) override;
  // The output is a sentence no byte can extend: the sequence is done.
  bool complete() const;
  bool accepting() const;
  // The token budget restricted some step's choice to tokens from which the grammar can still close.
  bool budget_forced() const { return budget_forced_; }
  // The fewest tokens (end token not counted) after which the output can be a sentence, when that is
  // more than `limit`: limit + 1. Searches breadth-first over token steps within a bounded amount of work;
  // when the bound is hit it answers 0 (unknown). For refusing a max_tokens too small for any output.
  int64_t min_tokens(int64_t limit);
  // Token ids allowed at this point with `tokens_left` tokens left (this one included); for tests.
  std::vector<int32_t> allowed_tokens(int64_t tokens_left = INT64_MAX);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  bool budget_forced_ = false;
};

}  // namespace moe::grammar
