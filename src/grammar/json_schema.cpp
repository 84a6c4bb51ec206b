// json_schema.cpp: JSON Schema -> GBNF rules (json_schema_to_gbnf), and the json_object grammar.
//
// What a schema compiles to (every value is written compactly but may have up to 8 whitespace characters
// between tokens):
//   type (one or a list), nullable (OpenAPI), enum, const; properties / required / additionalProperties
//   (properties are written in their declared order, required ones always, optional ones maybe;
//   additionalProperties false or absent: no other keys; true or a schema: further keys of plain
//   characters that are none of the declared names); items / prefixItems with minItems / maxItems;
//   anyOf, oneOf (as anyOf: exact when the alternatives are disjoint, as they are in typical
//   schemas), allOf of one schema; $ref to "#", "#/$defs/..." or "#/definitions/..." (recursion allowed);
//   string minLength / maxLength, pattern (regex.cpp's subset), format date / time / date-time / uuid;
//   integer minimum / maximum / exclusiveMinimum / exclusiveMaximum (exact digit-range grammars);
//   number bounds when they are integers with minimum >= 0.
// Annotations are ignored (title, description, default, examples, $schema, $id, $comment, deprecated,
// readOnly, writeOnly, and x-* extensions). Any other keyword changes what is valid in a way this
// compiler does not express (not, if/then/else, uniqueItems, multipleOf, patternProperties, ...) and is
// refused with a GrammarError naming it, so a client never believes a constraint is enforced when it is not.
#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "grammar/grammar_impl.h"
#include "grammar/regex_internal.h"

namespace moe::grammar {

using json = nlohmann::ordered_json;

// The JSON primitives every schema grammar uses, as rules prefixed with `p` + "-".
static std::string json_primitives(const std::string& p) {
  std::string s;
  s += p + "-ws ::= [ \\t\\n]? [ \\t\\n]? [ \\t\\n]? [ \\t\\n]? [ \\t\\n]? [ \\t\\n]? [ \\t\\n]? [ \\t\\n]?\n";
  s += p + "-char ::= [^\"\\\\\\x00-\\x1F] | \"\\\\\" ([\"\\\\/bfnrt] | \"u\" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])\n";
  s += p + "-string ::= \"\\\"\" " + p + "-char* \"\\\"\"\n";
  s += p + "-int ::= \"-\"? (\"0\" | [1-9] [0-9]*)\n";
  s += p + "-number ::= " + p + "-int (\".\" [0-9]+)? ([eE] [-+]? [0-9] [0-9]?)?\n";
  s += p + "-boolean ::= \"true\" | \"false\"\n";
  s += p + "-null ::= \"null\"\n";
  s += p + "-value ::= " + p + "-object | " + p + "-array | " + p + "-string | " + p + "-number | " + p + "-boolean | " + p + "-null\n";
  s += p + "-object ::= \"{\" " + p + "-ws (" + p + "-string " + p + "-ws \":\" " + p + "-ws " + p + "-value " + p + "-ws (\",\" " + p +
       "-ws " + p + "-string " + p + "-ws \":\" " + p + "-ws " + p + "-value " + p + "-ws)*)? \"}\"\n";
  s += p + "-array ::= \"[\" " + p + "-ws (" + p + "-value " + p + "-ws (\",\" " + p + "-ws " + p + "-value " + p + "-ws)*)? \"]\"\n";
  return s;
}

std::string json_object_gbnf(std::string_view name) {
  std::string n(name);
  return n + " ::= " + n + "-ws " + n + "-object\n" + json_primitives(n);
}

namespace {

const std::set<std::string> kAnnotations = {"title", "description", "default", "examples", "$schema", "$id", "$comment",
                                            "deprecated", "readOnly", "writeOnly", "$defs", "definitions", "strict"};

// Decimal digit-range grammars: the alternatives matching exactly the integers in [lo, hi], lo >= 0.
void digit_ranges(const std::string& prefix, const std::string& lo, const std::string& hi, std::vector<std::string>& out) {
  if (lo.empty()) {
    out.push_back(prefix.empty() ? "\"\"" : prefix);
    return;
  }
  auto join = [](const std::string& a, const std::string& b) { return a.empty() ? b : a + " " + b; };
  if (lo[0] == hi[0]) {
    digit_ranges(join(prefix, std::string("\"") + lo[0] + "\""), lo.substr(1), hi.substr(1), out);
    return;
  }
  const size_t rest = lo.size() - 1;
  auto any = [&](size_t n) { return n == 0 ? std::string() : "[0-9]{" + std::to_string(n) + "}"; };
  char first = lo[0], last = hi[0];
  if (lo.substr(1) != std::string(rest, '0')) {
    digit_ranges(join(prefix, std::string("\"") + lo[0] + "\""), lo.substr(1), std::string(rest, '9'), out);
    ++first;
  }
  bool hi_full = hi.substr(1) == std::string(rest, '9');
  if (!hi_full) --last;
  if (first <= last) {
    std::string cls = std::string("[") + first + "-" + last + "]";
    out.push_back(join(join(prefix, cls), any(rest)));
  }
  if (!hi_full) digit_ranges(join(prefix, std::string("\"") + hi[0] + "\""), std::string(rest, '0'), hi.substr(1), out);
}

// Integers in [lo, hi] for 0 <= lo <= hi.
std::vector<std::string> nonneg_range(uint64_t lo, uint64_t hi) {
  std::vector<std::string> out;
  std::string a = std::to_string(lo), b = std::to_string(hi);
  while (a.size() < b.size()) {
    std::string top(a.size(), '9');
    digit_ranges("", a, top, out);
    a = "1" + std::string(a.size(), '0');
  }
  digit_ranges("", a, b, out);
  return out;
}

// Integers >= lo (lo >= 0): the range up to the last number of lo's length, then every longer number.
std::vector<std::string> nonneg_at_least(uint64_t lo) {
  std::string a = std::to_string(lo);
  std::vector<std::string> out = nonneg_range(lo, std::stoull(std::string(a.size(), '9')));
  out.push_back("[1-9] [0-9]{" + std::to_string(a.size()) + ",}");
  return out;
}

std::string alt(const std::vector<std::string>& parts) {
  std::string s;
  for (size_t i = 0; i < parts.size(); ++i) s += (i ? " | " : "") + parts[i];
  return parts.size() == 1 ? s : "(" + s + ")";
}

class SchemaCompiler {
 public:
  SchemaCompiler(const json& root, std::string_view name, const Limits& limits)
      : root_(root), name_(name), limits_(limits), deadline_(limits.max_compile_seconds) {}

