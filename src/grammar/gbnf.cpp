// gbnf.cpp: GBNF text -> the compiled byte automaton (grammar_impl.h). A recursive-descent parser builds
// rules of symbols; groups and repetitions become helper rules (x* is `r ::= x r | ε`, right-recursive,
// which the matcher runs in constant stack depth), character classes become UTF-8 byte-sequence
// alternatives. Then the checks that make a grammar safe to run: every rule defined, a root, no left
// recursion (which would make the matcher's expansion loop), every reachable rule able to finish, and
// everything within Limits.
#include <algorithm>
#include <map>
#include <queue>
#include <unordered_map>

#include "grammar/grammar_impl.h"

namespace moe::grammar {

Grammar::Grammar(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Grammar::~Grammar() = default;
size_t Grammar::n_rules() const { return impl_->alts.size(); }
size_t Grammar::n_elements() const { return impl_->elems.size(); }
const Limits& Grammar::limits() const { return impl_->limits; }

namespace {

struct Sym {
  bool ref;
  uint32_t v;  // rule index or byte-set index
};
using Seq = std::vector<Sym>;

struct CpRange {
  uint32_t lo, hi;
};

std::string quote_char(char c) {
  unsigned char u = static_cast<unsigned char>(c);
  if (u >= 0x20 && u < 0x7f) return std::string("'") + c + "'";
  char buf[8];
  snprintf(buf, sizeof buf, "0x%02X", u);
  return buf;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

class Compiler {
 public:
  Compiler(std::string_view text, const Limits& limits) : src_(text), limits_(limits), deadline_(limits.max_compile_seconds) {}

  std::shared_ptr<const Grammar> run() {
    if (src_.size() > limits_.max_input_bytes)
      throw GrammarError("max_input_bytes", "the grammar is " + std::to_string(src_.size()) + " bytes, more than the limit of " +
                                                std::to_string(limits_.max_input_bytes));
    skip_space();
    if (eof()) throw GrammarError("", "the grammar is empty (it needs at least a `root ::= ...` rule)");
    while (!eof()) {
      size_t at = pos_;
      std::string name = parse_name();
      skip_space();
      if (src_.compare(pos_, 3, "::=") != 0) fail_at(at, "expected '::=' after rule name '" + name + "'");
      pos_ += 3;
      uint32_t r = rule(name);
      if (defined_[r]) throw GrammarError(name, "rule '" + name + "' is defined twice");
      defined_[r] = true;
      rules_[r] = parse_alternates(name, 0);
      skip_space();
      if (peek() == ')') fail_at(pos_, "unbalanced ')'");
    }
    return finish();
  }

 private:
  std::string_view src_;
  const Limits& limits_;
  Deadline deadline_;
  size_t pos_ = 0;
  std::vector<std::vector<Seq>> rules_;
  std::vector<std::string> names_;
  std::vector<bool> defined_;
  std::vector<size_t> first_use_;  // where each rule was first referenced (for "undefined" errors)
  std::unordered_map<std::string, uint32_t> by_name_;
  std::vector<ByteSet> sets_;
  std::map<ByteSet, uint32_t> set_index_;
  std::map<std::vector<uint32_t>, uint32_t> class_rules_;  // flattened ranges -> helper rule
  size_t n_syms_ = 0;

  bool eof() const { return pos_ >= src_.size(); }
  char peek() const { return eof() ? '\0' : src_[pos_]; }

  [[noreturn]] void fail_at(size_t at, const std::string& what) {
    size_t line = 1, col = 1;
    for (size_t i = 0; i < at && i < src_.size(); ++i) {
      if (src_[i] == '\n') ++line, col = 1;
      else ++col;
    }
    throw GrammarError("", "grammar line " + std::to_string(line) + " column " + std::to_string(col) + ": " + what);
  }

  void skip_space() {
    while (!eof()) {
      char c = src_[pos_];
      if (c == ' ' || c == '\t' || c == '\n' || c == '\r') ++pos_;
      else if (c == '#') {
        while (!eof() && src_[pos_] != '\n') ++pos_;
      } else break;
    }
  }

  static bool name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
  }

  std::string parse_name() {
    size_t start = pos_;
    while (!eof() && name_char(src_[pos_])) ++pos_;
    if (pos_ == start) fail_at(start, eof() ? "expected a rule name, found the end" : "expected a rule name, found " + quote_char(src_[start]));
    return std::string(src_.substr(start, pos_ - start));
  }

  uint32_t rule(const std::string& name) {
    auto it = by_name_.find(name);
    if (it != by_name_.end()) return it->second;
    return new_rule(name);
  }

  uint32_t new_rule(const std::string& name) {
    if (rules_.size() >= limits_.max_rules)
      throw GrammarError("max_rules", "the grammar needs more than " + std::to_string(limits_.max_rules) + " rules");
    uint32_t r = static_cast<uint32_t>(rules_.size());
    rules_.emplace_back();
    names_.push_back(name);
    defined_.push_back(false);
    first_use_.push_back(pos_);
    by_name_.emplace(name, r);
    return r;
  }

  uint32_t helper(const std::string& base, std::vector<Seq> alts) {
    std::string name = base + "-h" + std::to_string(rules_.size());
    uint32_t r = new_rule(name);
    defined_[r] = true;
    for (auto& a : alts) count(a.size());
    rules_[r] = std::move(alts);
    return r;
  }

  void count(size_t n) {
    n_syms_ += n + 1;
    if (n_syms_ > limits_.max_elements)
      throw GrammarError("max_elements", "the grammar expands to more than " + std::to_string(limits_.max_elements) + " elements");
    deadline_.check();
  }

  uint32_t set_id(const ByteSet& s) {
    auto it = set_index_.find(s);
    if (it != set_index_.end()) return it->second;
    uint32_t id = static_cast<uint32_t>(sets_.size());
    sets_.push_back(s);
    set_index_.emplace(s, id);
    return id;
  }

  Sym byte_sym(unsigned b) {
    ByteSet s;
    s.add(b);
    return {false, set_id(s)};
  }

  std::vector<Seq> parse_alternates(const std::string& name, uint32_t depth) {
    if (depth > limits_.max_nesting)
      throw GrammarError("max_nesting", "groups nest deeper than " + std::to_string(limits_.max_nesting));
    std::vector<Seq> alts;
    alts.push_back(parse_sequence(name, depth));
    while (peek() == '|') {
      ++pos_;
      alts.push_back(parse_sequence(name, depth));
    }
    return alts;
  }

  // Decodes one UTF-8 code point of the source (which must be valid UTF-8).
  uint32_t source_code_point() {
    size_t at = pos_;
    unsigned char c = static_cast<unsigned char>(src_[pos_++]);
    if (c < 0x80) return c;
    int n = c < 0xC2 ? -1 : c < 0xE0 ? 1 : c < 0xF0 ? 2 : c < 0xF5 ? 3 : -1;
    if (n < 0) fail_at(at, "invalid UTF-8 in the grammar");
    uint32_t cp = c & (0x3F >> n);
    for (int i = 0; i < n; ++i) {
      if (eof() || (static_cast<unsigned char>(src_[pos_]) & 0xC0) != 0x80) fail_at(at, "invalid UTF-8 in the grammar");
      cp = (cp << 6) | (static_cast<unsigned char>(src_[pos_++]) & 0x3F);
    }
    if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10FFFF)) || (cp >= 0xD800 && cp <= 0xDFFF))
      fail_at(at, "invalid UTF-8 in the grammar");
    return cp;
  }

