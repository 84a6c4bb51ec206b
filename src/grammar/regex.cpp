// regex.cpp: a regex subset -> a GBNF expression, compiled exactly (same language, no approximation).
//
// The subset (ECMAScript syntax, what JSON Schema `pattern` and vLLM's guided_regex use):
//   literals (UTF-8); escapes \\ \/ \. \* \+ \? \( \) \[ \] \{ \} \| \^ \$ \- and \n \r \t \f \v \0 \xHH
//   \uHHHH; classes \d \D \w \W \s \S; [...] with ranges, ^ negation and those escapes inside; `.` (any
//   character but \n \r U+2028 U+2029); groups (...) and (?:...) and (?<name>...); alternation |;
//   quantifiers * + ? {m} {m,} {m,n} (a lazy ? after one is accepted: same language); ^ at the very
//   start and $ at the very end.
// Refused with a GrammarError naming the feature: backreferences, lookaround, word boundaries \b \B,
// inline flags (?i), Unicode properties \p{...}, ^ or $ elsewhere, counts above Limits, and a quantified
// group that itself contains an unbounded quantifier under an unbounded quantifier, e.g. (a+)+ — such
// patterns match in exponentially many ways (catastrophic backtracking elsewhere); rewrite them (a+).
// Matching is a full match. In JSON mode (a JSON Schema `pattern`) every character is emitted in its
// JSON string encoding (" \ and control characters escaped), and a pattern without ^ / $ may have any
// characters before / after it, as JSON Schema's unanchored `pattern` means.
#include <algorithm>
#include <cstdio>

#include "grammar/grammar.h"
#include "grammar/regex_internal.h"