  std::string run() {
    std::string entry = visit(root_, 0, "#");
    rules_ = name_ + " ::= " + entry + "\n" + rules_ + json_primitives(name_);
    return rules_;
  }

 private:
  const json& root_;
  std::string name_;
  const Limits& limits_;
  Deadline deadline_;
  std::string rules_;
  size_t n_rules_ = 0;
  std::map<std::string, std::string> refs_;  // JSON pointer -> rule name

  std::string prim(const char* what) const { return name_ + "-" + what; }
  std::string ws() const { return prim("ws"); }

  [[noreturn]] void fail(const std::string& keyword, const std::string& what, const std::string& where) {
    throw GrammarError(keyword, "JSON schema at " + where + ": " + what);
  }

  std::string new_rule(const std::string& body) {
    if (++n_rules_ > limits_.max_rules) throw GrammarError("max_rules", "the JSON schema needs more than " + std::to_string(limits_.max_rules) + " rules");
    deadline_.check();
    std::string r = name_ + "-" + std::to_string(n_rules_);
    rules_ += r + " ::= " + body + "\n";
    if (rules_.size() > limits_.max_input_bytes * 4) throw GrammarError("max_input_bytes", "the JSON schema's grammar is too large");
    return r;
  }

  const json& resolve(const std::string& ref, const std::string& where) {
    if (ref.empty() || ref[0] != '#') fail("$ref", "only local references (\"#...\") are supported, got '" + ref + "'", where);
    try {
      const json& target = ref == "#" ? root_ : root_.at(json::json_pointer(ref.substr(1)));
      return target;
    } catch (const std::exception&) {
      fail("$ref", "the reference '" + ref + "' does not resolve", where);
    }
  }