  uint32_t parse_hex(size_t digits, size_t at) {
    uint32_t v = 0;
    for (size_t i = 0; i < digits; ++i) {
      char c = peek();
      int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
      if (d < 0) fail_at(at, "bad escape: expected " + std::to_string(digits) + " hex digits");
      v = v * 16 + static_cast<uint32_t>(d);
      ++pos_;
    }
    if (v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) fail_at(at, "bad escape: not a Unicode scalar value");
    return v;
  }

  // One character of a literal or class: an escape or a code point. `end` is the closing delimiter.
  uint32_t parse_char(char end) {
    size_t at = pos_;
    if (eof()) fail_at(at, std::string("unterminated ") + (end == '"' ? "string literal" : "character class"));
    if (src_[pos_] != '\\') return source_code_point();
    ++pos_;
    if (eof()) fail_at(at, "bad escape at the end of the grammar");
    char e = src_[pos_++];
    switch (e) {
      case 'n': return '\n';
      case 'r': return '\r';
      case 't': return '\t';
      case '0': return 0;
      case '\\': case '"': case '\'': case '[': case ']': case '-': case '/': case '^': return static_cast<unsigned char>(e);
      case 'x': return parse_hex(2, at);
      case 'u': return parse_hex(4, at);
      case 'U': return parse_hex(8, at);
      default: fail_at(at, "bad escape '\\" + std::string(1, e) + "'");
    }
  }

