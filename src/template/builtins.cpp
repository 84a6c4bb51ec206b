// builtins.cpp: Jinja2 3.1's filters and tests and the global functions, with their Python behaviour
// (argument names and defaults, Undefined handling, error texts where templates can observe them). The
// `tojson` filter is HF's: json.dumps(x, ensure_ascii=False, indent, separators, sort_keys), which
// unlike Jinja2's own does not HTML-escape and keeps dict key order.
#include "template/builtins.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <unordered_map>

namespace moe::tmpl::detail {

// ---------------------------------------------------------------------------------------------------
// Helpers

Params::Params(const char* function, const CallArgs& args, std::initializer_list<const char*> names)
    : bound_(names.size(), nullptr) {
  const std::vector<const char*> list(names);
  if (args.positional.size() > list.size())
    throw_error(std::string(function) + "() takes at most " + std::to_string(list.size()) + " argument(s) (" +
                std::to_string(args.positional.size()) + " given)");
  for (size_t k = 0; k < args.positional.size(); ++k) bound_[k] = &args.positional[k];
  for (const auto& [key, value] : args.keyword) {
    size_t idx = list.size();
    for (size_t k = 0; k < list.size(); ++k)
      if (key == list[k]) idx = k;
    if (idx == list.size()) throw_error(std::string(function) + "() got an unexpected keyword argument '" + key + "'");
    if (bound_[idx]) throw_error(std::string(function) + "() got multiple values for argument '" + key + "'");
    bound_[idx] = &value;
  }
}

int64_t require_int(const Value& v, const char* what) {
  if (v.kind == Kind::Int || v.kind == Kind::Bool) return v.as_int();
  if (v.is_undefined()) fail_undefined(v);
  throw_error(std::string(what) + ": '" + type_name(v) + "' object cannot be interpreted as an integer");
}

std::string soft_str(const Value& v) { return v.kind == Kind::String ? v.s : to_str(v); }

namespace {

Value make_dict(std::shared_ptr<DictObj> d) {
  Value v;
  v.kind = Kind::Dict;
  v.obj = std::move(d);
  return v;
}

Value make_function(const char* name, std::function<Value(Interpreter&, CallArgs&)> fn) {
  auto c = std::make_shared<CallableObj>();
  c->type = CallableObj::Type::Function;
  c->name = name;
  c->fn = std::move(fn);
  Value v;
  v.kind = Kind::Callable;
  v.obj = std::move(c);
  return v;
}

std::string lower_str(const std::string& s) {
  if (is_ascii(s)) {
    std::string out = s;
    for (char& c : out)
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
    return out;
  }
  std::u32string cps;
  for (char32_t c : decode_utf8(s)) append_lower(cps, c);
  return encode_utf8(cps);
}

std::string upper_str(const std::string& s) {
  if (is_ascii(s)) {
    std::string out = s;
    for (char& c : out)
      if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 32);
    return out;
  }
  std::u32string cps;
  for (char32_t c : decode_utf8(s)) append_upper(cps, c);
  return encode_utf8(cps);
}

// Jinja2's make_attrgetter: "a.b.0" looks up a, then b, then item 0, each through getitem.
Value get_attribute(Interpreter& in, const Value& item, const Value& attribute) {
  if (attribute.kind != Kind::String) return in.getitem(item, attribute);
  Value cur = item;
  size_t start = 0;
  const std::string& path = attribute.s;
  while (true) {
    size_t dot = path.find('.', start);
    std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    bool digits = !part.empty() && std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (digits && part.size() < 18)
      cur = in.getitem(cur, Value::integer(std::stoll(part)));
    else
      cur = in.getitem(cur, Value::string(part));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return cur;
}

Value ignore_case(const Value& v) { return v.kind == Kind::String ? Value::string(lower_str(v.s)) : v; }

// The key function of sort / unique / min / max / dictsort.
struct KeyFn {
  Interpreter& in;
  bool case_sensitive = false;
  const Value* attribute = nullptr;
  Value operator()(const Value& v) const {
    Value k = (attribute && !attribute->is_none()) ? get_attribute(in, v, *attribute) : v;
    return case_sensitive ? k : ignore_case(k);
  }
};

std::vector<Value> sorted_by_key(const std::vector<Value>& items, const KeyFn& key, bool reverse) {
  std::vector<std::pair<Value, Value>> keyed;
  keyed.reserve(items.size());
  for (const auto& it : items) keyed.emplace_back(key(it), it);
  auto less = [](const std::pair<Value, Value>& x, const std::pair<Value, Value>& y) {
    return py_less(x.first, y.first);
  };
  if (reverse)
    std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& x, const auto& y) { return less(y, x); });
  else
    std::stable_sort(keyed.begin(), keyed.end(), less);
  std::vector<Value> out;
  out.reserve(keyed.size());
  for (auto& kv : keyed) out.push_back(std::move(kv.second));
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Filters

Value f_abs(Interpreter&, const Value& v, CallArgs& args) {
  Params p("abs", args, {});
  if (v.kind == Kind::Float) return Value::number(std::fabs(v.f));
  if (v.kind == Kind::Int || v.kind == Kind::Bool) {
    if (v.as_int() == INT64_MIN) throw_error("integer overflow");
    return Value::integer(std::llabs(v.as_int()));
  }
  if (v.is_undefined()) fail_undefined(v);
  throw_error("bad operand type for abs(): '" + type_name(v) + "'");
}

Value f_attr(Interpreter& in, const Value& v, CallArgs& args) {
  Params p("attr", args, {"name"});
  if (!p.has(0)) throw_error("attr() missing required argument 'name'");
  Value name = *p.get(0);
  if (name.kind != Kind::String) throw_error("attribute name must be string");
  if (v.kind == Kind::Dict) {
    if (auto m = find_method(v, name.s)) return *m;
    return Value::undefined("'dict object' has no attribute " + repr_string(name.s));
  }
  return in.getattr(v, name.s);
}

Value f_batch(Interpreter& in, const Value& v, CallArgs& args) {
  Params p("batch", args, {"linecount", "fill_with"});
  if (!p.has(0)) throw_error("batch() missing required argument 'linecount'");
  int64_t n = require_int(*p.get(0), "batch");
  if (n <= 0) throw_error("batch size must be positive");
  std::vector<Value> out, cur;
  for (auto& item : in.iterate(v)) {
    cur.push_back(std::move(item));
    if (static_cast<int64_t>(cur.size()) == n) {
      out.push_back(Value::list(std::move(cur)));
      cur.clear();
    }
  }
  if (!cur.empty()) {
    if (p.has(1) && !p.get(1)->is_none())
      while (static_cast<int64_t>(cur.size()) < n) cur.push_back(*p.get(1));
    out.push_back(Value::list(std::move(cur)));
  }
  in.charge_items(out.size());
  return Value::list(std::move(out));
}

Value f_capitalize(Interpreter& in, const Value& v, CallArgs& args) {
  Params p("capitalize", args, {});
  auto cps = decode_utf8(soft_str(v));
  std::u32string out;
  for (size_t k = 0; k < cps.size(); ++k) {
    if (k == 0)
      append_title(out, cps[k]);
    else
      append_lower(out, cps[k]);
  }
  in.charge_items(out.size());
  return Value::string(encode_utf8(out));
}

Value f_center(Interpreter& in, const Value& v, CallArgs& args) {
  Params p("center", args, {"width"});
  std::string s = soft_str(v);
  int64_t width = require_int(p.value_or(0, Value::integer(80)), "center");
  int64_t len = static_cast<int64_t>(count_code_points(s));
  if (width <= len) return Value::string(s);
  in.charge(width);
  int64_t marg = width - len;
  int64_t left = marg / 2 + (marg & width & 1);
  return Value::string(std::string(static_cast<size_t>(left), ' ') + s +
                       std::string(static_cast<size_t>(marg - left), ' '));
}

Value f_default(Interpreter&, const Value& v, CallArgs& args) {
  Params p("default", args, {"default_value", "boolean"});
  bool boolean = p.has(1) && truthy(*p.get(1));
  if (v.is_undefined() || (boolean && !truthy(v))) return p.value_or(0, Value::string(""));
  return v;
}

Value f_dictsort(Interpreter& in, const Value& v, CallArgs& args) {
  Params p("dictsort", args, {"case_sensitive", "by", "reverse"});
  if (v.kind != Kind::Dict) throw_error("You can only sort by either 'key' or 'value'");
  bool cs = p.has(0) && truthy(*p.get(0));
  std::string by = p.has(1) ? soft_str(*p.get(1)) : "key";
  if (by != "key" && by != "value") throw_error("You can only sort by either 'key' or 'value'");
  std::vector<Value> pairs;
  for (const auto& [k, val] : v.dict().entries) pairs.push_back(Value::tuple({k, val}));
  Value index = Value::integer(by == "key" ? 0 : 1);
  KeyFn key{in, cs, &index};
  return Value::list(sorted_by_key(pairs, key, p.has(2) && truthy(*p.get(2))));
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out.push_back(c);
    }
  }
  return out;
}