  std::string visit(const json& s, uint32_t depth, const std::string& where) {
    if (depth > limits_.max_nesting)
      throw GrammarError("max_nesting", "the JSON schema nests deeper than " + std::to_string(limits_.max_nesting) + " levels");
    deadline_.check();
    if (s.is_boolean()) {
      if (s.get<bool>()) return prim("value");
      fail("false", "the schema 'false' matches nothing", where);
    }
    if (!s.is_object()) fail("", "a schema must be an object or a boolean", where);
    for (auto it = s.begin(); it != s.end(); ++it) {
      const std::string& k = it.key();
      static const std::set<std::string> known = {
          "type", "nullable", "enum", "const", "properties", "required", "additionalProperties", "items", "prefixItems",
          "minItems", "maxItems", "anyOf", "oneOf", "allOf", "$ref", "minLength", "maxLength", "pattern", "format",
          "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"};
      if (known.count(k) || kAnnotations.count(k) || k.rfind("x-", 0) == 0) continue;
      fail(k, "the keyword '" + k + "' is not supported (it would not be enforced)", where);
    }
    if (s.contains("$ref")) {
      if (!s["$ref"].is_string()) fail("$ref", "must be a string", where);
      std::string ref = s["$ref"].get<std::string>();
      auto it = refs_.find(ref);
      if (it != refs_.end()) return it->second;
      // Name the rule before compiling the target, so a recursive reference finds it.
      if (++n_rules_ > limits_.max_rules) throw GrammarError("max_rules", "the JSON schema needs too many rules");
      std::string r = name_ + "-ref" + std::to_string(n_rules_);
      refs_.emplace(ref, r);
      const json& target = resolve(ref, where);
      std::string body = visit(target, depth + 1, ref);
      rules_ += r + " ::= " + body + "\n";
      return r;
    }
    std::string core = visit_core(s, depth, where);
    if (s.contains("nullable")) {
      if (!s["nullable"].is_boolean()) fail("nullable", "must be a boolean", where);
      if (s["nullable"].get<bool>()) core = "(" + core + " | " + prim("null") + ")";
    }
    return core;
  }

  std::string visit_core(const json& s, uint32_t depth, const std::string& where) {
    if (s.contains("const")) return literal_value(s["const"]);
    if (s.contains("enum")) {
      if (!s["enum"].is_array() || s["enum"].empty()) fail("enum", "must be a non-empty array", where);
      std::vector<std::string> parts;
      for (const auto& v : s["enum"]) parts.push_back(literal_value(v));
      return alt(parts);
    }
    for (const char* k : {"anyOf", "oneOf"}) {
      if (!s.contains(k)) continue;
      if (!s[k].is_array() || s[k].empty()) fail(k, "must be a non-empty array", where);
      json base = s;
      base.erase(k);
      std::vector<std::string> parts;
      size_t i = 0;
      for (const auto& sub : s[k]) {
        json merged = sub;
        // Sibling keywords apply to every alternative (e.g. a shared "type").
        if (merged.is_object())
          for (auto it = base.begin(); it != base.end(); ++it)
            if (!merged.contains(it.key()) && !kAnnotations.count(it.key())) merged[it.key()] = it.value();
        parts.push_back(visit(merged, depth + 1, where + "/" + k + "/" + std::to_string(i++)));
      }
      return new_rule(alt(parts));
    }
    if (s.contains("allOf")) {
      if (!s["allOf"].is_array() || s["allOf"].size() != 1)
        fail("allOf", "only allOf with exactly one schema is supported", where);
      return visit(s["allOf"][0], depth + 1, where + "/allOf/0");
    }
    std::vector<std::string> types;
    if (s.contains("type")) {
      if (s["type"].is_string()) types.push_back(s["type"].get<std::string>());
      else if (s["type"].is_array()) {
        for (const auto& t : s["type"]) {
          if (!t.is_string()) fail("type", "must be a string or an array of strings", where);
          types.push_back(t.get<std::string>());
        }
      } else fail("type", "must be a string or an array of strings", where);
      if (types.empty()) fail("type", "the list of types is empty", where);
    } else if (s.contains("properties") || s.contains("additionalProperties") || s.contains("required")) {
      types.push_back("object");
    } else if (s.contains("items") || s.contains("prefixItems") || s.contains("minItems") || s.contains("maxItems")) {
      types.push_back("array");
    } else if (s.contains("pattern") || s.contains("minLength") || s.contains("maxLength") || s.contains("format")) {
      types.push_back("string");
    } else if (s.contains("minimum") || s.contains("maximum") || s.contains("exclusiveMinimum") || s.contains("exclusiveMaximum")) {
      types.push_back("number");
    } else {
      return prim("value");
    }
    std::vector<std::string> parts;
    for (const std::string& t : types) parts.push_back(visit_type(s, t, depth, where));
    return parts.size() == 1 ? parts[0] : new_rule(alt(parts));
  }