  // Code point ranges -> symbols: one byte set for the ASCII part, UTF-8 byte sequences for the rest
  // (a helper rule of alternatives when there is more than one way).
  Seq class_syms(std::vector<CpRange> ranges, const std::string& name) {
    std::sort(ranges.begin(), ranges.end(), [](CpRange a, CpRange b) { return a.lo < b.lo; });
    std::vector<CpRange> merged;
    for (CpRange r : ranges) {
      if (!merged.empty() && r.lo <= merged.back().hi + 1) merged.back().hi = std::max(merged.back().hi, r.hi);
      else merged.push_back(r);
    }
    ByteSet ascii;
    std::vector<std::vector<std::pair<uint8_t, uint8_t>>> seqs;
    for (CpRange r : merged) {
      if (r.lo < 0x80) ascii.add_range(r.lo, std::min<uint32_t>(r.hi, 0x7F));
      if (r.hi >= 0x80) utf8_split(std::max<uint32_t>(r.lo, 0x80), r.hi, seqs);
    }
    if (seqs.empty()) {
      if (ascii.empty()) throw GrammarError("", "empty character class (it matches nothing)");
      return {Sym{false, set_id(ascii)}};
    }
    std::vector<uint32_t> key;
    for (CpRange r : merged) key.push_back(r.lo), key.push_back(r.hi);
    auto it = class_rules_.find(key);
    if (it != class_rules_.end()) return {Sym{true, it->second}};
    std::vector<Seq> alts;
    if (!ascii.empty()) alts.push_back({Sym{false, set_id(ascii)}});
    for (const auto& s : seqs) {
      Seq seq;
      for (auto [lo, hi] : s) {
        ByteSet b;
        b.add_range(lo, hi);
        seq.push_back({false, set_id(b)});
      }
      alts.push_back(std::move(seq));
    }
    uint32_t r = helper(name + "-char", std::move(alts));
    class_rules_.emplace(std::move(key), r);
    return {Sym{true, r}};
  }

  // Splits code points [lo, hi] (>= 0x80) into runs of UTF-8 byte ranges, skipping surrogates.
  void utf8_split(uint32_t lo, uint32_t hi, std::vector<std::vector<std::pair<uint8_t, uint8_t>>>& out) {
    if (lo > hi) return;
    if (lo <= 0xDFFF && hi >= 0xD800) {
      if (lo < 0xD800) utf8_split(lo, 0xD7FF, out);
      if (hi > 0xDFFF) utf8_split(0xE000, hi, out);
      return;
    }
    for (uint32_t edge : {0x7FFu, 0xFFFFu}) {
      if (lo <= edge && hi > edge) {
        utf8_split(lo, edge, out);
        utf8_split(edge + 1, hi, out);
        return;
      }
    }
    int n = lo < 0x800 ? 2 : lo < 0x10000 ? 3 : 4;
    for (int i = 1; i < n; ++i) {
      uint32_t m = (1u << (6 * i)) - 1;
      if ((lo & ~m) != (hi & ~m)) {
        if ((lo & m) != 0) {
          utf8_split(lo, lo | m, out);
          utf8_split((lo | m) + 1, hi, out);
          return;
        }
        if ((hi & m) != m) {
          utf8_split(lo, (hi & ~m) - 1, out);
          utf8_split(hi & ~m, hi, out);
          return;
        }
      }
    }
    std::string a, b;
    append_utf8(a, lo);
    append_utf8(b, hi);
    std::vector<std::pair<uint8_t, uint8_t>> seq;
    for (size_t i = 0; i < a.size(); ++i) seq.push_back({static_cast<uint8_t>(a[i]), static_cast<uint8_t>(b[i])});
    out.push_back(std::move(seq));
  }