Value f_escape(Interpreter& in, const Value& v, CallArgs& args) {
  Params p("escape", args, {});
  std::string out = html_escape(soft_str(v));
  in.charge_items(out.size());
  return Value::string(std::move(out));
}

Value f_first(Interpreter& in, const Value& v, CallArgs& args) {
  Params p("first", args, {});
  if (v.is_sequence()) {
    if (v.items().empty()) return Value::undefined("No first item, sequence was empty.");
    return v.items().front();
  }
  auto items = in.iterate(v);
  if (items.empty()) return Value::undefined("No first item, sequence was empty.");
  return items.front();
}

Value f_last(Interpreter& in, const Value& v, CallArgs& args) {
  Params p("last", args, {});
  if (v.is_sequence()) {
    if (v.items().empty()) return Value::undefined("No last item, sequence was empty.");
    return v.items().back();
  }
  auto items = in.iterate(v);
  if (items.empty()) return Value::undefined("No last item, sequence was empty.");
  return items.back();
}

std::optional<double> parse_float(const std::string& text) {
  std::string s;
  for (char32_t c : decode_utf8(text))
    if (!py_isspace(c)) append_utf8(s, c);
  std::string t;
  for (char c : s)
    if (c != '_') t.push_back(c);
  if (t.empty()) return std::nullopt;
  std::string lower = lower_str(t);
  std::string body = (lower[0] == '+' || lower[0] == '-') ? lower.substr(1) : lower;
  if (body == "inf" || body == "infinity" || body == "nan") {
    double x = body == "nan" ? NAN : INFINITY;
    return lower[0] == '-' ? -x : x;
  }
  char* end = nullptr;
  double d = std::strtod(t.c_str(), &end);
  if (end != t.c_str() + t.size()) return std::nullopt;
  if (lower.find_first_of("xp") != std::string::npos) return std::nullopt;  // strtod's hex floats
  return d;
}

std::optional<double> to_float(const Value& v) {
  switch (v.kind) {
    case Kind::Float: return v.f;
    case Kind::Int:
    case Kind::Bool: return v.as_double();
    case Kind::String: return parse_float(v.s);
    default: return std::nullopt;
  }
}

Value f_float(Interpreter&, const Value& v, CallArgs& args) {
  Params p("float", args, {"default"});
  if (v.is_undefined()) fail_undefined(v);  // Undefined.__float__ raises
  if (auto d = to_float(v)) return Value::number(*d);
  return p.value_or(0, Value::number(0.0));
}