namespace moe::grammar {
namespace {

struct Range {
  uint32_t lo, hi;
};

std::string hex_escape(uint32_t cp) {
  char buf[16];
  if (cp < 0x80) snprintf(buf, sizeof buf, "\\x%02X", cp);
  else snprintf(buf, sizeof buf, "\\U%08X", cp);
  return buf;
}

std::string class_char(uint32_t cp) {
  if ((cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z')) return std::string(1, static_cast<char>(cp));
  return hex_escape(cp);
}

std::vector<Range> normalize(std::vector<Range> r) {
  std::sort(r.begin(), r.end(), [](Range a, Range b) { return a.lo < b.lo; });
  std::vector<Range> m;
  for (Range x : r) {
    if (!m.empty() && x.lo <= m.back().hi + 1) m.back().hi = std::max(m.back().hi, x.hi);
    else m.push_back(x);
  }
  return m;
}

std::vector<Range> negate(const std::vector<Range>& r) {
  std::vector<Range> out;
  uint32_t next = 0;
  for (Range x : normalize(r)) {
    if (x.lo > next) out.push_back({next, x.lo - 1});
    next = x.hi + 1;
  }
  if (next <= 0x10FFFF) out.push_back({next, 0x10FFFF});
  return out;
}

std::string json_escape_cp(uint32_t cp) {
  switch (cp) {
    case '"': return "\\\"";
    case '\\': return "\\\\";
    case '\n': return "\\n";
    case '\r': return "\\r";
    case '\t': return "\\t";
    case '\b': return "\\b";
    case '\f': return "\\f";
  }
  char buf[8];
  snprintf(buf, sizeof buf, "\\u%04x", cp);
  return buf;
}

class RegexCompiler {
 public:
  RegexCompiler(std::string_view p, bool json, const Limits& limits) : p_(p), json_(json), limits_(limits) {}

  std::string run() {
    if (p_.size() > limits_.max_input_bytes) throw GrammarError("pattern", "the pattern is longer than the limit");
    bool anchored_start = false, anchored_end = false;
    if (!p_.empty() && p_[0] == '^') anchored_start = true, pos_ = 1;
    std::string body = alternates(0).text;
    if (pos_ < p_.size() && p_[pos_] == '$') anchored_end = true, ++pos_;
    if (pos_ < p_.size()) fail(p_[pos_] == ')' ? "unbalanced ')'" : "'$' is only supported at the end");
    if (!json_) return "(" + body + ")";
    std::string any = "(" + any_json_char() + ")*";
    return (anchored_start ? "" : any + " ") + "(" + body + ")" + (anchored_end ? "" : " " + any);
  }

 private:
  struct Piece {
    std::string text;
    bool unbounded = false;  // contains an unbounded quantifier
  };
  std::string_view p_;
  bool json_;
  const Limits& limits_;
  size_t pos_ = 0;

  [[noreturn]] void fail(const std::string& what) {
    throw GrammarError("pattern", "regex at offset " + std::to_string(pos_) + ": " + what);
  }
  bool eof() const { return pos_ >= p_.size(); }

  // A character class as GBNF; in JSON mode the characters JSON must escape are spelled escaped.
  std::string emit_class(std::vector<Range> ranges) {
    ranges = normalize(ranges);
    if (ranges.empty()) fail("empty character class");
    std::vector<std::string> alts;
    std::vector<Range> plain;
    for (Range r : ranges) {
      for (uint32_t cp = r.lo; cp <= r.hi && cp < 0x20; ++cp)
        if (json_) alts.push_back(gbnf_literal(json_escape_cp(cp)));
      uint32_t lo = json_ ? std::max<uint32_t>(r.lo, 0x20) : r.lo;
      if (lo > r.hi) continue;
      // Split out '"' and '\\' in JSON mode.
      uint32_t start = lo;
      for (uint32_t special : {uint32_t{'"'}, uint32_t{'\\'}}) {
        if (!json_ || special < start || special > r.hi) continue;
        if (special > start) plain.push_back({start, special - 1});
        alts.push_back(gbnf_literal(json_escape_cp(special)));
        start = special + 1;
      }
      if (start <= r.hi) plain.push_back({start, r.hi});
    }
    if (!plain.empty()) {
      std::string c = "[";
      for (Range r : plain) c += class_char(r.lo) + (r.hi > r.lo ? "-" + class_char(r.hi) : "");
      alts.insert(alts.begin(), c + "]");
    }
    if (alts.size() == 1) return alts[0];
    std::string out = "(";
    for (size_t i = 0; i < alts.size(); ++i) out += (i ? " | " : "") + alts[i];
    return out + ")";
  }

  std::string any_json_char() { return emit_class({{0, 0x10FFFF}}); }

  uint32_t hex(size_t n) {
    uint32_t v = 0;
    for (size_t i = 0; i < n; ++i) {
      if (eof()) fail("bad escape: expected hex digits");
      char c = p_[pos_++];
      int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
      if (d < 0) fail("bad escape: expected hex digits");
      v = v * 16 + static_cast<uint32_t>(d);
    }
    if (v >= 0xD800 && v <= 0xDFFF) fail("surrogate escapes are not supported");
    return v;
  }

  uint32_t code_point() {
    unsigned char c = static_cast<unsigned char>(p_[pos_++]);
    if (c < 0x80) return c;
    int n = c < 0xC2 ? -1 : c < 0xE0 ? 1 : c < 0xF0 ? 2 : c < 0xF5 ? 3 : -1;
    if (n < 0) fail("invalid UTF-8");
    uint32_t cp = c & (0x3F >> n);
    for (int i = 0; i < n; ++i) {
      if (eof() || (static_cast<unsigned char>(p_[pos_]) & 0xC0) != 0x80) fail("invalid UTF-8");
      cp = (cp << 6) | (static_cast<unsigned char>(p_[pos_++]) & 0x3F);
    }
    if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10FFFF)) || (cp >= 0xD800 && cp <= 0xDFFF)) fail("invalid UTF-8");
    return cp;
  }

