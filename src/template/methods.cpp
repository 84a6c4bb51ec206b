// methods.cpp: methods of str, dict, list and tuple values as Python defines them (templates call
// `message.content.strip()`, `message.get('tool_calls')`, `s.split('</think>')[-1]`), plus Python's two
// string formatting languages: `fmt % args` and `str.format`. Indices and lengths count code points.
// Mutating list/dict methods exist only to be refused, as Jinja2's immutable sandbox refuses them.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <unordered_map>

#include "template/builtins.h"

namespace moe::tmpl::detail {
namespace {

using Method = Value (*)(Interpreter&, const Value& self, CallArgs& args);

std::u32string u32(const std::string& s) {
  auto v = decode_utf8(s);
  return std::u32string(v.begin(), v.end());
}

const std::string& str_arg(const Value* v, const char* fn) {
  if (!v || v->kind != Kind::String) {
    if (v && v->is_undefined()) fail_undefined(*v);
    throw_error(std::string(fn) + "() argument must be str, not " + (v ? type_name(*v) : "nothing"));
  }
  return v->s;
}

// ---- str ------------------------------------------------------------------------------------------

Value strip_impl(const Value& self, CallArgs& args, bool left, bool right, const char* fn) {
  Params p(fn, args, {"chars"});
  auto cps = decode_utf8(self.s);
  std::u32string chars;
  bool whitespace = !p.has(0) || p.get(0)->is_none();
  if (!whitespace) chars = u32(str_arg(p.get(0), fn));
  auto strip_it = [&](char32_t c) { return whitespace ? py_isspace(c) : chars.find(c) != std::u32string::npos; };
  size_t b = 0, e = cps.size();
  if (left)
    while (b < e && strip_it(cps[b])) ++b;
  if (right)
    while (e > b && strip_it(cps[e - 1])) --e;
  return Value::string(encode_utf8(std::u32string(cps.begin() + static_cast<long>(b), cps.begin() + static_cast<long>(e))));
}
Value m_strip(Interpreter&, const Value& s, CallArgs& a) { return strip_impl(s, a, true, true, "strip"); }
Value m_lstrip(Interpreter&, const Value& s, CallArgs& a) { return strip_impl(s, a, true, false, "lstrip"); }
Value m_rstrip(Interpreter&, const Value& s, CallArgs& a) { return strip_impl(s, a, false, true, "rstrip"); }

Value split_impl(Interpreter& in, const Value& self, CallArgs& args, bool from_right) {
  Params p(from_right ? "rsplit" : "split", args, {"sep", "maxsplit"});
  int64_t maxsplit = p.has(1) ? require_int(*p.get(1), "split") : -1;
  std::vector<Value> out;
  const std::string& s = self.s;
  if (!p.has(0) || p.get(0)->is_none()) {
    // Runs of whitespace separate; leading/trailing whitespace gives no empty parts.
    auto cps = decode_utf8(s);
    std::vector<std::u32string> parts;
    if (!from_right) {
      size_t i = 0;
      while (i < cps.size()) {
        while (i < cps.size() && py_isspace(cps[i])) ++i;
        if (i >= cps.size()) break;
        if (maxsplit >= 0 && static_cast<int64_t>(parts.size()) == maxsplit) {
          parts.emplace_back(cps.begin() + static_cast<long>(i), cps.end());  // the rest, as is
          break;
        }
        size_t j = i;
        while (j < cps.size() && !py_isspace(cps[j])) ++j;
        parts.emplace_back(cps.begin() + static_cast<long>(i), cps.begin() + static_cast<long>(j));
        i = j;
      }
    } else {
      size_t i = cps.size();
      while (i > 0) {
        while (i > 0 && py_isspace(cps[i - 1])) --i;
        if (i == 0) break;
        if (maxsplit >= 0 && static_cast<int64_t>(parts.size()) == maxsplit) {
          parts.emplace_back(cps.begin(), cps.begin() + static_cast<long>(i));  // the rest, as is
          break;
        }
        size_t j = i;
        while (j > 0 && !py_isspace(cps[j - 1])) --j;
        parts.emplace_back(cps.begin() + static_cast<long>(j), cps.begin() + static_cast<long>(i));
        i = j;
      }
      std::reverse(parts.begin(), parts.end());
    }
    for (auto& part : parts) out.push_back(Value::string(encode_utf8(part)));
  } else {
    const std::string& sep = str_arg(p.get(0), "split");
    if (sep.empty()) throw_error("empty separator");
    std::vector<std::string> parts;
    if (!from_right) {
      size_t start = 0;
      while (true) {
        size_t hit = s.find(sep, start);
        if (hit == std::string::npos || (maxsplit >= 0 && static_cast<int64_t>(parts.size()) == maxsplit)) break;
        parts.push_back(s.substr(start, hit - start));
        start = hit + sep.size();
      }
      parts.push_back(s.substr(start));
    } else {
      size_t end = s.size();
      while (true) {
        if (end < sep.size()) break;
        size_t hit = s.rfind(sep, end - sep.size());
        if (hit == std::string::npos || (maxsplit >= 0 && static_cast<int64_t>(parts.size()) == maxsplit)) break;
        parts.push_back(s.substr(hit + sep.size(), end - hit - sep.size()));
        end = hit;
      }
      parts.push_back(s.substr(0, end));
      std::reverse(parts.begin(), parts.end());
    }
    for (auto& part : parts) out.push_back(Value::string(std::move(part)));
  }
  in.charge(static_cast<int64_t>(out.size() + s.size()));
  return Value::list(std::move(out));
}
Value m_split(Interpreter& in, const Value& s, CallArgs& a) { return split_impl(in, s, a, false); }
Value m_rsplit(Interpreter& in, const Value& s, CallArgs& a) { return split_impl(in, s, a, true); }

Value m_splitlines(Interpreter& in, const Value& self, CallArgs& args) {
  Params p("splitlines", args, {"keepends"});
  bool keep = p.has(0) && truthy(*p.get(0));
  auto cps = decode_utf8(self.s);
  std::vector<Value> out;
  std::u32string cur;
  for (size_t k = 0; k < cps.size(); ++k) {
    char32_t c = cps[k];
    bool br = c == '\n' || c == '\r' || c == 0x0b || c == 0x0c || c == 0x1c || c == 0x1d || c == 0x1e ||
              c == 0x85 || c == 0x2028 || c == 0x2029;
    if (!br) {
      cur.push_back(c);
      continue;
    }
    std::u32string ending(1, c);
    if (c == '\r' && k + 1 < cps.size() && cps[k + 1] == '\n') {
      ending.push_back('\n');
      ++k;
    }
    if (keep) cur += ending;
    out.push_back(Value::string(encode_utf8(cur)));
    cur.clear();
  }
  if (!cur.empty()) out.push_back(Value::string(encode_utf8(cur)));
  in.charge(static_cast<int64_t>(out.size() + self.s.size()));
  return Value::list(std::move(out));
}

// Python's optional start/end arguments, resolved to a code point range of `n` code points.
void resolve_range(const Params& p, size_t first, int64_t n, int64_t* b, int64_t* e) {
  auto adj = [&](size_t idx, int64_t deflt) {
    if (!p.has(idx) || p.get(idx)->is_none()) return deflt;
    int64_t x = require_int(*p.get(idx), "slice index");
    if (x < 0) x = std::max<int64_t>(0, x + n);
    return std::min(x, n);
  };
  *b = adj(first, 0);
  *e = adj(first + 1, n);
}

Value affix_impl(const Value& self, CallArgs& args, bool prefix) {
  const char* fn = prefix ? "startswith" : "endswith";
  Params p(fn, args, {"prefix", "start", "end"});
  if (!p.has(0)) throw_error(std::string(fn) + "() takes at least 1 argument (0 given)");
  std::u32string s = u32(self.s);
  int64_t b, e;
  resolve_range(p, 1, static_cast<int64_t>(s.size()), &b, &e);
  std::u32string sub = b <= e ? s.substr(static_cast<size_t>(b), static_cast<size_t>(e - b)) : std::u32string();
  std::vector<Value> candidates;
  if (p.get(0)->is_sequence() && p.get(0)->kind == Kind::Tuple)
    candidates = p.get(0)->items();
  else
    candidates.push_back(*p.get(0));
  if (b > e) return Value::boolean(false);
  for (const auto& c : candidates) {
    std::u32string a = u32(str_arg(&c, fn));
    if (a.size() > sub.size()) continue;
    if (prefix ? sub.compare(0, a.size(), a) == 0 : sub.compare(sub.size() - a.size(), a.size(), a) == 0)
      return Value::boolean(true);
  }
  return Value::boolean(false);
}
Value m_startswith(Interpreter&, const Value& s, CallArgs& a) { return affix_impl(s, a, true); }
Value m_endswith(Interpreter&, const Value& s, CallArgs& a) { return affix_impl(s, a, false); }

Value map_chars(Interpreter& in, const Value& self, CallArgs& args, const char* fn,
                void (*f)(std::u32string&, char32_t)) {
  Params p(fn, args, {});
  std::u32string out;
  for (char32_t c : decode_utf8(self.s)) f(out, c);
  in.charge_items(out.size());
  return Value::string(encode_utf8(out));
}
Value m_upper(Interpreter& in, const Value& s, CallArgs& a) { return map_chars(in, s, a, "upper", append_upper); }
Value m_lower(Interpreter& in, const Value& s, CallArgs& a) { return map_chars(in, s, a, "lower", append_lower); }
Value m_casefold(Interpreter& in, const Value& s, CallArgs& a) {
  return map_chars(in, s, a, "casefold", [](std::u32string& out, char32_t c) {
    if (c == 0x00df) out += U"ss";
    else append_lower(out, c);
  });
}
Value m_swapcase(Interpreter& in, const Value& s, CallArgs& a) {
  return map_chars(in, s, a, "swapcase", [](std::u32string& out, char32_t c) {
    if (to_lower(c) != c) append_lower(out, c);
    else append_upper(out, c);
  });
}

bool is_cased(char32_t c) { return to_upper(c) != c || to_lower(c) != c; }

Value m_title(Interpreter& in, const Value& self, CallArgs& args) {
  Params p("title", args, {});
  std::u32string out;
  bool prev_cased = false;
  for (char32_t c : decode_utf8(self.s)) {
    if (prev_cased)
      append_lower(out, c);
    else
      append_title(out, c);
    prev_cased = is_cased(c);
  }
  in.charge_items(out.size());
  return Value::string(encode_utf8(out));
}

Value m_capitalize(Interpreter& in, const Value& self, CallArgs& args) {
  Params p("capitalize", args, {});
  std::u32string out;
  bool first = true;
  for (char32_t c : decode_utf8(self.s)) {
    if (first)
      append_title(out, c);
    else
      append_lower(out, c);
    first = false;
  }
  in.charge_items(out.size());
  return Value::string(encode_utf8(out));
}

Value m_replace(Interpreter& in, const Value& self, CallArgs& args) {
  Params p("replace", args, {"old", "new", "count"});
  const std::string& old_s = str_arg(p.get(0), "replace");
  const std::string& new_s = str_arg(p.get(1), "replace");
  int64_t count = p.has(2) ? require_int(*p.get(2), "replace") : -1;
  const std::string& s = self.s;
  std::string out;
  if (old_s.empty()) {
    // Python inserts `new` before every code point and at the end.
    auto cps = decode_utf8(s);
    int64_t done = 0;
    for (char32_t c : cps) {
      if (count < 0 || done < count) {
        out += new_s;
        ++done;
      }
      append_utf8(out, c);
      in.charge(static_cast<int64_t>(new_s.size()) + 1);
    }
    if (count < 0 || done < count) out += new_s;
  } else {
    size_t start = 0;
    int64_t done = 0;
    while (count < 0 || done < count) {
      size_t hit = s.find(old_s, start);
      if (hit == std::string::npos) break;
      out.append(s, start, hit - start);
      out += new_s;
      start = hit + old_s.size();
      ++done;
      in.charge(static_cast<int64_t>(new_s.size()) + 1);
    }
    out.append(s, start, std::string::npos);
  }
  in.charge_items(out.size());
  return Value::string(std::move(out));
}

Value find_impl(const Value& self, CallArgs& args, bool reverse, bool raise, bool count_only, const char* fn) {
  Params p(fn, args, {"sub", "start", "end"});
  std::u32string s = u32(self.s);
  std::u32string sub = u32(str_arg(p.get(0), fn));
  int64_t b, e;
  resolve_range(p, 1, static_cast<int64_t>(s.size()), &b, &e);
  if (count_only) {
    if (b > e) return Value::integer(0);
    if (sub.empty()) return Value::integer(e - b + 1);
    int64_t n = 0;
    for (size_t i = static_cast<size_t>(b); i + sub.size() <= static_cast<size_t>(e);) {
      if (s.compare(i, sub.size(), sub) == 0) {
        ++n;
        i += sub.size();
      } else {
        ++i;
      }
    }
    return Value::integer(n);
  }
  int64_t found = -1;
  if (b <= e && static_cast<int64_t>(sub.size()) <= e - b) {
    std::u32string window = s.substr(static_cast<size_t>(b), static_cast<size_t>(e - b));
    size_t hit = reverse ? window.rfind(sub) : window.find(sub);
    if (hit != std::u32string::npos) found = b + static_cast<int64_t>(hit);
  }
  if (found < 0 && raise) throw_error("substring not found");
  return Value::integer(found);
}
Value m_find(Interpreter&, const Value& s, CallArgs& a) { return find_impl(s, a, false, false, false, "find"); }
Value m_rfind(Interpreter&, const Value& s, CallArgs& a) { return find_impl(s, a, true, false, false, "rfind"); }
Value m_index(Interpreter&, const Value& s, CallArgs& a) { return find_impl(s, a, false, true, false, "index"); }
Value m_rindex(Interpreter&, const Value& s, CallArgs& a) { return find_impl(s, a, true, true, false, "rindex"); }
Value m_count(Interpreter&, const Value& s, CallArgs& a) { return find_impl(s, a, false, false, true, "count"); }

Value m_join(Interpreter& in, const Value& self, CallArgs& args) {
  Params p("join", args, {"iterable"});
  if (!p.has(0)) throw_error("join() takes exactly one argument (0 given)");
  std::string out;
  size_t k = 0;
  for (const auto& item : in.iterate(*p.get(0))) {
    if (item.kind != Kind::String)
      throw_error("sequence item " + std::to_string(k) + ": expected str instance, " + type_name(item) + " found");
    if (k++) out += self.s;
    out += item.s;
    in.charge(static_cast<int64_t>(self.s.size() + item.s.size()) + 1);
  }
  return Value::string(std::move(out));
}

Value predicate(const Value& self, CallArgs& args, const char* fn, bool (*f)(char32_t)) {
  Params p(fn, args, {});
  auto cps = decode_utf8(self.s);
  if (cps.empty()) return Value::boolean(false);
  for (char32_t c : cps)
    if (!f(c)) return Value::boolean(false);
  return Value::boolean(true);
}
Value m_isdigit(Interpreter&, const Value& s, CallArgs& a) { return predicate(s, a, "isdigit", is_digit); }
Value m_isdecimal(Interpreter&, const Value& s, CallArgs& a) { return predicate(s, a, "isdecimal", is_digit); }
Value m_isnumeric(Interpreter&, const Value& s, CallArgs& a) { return predicate(s, a, "isnumeric", is_digit); }
Value m_isalpha(Interpreter&, const Value& s, CallArgs& a) { return predicate(s, a, "isalpha", is_alpha); }
Value m_isalnum(Interpreter&, const Value& s, CallArgs& a) { return predicate(s, a, "isalnum", is_alnum); }
Value m_isspace(Interpreter&, const Value& s, CallArgs& a) { return predicate(s, a, "isspace", py_isspace); }

Value case_check(const Value& self, CallArgs& args, const char* fn, bool upper) {
  Params p(fn, args, {});
  bool any_cased = false;
  for (char32_t c : decode_utf8(self.s)) {
    if (!is_cased(c)) continue;
    any_cased = true;
    if (upper ? to_upper(c) != c : to_lower(c) != c) return Value::boolean(false);
  }
  return Value::boolean(any_cased);
}
Value m_istitle(Interpreter&, const Value& self, CallArgs& args) {
  Params p("istitle", args, {});
  bool cased_before = false, any = false;
  for (char32_t c : decode_utf8(self.s)) {
    bool upper = to_lower(c) != c, lower = to_upper(c) != c;
    if (upper) {
      if (cased_before) return Value::boolean(false);
      cased_before = any = true;
    } else if (lower) {
      if (!cased_before) return Value::boolean(false);
      cased_before = any = true;
    } else {
      cased_before = false;
    }
  }
  return Value::boolean(any);
}
Value m_islower(Interpreter&, const Value& s, CallArgs& a) { return case_check(s, a, "islower", false); }
Value m_isupper(Interpreter&, const Value& s, CallArgs& a) { return case_check(s, a, "isupper", true); }

Value pad_impl(Interpreter& in, const Value& self, CallArgs& args, const char* fn, char mode) {
  Params p(fn, args, {"width", "fillchar"});
  if (!p.has(0)) throw_error(std::string(fn) + "() takes at least 1 argument (0 given)");
  int64_t width = require_int(*p.get(0), fn);
  std::string fill = p.has(1) ? str_arg(p.get(1), fn) : " ";
  if (count_code_points(fill) != 1) throw_error("The fill character must be exactly one character long");
  int64_t len = static_cast<int64_t>(count_code_points(self.s));
  if (width <= len) return self;
  in.charge(width * static_cast<int64_t>(fill.size()));
  int64_t marg = width - len, left = 0;
  if (mode == 'c') left = marg / 2 + (marg & width & 1);
  if (mode == 'r') left = marg;
  std::string out;
  for (int64_t k = 0; k < left; ++k) out += fill;
  out += self.s;
  for (int64_t k = 0; k < marg - left; ++k) out += fill;
  return Value::string(std::move(out));
}
Value m_center(Interpreter& in, const Value& s, CallArgs& a) { return pad_impl(in, s, a, "center", 'c'); }
Value m_ljust(Interpreter& in, const Value& s, CallArgs& a) { return pad_impl(in, s, a, "ljust", 'l'); }
Value m_rjust(Interpreter& in, const Value& s, CallArgs& a) { return pad_impl(in, s, a, "rjust", 'r'); }

Value m_zfill(Interpreter& in, const Value& self, CallArgs& args) {
  Params p("zfill", args, {"width"});
  int64_t width = require_int(p.value_or(0, Value::integer(0)), "zfill");
  int64_t len = static_cast<int64_t>(count_code_points(self.s));
  if (width <= len) return self;
  in.charge(width);
  std::string s = self.s, sign;
  if (!s.empty() && (s[0] == '+' || s[0] == '-')) {
    sign = s.substr(0, 1);
    s.erase(0, 1);
  }
  return Value::string(sign + std::string(static_cast<size_t>(width - len), '0') + s);
}

Value partition_impl(const Value& self, CallArgs& args, bool reverse) {
  Params p(reverse ? "rpartition" : "partition", args, {"sep"});
  const std::string& sep = str_arg(p.get(0), "partition");
  if (sep.empty()) throw_error("empty separator");
  size_t hit = reverse ? self.s.rfind(sep) : self.s.find(sep);
  if (hit == std::string::npos)
    return reverse ? Value::tuple({Value::string(""), Value::string(""), self})
                   : Value::tuple({self, Value::string(""), Value::string("")});
  return Value::tuple({Value::string(self.s.substr(0, hit)), Value::string(sep),
                       Value::string(self.s.substr(hit + sep.size()))});
}
Value m_partition(Interpreter&, const Value& s, CallArgs& a) { return partition_impl(s, a, false); }
Value m_rpartition(Interpreter&, const Value& s, CallArgs& a) { return partition_impl(s, a, true); }

Value m_removeprefix(Interpreter&, const Value& self, CallArgs& args) {
  Params p("removeprefix", args, {"prefix"});
  const std::string& a = str_arg(p.get(0), "removeprefix");
  if (self.s.compare(0, a.size(), a) == 0 && a.size() <= self.s.size()) return Value::string(self.s.substr(a.size()));
  return self;
}
Value m_removesuffix(Interpreter&, const Value& self, CallArgs& args) {
  Params p("removesuffix", args, {"suffix"});
  const std::string& a = str_arg(p.get(0), "removesuffix");
  if (!a.empty() && a.size() <= self.s.size() && self.s.compare(self.s.size() - a.size(), a.size(), a) == 0)
    return Value::string(self.s.substr(0, self.s.size() - a.size()));
  return self;
}

// ---- str.format -----------------------------------------------------------------------------------

struct Spec {
  char32_t fill = ' ';
  char align = 0;  // < > ^ =
  char sign = '-';
  bool alternate = false;
  int64_t width = -1;
  char grouping = 0;
  int64_t precision = -1;
  char type = 0;
};

Spec parse_spec(const std::string& text) {
  Spec sp;
  auto cps = decode_utf8(text);
  size_t i = 0;
  auto is_align = [](char32_t c) { return c == '<' || c == '>' || c == '^' || c == '='; };
  if (cps.size() >= 2 && is_align(cps[1])) {
    sp.fill = cps[0];
    sp.align = static_cast<char>(cps[1]);
    i = 2;
  } else if (!cps.empty() && is_align(cps[0])) {
    sp.align = static_cast<char>(cps[0]);
    i = 1;
  }
  if (i < cps.size() && (cps[i] == '+' || cps[i] == '-' || cps[i] == ' ')) sp.sign = static_cast<char>(cps[i++]);
  if (i < cps.size() && cps[i] == '#') {
    sp.alternate = true;
    ++i;
  }
  if (i < cps.size() && cps[i] == '0') {
    if (!sp.align) {
      sp.fill = '0';
      sp.align = '=';
    }
    ++i;
  }
  auto number = [&]() {
    int64_t n = -1;
    while (i < cps.size() && cps[i] >= '0' && cps[i] <= '9') {
      n = (n < 0 ? 0 : n) * 10 + (cps[i++] - '0');
      if (n > 100000) throw_error("Too many decimal digits in format string");
    }
    return n;
  };
  sp.width = number();
  if (i < cps.size() && (cps[i] == ',' || cps[i] == '_')) sp.grouping = static_cast<char>(cps[i++]);
  if (i < cps.size() && cps[i] == '.') {
    ++i;
    sp.precision = number();
    if (sp.precision < 0) throw_error("Format specifier missing precision");
  }
  if (i < cps.size()) sp.type = static_cast<char>(cps[i++]);
  if (i != cps.size()) throw_error("Invalid format specifier '" + text + "'");
  return sp;
}

std::string group_digits(const std::string& digits, char sep, int every) {
  std::string out;
  int n = 0;
  for (size_t k = digits.size(); k-- > 0;) {
    if (n && n % every == 0) out.push_back(sep);
    out.push_back(digits[k]);
    ++n;
  }
  std::reverse(out.begin(), out.end());
  return out;
}

std::string apply_width(const std::string& body, const std::string& sign_prefix, const Spec& sp, char default_align) {
  char align = sp.align ? sp.align : default_align;
  int64_t len = static_cast<int64_t>(count_code_points(body) + count_code_points(sign_prefix));
  std::string fill;
  append_utf8(fill, sp.fill);
  if (sp.width <= len) return sign_prefix + body;
  int64_t pad = sp.width - len;
  auto fills = [&](int64_t n) {
    std::string s;
    for (int64_t k = 0; k < n; ++k) s += fill;
    return s;
  };
  switch (align) {
    case '<': return sign_prefix + body + fills(pad);
    case '^': return fills(pad / 2) + sign_prefix + body + fills(pad - pad / 2);
    case '=': return sign_prefix + fills(pad) + body;
    default: return fills(pad) + sign_prefix + body;
  }
}

std::string format_with_spec(const Value& v, const std::string& spec_text) {
  if (spec_text.empty()) return soft_str(v);
  Spec sp = parse_spec(spec_text);
  if (sp.width > 1000000) throw_error("format width too large");
  if (v.kind == Kind::String) {
    if (sp.type && sp.type != 's') throw_error(std::string("Unknown format code '") + sp.type + "' for object of type 'str'");
    std::string s = v.s;
    if (sp.precision >= 0) {
      auto cps = decode_utf8(s);
      if (static_cast<int64_t>(cps.size()) > sp.precision) cps.resize(static_cast<size_t>(sp.precision));
      s = encode_utf8(std::u32string(cps.begin(), cps.end()));
    }
    return apply_width(s, "", sp, '<');
  }
  if (!v.is_numeric()) throw_error("unsupported format string passed to " + type_name(v) + ".__format__");
  char type = sp.type;
  bool integer_type = type == 'd' || type == 'b' || type == 'o' || type == 'x' || type == 'X' || type == 'c' ||
                      type == 'n' || (type == 0 && v.kind != Kind::Float);
  if (integer_type) {
    if (v.kind == Kind::Float) throw_error(std::string("Unknown format code '") + type + "' for object of type 'float'");
    int64_t x = v.as_int();
    uint64_t mag = x < 0 ? 0 - static_cast<uint64_t>(x) : static_cast<uint64_t>(x);
    std::string digits;
    if (type == 'c') {
      append_utf8(digits, static_cast<char32_t>(x));
      return apply_width(digits, "", sp, '<');
    }
    int base = type == 'b' ? 2 : type == 'o' ? 8 : (type == 'x' || type == 'X') ? 16 : 10;
    const char* alphabet = type == 'X' ? "0123456789ABCDEF" : "0123456789abcdef";
    do {
      digits.insert(digits.begin(), alphabet[mag % static_cast<uint64_t>(base)]);
      mag /= static_cast<uint64_t>(base);
    } while (mag);
    if (sp.grouping) digits = group_digits(digits, sp.grouping, base == 10 ? 3 : 4);
    std::string prefix = x < 0 ? "-" : sp.sign == '+' ? "+" : sp.sign == ' ' ? " " : "";
    if (sp.alternate && base != 10) prefix += base == 2 ? "0b" : base == 8 ? "0o" : (type == 'X' ? "0X" : "0x");
    return apply_width(digits, prefix, sp, '>');
  }
  double d = v.as_double();
  std::string body;
  int64_t prec = sp.precision;
  char t = type;
  if (t == '%') {
    d *= 100;
    t = 'f';
  }
  if (std::isnan(d) || std::isinf(d)) {
    body = std::isnan(d) ? "nan" : "inf";
    if (t == 'E' || t == 'F' || t == 'G') for (char& c : body) c = static_cast<char>(c - 32);
  } else if (t == 0) {
    if (prec < 0) {
      body = format_float(std::fabs(d));
    } else {
      char buf[512];
      std::snprintf(buf, sizeof buf, "%.*g", static_cast<int>(std::max<int64_t>(prec, 1)), std::fabs(d));
      body = buf;
      if (body.find_first_of(".e") == std::string::npos) body += ".0";
    }
  } else if (t == 'f' || t == 'F' || t == 'e' || t == 'E' || t == 'g' || t == 'G' || t == 'n') {
    char fmt[8] = {'%', '.', '*', t == 'n' ? 'g' : t, 0};
    char buf[512];
    std::snprintf(buf, sizeof buf, fmt, static_cast<int>(prec < 0 ? 6 : std::min<int64_t>(prec, 300)), std::fabs(d));
    body = buf;
  } else {
    throw_error(std::string("Unknown format code '") + t + "' for object of type 'float'");
  }
  if (type == '%') body += "%";
  if (sp.grouping) {
    size_t dot = body.find_first_of(".e%");
    std::string ip = body.substr(0, dot), rest = dot == std::string::npos ? "" : body.substr(dot);
    body = group_digits(ip, sp.grouping, 3) + rest;
  }
  std::string prefix = std::signbit(d) && !std::isnan(d) ? "-" : sp.sign == '+' ? "+" : sp.sign == ' ' ? " " : "";
  return apply_width(body, prefix, sp, '>');
}

Value m_format(Interpreter& in, const Value& self, CallArgs& args) {
  const std::string& f = self.s;
  std::string out;
  size_t auto_index = 0;
  bool used_auto = false, used_manual = false;
  for (size_t i = 0; i < f.size(); ++i) {
    char c = f[i];
    if (c == '}') {
      if (i + 1 < f.size() && f[i + 1] == '}') {
        out.push_back('}');
        ++i;
        continue;
      }
      throw_error("Single '}' encountered in format string");
    }
    if (c != '{') {
      out.push_back(c);
      continue;
    }
    if (i + 1 < f.size() && f[i + 1] == '{') {
      out.push_back('{');
      ++i;
      continue;
    }
    size_t close = f.find('}', i);
    if (close == std::string::npos) throw_error("Single '{' encountered in format string");
    std::string field = f.substr(i + 1, close - i - 1);
    i = close;
    std::string spec, conv;
    size_t colon = field.find(':');
    if (colon != std::string::npos) {
      spec = field.substr(colon + 1);
      field.resize(colon);
    }
    size_t bang = field.find('!');
    if (bang != std::string::npos) {
      conv = field.substr(bang + 1);
      field.resize(bang);
    }
    // The argument name, then .attr / [key] accessors.
    size_t end = field.find_first_of(".[");
    std::string name = field.substr(0, end);
    Value v;
    if (name.empty()) {
      if (used_manual) throw_error("cannot switch from manual field specification to automatic field numbering");
      used_auto = true;
      if (auto_index >= args.positional.size()) throw_error("Replacement index " + std::to_string(auto_index) + " out of range for positional args tuple");
      v = args.positional[auto_index++];
    } else if (std::all_of(name.begin(), name.end(), [](char ch) { return ch >= '0' && ch <= '9'; })) {
      if (used_auto) throw_error("cannot switch from automatic field numbering to manual field specification");
      used_manual = true;
      size_t idx = name.size() > 9 ? SIZE_MAX : std::stoul(name);
      if (idx >= args.positional.size()) throw_error("Replacement index " + name + " out of range for positional args tuple");
      v = args.positional[idx];
    } else {
      bool found = false;
      for (const auto& [k, val] : args.keyword)
        if (k == name) {
          v = val;
          found = true;
        }
      if (!found) throw_error("KeyError: " + repr_string(name));
    }
    while (end != std::string::npos && end < field.size()) {
      if (field[end] == '.') {
        size_t next = field.find_first_of(".[", end + 1);
        v = in.getattr(v, field.substr(end + 1, next == std::string::npos ? std::string::npos : next - end - 1));
        end = next;
      } else {
        size_t rb = field.find(']', end);
        if (rb == std::string::npos) throw_error("Missing ']' in format string");
        std::string key = field.substr(end + 1, rb - end - 1);
        bool digits = !key.empty() && key.size() < 18 && std::all_of(key.begin(), key.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
        v = in.getitem(v, digits ? Value::integer(std::stoll(key)) : Value::string(key));
        end = rb + 1 < field.size() ? rb + 1 : std::string::npos;
      }
    }
    if (v.is_undefined() && !v.s.empty() && v.s.find("is unsafe") != std::string::npos) fail_undefined(v);
    if (conv == "r" || conv == "a") v = Value::string(repr(v));
    else if (conv == "s") v = Value::string(soft_str(v));
    else if (!conv.empty()) throw_error("Unknown conversion specifier " + conv);
    out += format_with_spec(v, spec);
    in.charge_items(out.size());
  }
  return Value::string(std::move(out));
}

// ---- dict / list ----------------------------------------------------------------------------------

Value m_get(Interpreter&, const Value& self, CallArgs& args) {
  Params p("get", args, {"key", "default"});
  if (!p.has(0)) throw_error("get expected at least 1 argument, got 0");
  if (const Value* v = self.dict().find(*p.get(0))) return *v;
  return p.value_or(1, Value::none());
}
Value m_items(Interpreter& in, const Value& self, CallArgs& args) {
  Params p("items", args, {});
  std::vector<Value> out;
  for (const auto& [k, v] : self.dict().entries) out.push_back(Value::tuple({k, v}));
  in.charge_items(out.size());
  return Value::list(std::move(out));
}
Value m_keys(Interpreter& in, const Value& self, CallArgs& args) {
  Params p("keys", args, {});
  std::vector<Value> out;
  for (const auto& e : self.dict().entries) out.push_back(e.first);
  in.charge_items(out.size());
  return Value::list(std::move(out));
}
Value m_values(Interpreter& in, const Value& self, CallArgs& args) {
  Params p("values", args, {});
  std::vector<Value> out;
  for (const auto& e : self.dict().entries) out.push_back(e.second);
  in.charge_items(out.size());
  return Value::list(std::move(out));
}
Value m_copy(Interpreter& in, const Value& self, CallArgs& args) {
  Params p("copy", args, {});
  if (self.kind == Kind::Dict) {
    auto d = std::make_shared<DictObj>(self.dict());
    in.charge_items(d->entries.size());
    Value v;
    v.kind = Kind::Dict;
    v.obj = std::move(d);
    return v;
  }
  in.charge_items(self.items().size());
  return Value::list(self.items());
}
Value m_list_index(Interpreter&, const Value& self, CallArgs& args) {
  Params p("index", args, {"value"});
  if (!p.has(0)) throw_error("index expected at least 1 argument, got 0");
  const auto& items = self.items();
  for (size_t k = 0; k < items.size(); ++k)
    if (py_equal(items[k], *p.get(0))) return Value::integer(static_cast<int64_t>(k));
  throw_error(repr(*p.get(0)) + " is not in list");
}
Value m_list_count(Interpreter&, const Value& self, CallArgs& args) {
  Params p("count", args, {"value"});
  if (!p.has(0)) throw_error("count() takes exactly one argument (0 given)");
  int64_t n = 0;
  for (const auto& item : self.items())
    if (py_equal(item, *p.get(0))) ++n;
  return Value::integer(n);
}

const std::unordered_map<std::string, Method>& str_methods() {
  static const std::unordered_map<std::string, Method> t = {
      {"strip", m_strip}, {"lstrip", m_lstrip}, {"rstrip", m_rstrip}, {"split", m_split},
      {"rsplit", m_rsplit}, {"splitlines", m_splitlines}, {"startswith", m_startswith},
      {"endswith", m_endswith}, {"upper", m_upper}, {"lower", m_lower}, {"casefold", m_casefold},
      {"swapcase", m_swapcase}, {"title", m_title}, {"capitalize", m_capitalize}, {"replace", m_replace},
      {"find", m_find}, {"rfind", m_rfind}, {"index", m_index}, {"rindex", m_rindex}, {"count", m_count},
      {"join", m_join}, {"isdigit", m_isdigit}, {"isdecimal", m_isdecimal}, {"isnumeric", m_isnumeric},
      {"isalpha", m_isalpha}, {"isalnum", m_isalnum}, {"isspace", m_isspace}, {"islower", m_islower},
      {"isupper", m_isupper}, {"istitle", m_istitle}, {"center", m_center}, {"ljust", m_ljust}, {"rjust", m_rjust},
      {"zfill", m_zfill}, {"partition", m_partition}, {"rpartition", m_rpartition},
      {"removeprefix", m_removeprefix}, {"removesuffix", m_removesuffix}, {"format", m_format},
  };
  return t;
}
const std::unordered_map<std::string, Method>& dict_methods() {
  static const std::unordered_map<std::string, Method> t = {
      {"get", m_get}, {"items", m_items}, {"keys", m_keys}, {"values", m_values}, {"copy", m_copy},
  };
  return t;
}
const std::unordered_map<std::string, Method>& list_methods() {
  static const std::unordered_map<std::string, Method> t = {
      {"index", m_list_index}, {"count", m_list_count}, {"copy", m_copy},
  };
  return t;
}

bool is_unsafe(Kind kind, const std::string& name) {
  static const char* const list_mutators[] = {"append", "clear", "extend", "insert", "pop", "remove", "reverse", "sort"};
  static const char* const dict_mutators[] = {"clear", "pop", "popitem", "setdefault", "update"};
  if (kind == Kind::List)
    return std::find(std::begin(list_mutators), std::end(list_mutators), name) != std::end(list_mutators);
  if (kind == Kind::Dict)
    return std::find(std::begin(dict_mutators), std::end(dict_mutators), name) != std::end(dict_mutators);
  return false;
}

}  // namespace

std::optional<Value> find_method(const Value& obj, const std::string& name) {
  const std::unordered_map<std::string, Method>* table = nullptr;
  if (obj.kind == Kind::String) table = &str_methods();
  else if (obj.kind == Kind::Dict) table = &dict_methods();
  else if (obj.kind == Kind::List) table = &list_methods();
  else if (obj.kind == Kind::Tuple) table = &list_methods();
  if (!table) return std::nullopt;
  auto it = table->find(name);
  if (it == table->end() || (obj.kind == Kind::Tuple && name == "copy")) {
    if (is_unsafe(obj.kind, name))
      return Value::undefined("access to attribute '" + name + "' of '" + type_name(obj) + "' object is unsafe.");
    return std::nullopt;
  }
  auto c = std::make_shared<CallableObj>();
  c->type = CallableObj::Type::Method;
  c->name = name;
  c->owner = type_name(obj);
  Method m = it->second;
  Value self = obj;
  c->fn = [m, self](Interpreter& in, CallArgs& args) { return m(in, self, args); };
  Value v;
  v.kind = Kind::Callable;
  v.obj = std::move(c);
  return v;
}

// ---- fmt % args ---------------------------------------------------------------------------------

std::string percent_format(Interpreter& in, const std::string& f, const Value& args) {
  std::vector<Value> positional;
  const DictObj* mapping = nullptr;
  if (args.kind == Kind::Tuple) positional = args.items();
  else positional.push_back(args);
  if (args.kind == Kind::Dict) mapping = &args.dict();
  size_t next_arg = 0;
  bool used_mapping = false;
  auto take = [&]() -> const Value& {
    if (next_arg >= positional.size()) throw_error("not enough arguments for format string");
    return positional[next_arg++];
  };
  std::string out;
  for (size_t i = 0; i < f.size(); ++i) {
    if (f[i] != '%') {
      out.push_back(f[i]);
      continue;
    }
    if (++i >= f.size()) throw_error("incomplete format");
    const Value* arg = nullptr;
    if (f[i] == '(') {
      if (!mapping) throw_error("format requires a mapping");
      size_t close = f.find(')', i);
      if (close == std::string::npos) throw_error("incomplete format key");
      std::string key = f.substr(i + 1, close - i - 1);
      arg = mapping->find(key);
      if (!arg) throw_error("KeyError: " + repr_string(key));
      used_mapping = true;
      i = close + 1;
    }
    Spec sp;
    sp.align = '>';
    bool zero = false;
    for (; i < f.size(); ++i) {
      char c = f[i];
      if (c == '-') sp.align = '<';
      else if (c == '+') sp.sign = '+';
      else if (c == ' ') { if (sp.sign != '+') sp.sign = ' '; }
      else if (c == '#') sp.alternate = true;
      else if (c == '0') zero = true;
      else break;
    }
    auto number = [&]() -> int64_t {
      if (i < f.size() && f[i] == '*') {
        ++i;
        return require_int(take(), "* wants int");
      }
      int64_t n = -1;
      while (i < f.size() && f[i] >= '0' && f[i] <= '9') {
        n = (n < 0 ? 0 : n) * 10 + (f[i++] - '0');
        if (n > 1000000) throw_error("format width too large");
      }
      return n;
    };
    sp.width = number();
    if (i < f.size() && f[i] == '.') {
      ++i;
      sp.precision = std::max<int64_t>(0, number());
    }
    while (i < f.size() && (f[i] == 'h' || f[i] == 'l' || f[i] == 'L')) ++i;
    if (i >= f.size()) throw_error("incomplete format");
    char type = f[i];
    if (type == '%') {
      out.push_back('%');
      continue;
    }
    const Value& v = arg ? *arg : take();
    if (zero && sp.align != '<') {
      sp.fill = '0';
      sp.align = '=';
    }
    std::string piece;
    switch (type) {
      case 's':
      case 'r':
      case 'a': {
        std::string s = type == 's' ? soft_str(v) : repr(v);
        if (sp.precision >= 0) {
          auto cps = decode_utf8(s);
          if (static_cast<int64_t>(cps.size()) > sp.precision) cps.resize(static_cast<size_t>(sp.precision));
          s = encode_utf8(std::u32string(cps.begin(), cps.end()));
        }
        if (sp.align == '=') sp.align = '>', sp.fill = ' ';
        piece = apply_width(s, "", sp, '>');
        break;
      }
      case 'd':
      case 'i':
      case 'u':
      case 'x':
      case 'X':
      case 'o': {
        if (!v.is_numeric()) {
          if (v.is_undefined()) fail_undefined(v);
          throw_error(std::string("%") + type + " format: a real number is required, not " + type_name(v));
        }
        int64_t x = v.kind == Kind::Float ? static_cast<int64_t>(v.f) : v.as_int();
        Spec s2 = sp;
        s2.type = (type == 'x' || type == 'X' || type == 'o') ? type : 'd';
        s2.precision = -1;
        std::string body = format_with_spec(Value::integer(x < 0 ? -x : x), std::string(1, s2.type));
        std::string prefix = x < 0 ? "-" : sp.sign == '+' ? "+" : sp.sign == ' ' ? " " : "";
        if (sp.alternate && type != 'd' && type != 'i' && type != 'u')
          prefix += type == 'o' ? "0o" : type == 'X' ? "0X" : "0x";
        if (sp.precision > static_cast<int64_t>(body.size()))
          body = std::string(static_cast<size_t>(sp.precision) - body.size(), '0') + body;
        piece = apply_width(body, prefix, sp, '>');
        break;
      }
      case 'e':
      case 'E':
      case 'f':
      case 'F':
      case 'g':
      case 'G': {
        if (!v.is_numeric()) {
          if (v.is_undefined()) fail_undefined(v);
          throw_error("must be real number, not " + type_name(v));
        }
        double d = v.as_double();
        char fmt[8] = {'%', '.', '*', type, 0};
        char buf[512];
        std::snprintf(buf, sizeof buf, fmt, static_cast<int>(sp.precision < 0 ? 6 : std::min<int64_t>(sp.precision, 300)),
                      std::fabs(d));
        std::string prefix = std::signbit(d) ? "-" : sp.sign == '+' ? "+" : sp.sign == ' ' ? " " : "";
        piece = apply_width(buf, prefix, sp, '>');
        break;
      }
      case 'c': {
        std::string ch;
        if (v.kind == Kind::String && count_code_points(v.s) == 1) ch = v.s;
        else if (v.kind == Kind::Int) append_utf8(ch, static_cast<char32_t>(v.i));
        else throw_error("%c requires int or char");
        piece = apply_width(ch, "", sp, '>');
        break;
      }
      default: throw_error(std::string("unsupported format character '") + type + "'");
    }
    out += piece;
    in.charge(static_cast<int64_t>(piece.size()) + 1);
  }
  if (!mapping && next_arg < positional.size()) throw_error("not all arguments converted during string formatting");
  (void)used_mapping;
  return out;
}

}  // namespace moe::tmpl::detail