std::optional<int64_t> parse_int(const std::string& text, int64_t base) {
  std::string s;
  for (char32_t c : decode_utf8(text))
    if (!py_isspace(c)) append_utf8(s, c);
  if (s.empty()) return std::nullopt;
  bool neg = false;
  size_t i = 0;
  if (s[0] == '+' || s[0] == '-') {
    neg = s[0] == '-';
    i = 1;
  }
  if ((base == 16 || base == 0) && s.size() > i + 1 && s[i] == '0' && (s[i + 1] | 0x20) == 'x') {
    base = 16;
    i += 2;
  } else if ((base == 8 || base == 0) && s.size() > i + 1 && s[i] == '0' && (s[i + 1] | 0x20) == 'o') {
    base = 8;
    i += 2;
  } else if ((base == 2 || base == 0) && s.size() > i + 1 && s[i] == '0' && (s[i + 1] | 0x20) == 'b') {
    base = 2;
    i += 2;
  }
  if (base == 0) base = 10;
  if (i >= s.size()) return std::nullopt;
  uint64_t v = 0;
  bool prev_digit = false;
  for (; i < s.size(); ++i) {
    char c = s[i];
    if (c == '_' && prev_digit && i + 1 < s.size()) {
      prev_digit = false;
      continue;
    }
    int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'z') ? c - 'a' + 10 : (c >= 'A' && c <= 'Z') ? c - 'A' + 10 : 99;
    if (d >= base) return std::nullopt;
    if (v > (static_cast<uint64_t>(INT64_MAX) - static_cast<uint64_t>(d)) / static_cast<uint64_t>(base))
      throw_error("integer too large (values beyond 64 bits are not supported)");
    v = v * static_cast<uint64_t>(base) + static_cast<uint64_t>(d);
    prev_digit = true;
  }
  if (!prev_digit) return std::nullopt;
  return neg ? -static_cast<int64_t>(v) : static_cast<int64_t>(v);
}

int64_t float_to_int(double d) {
  if (std::isnan(d)) throw_error("cannot convert float NaN to integer");
  if (std::isinf(d)) throw_error("cannot convert float infinity to integer");
  if (d >= 9.2233720368547758e18 || d < -9.2233720368547758e18)
    throw_error("integer too large (values beyond 64 bits are not supported)");
  return static_cast<int64_t>(d);
}

Value f_int(Interpreter&, const Value& v, CallArgs& args) {
  Params p("int", args, {"default", "base"});
  Value fallback = p.value_or(0, Value::integer(0));
  int64_t base = p.has(1) ? require_int(*p.get(1), "int") : 10;
  if (v.is_undefined()) fail_undefined(v);  // Undefined.__int__ raises
  switch (v.kind) {
    case Kind::Int:
    case Kind::Bool: return Value::integer(v.as_int());
    case Kind::Float:
      if (std::isnan(v.f)) return fallback;
      return Value::integer(float_to_int(v.f));
    case Kind::String: {
      if (auto i = parse_int(v.s, base)) return Value::integer(*i);
      if (auto d = parse_float(v.s)) {
        if (std::isnan(*d)) return fallback;
        return Value::integer(float_to_int(*d));
      }
      return fallback;
    }
    default: return fallback;
  }
}

Value f_indent(Interpreter& in, const Value& v, CallArgs& args) {
  Params p("indent", args, {"width", "first", "blank"});
  std::string indention;
  if (p.has(0) && p.get(0)->kind == Kind::String)
    indention = p.get(0)->s;
  else
    indention = std::string(static_cast<size_t>(std::max<int64_t>(0, require_int(p.value_or(0, Value::integer(4)), "indent"))), ' ');
  bool first = p.has(1) && truthy(*p.get(1));
  bool blank = p.has(2) && truthy(*p.get(2));
  // Jinja2 appends "\n" to the value itself, which only works for strings.
  if (v.is_undefined()) fail_undefined(v);
  if (!v.is_string()) throw_error("unsupported operand type(s) for +=: '" + type_name(v) + "' and 'str'");
  std::string s = v.s + "\n";
  // str.splitlines boundaries.
  std::vector<std::string> lines;
  {
    auto cps = decode_utf8(s);
    std::u32string cur;
    for (size_t k = 0; k < cps.size(); ++k) {
      char32_t c = cps[k];
      bool br = c == '\n' || c == '\r' || c == 0x0b || c == 0x0c || c == 0x1c || c == 0x1d || c == 0x1e ||
                c == 0x85 || c == 0x2028 || c == 0x2029;
      if (br) {
        if (c == '\r' && k + 1 < cps.size() && cps[k + 1] == '\n') ++k;
        lines.push_back(encode_utf8(cur));
        cur.clear();
      } else {
        cur.push_back(c);
      }
    }
    if (!cur.empty()) lines.push_back(encode_utf8(cur));
  }
  std::string rv;
  if (blank) {
    for (size_t k = 0; k < lines.size(); ++k) rv += (k ? "\n" + indention : "") + lines[k];
  } else {
    rv = lines.empty() ? "" : lines[0];
    for (size_t k = 1; k < lines.size(); ++k) rv += "\n" + (lines[k].empty() ? "" : indention + lines[k]);
  }
  if (first) rv = indention + rv;
  in.charge(static_cast<int64_t>(rv.size()));
  return Value::string(std::move(rv));
}

Value f_items(Interpreter&, const Value& v, CallArgs& args) {
  Params p("items", args, {});
  if (v.is_undefined()) return Value::list({});
  if (v.kind != Kind::Dict) throw_error("Can only get item pairs from a mapping.");
  std::vector<Value> out;
  for (const auto& [k, val] : v.dict().entries) out.push_back(Value::tuple({k, val}));
  return Value::list(std::move(out));
}