  // After a backslash: a class escape (ranges) or one character.
  std::vector<Range> escape(bool in_class) {
    if (eof()) fail("a trailing backslash");
    char e = p_[pos_++];
    static const std::vector<Range> digit = {{'0', '9'}};
    static const std::vector<Range> word = {{'0', '9'}, {'A', 'Z'}, {'_', '_'}, {'a', 'z'}};
    static const std::vector<Range> space = {{'\t', '\r'}, {' ', ' '}, {0xA0, 0xA0}, {0x1680, 0x1680}, {0x2000, 0x200A},
                                             {0x2028, 0x2029}, {0x202F, 0x202F}, {0x205F, 0x205F}, {0x3000, 0x3000}, {0xFEFF, 0xFEFF}};
    switch (e) {
      case 'd': return digit;
      case 'D': return negate(digit);
      case 'w': return word;
      case 'W': return negate(word);
      case 's': return space;
      case 'S': return negate(space);
      case 'n': return {{'\n', '\n'}};
      case 'r': return {{'\r', '\r'}};
      case 't': return {{'\t', '\t'}};
      case 'f': return {{'\f', '\f'}};
      case 'v': return {{'\v', '\v'}};
      case '0': return {{0, 0}};
      case 'x': { uint32_t v = hex(2); return {{v, v}}; }
      case 'u': { uint32_t v = hex(4); return {{v, v}}; }
      case 'b':
        if (in_class) return {{'\b', '\b'}};
        fail("word boundaries (\\b) are not supported");
      case 'B': fail("word boundaries (\\B) are not supported");
      case 'p': case 'P': fail("Unicode property escapes (\\p{...}) are not supported");
      case 'k': fail("named backreferences are not supported");
      default:
        if (e >= '1' && e <= '9') fail("backreferences are not supported");
        if ((e >= 'a' && e <= 'z') || (e >= 'A' && e <= 'Z')) fail(std::string("unknown escape '\\") + e + "'");
        return {{static_cast<unsigned char>(e), static_cast<unsigned char>(e)}};
    }
  }

  std::string literal(uint32_t cp) {
    std::string s;
    if (json_ && (cp < 0x20 || cp == '"' || cp == '\\')) return gbnf_literal(json_escape_cp(cp));
    if (cp < 0x80) s += static_cast<char>(cp);
    else return "[" + hex_escape(cp) + "]";
    return gbnf_literal(s);
  }

  Piece alternates(uint32_t depth) {
    if (depth > limits_.max_nesting) throw GrammarError("pattern", "regex groups nest deeper than the limit");
    Piece out = sequence(depth);
    while (!eof() && p_[pos_] == '|') {
      ++pos_;
      Piece next = sequence(depth);
      out.text = out.text + " | " + next.text;
      out.unbounded = out.unbounded || next.unbounded;
    }
    return out;
  }

  Piece sequence(uint32_t depth) {
    Piece seq;
    for (;;) {
      if (eof()) break;
      char c = p_[pos_];
      if (c == '|' || c == ')') break;
      if (c == '$') {
        if (pos_ + 1 == p_.size() && depth == 0) break;
        fail("'$' is only supported at the end");
      }
      Piece atom;
      if (c == '^') fail("'^' is only supported at the start");
      if (c == '(') {
        ++pos_;
        if (!eof() && p_[pos_] == '?') {
          ++pos_;
          if (!eof() && p_[pos_] == ':') ++pos_;
          else if (!eof() && p_[pos_] == '<' && pos_ + 1 < p_.size() && p_[pos_ + 1] != '=' && p_[pos_ + 1] != '!') {
            while (!eof() && p_[pos_] != '>') ++pos_;  // a named group: the name does not change the language
            if (eof()) fail("unterminated group name");
            ++pos_;
          } else if (!eof() && (p_[pos_] == '=' || p_[pos_] == '!' || p_[pos_] == '<')) fail("lookaround is not supported");
          else fail("inline flags and other (?...) groups are not supported");
        }
        Piece inner = alternates(depth + 1);
        if (eof() || p_[pos_] != ')') fail("unbalanced '('");
        ++pos_;
        atom.text = "(" + (inner.text.empty() ? std::string("\"\"") : inner.text) + ")";
        atom.unbounded = inner.unbounded;
      } else if (c == '[') {
        ++pos_;
        bool neg = !eof() && p_[pos_] == '^';
        if (neg) ++pos_;
        std::vector<Range> ranges;
        while (eof() || p_[pos_] != ']') {
          if (eof()) fail("unterminated character class");
          std::vector<Range> one;
          if (p_[pos_] == '\\') {
            ++pos_;
            one = escape(true);
          } else {
            uint32_t cp = code_point();
            one = {{cp, cp}};
          }
          if (one.size() == 1 && one[0].lo == one[0].hi && pos_ + 1 < p_.size() && p_[pos_] == '-' && p_[pos_ + 1] != ']') {
            ++pos_;
            std::vector<Range> two;
            if (p_[pos_] == '\\') {
              ++pos_;
              two = escape(true);
            } else {
              uint32_t cp = code_point();
              two = {{cp, cp}};
            }
            if (two.size() != 1 || two[0].lo != two[0].hi) fail("a class escape cannot end a range");
            if (two[0].lo < one[0].lo) fail("reversed range in a character class");
            one = {{one[0].lo, two[0].lo}};
          }
          ranges.insert(ranges.end(), one.begin(), one.end());
        }
        ++pos_;
        atom.text = emit_class(neg ? negate(ranges) : ranges);
      } else if (c == '.') {
        ++pos_;
        atom.text = emit_class(negate({{'\n', '\n'}, {'\r', '\r'}, {0x2028, 0x2029}}));
      } else if (c == '\\') {
        ++pos_;
        std::vector<Range> r = escape(false);
        atom.text = r.size() == 1 && r[0].lo == r[0].hi ? literal(r[0].lo) : emit_class(r);
      } else if (c == '*' || c == '+' || c == '?' ||
                 (c == '{' && pos_ + 1 < p_.size() && p_[pos_ + 1] >= '0' && p_[pos_ + 1] <= '9')) {
        fail(std::string("'") + c + "' with nothing to repeat before it");
      } else {
        uint32_t cp = code_point();
        atom.text = literal(cp);
      }
      quantifier(atom);
      seq.text += (seq.text.empty() ? "" : " ") + atom.text;
      seq.unbounded = seq.unbounded || atom.unbounded;
    }
    if (seq.text.empty()) seq.text = "\"\"";
    return seq;
  }