  std::string literal_value(const json& v) { return gbnf_literal(v.dump()); }

  uint32_t count_of(const json& s, const char* k, uint32_t dflt, const std::string& where) {
    if (!s.contains(k)) return dflt;
    const json& v = s[k];
    if (!v.is_number_integer() && !(v.is_number_float() && std::floor(v.get<double>()) == v.get<double>()))
      fail(k, "must be a non-negative integer", where);
    double d = v.get<double>();
    if (d < 0) fail(k, "must be a non-negative integer", where);
    if (d > limits_.max_repetition) fail(k, "is above the supported limit of " + std::to_string(limits_.max_repetition), where);
    return static_cast<uint32_t>(d);
  }

  std::string visit_type(const json& s, const std::string& t, uint32_t depth, const std::string& where) {
    if (t == "null") return prim("null");
    if (t == "boolean") return prim("boolean");
    if (t == "string") return string_rule(s, where);
    if (t == "integer") return integer_rule(s, where);
    if (t == "number") return number_rule(s, where);
    if (t == "array") return array_rule(s, depth, where);
    if (t == "object") return object_rule(s, depth, where);
    fail("type", "unknown type '" + t + "'", where);
  }

  std::string string_rule(const json& s, const std::string& where) {
    const bool has_len = s.contains("minLength") || s.contains("maxLength");
    if (s.contains("pattern")) {
      if (has_len) fail("pattern", "pattern together with minLength/maxLength is not supported", where);
      if (s.contains("format")) fail("pattern", "pattern together with format is not supported", where);
      if (!s["pattern"].is_string()) fail("pattern", "must be a string", where);
      std::string expr;
      try {
        expr = regex_expression(s["pattern"].get<std::string>(), true, limits_);
      } catch (const GrammarError& e) {
        fail("pattern", e.what(), where);
      }
      return new_rule("\"\\\"\" " + expr + " \"\\\"\"");
    }
    if (s.contains("format")) {
      if (has_len) fail("format", "format together with minLength/maxLength is not supported", where);
      if (!s["format"].is_string()) fail("format", "must be a string", where);
      std::string f = s["format"].get<std::string>();
      const std::string date = "[0-9]{4} \"-\" (\"0\" [1-9] | \"1\" [0-2]) \"-\" (\"0\" [1-9] | [12] [0-9] | \"3\" [01])";
      const std::string time = "([01] [0-9] | \"2\" [0-3]) \":\" [0-5] [0-9] \":\" [0-5] [0-9] (\".\" [0-9]{1,9})? (\"Z\" | [+-] ([01] [0-9] | \"2\" [0-3]) \":\" [0-5] [0-9])";
      std::string body;
      if (f == "date") body = date;
      else if (f == "time") body = time;
      else if (f == "date-time") body = date + " \"T\" " + time;
      else if (f == "uuid") body = "[0-9a-fA-F]{8} \"-\" [0-9a-fA-F]{4} \"-\" [0-9a-fA-F]{4} \"-\" [0-9a-fA-F]{4} \"-\" [0-9a-fA-F]{12}";
      else fail("format", "the format '" + f + "' is not supported (date, time, date-time and uuid are)", where);
      return new_rule("\"\\\"\" " + body + " \"\\\"\"");
    }
    if (!has_len) return prim("string");
    uint32_t lo = count_of(s, "minLength", 0, where);
    uint32_t hi = count_of(s, "maxLength", UINT32_MAX, where);
    if (hi < lo) fail("maxLength", "is less than minLength", where);
    std::string rep = "{" + std::to_string(lo) + "," + (hi == UINT32_MAX ? "" : std::to_string(hi)) + "}";
    return new_rule("\"\\\"\" " + prim("char") + rep + " \"\\\"\"");
  }

  // A bound as an integer for `integer`: minimum/exclusiveMinimum rounded inwards. false: absent.
  bool int_bound(const json& s, bool lower, int64_t& out, const std::string& where) {
    bool have = false;
    const char* inc = lower ? "minimum" : "maximum";
    const char* exc = lower ? "exclusiveMinimum" : "exclusiveMaximum";
    for (const char* k : {inc, exc}) {
      if (!s.contains(k)) continue;
      if (!s[k].is_number()) fail(k, "must be a number", where);
      double d = s[k].get<double>();
      if (!(std::fabs(d) < 9e15)) fail(k, "is out of the supported range", where);
      double v = lower ? std::ceil(d) : std::floor(d);
      if (k == exc && v == d) v += lower ? 1 : -1;
      int64_t iv = static_cast<int64_t>(v);
      out = have ? (lower ? std::max(out, iv) : std::min(out, iv)) : iv;
      have = true;
    }
    return have;
  }