  uint32_t parse_count() {
    size_t at = pos_;
    uint64_t v = 0;
    if (peek() < '0' || peek() > '9') fail_at(at, "expected a number in {m,n}");
    while (peek() >= '0' && peek() <= '9') {
      v = v * 10 + static_cast<uint64_t>(peek() - '0');
      ++pos_;
      if (v > limits_.max_repetition)
        throw GrammarError("max_repetition", "repetition count above the limit of " + std::to_string(limits_.max_repetition));
    }
    return static_cast<uint32_t>(v);
  }

  // X{min,max} (max == UINT32_MAX: unbounded) replacing X at the end of `seq`.
  void repeat(Seq& seq, size_t start, uint32_t min, uint32_t max, const std::string& name) {
    Seq x(seq.begin() + static_cast<std::ptrdiff_t>(start), seq.end());
    seq.resize(start);
    count(x.size() * min);
    for (uint32_t i = 0; i < min; ++i) seq.insert(seq.end(), x.begin(), x.end());
    if (max == UINT32_MAX) {
      uint32_t star = helper(name + "-star", {});
      Seq body = x;
      body.push_back({true, star});
      count(body.size());
      rules_[star] = {std::move(body), Seq{}};
      seq.push_back({true, star});
    } else if (max > min) {
      // X? nested (max - min) times: opt_k ::= X opt_{k-1} | ε.
      uint32_t inner = helper(name + "-opt", {x, Seq{}});
      for (uint32_t i = min + 1; i < max; ++i) {
        Seq body = x;
        body.push_back({true, inner});
        inner = helper(name + "-opt", {std::move(body), Seq{}});
      }
      seq.push_back({true, inner});
    }
  }

  Seq parse_sequence(const std::string& name, uint32_t depth) {
    Seq seq;
    size_t last = SIZE_MAX;  // where the last element's symbols start (for postfix operators)
    for (;;) {
      skip_space();
      deadline_.check();
      if (eof()) break;
      char c = peek();
      size_t at = pos_;
      if (c == '|' || c == ')') break;
      if (name_char(c)) {
        std::string ref = parse_name();
        size_t after = pos_;
        skip_space();
        if (src_.compare(pos_, 3, "::=") == 0) {  // the next rule starts here
          pos_ = at;
          break;
        }
        pos_ = after;
        last = seq.size();
        seq.push_back({true, rule(ref)});
      } else if (c == '"') {
        ++pos_;
        last = seq.size();
        std::string bytes;
        while (peek() != '"') {
          if (eof()) fail_at(at, "unterminated string literal");
          append_utf8(bytes, parse_char('"'));
        }
        ++pos_;
        for (unsigned char b : bytes) seq.push_back(byte_sym(b));
        if (bytes.empty()) last = SIZE_MAX;
      } else if (c == '[') {
        ++pos_;
        bool negated = peek() == '^';
        if (negated) ++pos_;
        std::vector<CpRange> ranges;
        while (peek() != ']') {
          if (eof()) fail_at(at, "unterminated character class");
          size_t cat = pos_;
          uint32_t lo = parse_char(']');
          uint32_t hi = lo;
          if (peek() == '-' && pos_ + 1 < src_.size() && src_[pos_ + 1] != ']') {
            ++pos_;
            hi = parse_char(']');
            if (hi < lo) fail_at(cat, "reversed range in a character class");
          }
          ranges.push_back({lo, hi});
        }
        ++pos_;
        if (negated) {
          std::sort(ranges.begin(), ranges.end(), [](CpRange a, CpRange b) { return a.lo < b.lo; });
          std::vector<CpRange> inv;
          uint32_t next = 0;
          for (CpRange r : ranges) {
            if (r.lo > next) inv.push_back({next, r.lo - 1});
            next = std::max(next, r.hi + 1);
          }
          if (next <= 0x10FFFF) inv.push_back({next, 0x10FFFF});
          ranges = std::move(inv);
        }
        if (ranges.empty()) fail_at(at, "empty character class (it matches nothing)");
        last = seq.size();
        Seq s = class_syms(std::move(ranges), name);
        seq.insert(seq.end(), s.begin(), s.end());
      } else if (c == '.') {
        ++pos_;
        last = seq.size();
        Seq s = class_syms({{0, 0x10FFFF}}, name);
        seq.insert(seq.end(), s.begin(), s.end());
      } else if (c == '(') {
        ++pos_;
        std::vector<Seq> alts = parse_alternates(name, depth + 1);
        skip_space();
        if (peek() != ')') fail_at(at, "unbalanced '(': no matching ')'");
        ++pos_;
        last = seq.size();
        seq.push_back({true, helper(name + "-group", std::move(alts))});
      } else if (c == '*' || c == '+' || c == '?' || c == '{') {
        if (last == SIZE_MAX) fail_at(at, std::string("'") + c + "' with nothing to repeat before it");
        ++pos_;
        uint32_t min = 0, max = UINT32_MAX;
        if (c == '+') min = 1;
        if (c == '?') max = 1;
        if (c == '{') {
          skip_space();
          min = parse_count();
          skip_space();
          max = min;
          if (peek() == ',') {
            ++pos_;
            skip_space();
            max = peek() == '}' ? UINT32_MAX : parse_count();
            skip_space();
          }
          if (peek() != '}') fail_at(at, "unterminated {m,n} repetition");
          ++pos_;
          if (max < min) fail_at(at, "repetition {m,n} with n < m");
        }
        repeat(seq, last, min, max, name);
        last = SIZE_MAX;
      } else if (c == '<') {
        fail_at(at, "token references (<...>) are not supported");
      } else if (c == ']' || c == '}') {
        fail_at(at, std::string("unbalanced '") + c + "'");
      } else {
        fail_at(at, "unexpected " + quote_char(c));
      }
    }
    count(seq.size());
    return seq;
  }

