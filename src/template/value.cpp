// value.cpp: Python semantics of template values (see value.h): text forms, equality and ordering,
// json.dumps, UTF-8 code point helpers and Unicode case mapping (through the C.UTF-8 locale, which has
// the full Unicode tables, with an ASCII fallback where that locale is missing).
#include "template/value.h"

#include <clocale>
#include <cmath>
#include <cstdio>
#include <cwctype>
#include <charconv>
#include <locale.h>
#include <algorithm>

namespace moe::tmpl::detail {

void throw_error(std::string message) { throw TemplateError{std::move(message), 0}; }

// ---------------------------------------------------------------------------------------------------
// Construction

Value Value::undefined(std::string hint) {
  Value v;
  v.kind = Kind::Undefined;
  v.s = std::move(hint);
  return v;
}
Value Value::none() {
  Value v;
  v.kind = Kind::None;
  return v;
}
Value Value::boolean(bool x) {
  Value v;
  v.kind = Kind::Bool;
  v.b = x;
  return v;
}
Value Value::integer(int64_t x) {
  Value v;
  v.kind = Kind::Int;
  v.i = x;
  return v;
}
Value Value::number(double x) {
  Value v;
  v.kind = Kind::Float;
  v.f = x;
  return v;
}
Value Value::string(std::string x) {
  Value v;
  v.kind = Kind::String;
  v.s = std::move(x);
  return v;
}

int depth_of(const Value& v) {
  if (v.kind == Kind::List || v.kind == Kind::Tuple) return static_cast<const ListObj&>(*v.obj).depth;
  if (v.kind == Kind::Dict) return static_cast<const DictObj&>(*v.obj).depth;
  return 0;
}

static Value make_list(Kind kind, std::vector<Value> items) {
  auto obj = std::make_shared<ListObj>();
  int depth = 0;
  for (const auto& it : items) depth = std::max(depth, depth_of(it));
  if (depth + 1 > kMaxValueDepth) throw_error("value nested too deeply (more than 256 levels)");
  obj->depth = depth + 1;
  obj->items = std::move(items);
  Value v;
  v.kind = kind;
  v.obj = std::move(obj);
  return v;
}
Value Value::list(std::vector<Value> items) { return make_list(Kind::List, std::move(items)); }
Value Value::tuple(std::vector<Value> items) { return make_list(Kind::Tuple, std::move(items)); }

const std::vector<Value>& Value::items() const { return static_cast<const ListObj&>(*obj).items; }
DictObj& Value::dict() const { return static_cast<DictObj&>(*obj); }
NamespaceObj& Value::ns() const { return static_cast<NamespaceObj&>(*obj); }

const Value* DictObj::find(const std::string& key) const {
  auto it = string_index.find(key);
  return it == string_index.end() ? nullptr : &entries[it->second].second;
}

const Value* DictObj::find(const Value& key) const {
  if (key.kind == Kind::String) return find(key.s);
  for (const auto& [k, v] : entries)
    if (k.kind != Kind::String && py_equal(k, key)) return &v;
  return nullptr;
}

void DictObj::set(Value key, Value value) {
  depth = std::max(depth, depth_of(value) + 1);
  if (depth > kMaxValueDepth) throw_error("value nested too deeply (more than 256 levels)");
  if (key.kind == Kind::String) {
    auto it = string_index.find(key.s);
    if (it != string_index.end()) {
      entries[it->second].second = std::move(value);
      return;
    }
    string_index.emplace(key.s, entries.size());
  } else {
    for (auto& [k, v] : entries)
      if (k.kind != Kind::String && py_equal(k, key)) {
        v = std::move(value);
        return;
      }
  }
  entries.emplace_back(std::move(key), std::move(value));
}

// ---------------------------------------------------------------------------------------------------
// UTF-8 and Unicode

char32_t decode_one(std::string_view s, size_t i, size_t* len) {
  unsigned char c = static_cast<unsigned char>(s[i]);
  size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
  if (n <= 1 || i + n > s.size()) {
    *len = 1;  // ASCII, or an invalid byte that stands for itself
    return c;
  }
  char32_t cp = n == 2 ? (c & 0x1f) : n == 3 ? (c & 0x0f) : (c & 0x07);
  for (size_t k = 1; k < n; ++k) {
    unsigned char cc = static_cast<unsigned char>(s[i + k]);
    if ((cc >> 6) != 2) {
      *len = 1;
      return c;
    }
    cp = (cp << 6) | (cc & 0x3f);
  }
  *len = n;
  return cp;
}

std::vector<char32_t> decode_utf8(std::string_view s) {
  std::vector<char32_t> out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    size_t len;
    out.push_back(decode_one(s, i, &len));
    i += len;
  }
  return out;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xc0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xe0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else {
    out.push_back(static_cast<char>(0xf0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  }
}

std::string encode_utf8(const std::u32string_view cps) {
  std::string out;
  out.reserve(cps.size());
  for (char32_t c : cps) append_utf8(out, c);
  return out;
}

bool is_ascii(std::string_view s) {
  for (char c : s)
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  return true;
}

size_t count_code_points(std::string_view s) {
  if (is_ascii(s)) return s.size();
  return decode_utf8(s).size();
}

bool py_isspace(char32_t c) {
  return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f ||
         c == 0x3000;
}

static locale_t utf8_locale() {
  static locale_t loc = [] {
    locale_t l = newlocale(LC_CTYPE_MASK, "C.UTF-8", static_cast<locale_t>(nullptr));
    if (!l) l = newlocale(LC_CTYPE_MASK, "C.utf8", static_cast<locale_t>(nullptr));
    return l;
  }();
  return loc;
}

char32_t to_upper(char32_t c) {
  if (c < 0x80) return (c >= 'a' && c <= 'z') ? c - 32 : c;
  if (locale_t l = utf8_locale()) return static_cast<char32_t>(towupper_l(static_cast<wint_t>(c), l));
  return c;
}
char32_t to_lower(char32_t c) {
  if (c < 0x80) return (c >= 'A' && c <= 'Z') ? c + 32 : c;
  if (locale_t l = utf8_locale()) return static_cast<char32_t>(towlower_l(static_cast<wint_t>(c), l));
  return c;
}
namespace {
struct SpecialCase {
  char32_t c;
  const char32_t* upper;
  const char32_t* title;
};
// The unconditional multi-character mappings of Unicode's SpecialCasing.txt that templates can meet.
const SpecialCase kSpecialCases[] = {
    {0x00df, U"SS", U"Ss"},   {0x0149, U"\u02bcN", U"\u02bcN"}, {0xfb00, U"FF", U"Ff"}, {0xfb01, U"FI", U"Fi"},
    {0xfb02, U"FL", U"Fl"},   {0xfb03, U"FFI", U"Ffi"},        {0xfb04, U"FFL", U"Ffl"}, {0xfb05, U"ST", U"St"},
    {0xfb06, U"ST", U"St"},
};
const SpecialCase* special_case(char32_t c) {
  if (c < 0xdf) return nullptr;
  for (const auto& sc : kSpecialCases)
    if (sc.c == c) return &sc;
  return nullptr;
}
}  // namespace

void append_upper(std::u32string& out, char32_t c) {
  if (const SpecialCase* sc = special_case(c)) out += sc->upper;
  else out.push_back(to_upper(c));
}
void append_title(std::u32string& out, char32_t c) {
  if (const SpecialCase* sc = special_case(c)) out += sc->title;
  else out.push_back(to_upper(c));
}
void append_lower(std::u32string& out, char32_t c) {
  if (c == 0x0130) out += U"i\u0307";
  else out.push_back(to_lower(c));
}

bool is_alpha(char32_t c) {
  if (c < 0x80) return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
  if (locale_t l = utf8_locale()) return iswalpha_l(static_cast<wint_t>(c), l);
  return false;
}
bool is_digit(char32_t c) {
  if (c < 0x80) return c >= '0' && c <= '9';
  if (locale_t l = utf8_locale()) return iswdigit_l(static_cast<wint_t>(c), l);
  return false;
}
bool is_alnum(char32_t c) { return is_alpha(c) || is_digit(c); }

// ---------------------------------------------------------------------------------------------------
// Python text forms

bool truthy(const Value& v) {
  switch (v.kind) {
    case Kind::Undefined:
    case Kind::None: return false;
    case Kind::Bool: return v.b;
    case Kind::Int: return v.i != 0;
    case Kind::Float: return v.f != 0.0;
    case Kind::String: return !v.s.empty();
    case Kind::List:
    case Kind::Tuple: return !v.items().empty();
    case Kind::Dict: return !v.dict().entries.empty();
    default: return true;
  }
}

std::string type_name(const Value& v) {
  switch (v.kind) {
    case Kind::Undefined: return "Undefined";
    case Kind::None: return "NoneType";
    case Kind::Bool: return "bool";
    case Kind::Int: return "int";
    case Kind::Float: return "float";
    case Kind::String: return "str";
    case Kind::List: return "list";
    case Kind::Tuple: return "tuple";
    case Kind::Dict: return "dict";
    case Kind::Namespace: return "Namespace";
    case Kind::Callable: {
      auto& c = static_cast<const CallableObj&>(*v.obj);
      return c.type == CallableObj::Type::Macro ? "Macro"
             : c.type == CallableObj::Type::Method ? "builtin_function_or_method"
                                                    : "function";
    }
    case Kind::Loop: return "LoopContext";
  }
  return "object";
}

std::string object_type_repr(const Value& v) {
  if (v.kind == Kind::None) return "None";
  return type_name(v) + " object";
}

std::string format_float(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d < 0 ? "-inf" : "inf";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, std::fabs(d), std::chars_format::scientific);
  std::string sci(buf, res.ptr);
  size_t epos = sci.find('e');
  std::string mant = sci.substr(0, epos);
  int exp = std::stoi(sci.substr(epos + 1));
  std::string digits;
  for (char c : mant)
    if (c != '.') digits.push_back(c);
  std::string out = std::signbit(d) ? "-" : "";
  if (exp >= -5 + 1 && exp < 16) {
    if (exp >= 0) {
      std::string ip = digits.substr(0, std::min<size_t>(digits.size(), exp + 1));
      while (ip.size() < static_cast<size_t>(exp + 1)) ip.push_back('0');
      std::string fp = digits.size() > static_cast<size_t>(exp + 1) ? digits.substr(exp + 1) : "0";
      out += ip + "." + fp;
    } else {
      out += "0." + std::string(static_cast<size_t>(-exp - 1), '0') + digits;
    }
  } else {
    out += digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    char eb[16];
    std::snprintf(eb, sizeof eb, "e%c%02d", exp < 0 ? '-' : '+', std::abs(exp));
    out += eb;
  }
  return out;
}

static bool py_printable(char32_t c) {
  if (c < 0x20 || (c >= 0x7f && c <= 0xa0) || c == 0xad) return false;
  if (c == 0x1680 || (c >= 0x2000 && c <= 0x200f) || (c >= 0x2028 && c <= 0x202f) ||
      (c >= 0x205f && c <= 0x206f) || c == 0x3000 || c == 0xfeff || (c >= 0xd800 && c <= 0xf8ff) ||
      (c >= 0xfff9 && c <= 0xfffb) || c == 0xfffe || c == 0xffff || c > 0x10ffff || c >= 0xf0000)
    return false;
  return true;
}

std::string repr_string(std::string_view s) {
  bool has_single = s.find('\'') != std::string_view::npos;
  bool has_double = s.find('"') != std::string_view::npos;
  char quote = (has_single && !has_double) ? '"' : '\'';
  std::string out(1, quote);
  for (char32_t c : decode_utf8(s)) {
    if (c == static_cast<char32_t>(quote) || c == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(c));
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (!py_printable(c)) {
      char buf[16];
      if (c < 0x100)
        std::snprintf(buf, sizeof buf, "\\x%02x", static_cast<unsigned>(c));
      else if (c < 0x10000)
        std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
      else
        std::snprintf(buf, sizeof buf, "\\U%08x", static_cast<unsigned>(c));
      out += buf;
    } else {
      append_utf8(out, c);
    }
  }
  out.push_back(quote);
  return out;
}

static void repr_into(std::string& out, const Value& v, int depth);

static void str_into(std::string& out, const Value& v, int depth) {
  if (depth > kMaxValueDepth) throw_error("value nested too deeply to print");
  switch (v.kind) {
    case Kind::Undefined: return;
    case Kind::None: out += "None"; return;
    case Kind::Bool: out += v.b ? "True" : "False"; return;
    case Kind::Int: out += std::to_string(v.i); return;
    case Kind::Float: out += format_float(v.f); return;
    case Kind::String: out += v.s; return;
    case Kind::List:
    case Kind::Tuple: {
      bool tuple = v.kind == Kind::Tuple;
      out.push_back(tuple ? '(' : '[');
      const auto& items = v.items();
      for (size_t k = 0; k < items.size(); ++k) {
        if (k) out += ", ";
        repr_into(out, items[k], depth + 1);
      }
      if (tuple && items.size() == 1) out.push_back(',');
      out.push_back(tuple ? ')' : ']');
      return;
    }
    case Kind::Dict: {
      out.push_back('{');
      bool first = true;
      for (const auto& [k, val] : v.dict().entries) {
        if (!first) out += ", ";
        first = false;
        repr_into(out, k, depth + 1);
        out += ": ";
        repr_into(out, val, depth + 1);
      }
      out.push_back('}');
      return;
    }
    case Kind::Namespace: {
      out += "<Namespace {";
      bool first = true;
      for (const auto& [k, val] : v.ns().attrs.entries) {
        if (!first) out += ", ";
        first = false;
        repr_into(out, k, depth + 1);
        out += ": ";
        repr_into(out, val, depth + 1);
      }
      out += "}>";
      return;
    }
    case Kind::Callable: {
      auto& c = static_cast<const CallableObj&>(*v.obj);
      if (c.type == CallableObj::Type::Macro)
        out += "<Macro " + repr_string(c.name) + ">";
      else if (c.type == CallableObj::Type::Method)
        out += "<built-in method " + c.name + " of " + c.owner + " object>";
      else
        out += "<function " + c.name + ">";
      return;
    }
    case Kind::Loop: out += "<LoopContext>"; return;
  }
}

static void repr_into(std::string& out, const Value& v, int depth) {
  if (v.kind == Kind::String)
    out += repr_string(v.s);
  else if (v.kind == Kind::Undefined)
    out += "Undefined";
  else
    str_into(out, v, depth);
}

std::string to_str(const Value& v) {
  if (v.kind == Kind::String) return v.s;
  std::string out;
  str_into(out, v, 0);
  return out;
}

std::string repr(const Value& v) {
  std::string out;
  repr_into(out, v, 0);
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Comparison

bool py_equal(const Value& a, const Value& b, int depth) {
  if (depth > kMaxValueDepth) throw_error("values nested too deeply to compare");
  if (a.is_numeric() && b.is_numeric()) {
    if (a.kind == Kind::Float || b.kind == Kind::Float) return a.as_double() == b.as_double();
    return a.as_int() == b.as_int();
  }
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case Kind::Undefined:
    case Kind::None: return true;
    case Kind::String: return a.s == b.s;
    case Kind::List:
    case Kind::Tuple: {
      const auto& x = a.items();
      const auto& y = b.items();
      if (x.size() != y.size()) return false;
      for (size_t k = 0; k < x.size(); ++k)
        if (!py_equal(x[k], y[k], depth + 1)) return false;
      return true;
    }
    case Kind::Dict: {
      const auto& x = a.dict();
      const auto& y = b.dict();
      if (x.entries.size() != y.entries.size()) return false;
      for (const auto& [k, v] : x.entries) {
        const Value* other = y.find(k);
        if (!other || !py_equal(v, *other, depth + 1)) return false;
      }
      return true;
    }
    default: return a.obj == b.obj;
  }
}

bool py_less(const Value& a, const Value& b, int depth) {
  if (depth > kMaxValueDepth) throw_error("values nested too deeply to compare");
  if (a.is_numeric() && b.is_numeric()) {
    if (a.kind == Kind::Float || b.kind == Kind::Float) return a.as_double() < b.as_double();
    return a.as_int() < b.as_int();
  }
  if (a.kind == Kind::String && b.kind == Kind::String) return a.s < b.s;  // UTF-8 order = code points
  if (a.kind == b.kind && (a.kind == Kind::List || a.kind == Kind::Tuple)) {
    const auto& x = a.items();
    const auto& y = b.items();
    for (size_t k = 0; k < x.size() && k < y.size(); ++k) {
      if (py_equal(x[k], y[k], depth + 1)) continue;
      return py_less(x[k], y[k], depth + 1);
    }
    return x.size() < y.size();
  }
  if (a.is_undefined() || b.is_undefined())
    throw_error(a.is_undefined() && !a.s.empty() ? a.s : !b.s.empty() ? b.s : "undefined value compared");
  throw_error("'<' not supported between instances of '" + type_name(a) + "' and '" + type_name(b) + "'");
}

// ---------------------------------------------------------------------------------------------------
// JSON

static void json_string(std::string& out, std::string_view s, bool ensure_ascii) {
  out.push_back('"');
  auto escape_cp = [&](char32_t c) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
    out += buf;
  };
  auto one = [&](char32_t c) {
    switch (c) {
      case '"': out += "\\\""; return;
      case '\\': out += "\\\\"; return;
      case '\n': out += "\\n"; return;
      case '\r': out += "\\r"; return;
      case '\t': out += "\\t"; return;
      case '\b': out += "\\b"; return;
      case '\f': out += "\\f"; return;
      default: break;
    }
    if (c < 0x20) {
      escape_cp(c);
    } else if (ensure_ascii && c >= 0x7f) {
      if (c >= 0x10000) {
        char32_t v = c - 0x10000;
        escape_cp(0xd800 + (v >> 10));
        escape_cp(0xdc00 + (v & 0x3ff));
      } else {
        escape_cp(c);
      }
    } else {
      append_utf8(out, c);
    }
  };
  if (!ensure_ascii && is_ascii(s)) {
    for (char c : s) one(static_cast<unsigned char>(c));
  } else {
    for (char32_t c : decode_utf8(s)) one(c);
  }
  out.push_back('"');
}