  std::string integer_rule(const json& s, const std::string& where) {
    int64_t lo = 0, hi = 0;
    bool has_lo = int_bound(s, true, lo, where), has_hi = int_bound(s, false, hi, where);
    if (!has_lo && !has_hi) return prim("int");
    if (has_lo && has_hi && hi < lo) fail("maximum", "the range is empty (maximum below minimum)", where);
    std::vector<std::string> parts;
    auto neg = [&](const std::vector<std::string>& v) {
      for (const auto& x : v) parts.push_back("\"-\" " + (v.size() > 1 ? "(" + x + ")" : x));
    };
    if (has_lo && has_hi) {
      if (lo < 0) neg(nonneg_range(static_cast<uint64_t>(std::max<int64_t>(1, -hi)), static_cast<uint64_t>(-lo)));
      if (hi >= 0) for (auto& x : nonneg_range(static_cast<uint64_t>(std::max<int64_t>(0, lo)), static_cast<uint64_t>(hi))) parts.push_back(x);
    } else if (has_lo) {
      if (lo < 0) neg(nonneg_range(1, static_cast<uint64_t>(-lo)));
      for (auto& x : nonneg_at_least(static_cast<uint64_t>(std::max<int64_t>(0, lo)))) parts.push_back(x);
    } else {
      if (hi >= 0) {
        parts.push_back("\"-\" [1-9] [0-9]*");
        for (auto& x : nonneg_range(0, static_cast<uint64_t>(hi))) parts.push_back(x);
      } else {
        neg(nonneg_at_least(static_cast<uint64_t>(-hi)));
      }
    }
    std::vector<std::string> wrapped;
    for (auto& p : parts) wrapped.push_back("(" + p + ")");
    return new_rule(alt(wrapped));
  }

  std::string number_rule(const json& s, const std::string& where) {
    const bool bounded = s.contains("minimum") || s.contains("maximum") || s.contains("exclusiveMinimum") || s.contains("exclusiveMaximum");
    if (!bounded) return prim("number");
    // Exactly expressible here: integer bounds with a minimum >= 0 (inclusive), maximum inclusive.
    for (const char* k : {"exclusiveMinimum", "exclusiveMaximum"})
      if (s.contains(k)) fail(k, "exclusive bounds on 'number' are not supported (use type integer, or inclusive bounds)", where);
    auto integral = [&](const char* k) {
      if (!s.contains(k)) return true;
      if (!s[k].is_number()) fail(k, "must be a number", where);
      double d = s[k].get<double>();
      return std::floor(d) == d && std::fabs(d) < 9e15;
    };
    if (!integral("minimum") || !integral("maximum") || !s.contains("minimum") || s["minimum"].get<double>() < 0)
      fail(s.contains("minimum") ? "minimum" : "maximum",
           "bounds on 'number' are supported only as integers with a minimum >= 0", where);
    auto lo = static_cast<uint64_t>(s["minimum"].get<double>());
    const std::string frac = "(\".\" [0-9]+)?";
    if (!s.contains("maximum")) return new_rule(alt(nonneg_at_least(lo)) + " " + frac);
    double hd = s["maximum"].get<double>();
    if (hd < static_cast<double>(lo)) fail("maximum", "the range is empty (maximum below minimum)", where);
    auto hi = static_cast<uint64_t>(hd);
    std::string top = "\"" + std::to_string(hi) + "\" (\".\" \"0\"+)?";
    if (hi == lo) return new_rule(top);
    return new_rule("(" + alt(nonneg_range(lo, hi - 1)) + " " + frac + ") | " + top);
  }

