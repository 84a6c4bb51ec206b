// interpreter.h: evaluates a parsed template with Jinja2's semantics: scopes (a for-loop iteration and a
// macro call get their own; if-blocks do not, which is why templates use namespace()), the loop
// object, macros and call blocks, attribute and item access as Jinja2's sandbox does it (getattr first
// for `.x`, item first for `[x]`, missing things become Undefined, unsafe methods are refused), and the
// render limits: loop iterations, macro depth, evaluation depth, output bytes and expression work.
#pragma once
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "template/ast.h"
#include "template/chat_template.h"
#include "template/value.h"

namespace moe::tmpl::detail {

struct Scope {
  std::unordered_map<std::string, Value> vars;
  std::shared_ptr<Scope> parent;
  const Value* find(const std::string& name) const {
    for (const Scope* s = this; s; s = s->parent.get()) {
      auto it = s->vars.find(name);
      if (it != s->vars.end()) return &it->second;
    }
    return nullptr;
  }
};
using ScopePtr = std::shared_ptr<Scope>;

// The state of one for-loop, behind the `loop` variable.
struct LoopObj : Object {
  std::shared_ptr<const std::vector<Value>> items;
  int64_t index0 = 0;
  int64_t depth0 = 0;
  bool recursive = false;
  const ast::Stmt* stmt = nullptr;  // for loop(...) in recursive loops
  std::weak_ptr<Scope> scope;       // where the loop statement runs
  std::vector<Value> last_changed;  // loop.changed(...)
  bool has_changed = false;
};

class Interpreter {
 public:
  Interpreter(const Limits& limits, const RenderOptions& options);
  ~Interpreter();
  Interpreter(const Interpreter&) = delete;
  Interpreter& operator=(const Interpreter&) = delete;

  std::string render(const ast::Body& body, const ScopePtr& scope);

  // Services for the builtins.
  Value call(const Value& callee, CallArgs& args);
  Value call_filter(const std::string& name, const Value& input, CallArgs& args);
  bool call_test(const std::string& name, const Value& value, CallArgs& args);
  Value getattr(const Value& obj, const std::string& name);
  Value getitem(const Value& obj, const Value& key);
  // Python iter(value) as a list (strings give their characters, dicts their keys).
  std::vector<Value> iterate(const Value& v);
  void charge(int64_t bytes);  // expression work: bytes of strings built
  void charge_items(size_t n) { charge(static_cast<int64_t>(n * sizeof(Value))); }  // elements copied
  Value new_namespace();
  const RenderOptions& options() const { return options_; }
  const Limits& limits() const { return limits_; }

 private:
  enum class Flow { Normal, Break, Continue };
  struct DepthGuard;

  Flow exec_body(const ast::Body& body, const ScopePtr& scope, std::string& out);
  Flow exec(const ast::Stmt& s, const ScopePtr& scope, std::string& out);
  void exec_for(const ast::Stmt& s, const ScopePtr& scope, std::string& out, const Value& iterable, int64_t depth0);
  void exec_call_block(const ast::Stmt& s, const ScopePtr& scope, std::string& out);
  Value define_macro(const ast::Stmt& s, const ScopePtr& scope);
  Value invoke_macro(const ast::Stmt& m, const std::weak_ptr<Scope>& closure, CallArgs& args);
  void assign(const ast::Target& t, const Value& v, const ScopePtr& scope);
  void emit(std::string& out, std::string_view text);

  Value eval(const ast::Expr& e, const ScopePtr& scope);
  Value eval_inner(const ast::Expr& e, const ScopePtr& scope);
  CallArgs eval_args(const ast::Expr& e, const ScopePtr& scope);
  Value eval_filter(const ast::Expr& e, const ScopePtr& scope, const Value* piped);
  Value eval_compare(const ast::Expr& e, const ScopePtr& scope);
  Value eval_slice(const Value& obj, const ast::Expr& slice, const ScopePtr& scope);
  Value loop_attr(const Value& loop, const std::string& name);

  const Limits limits_;
  const RenderOptions& options_;
  ScopePtr root_;
  int64_t iterations_ = 0;
  int64_t output_bytes_ = 0;
  int64_t work_ = 0;
  int macro_depth_ = 0;
  int eval_depth_ = 0;
  std::vector<std::shared_ptr<NamespaceObj>> namespaces_;
};

// Python binary operators, comparisons and membership on values.
Value binary_op(Interpreter& in, ast::BinOp op, const Value& a, const Value& b);
bool contains(const Value& container, const Value& item);
[[noreturn]] void fail_undefined(const Value& u);

}  // namespace moe::tmpl::detail