Value f_join(Interpreter& in, const Value& v, CallArgs& args) {
  Params p("join", args, {"d", "attribute"});
  std::string sep = p.has(0) ? soft_str(*p.get(0)) : "";
  std::string out;
  bool first = true;
  for (auto& item : in.iterate(v)) {
    Value x = (p.has(1) && !p.get(1)->is_none()) ? get_attribute(in, item, *p.get(1)) : item;
    if (!first) out += sep;
    first = false;
    out += soft_str(x);
    in.charge(static_cast<int64_t>(sep.size()) + 16);
  }
  in.charge_items(out.size());
  return Value::string(std::move(out));
}

Value f_length(Interpreter&, const Value& v, CallArgs& args) {
  Params p("length", args, {});
  switch (v.kind) {
    case Kind::Undefined: return Value::integer(0);
    case Kind::String: return Value::integer(static_cast<int64_t>(count_code_points(v.s)));
    case Kind::List:
    case Kind::Tuple: return Value::integer(static_cast<int64_t>(v.items().size()));
    case Kind::Dict: return Value::integer(static_cast<int64_t>(v.dict().entries.size()));
    default: throw_error("object of type '" + type_name(v) + "' has no len()");
  }
}

Value f_list(Interpreter& in, const Value& v, CallArgs& args) {
  Params p("list", args, {});
  auto items = in.iterate(v);
  in.charge_items(items.size());
  return Value::list(std::move(items));
}

Value f_lower(Interpreter& in, const Value& v, CallArgs& args) {
  Params p("lower", args, {});
  std::string s = lower_str(soft_str(v));
  in.charge(static_cast<int64_t>(s.size()));
  return Value::string(std::move(s));
}

Value f_upper(Interpreter& in, const Value& v, CallArgs& args) {
  Params p("upper", args, {});
  std::string s = upper_str(soft_str(v));
  in.charge(static_cast<int64_t>(s.size()));
  return Value::string(std::move(s));
}

Value f_map(Interpreter& in, const Value& v, CallArgs& args) {
  if (!truthy(v)) return Value::list({});  // Jinja2 does not even look at a falsy input
  std::vector<Value> out;
  const Value* attribute = nullptr;
  const Value* fallback = nullptr;
  for (const auto& [k, val] : args.keyword) {
    if (k == "attribute") attribute = &val;
    else if (k == "default") fallback = &val;
  }
  if (args.positional.empty() && attribute) {
    for (const auto& [k, val] : args.keyword)
      if (k != "attribute" && k != "default") throw_error("Unexpected keyword argument '" + k + "'");
    for (const auto& item : in.iterate(v)) {
      Value x = get_attribute(in, item, *attribute);
      out.push_back(x.is_undefined() && fallback ? *fallback : x);
    }
  } else {
    if (args.positional.empty()) throw_error("map requires a filter argument");
    std::string name = soft_str(args.positional[0]);
    CallArgs rest;
    rest.positional.assign(args.positional.begin() + 1, args.positional.end());
    rest.keyword = args.keyword;
    for (const auto& item : in.iterate(v)) {
      CallArgs a = rest;
      out.push_back(in.call_filter(name, item, a));
    }
  }
  in.charge_items(out.size());
  return Value::list(std::move(out));
}

Value min_max(Interpreter& in, const Value& v, CallArgs& args, bool want_max) {
  Params p(want_max ? "max" : "min", args, {"case_sensitive", "attribute"});
  KeyFn key{in, p.has(0) && truthy(*p.get(0)), p.get(1)};
  auto items = in.iterate(v);
  if (items.empty()) return Value::undefined("No aggregated item, sequence was empty.");
  size_t best = 0;
  Value best_key = key(items[0]);
  for (size_t k = 1; k < items.size(); ++k) {
    Value kk = key(items[k]);
    if (want_max ? py_less(best_key, kk) : py_less(kk, best_key)) {
      best = k;
      best_key = kk;
    }
  }
  return items[best];
}
Value f_max(Interpreter& in, const Value& v, CallArgs& args) { return min_max(in, v, args, true); }
Value f_min(Interpreter& in, const Value& v, CallArgs& args) { return min_max(in, v, args, false); }

Value select_or_reject(Interpreter& in, const Value& v, CallArgs& args, bool select, bool by_attr) {
  if (!truthy(v)) return Value::list({});  // Jinja2 does not even look at a falsy input
  size_t off = by_attr ? 1 : 0;
  if (by_attr && args.positional.empty()) throw_error("Missing parameter for attribute name");
  std::vector<Value> out;
  bool has_test = args.positional.size() > off;
  std::string test = has_test ? soft_str(args.positional[off]) : "";
  CallArgs rest;
  if (has_test) rest.positional.assign(args.positional.begin() + static_cast<long>(off) + 1, args.positional.end());
  rest.keyword = args.keyword;
  for (const auto& item : in.iterate(v)) {
    Value x = by_attr ? get_attribute(in, item, args.positional[0]) : item;
    bool ok;
    if (has_test) {
      CallArgs a = rest;
      ok = in.call_test(test, x, a);
    } else {
      ok = truthy(x);
    }
    if (ok == select) out.push_back(item);
  }
  in.charge_items(out.size());
  return Value::list(std::move(out));
}
Value f_select(Interpreter& in, const Value& v, CallArgs& a) { return select_or_reject(in, v, a, true, false); }
Value f_reject(Interpreter& in, const Value& v, CallArgs& a) { return select_or_reject(in, v, a, false, false); }
Value f_selectattr(Interpreter& in, const Value& v, CallArgs& a) { return select_or_reject(in, v, a, true, true); }
Value f_rejectattr(Interpreter& in, const Value& v, CallArgs& a) { return select_or_reject(in, v, a, false, true); }