  std::shared_ptr<const Grammar> finish() {
    for (size_t r = 0; r < rules_.size(); ++r)
      if (!defined_[r]) fail_at(first_use_[r], "undefined rule '" + names_[r] + "'");
    auto root_it = by_name_.find("root");
    if (root_it == by_name_.end()) throw GrammarError("root", "the grammar has no 'root' rule");

    auto g = std::make_unique<Grammar::Impl>();
    g->limits = limits_;
    g->root = root_it->second;
    g->names = names_;
    g->sets = sets_;
    const size_t n_rules = rules_.size();
    g->alts.resize(n_rules);
    for (size_t r = 0; r < n_rules; ++r) {
      for (const Seq& s : rules_[r]) {
        g->alts[r].push_back(static_cast<uint32_t>(g->elems.size()));
        for (Sym y : s) g->elems.push_back({y.ref ? Op::Ref : Op::Bytes, y.v});
        g->elems.push_back({Op::End, 0});
      }
    }
    compute_min_lengths(*g);
    check_productive(*g);
    check_left_recursion(*g);
    return std::make_shared<const Grammar>(std::move(g));
  }

  // Fewest bytes each rule matches (Knuth's generalisation of Dijkstra to grammars): an alternative's
  // length is known once every rule it calls is known; a rule takes its shortest known alternative.
  void compute_min_lengths(Grammar::Impl& g) {
    const size_t n_rules = g.alts.size();
    struct AltInfo {
      uint32_t rule, start, base = 0, pending = 0, sum = 0;
    };
    std::vector<AltInfo> alts;
    std::vector<std::vector<uint32_t>> callers(n_rules);  // rule -> alt indices (once per call)
    for (uint32_t r = 0; r < n_rules; ++r)
      for (uint32_t start : g.alts[r]) {
        AltInfo a{r, start};
        uint32_t ai = static_cast<uint32_t>(alts.size());
        for (uint32_t p = start; g.elems[p].op != Op::End; ++p) {
          if (g.elems[p].op == Op::Bytes) ++a.base;
          else ++a.pending, callers[g.elems[p].arg].push_back(ai);
        }
        alts.push_back(a);
      }
    g.rule_min.assign(n_rules, kInfiniteLength);
    g.rule_min_alt.assign(n_rules, 0);
    std::vector<bool> done(n_rules, false);
    using Item = std::pair<uint32_t, uint32_t>;  // (length, alt index)
    std::priority_queue<Item, std::vector<Item>, std::greater<>> queue;
    for (uint32_t ai = 0; ai < alts.size(); ++ai)
      if (alts[ai].pending == 0) queue.push({alts[ai].base, ai});
    while (!queue.empty()) {
      auto [len, ai] = queue.top();
      queue.pop();
      uint32_t r = alts[ai].rule;
      if (done[r]) continue;
      done[r] = true;
      g.rule_min[r] = len;
      g.rule_min_alt[r] = alts[ai].start;
      for (uint32_t c : callers[r]) {
        alts[c].sum = sat_add(alts[c].sum, len);
        if (--alts[c].pending == 0) queue.push({sat_add(alts[c].base, alts[c].sum), c});
      }
      deadline_.check();
    }
    g.min_rest.assign(g.elems.size(), 0);
    for (size_t p = g.elems.size(); p-- > 0;) {
      const Element& e = g.elems[p];
      if (e.op == Op::End) g.min_rest[p] = 0;
      else g.min_rest[p] = sat_add(e.op == Op::Bytes ? 1 : g.rule_min[e.arg], g.min_rest[p + 1]);
    }
  }