static std::string json_float(double d) {
  if (std::isnan(d)) return "NaN";
  if (std::isinf(d)) return d < 0 ? "-Infinity" : "Infinity";
  return format_float(d);
}

static void json_into(std::string& out, const Value& v, const JsonStyle& st, int level) {
  if (level > kMaxValueDepth) throw_error("value nested too deeply for tojson");
  auto newline = [&](int lvl) {
    out.push_back('\n');
    for (int k = 0; k < lvl; ++k) out += *st.indent;
  };
  switch (v.kind) {
    case Kind::None: out += "null"; return;
    case Kind::Bool: out += v.b ? "true" : "false"; return;
    case Kind::Int: out += std::to_string(v.i); return;
    case Kind::Float: out += json_float(v.f); return;
    case Kind::String: json_string(out, v.s, st.ensure_ascii); return;
    case Kind::List:
    case Kind::Tuple: {
      const auto& items = v.items();
      if (items.empty()) {
        out += "[]";
        return;
      }
      out.push_back('[');
      for (size_t k = 0; k < items.size(); ++k) {
        if (k) out += st.item_separator;
        if (st.indent) newline(level + 1);
        json_into(out, items[k], st, level + 1);
      }
      if (st.indent) newline(level);
      out.push_back(']');
      return;
    }
    case Kind::Dict: {
      const auto& d = v.dict();
      if (d.entries.empty()) {
        out += "{}";
        return;
      }
      // Keys become strings as json.dumps converts them; sort_keys orders by the original keys.
      std::vector<std::pair<std::string, const Value*>> entries;
      std::vector<const std::pair<Value, Value>*> order;
      for (const auto& e : d.entries) order.push_back(&e);
      if (st.sort_keys)
        std::stable_sort(order.begin(), order.end(),
                         [](const auto* x, const auto* y) { return py_less(x->first, y->first); });
      out.push_back('{');
      bool first = true;
      for (const auto* e : order) {
        const Value& k = e->first;
        std::string key;
        switch (k.kind) {
          case Kind::String: key = k.s; break;
          case Kind::Bool: key = k.b ? "true" : "false"; break;
          case Kind::None: key = "null"; break;
          case Kind::Int: key = std::to_string(k.i); break;
          case Kind::Float: key = json_float(k.f); break;
          default: throw_error("keys must be str, int, float, bool or None, not " + type_name(k));
        }
        if (!first) out += st.item_separator;
        first = false;
        if (st.indent) newline(level + 1);
        json_string(out, key, st.ensure_ascii);
        out += st.key_separator;
        json_into(out, e->second, st, level + 1);
      }
      if (st.indent) newline(level);
      out.push_back('}');
      return;
    }
    default: throw_error("Object of type " + type_name(v) + " is not JSON serializable");
  }
}