Value f_replace(Interpreter& in, const Value& v, CallArgs& args) {
  Params p("replace", args, {"old", "new", "count"});
  if (!p.has(0) || !p.has(1)) throw_error("replace() missing required arguments 'old' and 'new'");
  std::string s = soft_str(v), old_s = soft_str(*p.get(0)), new_s = soft_str(*p.get(1));
  int64_t count = p.has(2) && !p.get(2)->is_none() ? require_int(*p.get(2), "replace") : -1;
  auto m = find_method(Value::string(s), "replace");
  CallArgs a;
  a.positional = {Value::string(old_s), Value::string(new_s), Value::integer(count)};
  return static_cast<const CallableObj&>(*m->obj).fn(in, a);
}

Value f_reverse(Interpreter& in, const Value& v, CallArgs& args) {
  Params p("reverse", args, {});
  if (v.kind == Kind::String) {
    auto cps = decode_utf8(v.s);
    std::u32string out(cps.rbegin(), cps.rend());
    in.charge_items(out.size());
    return Value::string(encode_utf8(out));
  }
  auto items = in.iterate(v);
  std::reverse(items.begin(), items.end());
  in.charge_items(items.size());
  return Value::list(std::move(items));
}

Value f_round(Interpreter&, const Value& v, CallArgs& args) {
  Params p("round", args, {"precision", "method"});
  int64_t precision = p.has(0) ? require_int(*p.get(0), "round") : 0;
  std::string method = p.has(1) ? soft_str(*p.get(1)) : "common";
  if (method != "common" && method != "ceil" && method != "floor")
    throw_error("method must be common, ceil or floor");
  if (!v.is_numeric()) {
    if (v.is_undefined()) fail_undefined(v);
    throw_error("type " + type_name(v) + " doesn't define __round__ method");
  }
  if (method == "common" && v.kind != Kind::Float) {
    // Python's round(int, ndigits) stays an int (half to even for negative ndigits).
    int64_t x = v.as_int();
    if (precision >= 0) return Value::integer(x);
    if (precision < -18) return Value::integer(0);
    int64_t scale = 1;
    for (int64_t k = 0; k < -precision; ++k) scale *= 10;
    int64_t q = x / scale, r = x % scale;
    if (r < 0) {
      r += scale;
      --q;
    }
    if (2 * r > scale || (2 * r == scale && (q & 1))) ++q;
    int64_t rounded = 0;
    if (__builtin_mul_overflow(q, scale, &rounded)) throw_error("integer overflow");
    return Value::integer(rounded);
  }
  double x = v.as_double();
  if (method == "common") {
    if (!std::isfinite(x) || precision > 300) return Value::number(x);
    if (precision < -300) return Value::number(0.0 * x);
    if (precision >= 0) {
      // Python rounds the exact binary value half-to-even, as printf does.
      char buf[512];
      std::snprintf(buf, sizeof buf, "%.*f", static_cast<int>(precision), x);
      return Value::number(std::strtod(buf, nullptr));
    }
    double scale = std::pow(10.0, static_cast<double>(-precision));
    return Value::number(std::nearbyint(x / scale) * scale);
  }
  double scale = std::pow(10.0, static_cast<double>(precision));
  double r = method == "ceil" ? std::ceil(x * scale) / scale : std::floor(x * scale) / scale;
  return Value::number(r);
}

Value f_safe(Interpreter&, const Value& v, CallArgs& args) {
  Params p("safe", args, {});
  return Value::string(soft_str(v));
}

Value f_sort(Interpreter& in, const Value& v, CallArgs& args) {
  Params p("sort", args, {"reverse", "case_sensitive", "attribute"});
  KeyFn key{in, p.has(1) && truthy(*p.get(1)), p.get(2)};
  auto items = in.iterate(v);
  in.charge_items(items.size());
  return Value::list(sorted_by_key(items, key, p.has(0) && truthy(*p.get(0))));
}

Value f_string(Interpreter& in, const Value& v, CallArgs& args) {
  Params p("string", args, {});
  std::string s = soft_str(v);
  in.charge(static_cast<int64_t>(s.size()));
  return Value::string(std::move(s));
}

Value f_sum(Interpreter& in, const Value& v, CallArgs& args) {
  Params p("sum", args, {"attribute", "start"});
  Value total = p.value_or(1, Value::integer(0));
  for (const auto& item : in.iterate(v)) {
    Value x = (p.has(0) && !p.get(0)->is_none()) ? get_attribute(in, item, *p.get(0)) : item;
    total = binary_op(in, ast::BinOp::Add, total, x);
  }
  return total;
}

Value f_title(Interpreter& in, const Value& v, CallArgs& args) {
  Params p("title", args, {});
  // Jinja2 splits on runs of [-\s({[<] and capitalizes each piece.
  auto cps = decode_utf8(soft_str(v));
  std::u32string out;
  bool word_start = true;
  for (char32_t c : cps) {
    bool sep = c == '-' || c == '(' || c == '{' || c == '[' || c == '<' || py_isspace(c);
    if (sep) {
      out.push_back(c);
      word_start = true;
    } else {
      if (word_start)
        append_title(out, c);
      else
        append_lower(out, c);
      word_start = false;
    }
  }
  in.charge_items(out.size());
  return Value::string(encode_utf8(out));
}