  std::string array_rule(const json& s, uint32_t depth, const std::string& where) {
    uint32_t lo = count_of(s, "minItems", 0, where);
    uint32_t hi = count_of(s, "maxItems", UINT32_MAX, where);
    if (hi < lo) fail("maxItems", "is less than minItems", where);
    std::vector<std::string> prefix;
    if (s.contains("prefixItems")) {
      if (!s["prefixItems"].is_array()) fail("prefixItems", "must be an array", where);
      size_t i = 0;
      for (const auto& sub : s["prefixItems"]) prefix.push_back(visit(sub, depth + 1, where + "/prefixItems/" + std::to_string(i++)));
    }
    std::string item;  // empty: no items beyond the prefix
    if (s.contains("items")) {
      if (s["items"].is_array()) fail("items", "an array for 'items' (old tuple form) is not supported; use prefixItems", where);
      if (!(s["items"].is_boolean() && !s["items"].get<bool>())) item = visit(s["items"], depth + 1, where + "/items");
    } else {
      item = prim("value");
    }
    const std::string sep = ws() + " \",\" " + ws() + " ";
    // Elements: the prefix items in order (each required up to minItems), then repeated items; the first
    // element has no separator before it.
    std::string body;
    const uint32_t n_prefix = static_cast<uint32_t>(prefix.size());
    if (hi != UINT32_MAX && hi < n_prefix) fail("maxItems", "is less than the number of prefixItems", where);
    if (item.empty() && lo > n_prefix) fail("minItems", "is more than the prefixItems allow", where);
    // The first element has no separator: strip the leading one by building it separately.
    std::string first;
    if (n_prefix > 0) {
      std::string rest = tail_after(prefix, 1, item, lo, hi, sep);
      first = prefix[0] + (rest.empty() ? "" : " " + rest);
      body = lo >= 1 ? first : "(" + first + ")?";
    } else if (!item.empty() && hi > 0) {
      uint32_t min_more = lo > 0 ? lo - 1 : 0;
      uint32_t max_more = hi == UINT32_MAX ? UINT32_MAX : hi - 1;
      std::string more = max_more == 0 ? "" : " (" + sep + item + "){" + std::to_string(min_more) + "," + (max_more == UINT32_MAX ? "" : std::to_string(max_more)) + "}";
      first = item + more;
      body = lo >= 1 ? first : "(" + first + ")?";
    }
    return new_rule("\"[\" " + ws() + " " + (body.empty() ? "" : body + " " + ws() + " ") + "\"]\"");
  }

  // The elements from prefix index `from` on, each preceded by `sep`.
  std::string tail_after(const std::vector<std::string>& prefix, uint32_t from, const std::string& item, uint32_t lo, uint32_t hi,
                         const std::string& sep) {
    const uint32_t n_prefix = static_cast<uint32_t>(prefix.size());
    std::string tail;
    if (!item.empty()) {
      uint32_t min_more = lo > n_prefix ? lo - n_prefix : 0;
      uint32_t max_more = hi == UINT32_MAX ? UINT32_MAX : hi - n_prefix;
      if (max_more > 0)
        tail = "(" + sep + item + "){" + std::to_string(min_more) + "," + (max_more == UINT32_MAX ? "" : std::to_string(max_more)) + "}";
    }
    for (uint32_t i = n_prefix; i-- > from;) {
      std::string here = sep + prefix[i] + (tail.empty() ? "" : " " + tail);
      tail = i + 1 <= lo ? "(" + here + ")" : "(" + here + ")?";
    }
    return tail;
  }

  // Keys that are none of `names`: plain characters (no escapes), steered off every declared name by a
  // trie of them.
  std::string other_key(const std::vector<std::string>& names) {
    struct TrieNode {
      std::map<unsigned char, size_t> next;
      bool end = false;
    };
    std::vector<TrieNode> t(1);
    for (const std::string& n : names) {
      size_t k = 0;
      for (unsigned char c : n) {
        auto it = t[k].next.find(c);
        if (it == t[k].next.end()) {
          t.push_back({});
          it = t[k].next.emplace(c, t.size() - 1).first;
        }
        k = it->second;
      }
      t[k].end = true;
    }
    const std::string plain = "[^\"\\\\\\x00-\\x1F]";
    const std::string free = new_rule(plain + "*");
    std::vector<std::string> rule_of(t.size());
    for (size_t k = t.size(); k-- > 0;) rule_of[k] = name_ + "-key" + std::to_string(++n_rules_);
    for (size_t k = 0; k < t.size(); ++k) {
      std::vector<std::string> alts;
      if (!t[k].end) alts.push_back("\"\\\"\"");  // this prefix is not a declared name: it may end here
      std::string excluded;
      for (auto [c, child] : t[k].next) {
        char buf[8];
        snprintf(buf, sizeof buf, "\\x%02X", c);
        alts.push_back(std::string("[") + buf + "] " + rule_of[child]);
        excluded += buf;
      }
      // A byte off the trie: the rest is free. Multi-byte characters are steered byte by byte, so a
      // differing lead byte leaves the trie and the rest of its character comes through `free`.
      alts.push_back("[^\"\\\\\\x00-\\x1F" + excluded + "] " + free + " \"\\\"\"");
      rules_ += rule_of[k] + " ::= " + alt(alts) + "\n";
    }
    return "\"\\\"\" " + rule_of[0];
  }

