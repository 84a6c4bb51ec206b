// grammar_impl.h: the compiled form of a grammar, shared by the GBNF compiler (gbnf.cpp) and the
// matcher (matcher.cpp); not part of the public API. A grammar is a flat array of elements: each rule is
// a list of alternatives, each alternative a run of elements closed by End. An element matches one byte
// from a 256-bit set, or calls a rule. Characters were lowered to UTF-8 byte sequences by the compiler, so
// the matcher never decodes anything. Per position it also keeps the fewest bytes that finish the
// alternative from there (min_rest), which gives every parse stack's shortest completion for free.
#pragma once
#include <array>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "grammar/grammar.h"

namespace moe::grammar {

enum class Op : uint8_t { End, Bytes, Ref };

struct Element {
  Op op = Op::End;
  uint32_t arg = 0;  // Bytes: index into sets; Ref: rule index
};

struct ByteSet {
  std::array<uint64_t, 4> w{};
  bool has(unsigned b) const { return (w[b >> 6] >> (b & 63)) & 1; }
  void add(unsigned b) { w[b >> 6] |= uint64_t{1} << (b & 63); }
  void add_range(unsigned lo, unsigned hi) {
    for (unsigned b = lo; b <= hi; ++b) add(b);
  }
  bool empty() const { return !(w[0] | w[1] | w[2] | w[3]); }
  unsigned lowest() const {
    for (unsigned b = 0; b < 256; ++b)
      if (has(b)) return b;
    return 0;
  }
  bool operator<(const ByteSet& o) const { return w < o.w; }
  bool operator==(const ByteSet& o) const { return w == o.w; }
};

constexpr uint32_t kInfiniteLength = 1u << 30;  // "can never finish"; sums saturate here
inline uint32_t sat_add(uint32_t a, uint32_t b) { return a + b >= kInfiniteLength ? kInfiniteLength : a + b; }

struct Grammar::Impl {
  Limits limits;
  std::vector<Element> elems;                   // every alternative's elements, each run closed by End
  std::vector<std::vector<uint32_t>> alts;      // [rule] -> start positions in elems
  std::vector<ByteSet> sets;                    // byte sets of Bytes elements
  std::vector<std::string> names;               // [rule]
  uint32_t root = 0;
  std::vector<uint32_t> min_rest;               // [position] fewest bytes from here to its End
  std::vector<uint32_t> rule_min;               // [rule] fewest bytes the rule matches
  std::vector<uint32_t> rule_min_alt;           // [rule] start of an alternative achieving rule_min
};

// Throws GrammarError{limit_name} once the compile has run past its time budget.
class Deadline {
 public:
  explicit Deadline(double seconds)
      : end_(std::chrono::steady_clock::now() + std::chrono::microseconds(static_cast<int64_t>(seconds * 1e6))) {}
  void check() {
    if ((++calls_ & 255) == 0 && std::chrono::steady_clock::now() > end_)
      throw GrammarError("max_compile_seconds", "compiling took longer than the time limit");
  }

 private:
  std::chrono::steady_clock::time_point end_;
  uint32_t calls_ = 0;
};

}  // namespace moe::grammar