  std::vector<uint32_t> reachable(const Grammar::Impl& g) {
    std::vector<bool> seen(g.alts.size(), false);
    std::vector<uint32_t> order{g.root}, work{g.root};
    seen[g.root] = true;
    while (!work.empty()) {
      uint32_t r = work.back();
      work.pop_back();
      for (uint32_t start : g.alts[r])
        for (uint32_t p = start; g.elems[p].op != Op::End; ++p)
          if (g.elems[p].op == Op::Ref && !seen[g.elems[p].arg]) {
            seen[g.elems[p].arg] = true;
            order.push_back(g.elems[p].arg);
            work.push_back(g.elems[p].arg);
          }
    }
    return order;
  }

  void check_productive(const Grammar::Impl& g) {
    for (uint32_t r : reachable(g))
      if (g.rule_min[r] >= kInfiniteLength)
        throw GrammarError(g.names[r], "rule '" + g.names[r] + "' can never finish: every alternative calls a rule that never finishes (or needs more than 2^30 bytes)");
  }

  // A rule that can call itself before matching any byte would make the matcher expand forever.
  void check_left_recursion(const Grammar::Impl& g) {
    const size_t n = g.alts.size();
    std::vector<std::vector<uint32_t>> left(n);  // rules callable at the start of each rule
    for (uint32_t r = 0; r < n; ++r)
      for (uint32_t start : g.alts[r])
        for (uint32_t p = start; g.elems[p].op == Op::Ref; ++p) {
          left[r].push_back(g.elems[p].arg);
          if (g.rule_min[g.elems[p].arg] != 0) break;  // only through rules that can match nothing
        }
    std::vector<uint8_t> color(n, 0);  // 0 new, 1 on the path, 2 done
    std::vector<std::pair<uint32_t, size_t>> path;
    for (uint32_t s = 0; s < n; ++s) {
      if (color[s]) continue;
      path.push_back({s, 0});
      color[s] = 1;
      while (!path.empty()) {
        auto& [r, i] = path.back();
        if (i == left[r].size()) {
          color[r] = 2;
          path.pop_back();
          continue;
        }
        uint32_t t = left[r][i++];
        if (color[t] == 1) {
          std::string cycle;
          bool on = false;
          for (auto& [q, unused] : path) {
            if (q == t) on = true;
            if (on) cycle += g.names[q] + " -> ";
          }
          cycle += g.names[t];
          throw GrammarError(g.names[t], "left recursion: " + cycle + " (rewrite it right-recursively, e.g. x ::= y (\",\" y)*)");
        }
        if (color[t] == 0) {
          color[t] = 1;
          path.push_back({t, 0});
        }
        deadline_.check();
      }
    }
  }
};

}  // namespace

std::shared_ptr<const Grammar> compile_gbnf(std::string_view text, const Limits& limits) {
  return Compiler(text, limits).run();
}

std::string gbnf_literal(std::string_view text) {
  std::string out = "\"";
  for (unsigned char c : text) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20 || c == 0x7F) {
          char buf[8];
          snprintf(buf, sizeof buf, "\\x%02X", c);
          out += buf;
        } else {
          out += static_cast<char>(c);  // UTF-8 passes through; the parser decodes it
        }
    }
  }
  return out + "\"";
}

std::string choice_to_gbnf(const std::vector<std::string>& choices, std::string_view name) {
  if (choices.empty()) throw GrammarError("guided_choice", "the list of choices is empty");
  std::string out = std::string(name) + " ::= ";
  for (size_t i = 0; i < choices.size(); ++i) {
    if (i) out += " | ";
    out += choices[i].empty() ? "\"\"" : gbnf_literal(choices[i]);
  }
  return out + "\n";
}

}  // namespace moe::grammar