Value f_tojson(Interpreter& in, const Value& v, CallArgs& args) {
  Params p("tojson", args, {"ensure_ascii", "indent", "separators", "sort_keys"});
  JsonStyle style;
  style.ensure_ascii = p.has(0) && truthy(*p.get(0));
  if (p.has(1) && !p.get(1)->is_none()) {
    const Value& ind = *p.get(1);
    if (ind.kind == Kind::String)
      style.indent = ind.s;
    else
      style.indent = std::string(static_cast<size_t>(std::clamp<int64_t>(require_int(ind, "indent"), 0, 1024)), ' ');
    style.item_separator = ",";
  }
  if (p.has(2) && !p.get(2)->is_none()) {
    const Value& sep = *p.get(2);
    if (!sep.is_sequence() || sep.items().size() != 2 || !sep.items()[0].is_string() || !sep.items()[1].is_string())
      throw_error("separators must be a (item_separator, key_separator) pair of strings");
    style.item_separator = sep.items()[0].s;
    style.key_separator = sep.items()[1].s;
  }
  style.sort_keys = p.has(3) && truthy(*p.get(3));
  if (v.is_undefined() && v.s.find("is unsafe") != std::string::npos) fail_undefined(v);
  std::string out = to_json(v, style);
  in.charge_items(out.size());
  return Value::string(std::move(out));
}

Value f_trim(Interpreter& in, const Value& v, CallArgs& args) {
  Params p("trim", args, {"chars"});
  auto m = find_method(Value::string(soft_str(v)), "strip");
  CallArgs a;
  if (p.has(0)) a.positional.push_back(*p.get(0));
  Value r = static_cast<const CallableObj&>(*m->obj).fn(in, a);
  return r;
}

Value f_truncate(Interpreter& in, const Value& v, CallArgs& args) {
  Params p("truncate", args, {"length", "killwords", "end", "leeway"});
  int64_t length = p.has(0) ? require_int(*p.get(0), "truncate") : 255;
  bool killwords = p.has(1) && truthy(*p.get(1));
  std::string end = p.has(2) ? soft_str(*p.get(2)) : "...";
  int64_t leeway = p.has(3) && !p.get(3)->is_none() ? require_int(*p.get(3), "truncate") : 5;
  auto cps = decode_utf8(soft_str(v));
  int64_t end_len = static_cast<int64_t>(count_code_points(end));
  if (length < end_len) throw_error("expected length >= " + std::to_string(end_len) + ", got " + std::to_string(length));
  if (leeway < 0) throw_error("expected leeway >= 0, got " + std::to_string(leeway));
  if (static_cast<int64_t>(cps.size()) <= length + leeway) return Value::string(soft_str(v));
  std::u32string head(cps.begin(), cps.begin() + (length - end_len));
  if (!killwords) {
    size_t sp = head.rfind(U' ');
    if (sp != std::u32string::npos) head.resize(sp);
  }
  in.charge(static_cast<int64_t>(head.size()));
  return Value::string(encode_utf8(head) + end);
}

Value f_unique(Interpreter& in, const Value& v, CallArgs& args) {
  Params p("unique", args, {"case_sensitive", "attribute"});
  KeyFn key{in, p.has(0) && truthy(*p.get(0)), p.get(1)};
  std::vector<Value> seen, out;
  for (const auto& item : in.iterate(v)) {
    Value k = key(item);
    bool dup = false;
    for (const auto& s : seen)
      if (py_equal(s, k)) {
        dup = true;
        break;
      }
    in.charge(static_cast<int64_t>(seen.size()) + 1);
    if (dup) continue;
    seen.push_back(k);
    out.push_back(item);
  }
  return Value::list(std::move(out));
}

Value f_wordcount(Interpreter&, const Value& v, CallArgs& args) {
  Params p("wordcount", args, {});
  int64_t words = 0;
  bool in_word = false;
  for (char32_t c : decode_utf8(soft_str(v))) {
    bool w = c == '_' || is_alnum(c);
    if (w && !in_word) ++words;
    in_word = w;
  }
  return Value::integer(words);
}

Value f_format(Interpreter& in, const Value& v, CallArgs& args) {
  if (!args.keyword.empty() && !args.positional.empty())
    throw_error("can't handle positional and keyword arguments at the same time");
  if (!args.keyword.empty()) {
    auto d = std::make_shared<DictObj>();
    for (const auto& [k, val] : args.keyword) d->set(Value::string(k), val);
    return Value::string(percent_format(in, soft_str(v), make_dict(d)));
  }
  return Value::string(percent_format(in, soft_str(v), Value::tuple(args.positional)));
}

Value f_striptags(Interpreter& in, const Value& v, CallArgs& args) {
  Params p("striptags", args, {});
  std::string s = soft_str(v), out;
  bool tag = false;
  for (char c : s) {
    if (c == '<') tag = true;
    else if (c == '>' && tag) tag = false;
    else if (!tag) out.push_back(c);
  }
  // Collapse whitespace as Jinja2 does (" ".join(text.split())).
  std::string collapsed;
  bool space = false;
  for (char32_t c : decode_utf8(out)) {
    if (py_isspace(c)) {
      space = !collapsed.empty();
      continue;
    }
    if (space) collapsed.push_back(' ');
    space = false;
    append_utf8(collapsed, c);
  }
  in.charge(static_cast<int64_t>(collapsed.size()));
  return Value::string(std::move(collapsed));
}

const std::unordered_map<std::string, FilterFn>& filters() {
  static const std::unordered_map<std::string, FilterFn> table = {
      {"abs", f_abs},         {"attr", f_attr},           {"batch", f_batch},
      {"capitalize", f_capitalize}, {"center", f_center}, {"count", f_length},
      {"d", f_default},       {"default", f_default},     {"dictsort", f_dictsort},
      {"e", f_escape},        {"escape", f_escape},       {"forceescape", f_escape},
      {"first", f_first},     {"float", f_float},         {"format", f_format},
      {"indent", f_indent},   {"int", f_int},             {"items", f_items},
      {"join", f_join},       {"last", f_last},           {"length", f_length},
      {"list", f_list},       {"lower", f_lower},         {"map", f_map},
      {"max", f_max},         {"min", f_min},             {"reject", f_reject},
      {"rejectattr", f_rejectattr}, {"replace", f_replace}, {"reverse", f_reverse},
      {"round", f_round},     {"safe", f_safe},           {"select", f_select},
      {"selectattr", f_selectattr}, {"sort", f_sort},     {"string", f_string},
      {"striptags", f_striptags}, {"sum", f_sum},         {"title", f_title},
      {"tojson", f_tojson},   {"trim", f_trim},           {"truncate", f_truncate},
      {"unique", f_unique},   {"upper", f_upper},         {"wordcount", f_wordcount},
  };
  return table;
}