  std::string object_rule(const json& s, uint32_t depth, const std::string& where) {
    std::vector<std::string> names, values;
    std::set<std::string> required;
    if (s.contains("required")) {
      if (!s["required"].is_array()) fail("required", "must be an array of strings", where);
      for (const auto& r : s["required"]) {
        if (!r.is_string()) fail("required", "must be an array of strings", where);
        required.insert(r.get<std::string>());
      }
    }
    if (s.contains("properties")) {
      if (!s["properties"].is_object()) fail("properties", "must be an object", where);
      for (auto it = s["properties"].begin(); it != s["properties"].end(); ++it) {
        names.push_back(it.key());
        values.push_back(visit(it.value(), depth + 1, where + "/properties/" + it.key()));
      }
    }
    for (const auto& r : required)
      if (std::find(names.begin(), names.end(), r) == names.end())
        fail("required", "the required property '" + r + "' is not in 'properties'", where);
    std::string extra_value;
    if (s.contains("additionalProperties")) {
      const json& a = s["additionalProperties"];
      if (!(a.is_boolean() && !a.get<bool>())) extra_value = visit(a, depth + 1, where + "/additionalProperties");
    }
    const std::string sep = "\",\" " + ws() + " ";
    // S(i, c): properties i.. (c: something was written, so a comma comes first), then extra keys.
    std::string extras_0, extras_1;
    if (!extra_value.empty()) {
      std::string key = other_key(names);
      std::string kv = new_rule(key + " " + ws() + " \":\" " + ws() + " " + extra_value + " " + ws());
      extras_1 = "(" + sep + kv + ")*";
      extras_0 = "(" + kv + " (" + sep + kv + ")*)?";
    }
    std::string next0 = extras_0.empty() ? "\"\"" : new_rule(extras_0);
    std::string next1 = extras_1.empty() ? "\"\"" : new_rule(extras_1);
    for (size_t i = names.size(); i-- > 0;) {
      std::string kv = gbnf_literal(json(names[i]).dump()) + " " + ws() + " \":\" " + ws() + " " + values[i] + " " + ws();
      bool req = required.count(names[i]) > 0;
      std::string with0 = kv + " " + next1;
      std::string with1 = sep + kv + " " + next1;
      std::string s0 = req ? with0 : "(" + with0 + ") | " + next0;
      std::string s1 = req ? with1 : "(" + with1 + ") | " + next1;
      next0 = new_rule(s0);
      next1 = new_rule(s1);
    }
    return new_rule("\"{\" " + ws() + " " + next0 + " \"}\"");
  }
};

}  // namespace

// Depth and size first, without recursion, so that later recursive steps (dump, visit) are bounded.
static void check_shape(const json& schema, const Limits& limits) {
  std::vector<std::pair<const json*, uint32_t>> todo{{&schema, 0}};
  size_t bytes = 0;
  while (!todo.empty()) {
    auto [j, depth] = todo.back();
    todo.pop_back();
    if (depth > limits.max_nesting * 4)
      throw GrammarError("max_nesting", "the JSON schema nests deeper than " + std::to_string(limits.max_nesting * 4) + " levels");
    if (j->is_object()) {
      for (auto it = j->begin(); it != j->end(); ++it) {
        bytes += it.key().size() + 4;
        todo.push_back({&it.value(), depth + 1});
      }
    } else if (j->is_array()) {
      for (const auto& v : *j) todo.push_back({&v, depth + 1});
    } else if (j->is_string()) {
      bytes += j->get_ref<const std::string&>().size() + 2;
    } else {
      bytes += 8;
    }
    if (bytes > limits.max_schema_bytes)
      throw GrammarError("max_schema_bytes", "the JSON schema is larger than the limit of " + std::to_string(limits.max_schema_bytes) + " bytes");
  }
}

std::string json_schema_to_gbnf(const json& schema, std::string_view root_name, const Limits& limits) {
  check_shape(schema, limits);
  return SchemaCompiler(schema, root_name, limits).run();
}

}  // namespace moe::grammar
