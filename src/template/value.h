// value.h: the interpreter's value model, with Python's semantics because Jinja2 evaluates templates as
// Python objects: truthiness, str() and repr() text (`{{ [1,'a'] }}` prints `[1, 'a']`), ==, <, and
// json.dumps for HF's `tojson`. Containers are shared (Python references); the sandbox makes lists and
// dicts immutable, so sharing is only observable through namespace() objects, which are mutable.
// Strings are UTF-8 bytes; length, indexing and slicing count code points as Python does.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace moe::tmpl::detail {

// Errors raised while evaluating; the interpreter adds the template line.
struct TemplateError {
  std::string message;
  int line = 0;  // 0: not yet known
};
// raise_exception(msg): propagated verbatim, never decorated.
struct RaisedException {
  std::string message;
};
[[noreturn]] void throw_error(std::string message);

enum class Kind : uint8_t { Undefined, None, Bool, Int, Float, String, List, Tuple, Dict, Namespace, Callable, Loop };

struct Object {
  virtual ~Object() = default;
};

struct Value {
  Kind kind = Kind::Undefined;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string s;                // String; for Undefined, the message an operation on it raises
  std::shared_ptr<Object> obj;  // List/Tuple (ListObj), Dict (DictObj), Namespace, Callable, Loop

  Value() = default;
  static Value undefined(std::string hint = {});
  static Value none();
  static Value boolean(bool v);
  static Value integer(int64_t v);
  static Value number(double v);
  static Value string(std::string v);
  static Value list(std::vector<Value> items);
  static Value tuple(std::vector<Value> items);

  bool is_undefined() const { return kind == Kind::Undefined; }
  bool is_none() const { return kind == Kind::None; }
  bool is_string() const { return kind == Kind::String; }
  bool is_int() const { return kind == Kind::Int; }    // not bool
  bool is_float() const { return kind == Kind::Float; }
  bool is_bool() const { return kind == Kind::Bool; }
  bool is_numeric() const { return kind == Kind::Int || kind == Kind::Float || kind == Kind::Bool; }
  bool is_sequence() const { return kind == Kind::List || kind == Kind::Tuple; }
  bool is_dict() const { return kind == Kind::Dict; }
  int64_t as_int() const { return kind == Kind::Bool ? (b ? 1 : 0) : i; }  // Int or Bool
  double as_double() const { return kind == Kind::Float ? f : static_cast<double>(as_int()); }

  const std::vector<Value>& items() const;  // List/Tuple
  struct DictObj& dict() const;
  struct NamespaceObj& ns() const;
};

struct ListObj : Object {
  std::vector<Value> items;
  int depth = 1;  // nesting depth (bounded, so destruction and printing never recurse unboundedly)
};

// An insertion-ordered dict (Python 3.7+ semantics). String keys are indexed.
struct DictObj : Object {
  std::vector<std::pair<Value, Value>> entries;
  std::unordered_map<std::string, size_t> string_index;
  int depth = 1;
  const Value* find(const Value& key) const;
  const Value* find(const std::string& key) const;
  void set(Value key, Value value);  // replaces in place when present
};

struct NamespaceObj : Object {
  DictObj attrs;
};

class Interpreter;
struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
};

// Builtin functions, bound methods (`s.upper`) and macros all call through `fn`.
struct CallableObj : Object {
  enum class Type : uint8_t { Function, Method, Macro };
  Type type = Type::Function;
  std::string name;
  std::string owner;  // for a method: the type name of the object it is bound to
  std::function<Value(Interpreter&, CallArgs&)> fn;
};

// Limits nested containers so that printing, comparing and freeing them stays shallow.
inline constexpr int kMaxValueDepth = 256;
int depth_of(const Value& v);

// UTF-8 helpers (invalid bytes count as one code point each, never throw).
std::vector<char32_t> decode_utf8(std::string_view s);
// The code point at byte i and its length in bytes (an invalid byte is one code point of its value).
char32_t decode_one(std::string_view s, size_t i, size_t* len);
std::string encode_utf8(const std::u32string_view cps);
void append_utf8(std::string& out, char32_t cp);
size_t count_code_points(std::string_view s);
bool is_ascii(std::string_view s);
bool py_isspace(char32_t c);
char32_t to_upper(char32_t c);
char32_t to_lower(char32_t c);
// Python's full case mappings (str.upper/lower/title), where one character can become several
// ('ß'.upper() == 'SS').
void append_upper(std::u32string& out, char32_t c);
void append_lower(std::u32string& out, char32_t c);
void append_title(std::u32string& out, char32_t c);
bool is_alpha(char32_t c);
bool is_digit(char32_t c);
bool is_alnum(char32_t c);

// Python semantics.
bool truthy(const Value& v);
std::string type_name(const Value& v);         // 'str', 'int', 'list', ...
std::string object_type_repr(const Value& v);  // Jinja's "'dict object'", "None", ...
std::string to_str(const Value& v);            // str(v)
std::string repr(const Value& v);              // repr(v)
std::string repr_string(std::string_view s);   // repr of a str
std::string format_float(double d);            // repr of a float: 1.0, 1e-05, 1e+16, inf
bool py_equal(const Value& a, const Value& b, int depth = 0);
// Python's a < b; throws TemplateError for unorderable types.
bool py_less(const Value& a, const Value& b, int depth = 0);

// json.dumps(value, ensure_ascii, indent, separators, sort_keys), as HF's tojson filter calls it.
struct JsonStyle {
  bool ensure_ascii = false;
  std::optional<std::string> indent;  // nullopt: single line
  std::string item_separator = ", ";
  std::string key_separator = ": ";
  bool sort_keys = false;
};
std::string to_json(const Value& v, const JsonStyle& style);

// From/to JSON data (depth-limited; keys in their JSON order).
Value from_json(const nlohmann::ordered_json& j, int depth = 0);

}  // namespace moe::tmpl::detail