std::string to_json(const Value& v, const JsonStyle& style) {
  std::string out;
  json_into(out, v, style, 0);
  return out;
}

Value from_json(const nlohmann::ordered_json& j, int depth) {
  if (depth > kMaxValueDepth) throw_error("JSON input nested too deeply (more than 256 levels)");
  switch (j.type()) {
    case nlohmann::json::value_t::null: return Value::none();
    case nlohmann::json::value_t::boolean: return Value::boolean(j.get<bool>());
    case nlohmann::json::value_t::number_integer: return Value::integer(j.get<int64_t>());
    case nlohmann::json::value_t::number_unsigned: {
      uint64_t u = j.get<uint64_t>();
      if (u <= static_cast<uint64_t>(INT64_MAX)) return Value::integer(static_cast<int64_t>(u));
      return Value::number(static_cast<double>(u));
    }
    case nlohmann::json::value_t::number_float: return Value::number(j.get<double>());
    case nlohmann::json::value_t::string: return Value::string(j.get<std::string>());
    case nlohmann::json::value_t::array: {
      std::vector<Value> items;
      items.reserve(j.size());
      for (const auto& e : j) items.push_back(from_json(e, depth + 1));
      return Value::list(std::move(items));
    }
    case nlohmann::json::value_t::object: {
      auto d = std::make_shared<DictObj>();
      for (auto it = j.begin(); it != j.end(); ++it) d->set(Value::string(it.key()), from_json(it.value(), depth + 1));
      Value v;
      v.kind = Kind::Dict;
      v.obj = std::move(d);
      return v;
    }
    default: throw_error("unsupported JSON value (binary) in template input");
  }
}

}  // namespace moe::tmpl::detail