  uint32_t count() {
    uint64_t v = 0;
    if (eof() || p_[pos_] < '0' || p_[pos_] > '9') fail("expected a number in {m,n}");
    while (!eof() && p_[pos_] >= '0' && p_[pos_] <= '9') {
      v = v * 10 + static_cast<uint64_t>(p_[pos_++] - '0');
      if (v > limits_.max_repetition) throw GrammarError("pattern", "a regex repetition count is above the limit of " + std::to_string(limits_.max_repetition));
    }
    return static_cast<uint32_t>(v);
  }

  void quantifier(Piece& atom) {
    if (eof()) return;
    char c = p_[pos_];
    std::string q;
    bool unbounded = false;
    if (c == '*' || c == '+') q = c, unbounded = true, ++pos_;
    else if (c == '?') q = "?", ++pos_;
    else if (c == '{') {
      size_t save = pos_;
      ++pos_;
      if (eof() || p_[pos_] < '0' || p_[pos_] > '9') {  // a literal '{' (ECMAScript allows it)
        pos_ = save;
        return;
      }
      uint32_t m = count(), n = m;
      if (!eof() && p_[pos_] == ',') {
        ++pos_;
        if (!eof() && p_[pos_] == '}') n = UINT32_MAX, unbounded = true;
        else n = count();
      }
      if (eof() || p_[pos_] != '}') fail("unterminated {m,n}");
      ++pos_;
      if (n < m) fail("{m,n} with n < m");
      q = "{" + std::to_string(m) + (n == m ? "" : "," + (n == UINT32_MAX ? "" : std::to_string(n))) + "}";
    } else {
      return;
    }
    if (!eof() && p_[pos_] == '?') ++pos_;  // lazy: same language
    if (!eof() && (p_[pos_] == '*' || p_[pos_] == '+' || p_[pos_] == '?' || p_[pos_] == '{'))
      if (p_[pos_] != '{' || (pos_ + 1 < p_.size() && p_[pos_ + 1] >= '0' && p_[pos_ + 1] <= '9')) fail("a quantifier cannot follow a quantifier");
    if (unbounded && atom.unbounded)
      fail("nested unbounded quantifiers like (a+)+ are not supported (exponentially ambiguous: catastrophic backtracking)");
    atom.text = "(" + atom.text + ")" + q;
    atom.unbounded = atom.unbounded || unbounded;
  }
};

}  // namespace

std::string regex_expression(std::string_view pattern, bool json_string, const Limits& limits) {
  return RegexCompiler(pattern, json_string, limits).run();
}

std::string regex_to_gbnf(std::string_view pattern, std::string_view name, const Limits& limits) {
  return std::string(name) + " ::= " + regex_expression(pattern, false, limits) + "\n";
}

}  // namespace moe::grammar