// ---------------------------------------------------------------------------------------------------
// Tests

const Value& test_arg(const CallArgs& args, const char* test) {
  if (args.positional.empty()) {
    if (!args.keyword.empty()) return args.keyword[0].second;
    throw_error(std::string("test '") + test + "' needs an argument");
  }
  return args.positional[0];
}

bool t_defined(Interpreter&, const Value& v, CallArgs&) { return !v.is_undefined(); }
bool t_undefined(Interpreter&, const Value& v, CallArgs&) { return v.is_undefined(); }
bool t_none(Interpreter&, const Value& v, CallArgs&) { return v.is_none(); }
bool t_boolean(Interpreter&, const Value& v, CallArgs&) { return v.is_bool(); }
bool t_false(Interpreter&, const Value& v, CallArgs&) { return v.is_bool() && !v.b; }
bool t_true(Interpreter&, const Value& v, CallArgs&) { return v.is_bool() && v.b; }
bool t_integer(Interpreter&, const Value& v, CallArgs&) { return v.is_int(); }
bool t_float(Interpreter&, const Value& v, CallArgs&) { return v.is_float(); }
bool t_number(Interpreter&, const Value& v, CallArgs&) { return v.is_numeric(); }
bool t_string(Interpreter&, const Value& v, CallArgs&) { return v.is_string(); }
bool t_mapping(Interpreter&, const Value& v, CallArgs&) { return v.is_dict(); }
bool t_iterable(Interpreter&, const Value& v, CallArgs&) {
  return v.is_undefined() || v.is_string() || v.is_sequence() || v.is_dict();
}
bool t_sequence(Interpreter&, const Value& v, CallArgs&) {
  return v.is_undefined() || v.is_string() || v.is_sequence() || v.is_dict();
}
bool t_callable(Interpreter&, const Value& v, CallArgs&) {
  return v.kind == Kind::Callable || (v.kind == Kind::Loop && static_cast<const LoopObj&>(*v.obj).recursive);
}
bool t_escaped(Interpreter&, const Value&, CallArgs&) { return false; }
bool t_lower(Interpreter&, const Value& v, CallArgs&) {
  std::string s = soft_str(v);
  return s == lower_str(s) && s != upper_str(s);
}
bool t_upper(Interpreter&, const Value& v, CallArgs&) {
  std::string s = soft_str(v);
  return s == upper_str(s) && s != lower_str(s);
}
Value mod2(Interpreter& in, const Value& v) { return binary_op(in, ast::BinOp::Mod, v, Value::integer(2)); }
bool t_odd(Interpreter& in, const Value& v, CallArgs&) { return py_equal(mod2(in, v), Value::integer(1)); }
bool t_even(Interpreter& in, const Value& v, CallArgs&) { return py_equal(mod2(in, v), Value::integer(0)); }
bool t_divisibleby(Interpreter& in, const Value& v, CallArgs& a) {
  Value r = binary_op(in, ast::BinOp::Mod, v, test_arg(a, "divisibleby"));
  return py_equal(r, Value::integer(0));
}
bool t_eq(Interpreter&, const Value& v, CallArgs& a) { return py_equal(v, test_arg(a, "eq")); }
bool t_ne(Interpreter&, const Value& v, CallArgs& a) { return !py_equal(v, test_arg(a, "ne")); }
bool t_lt(Interpreter&, const Value& v, CallArgs& a) { return py_less(v, test_arg(a, "lt")); }
bool t_gt(Interpreter&, const Value& v, CallArgs& a) { return py_less(test_arg(a, "gt"), v); }
bool t_le(Interpreter&, const Value& v, CallArgs& a) { return !py_less(test_arg(a, "le"), v); }
bool t_ge(Interpreter&, const Value& v, CallArgs& a) { return !py_less(v, test_arg(a, "ge")); }
bool t_in(Interpreter&, const Value& v, CallArgs& a) { return contains(test_arg(a, "in"), v); }
bool t_sameas(Interpreter&, const Value& v, CallArgs& a) {
  const Value& o = test_arg(a, "sameas");
  if (v.kind != o.kind) return false;
  if (v.obj || o.obj) return v.obj == o.obj;
  return py_equal(v, o);
}
bool t_filter(Interpreter&, const Value& v, CallArgs&) { return v.is_string() && find_filter(v.s) != nullptr; }
bool t_test(Interpreter&, const Value& v, CallArgs&) { return v.is_string() && find_test(v.s) != nullptr; }

const std::unordered_map<std::string, TestFn>& tests() {
  static const std::unordered_map<std::string, TestFn> table = {
      {"boolean", t_boolean}, {"callable", t_callable}, {"defined", t_defined}, {"divisibleby", t_divisibleby},
      {"eq", t_eq}, {"equalto", t_eq}, {"==", t_eq}, {"escaped", t_escaped}, {"even", t_even},
      {"false", t_false}, {"filter", t_filter}, {"float", t_float}, {"ge", t_ge}, {">=", t_ge},
      {"gt", t_gt}, {"greaterthan", t_gt}, {">", t_gt}, {"in", t_in}, {"integer", t_integer},
      {"iterable", t_iterable}, {"le", t_le}, {"<=", t_le}, {"lower", t_lower}, {"lt", t_lt},
      {"lessthan", t_lt}, {"<", t_lt}, {"mapping", t_mapping}, {"ne", t_ne}, {"!=", t_ne},
      {"none", t_none}, {"number", t_number}, {"odd", t_odd}, {"sameas", t_sameas},
      {"sequence", t_sequence}, {"string", t_string}, {"test", t_test}, {"true", t_true},
      {"undefined", t_undefined}, {"upper", t_upper},
  };
  return table;
}

