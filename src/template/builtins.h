// builtins.h: the names a template can use besides its variables: Jinja2's filters and tests, the
// global functions (range, dict, namespace, HF's raise_exception and strftime_now), and the methods of
// str, dict and list values that Jinja2's immutable sandbox allows (the mutating ones are refused,
// as HF's ImmutableSandboxedEnvironment refuses them).
#pragma once
#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

#include "template/interpreter.h"
#include "template/value.h"

namespace moe::tmpl::detail {

using FilterFn = Value (*)(Interpreter&, const Value& input, CallArgs& args);
using TestFn = bool (*)(Interpreter&, const Value& value, CallArgs& args);

FilterFn find_filter(const std::string& name);
TestFn find_test(const std::string& name);
int test_arity(const std::string& name);  // arguments a test takes besides its subject (0 or 1)

// The bound method `obj.name` of a str, dict, list or tuple; nullopt when the type has no such method.
// A method the sandbox refuses (list.append, dict.update, ...) gives an Undefined whose use raises
// "access to attribute ... is unsafe".
std::optional<Value> find_method(const Value& obj, const std::string& name);

// range, dict, namespace, raise_exception, strftime_now, joiner, cycler.
void install_globals(Scope& scope);

// Python's `format % args` (printf-style), as the `%` operator and the `format` filter use it.
std::string percent_format(Interpreter& in, const std::string& format, const Value& args);

// Binds a call's arguments to parameter names as Python does for a builtin function.
class Params {
 public:
  Params(const char* function, const CallArgs& args, std::initializer_list<const char*> names);
  const Value* get(size_t index) const { return bound_[index]; }
  bool has(size_t index) const { return bound_[index] != nullptr; }
  Value value_or(size_t index, Value fallback) const { return bound_[index] ? *bound_[index] : fallback; }

 private:
  std::vector<const Value*> bound_;
};

// Helpers shared by the builtin files.
int64_t require_int(const Value& v, const char* what);
std::string soft_str(const Value& v);  // str(), with Undefined as ""

}  // namespace moe::tmpl::detail