// ---------------------------------------------------------------------------------------------------
// Globals

constexpr int64_t kMaxRange = 100000;  // Jinja2's sandbox MAX_RANGE

Value g_range(Interpreter& in, CallArgs& args) {
  if (!args.keyword.empty()) throw_error("range() takes no keyword arguments");
  const auto& a = args.positional;
  if (a.empty() || a.size() > 3) throw_error("range expected 1 to 3 arguments, got " + std::to_string(a.size()));
  int64_t start = 0, stop, step = 1;
  if (a.size() == 1) {
    stop = require_int(a[0], "range");
  } else {
    start = require_int(a[0], "range");
    stop = require_int(a[1], "range");
    if (a.size() == 3) step = require_int(a[2], "range");
  }
  if (step == 0) throw_error("range() arg 3 must not be zero");
  // Count without overflow: use long double for the length estimate.
  long double span = static_cast<long double>(stop) - static_cast<long double>(start);
  long double count = step > 0 ? (span > 0 ? std::ceil(span / step) : 0) : (span < 0 ? std::ceil(span / step) : 0);
  if (count > kMaxRange)
    throw_error("Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
  std::vector<Value> out;
  for (int64_t k = 0; k < static_cast<int64_t>(count); ++k) out.push_back(Value::integer(start + k * step));
  in.charge_items(out.size());
  return Value::list(std::move(out));
}

// dict(mapping_or_pairs, **kwargs) / namespace(...): the attributes as a DictObj.
void fill_dict(Interpreter& in, DictObj& d, CallArgs& args, const char* fn) {
  if (args.positional.size() > 1)
    throw_error(std::string(fn) + " expected at most 1 argument, got " + std::to_string(args.positional.size()));
  if (!args.positional.empty()) {
    const Value& src = args.positional[0];
    if (src.kind == Kind::Dict) {
      for (const auto& [k, v] : src.dict().entries) d.set(k, v);
    } else {
      for (const auto& pair : in.iterate(src)) {
        auto kv = in.iterate(pair);
        if (kv.size() != 2) throw_error("dictionary update sequence element has length " + std::to_string(kv.size()) + "; 2 is required");
        d.set(kv[0], kv[1]);
      }
    }
  }
  for (const auto& [k, v] : args.keyword) d.set(Value::string(k), v);
  in.charge_items(d.entries.size());
}

Value g_dict(Interpreter& in, CallArgs& args) {
  auto d = std::make_shared<DictObj>();
  fill_dict(in, *d, args, "dict");
  return make_dict(d);
}

Value g_namespace(Interpreter& in, CallArgs& args) {
  Value ns = in.new_namespace();
  fill_dict(in, ns.ns().attrs, args, "namespace");
  return ns;
}

Value g_raise_exception(Interpreter&, CallArgs& args) {
  Params p("raise_exception", args, {"message"});
  throw RaisedException{p.has(0) ? soft_str(*p.get(0)) : std::string()};
}

Value g_strftime_now(Interpreter& in, CallArgs& args) {
  Params p("strftime_now", args, {"format"});
  if (!p.has(0) || !p.get(0)->is_string()) throw_error("strftime_now() argument must be str");
  const std::string& fmt = p.get(0)->s;
  const RenderOptions& opt = in.options();
  if (opt.strftime_now) return Value::string(opt.strftime_now(fmt));
  std::tm tm{};
  if (opt.now_epoch_seconds) {
    std::time_t t = static_cast<std::time_t>(*opt.now_epoch_seconds);
    gmtime_r(&t, &tm);
  } else {
    std::time_t t = std::time(nullptr);
    localtime_r(&t, &tm);
  }
  if (fmt.empty()) return Value::string("");
  if (fmt.size() > 4096) throw_error("strftime_now() format too long");
  std::string buf(fmt.size() * 64 + 64, '\0');
  size_t n = std::strftime(buf.data(), buf.size(), fmt.c_str(), &tm);
  buf.resize(n);
  return Value::string(std::move(buf));
}

Value g_joiner(Interpreter&, CallArgs& args) {
  Params p("joiner", args, {"sep"});
  std::string sep = p.has(0) ? soft_str(*p.get(0)) : ", ";
  auto used = std::make_shared<bool>(false);
  return make_function("joiner", [sep, used](Interpreter&, CallArgs&) {
    if (!*used) {
      *used = true;
      return Value::string("");
    }
    return Value::string(sep);
  });
}

}  // namespace

FilterFn find_filter(const std::string& name) {
  auto it = filters().find(name);
  return it == filters().end() ? nullptr : it->second;
}

TestFn find_test(const std::string& name) {
  auto it = tests().find(name);
  return it == tests().end() ? nullptr : it->second;
}

int test_arity(const std::string& name) {
  static const char* const one_argument[] = {"divisibleby", "eq", "equalto", "==", "ne", "!=", "lt", "<", "le", "<=",
                                             "gt", ">", "ge", ">=", "greaterthan", "lessthan", "in", "sameas"};
  for (const char* n : one_argument)
    if (name == n) return 1;
  return 0;
}

void install_globals(Scope& scope) {
  scope.vars["range"] = make_function("range", g_range);
  scope.vars["dict"] = make_function("dict", g_dict);
  scope.vars["namespace"] = make_function("namespace", g_namespace);
  scope.vars["raise_exception"] = make_function("raise_exception", g_raise_exception);
  scope.vars["strftime_now"] = make_function("strftime_now", g_strftime_now);
  scope.vars["joiner"] = make_function("joiner", g_joiner);
}

}  // namespace moe::tmpl::detail
