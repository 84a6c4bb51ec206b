// interpreter.cpp: statement execution and expression evaluation (see interpreter.h). Errors are thrown
// as TemplateError and get the line of the innermost node that was being evaluated; raise_exception's
// RaisedException passes through untouched.
#include "template/interpreter.h"

#include <cmath>
#include <limits>

#include "template/builtins.h"

namespace moe::tmpl::detail {

namespace {
// Statements plus expressions being evaluated at once (across macro calls): bounds the native stack.
constexpr int kMaxEvalDepth = 1500;
}  // namespace

struct Interpreter::DepthGuard {
  explicit DepthGuard(Interpreter& in) : in_(in) {
    if (++in_.eval_depth_ > kMaxEvalDepth) throw_error("template exceeded the evaluation depth limit");
  }
  ~DepthGuard() { --in_.eval_depth_; }
  Interpreter& in_;
};

void fail_undefined(const Value& u) { throw_error(u.s.empty() ? "undefined value" : u.s); }

Interpreter::Interpreter(const Limits& limits, const RenderOptions& options) : limits_(limits), options_(options) {}

Interpreter::~Interpreter() {
  // Namespaces are the only mutable values, so the only way to build a reference cycle; empty them so
  // that every value is freed, one namespace at a time (no deep recursive destruction either).
  for (auto& ns : namespaces_) {
    auto entries = std::move(ns->attrs.entries);
    ns->attrs.entries.clear();
    ns->attrs.string_index.clear();
  }
}

std::string Interpreter::render(const ast::Body& body, const ScopePtr& scope) {
  root_ = scope;
  std::string out;
  exec_body(body, scope, out);
  return out;
}

void Interpreter::charge(int64_t bytes) {
  work_ += bytes;
  if (work_ > limits_.max_work)
    throw_error("template exceeded its work limit (" + std::to_string(limits_.max_work) + " bytes built)");
}

void Interpreter::emit(std::string& out, std::string_view text) {
  output_bytes_ += static_cast<int64_t>(text.size());
  if (output_bytes_ > limits_.max_output_bytes)
    throw_error("template exceeded the output limit (" + std::to_string(limits_.max_output_bytes) + " bytes)");
  out.append(text);
}

Value Interpreter::new_namespace() {
  auto ns = std::make_shared<NamespaceObj>();
  namespaces_.push_back(ns);
  Value v;
  v.kind = Kind::Namespace;
  v.obj = std::move(ns);
  return v;
}

// ---------------------------------------------------------------------------------------------------
// Statements

Interpreter::Flow Interpreter::exec_body(const ast::Body& body, const ScopePtr& scope, std::string& out) {
  for (const auto& s : body) {
    Flow f = exec(*s, scope, out);
    if (f != Flow::Normal) return f;
  }
  return Flow::Normal;
}

Interpreter::Flow Interpreter::exec(const ast::Stmt& s, const ScopePtr& scope, std::string& out) {
  using ast::StmtKind;
  DepthGuard guard(*this);
  try {
    switch (s.kind) {
      case StmtKind::Text: emit(out, s.text); break;
      case StmtKind::Output: {
        Value v = eval(*s.expr, scope);
        if (v.kind == Kind::String)
          emit(out, v.s);
        else
          emit(out, to_str(v));
        break;
      }
      case StmtKind::If: {
        for (const auto& [test, body] : s.branches)
          if (truthy(eval(*test, scope))) return exec_body(body, scope, out);
        return exec_body(s.else_body, scope, out);
      }
      case StmtKind::For: exec_for(s, scope, out, eval(*s.expr, scope), 0); break;
      case StmtKind::Set: assign(s.target, eval(*s.expr, scope), scope); break;
      case StmtKind::SetBlock: {
        auto inner = std::make_shared<Scope>();
        inner->parent = scope;
        std::string text;
        exec_body(s.body, inner, text);
        Value v = Value::string(std::move(text));
        if (s.filter) v = eval_filter(*s.filter, scope, &v);
        assign(s.target, v, scope);
        break;
      }
      case StmtKind::FilterBlock: {
        auto inner = std::make_shared<Scope>();
        inner->parent = scope;
        std::string text;
        exec_body(s.body, inner, text);
        Value v = Value::string(std::move(text));
        emit(out, to_str(eval_filter(*s.filter, scope, &v)));
        break;
      }
      case StmtKind::Macro: scope->vars[s.name] = define_macro(s, scope); break;
      case StmtKind::CallBlock: exec_call_block(s, scope, out); break;
      case StmtKind::With: {
        auto inner = std::make_shared<Scope>();
        inner->parent = scope;
        std::vector<Value> values;
        for (const auto& a : s.assignments) values.push_back(eval(*a.second, scope));
        for (size_t k = 0; k < values.size(); ++k) assign(s.assignments[k].first, values[k], inner);
        exec_body(s.body, inner, out);
        break;
      }
      case StmtKind::Scope: {
        auto inner = std::make_shared<Scope>();
        inner->parent = scope;
        exec_body(s.body, inner, out);
        break;
      }
      case StmtKind::Break: return Flow::Break;
      case StmtKind::Continue: return Flow::Continue;
    }
  } catch (TemplateError& e) {
    if (e.line == 0) e.line = s.line;
    throw;
  }
  return Flow::Normal;
}

void Interpreter::assign(const ast::Target& t, const Value& v, const ScopePtr& scope) {
  switch (t.kind) {
    case ast::Target::Kind::Name: scope->vars[t.name] = v; return;
    case ast::Target::Kind::NsAttr: {
      const Value* ns = scope->find(t.name);
      if (!ns || ns->kind != Kind::Namespace) throw_error("cannot assign attribute on non-namespace object");
      ns->ns().attrs.set(Value::string(t.attr), v);
      return;
    }
    case ast::Target::Kind::Tuple: {
      if (v.is_undefined()) fail_undefined(v);
      std::vector<Value> items = iterate(v);
      if (items.size() > t.items.size())
        throw_error("too many values to unpack (expected " + std::to_string(t.items.size()) + ")");
      if (items.size() < t.items.size())
        throw_error("not enough values to unpack (expected " + std::to_string(t.items.size()) + ", got " +
                    std::to_string(items.size()) + ")");
      for (size_t k = 0; k < items.size(); ++k) assign(t.items[k], items[k], scope);
      return;
    }
  }
}

void Interpreter::exec_for(const ast::Stmt& s, const ScopePtr& scope, std::string& out, const Value& iterable,
                           int64_t depth0) {
  std::vector<Value> all = iterate(iterable);
  auto items = std::make_shared<std::vector<Value>>();
  if (s.test) {
    // The inline `if` sees the loop target (but not `loop`), as Jinja2 filters before the loop runs.
    for (auto& item : all) {
      if (++iterations_ > limits_.max_loop_iterations)
        throw_error("template exceeded the loop iteration limit (" + std::to_string(limits_.max_loop_iterations) + ")");
      auto probe = std::make_shared<Scope>();
      probe->parent = scope;
      assign(s.target, item, probe);
      if (truthy(eval(*s.test, probe))) items->push_back(std::move(item));
    }
  } else {
    *items = std::move(all);
  }
  auto loop = std::make_shared<LoopObj>();
  loop->items = items;
  loop->depth0 = depth0;
  loop->recursive = s.recursive;
  loop->stmt = &s;
  loop->scope = scope;
  Value loop_value;
  loop_value.kind = Kind::Loop;
  loop_value.obj = loop;
  // One scope object serves every iteration, emptied in between: each iteration starts fresh, as in
  // Jinja2, without an allocation per iteration.
  auto inner = std::make_shared<Scope>();
  inner->parent = scope;
  for (size_t k = 0; k < items->size(); ++k) {
    if (++iterations_ > limits_.max_loop_iterations)
      throw_error("template exceeded the loop iteration limit (" + std::to_string(limits_.max_loop_iterations) + ")");
    loop->index0 = static_cast<int64_t>(k);
    inner->vars.clear();
    inner->vars["loop"] = loop_value;
    assign(s.target, (*items)[k], inner);
    if (exec_body(s.body, inner, out) == Flow::Break) break;
  }
  if (items->empty()) {
    inner->vars.clear();
    exec_body(s.else_body, inner, out);
  }
}

Value Interpreter::define_macro(const ast::Stmt& s, const ScopePtr& scope) {
  auto c = std::make_shared<CallableObj>();
  c->type = CallableObj::Type::Macro;
  c->name = s.name;
  const ast::Stmt* m = &s;
  std::weak_ptr<Scope> closure = scope;
  c->fn = [m, closure](Interpreter& in, CallArgs& args) { return in.invoke_macro(*m, closure, args); };
  Value v;
  v.kind = Kind::Callable;
  v.obj = std::move(c);
  return v;
}

Value Interpreter::invoke_macro(const ast::Stmt& m, const std::weak_ptr<Scope>& closure, CallArgs& args) {
  if (macro_depth_ >= limits_.max_recursion_depth)
    throw_error("template exceeded the recursion depth limit (" + std::to_string(limits_.max_recursion_depth) +
                " nested macro calls)");
  struct Depth {
    explicit Depth(int& d) : d_(d) { ++d_; }
    ~Depth() { --d_; }
    int& d_;
  } depth(macro_depth_);

  auto frame = std::make_shared<Scope>();
  ScopePtr parent = closure.lock();
  frame->parent = parent ? parent : root_;
  const size_t n_params = m.params.size();
  std::vector<bool> bound(n_params, false);
  for (size_t k = 0; k < args.positional.size() && k < n_params; ++k) {
    frame->vars[m.params[k]] = args.positional[k];
    bound[k] = true;
  }
  if (args.positional.size() > n_params && !m.uses_varargs)
    throw_error("macro '" + m.name + "' takes not more than " + std::to_string(n_params) + " argument(s)");
  auto kwargs = std::make_shared<DictObj>();
  for (auto& [key, value] : args.keyword) {
    size_t idx = n_params;
    for (size_t k = 0; k < n_params; ++k)
      if (m.params[k] == key) idx = k;
    if (idx < n_params) {
      if (bound[idx]) throw_error("macro '" + m.name + "' got multiple values for argument '" + key + "'");
      frame->vars[key] = value;
      bound[idx] = true;
    } else if (key == "caller" && m.uses_caller) {
      frame->vars["caller"] = value;
    } else if (m.uses_kwargs) {
      kwargs->set(Value::string(key), value);
    } else {
      throw_error("macro '" + m.name + "' takes no keyword argument '" + key + "'");
    }
  }
  const size_t first_default = n_params - m.defaults.size();
  for (size_t k = 0; k < n_params; ++k) {
    if (bound[k]) continue;
    if (k >= first_default)
      frame->vars[m.params[k]] = eval(*m.defaults[k - first_default], frame);
    else
      frame->vars[m.params[k]] = Value::undefined("parameter '" + m.params[k] + "' was not provided");
  }
  if (m.uses_varargs) {
    std::vector<Value> extra;
    for (size_t k = n_params; k < args.positional.size(); ++k) extra.push_back(args.positional[k]);
    frame->vars["varargs"] = Value::tuple(std::move(extra));
  }
  if (m.uses_kwargs) {
    Value kw;
    kw.kind = Kind::Dict;
    kw.obj = kwargs;
    frame->vars["kwargs"] = kw;
  }
  if (m.uses_caller && !frame->vars.count("caller"))
    frame->vars["caller"] = Value::undefined("No caller defined");
  std::string text;
  exec_body(m.body, frame, text);
  return Value::string(std::move(text));
}

void Interpreter::exec_call_block(const ast::Stmt& s, const ScopePtr& scope, std::string& out) {
  Value caller = define_macro(s, scope);
  const ast::Expr& call = *s.expr;
  Value callee = eval(*call.a, scope);
  CallArgs args = eval_args(call, scope);
  args.keyword.emplace_back("caller", caller);
  emit(out, to_str(this->call(callee, args)));
}

// ---------------------------------------------------------------------------------------------------
// Expressions

Value Interpreter::eval(const ast::Expr& e, const ScopePtr& scope) {
  DepthGuard guard(*this);
  try {
    return eval_inner(e, scope);
  } catch (TemplateError& err) {
    if (err.line == 0) err.line = e.line;
    throw;
  }
}

CallArgs Interpreter::eval_args(const ast::Expr& e, const ScopePtr& scope) {
  CallArgs args;
  for (const auto& a : e.items) args.positional.push_back(eval(*a, scope));
  for (const auto& [k, v] : e.kwargs) args.keyword.emplace_back(k, eval(*v, scope));
  if (e.dyn_args) {
    Value extra = eval(*e.dyn_args, scope);
    for (auto& v : iterate(extra)) args.positional.push_back(std::move(v));
  }
  if (e.dyn_kwargs) {
    Value extra = eval(*e.dyn_kwargs, scope);
    if (extra.kind != Kind::Dict) throw_error("argument after ** must be a mapping, not " + type_name(extra));
    for (const auto& [k, v] : extra.dict().entries) {
      if (k.kind != Kind::String) throw_error("keywords must be strings");
      args.keyword.emplace_back(k.s, v);
    }
  }
  return args;
}

Value Interpreter::eval_filter(const ast::Expr& e, const ScopePtr& scope, const Value* piped) {
  Value input = e.a ? (e.a->kind == ast::ExprKind::Filter ? eval_filter(*e.a, scope, piped) : eval(*e.a, scope))
                    : (piped ? *piped : Value::undefined());
  CallArgs args = eval_args(e, scope);
  try {
    return call_filter(e.name, input, args);
  } catch (TemplateError& err) {
    if (err.line == 0) err.line = e.line;
    throw;
  }
}

Value Interpreter::eval_compare(const ast::Expr& e, const ScopePtr& scope) {
  Value left = eval(*e.a, scope);
  for (size_t k = 0; k < e.ops.size(); ++k) {
    Value right = eval(*e.items[k], scope);
    bool ok = false;
    switch (e.ops[k]) {
      case ast::CmpOp::Eq: ok = py_equal(left, right); break;
      case ast::CmpOp::Ne: ok = !py_equal(left, right); break;
      case ast::CmpOp::Lt: ok = py_less(left, right); break;
      case ast::CmpOp::Gt: ok = py_less(right, left); break;
      case ast::CmpOp::Le: ok = py_less(left, right) || (!py_less(right, left) && py_equal(left, right)); break;
      case ast::CmpOp::Ge: ok = py_less(right, left) || (!py_less(left, right) && py_equal(left, right)); break;
      case ast::CmpOp::In: ok = contains(right, left); break;
      case ast::CmpOp::NotIn: ok = !contains(right, left); break;
    }
    if (!ok) return Value::boolean(false);
    left = std::move(right);
  }
  return Value::boolean(true);
}

namespace {

// Python's slice.indices(length) for a step that is not zero.
void slice_indices(int64_t length, const std::optional<int64_t>& start_in, const std::optional<int64_t>& stop_in,
                   int64_t step, int64_t* start, int64_t* stop) {
  auto adjust = [&](const std::optional<int64_t>& v, int64_t deflt) {
    if (!v) return deflt;
    int64_t x = *v;
    if (x < 0) {
      x += length;
      if (x < 0) x = step < 0 ? -1 : 0;
    } else if (x >= length) {
      x = step < 0 ? length - 1 : length;
    }
    return x;
  };
  *start = adjust(start_in, step < 0 ? length - 1 : 0);
  *stop = adjust(stop_in, step < 0 ? -1 : length);
}

}  // namespace

Value Interpreter::eval_slice(const Value& obj, const ast::Expr& sl, const ScopePtr& scope) {
  if (obj.is_undefined()) fail_undefined(obj);
  std::optional<int64_t> bounds[3];
  const ast::ExprPtr* parts[3] = {&sl.a, &sl.b, &sl.c};
  bool bad = false;
  for (int k = 0; k < 3; ++k) {
    if (!*parts[k]) continue;
    Value v = eval(**parts[k], scope);
    if (v.is_none()) continue;
    if (v.kind == Kind::Int || v.kind == Kind::Bool)
      bounds[k] = v.as_int();
    else
      bad = true;
  }
  if (bad) throw_error("slice indices must be integers or None or have an __index__ method");
  int64_t step = bounds[2].value_or(1);
  if (step == 0) throw_error("slice step cannot be zero");
  auto take = [&](int64_t length, auto&& push) {
    int64_t start, stop;
    slice_indices(length, bounds[0], bounds[1], step, &start, &stop);
    if (step > 0)
      for (int64_t i = start; i < stop; i += step) push(i);
    else
      for (int64_t i = start; i > stop; i += step) push(i);
  };
  if (obj.kind == Kind::String) {
    if (is_ascii(obj.s)) {
      std::string out;
      take(static_cast<int64_t>(obj.s.size()), [&](int64_t i) { out.push_back(obj.s[static_cast<size_t>(i)]); });
      charge_items(out.size());
      return Value::string(std::move(out));
    }
    auto cps = decode_utf8(obj.s);
    std::u32string out;
    take(static_cast<int64_t>(cps.size()), [&](int64_t i) { out.push_back(cps[static_cast<size_t>(i)]); });
    charge_items(out.size());
    return Value::string(encode_utf8(out));
  }
  if (obj.kind == Kind::List || obj.kind == Kind::Tuple) {
    const auto& items = obj.items();
    std::vector<Value> out;
    take(static_cast<int64_t>(items.size()), [&](int64_t i) { out.push_back(items[static_cast<size_t>(i)]); });
    charge_items(out.size());
    return obj.kind == Kind::List ? Value::list(std::move(out)) : Value::tuple(std::move(out));
  }
  // Jinja2 compiles a slice to a plain Python subscript (not its forgiving getitem), so this raises.
  if (obj.kind == Kind::Dict) throw_error("unhashable type: 'slice'");
  throw_error("'" + type_name(obj) + "' object is not subscriptable");
}

Value Interpreter::eval_inner(const ast::Expr& e, const ScopePtr& scope) {
  using ast::ExprKind;
  switch (e.kind) {
    case ExprKind::Const: return e.value;
    case ExprKind::Name: {
      const Value* v = scope->find(e.name);
      return v ? *v : Value::undefined("'" + e.name + "' is undefined");
    }
    case ExprKind::GetAttr: return getattr(eval(*e.a, scope), e.name);
    case ExprKind::GetItem: {
      Value obj = eval(*e.a, scope);
      if (e.b->kind == ExprKind::Slice) return eval_slice(obj, *e.b, scope);
      return getitem(obj, eval(*e.b, scope));
    }
    case ExprKind::Slice: throw_error("a slice is only valid inside []");
    case ExprKind::Call: {
      Value callee = eval(*e.a, scope);
      CallArgs args = eval_args(e, scope);
      return call(callee, args);
    }
    case ExprKind::Filter: return eval_filter(e, scope, nullptr);
    case ExprKind::Test: {
      Value v = eval(*e.a, scope);
      CallArgs args = eval_args(e, scope);
      return Value::boolean(call_test(e.name, v, args));
    }
    case ExprKind::Neg:
    case ExprKind::Pos: {
      Value v = eval(*e.a, scope);
      if (v.is_undefined()) fail_undefined(v);
      bool neg = e.kind == ExprKind::Neg;
      if (v.kind == Kind::Float) return Value::number(neg ? -v.f : v.f);
      if (v.kind == Kind::Int || v.kind == Kind::Bool) {
        int64_t x = v.as_int();
        if (neg && x == std::numeric_limits<int64_t>::min()) throw_error("integer overflow");
        return Value::integer(neg ? -x : x);
      }
      throw_error(std::string("bad operand type for unary ") + (neg ? "-" : "+") + ": '" + type_name(v) + "'");
    }
    case ExprKind::Not: return Value::boolean(!truthy(eval(*e.a, scope)));
    case ExprKind::And: {
      Value l = eval(*e.a, scope);
      return truthy(l) ? eval(*e.b, scope) : l;
    }
    case ExprKind::Or: {
      Value l = eval(*e.a, scope);
      return truthy(l) ? l : eval(*e.b, scope);
    }
    case ExprKind::Binary: {
      Value l = eval(*e.a, scope);
      Value r = eval(*e.b, scope);
      return binary_op(*this, e.op, l, r);
    }
    case ExprKind::Compare: return eval_compare(e, scope);
    case ExprKind::CondExpr: {
      if (truthy(eval(*e.a, scope))) return eval(*e.b, scope);
      if (e.c) return eval(*e.c, scope);
      return Value::undefined("the inline if-expression on line " + std::to_string(e.line) +
                              " evaluated to false and no else section was defined.");
    }
    case ExprKind::List:
    case ExprKind::Tuple: {
      std::vector<Value> items;
      items.reserve(e.items.size());
      for (const auto& it : e.items) items.push_back(eval(*it, scope));
      charge_items(items.size());
      return e.kind == ExprKind::List ? Value::list(std::move(items)) : Value::tuple(std::move(items));
    }
    case ExprKind::Dict: {
      auto d = std::make_shared<DictObj>();
      for (size_t k = 0; k + 1 < e.items.size(); k += 2) {
        Value key = eval(*e.items[k], scope);
        if (key.kind == Kind::List || key.kind == Kind::Dict || key.kind == Kind::Namespace ||
            key.kind == Kind::Undefined)
          throw_error("unhashable type: '" + type_name(key) + "'");
        d->set(std::move(key), eval(*e.items[k + 1], scope));
      }
      charge_items(d->entries.size());
      Value v;
      v.kind = Kind::Dict;
      v.obj = std::move(d);
      return v;
    }
    case ExprKind::Concat: {
      std::string out;
      for (const auto& it : e.items) {
        Value v = eval(*it, scope);
        out += v.kind == Kind::String ? v.s : to_str(v);
        charge_items(out.size());
      }
      return Value::string(std::move(out));
    }
  }
  throw_error("unknown expression");
}

// ---------------------------------------------------------------------------------------------------
// Access and calls

Value Interpreter::loop_attr(const Value& loop_value, const std::string& name) {
  auto& loop = static_cast<LoopObj&>(*loop_value.obj);
  const int64_t length = static_cast<int64_t>(loop.items->size());
  const int64_t i = loop.index0;
  if (name == "index") return Value::integer(i + 1);
  if (name == "index0") return Value::integer(i);
  if (name == "revindex") return Value::integer(length - i);
  if (name == "revindex0") return Value::integer(length - i - 1);
  if (name == "first") return Value::boolean(i == 0);
  if (name == "last") return Value::boolean(i == length - 1);
  if (name == "length") return Value::integer(length);
  if (name == "depth") return Value::integer(loop.depth0 + 1);
  if (name == "depth0") return Value::integer(loop.depth0);
  if (name == "previtem")
    return i > 0 ? (*loop.items)[static_cast<size_t>(i - 1)] : Value::undefined("there is no previous item");
  if (name == "nextitem")
    return i + 1 < length ? (*loop.items)[static_cast<size_t>(i + 1)] : Value::undefined("there is no next item");
  if (name == "cycle" || name == "changed") {
    auto c = std::make_shared<CallableObj>();
    c->type = CallableObj::Type::Method;
    c->name = name;
    c->owner = "LoopContext";
    std::weak_ptr<Object> weak = loop_value.obj;
    bool cycle = name == "cycle";
    c->fn = [weak, cycle](Interpreter&, CallArgs& args) -> Value {
      auto obj = weak.lock();
      if (!obj) throw_error("the loop has ended");
      auto& l = static_cast<LoopObj&>(*obj);
      if (cycle) {
        if (args.positional.empty()) throw_error("no items for cycling given");
        return args.positional[static_cast<size_t>(l.index0) % args.positional.size()];
      }
      Value now = Value::list(args.positional);
      bool changed = !l.has_changed || !py_equal(Value::list(l.last_changed), now);
      l.has_changed = true;
      l.last_changed = args.positional;
      return Value::boolean(changed);
    };
    Value v;
    v.kind = Kind::Callable;
    v.obj = std::move(c);
    return v;
  }
  return Value::undefined("'LoopContext object' has no attribute '" + name + "'");
}

Value Interpreter::getattr(const Value& obj, const std::string& name) {
  switch (obj.kind) {
    case Kind::Undefined: fail_undefined(obj);
    case Kind::Dict:
    case Kind::String:
    case Kind::List:
    case Kind::Tuple: {
      if (auto m = find_method(obj, name)) return *m;
      if (obj.kind == Kind::Dict)
        if (const Value* v = obj.dict().find(name)) return *v;
      break;
    }
    case Kind::Namespace:
      if (const Value* v = obj.ns().attrs.find(name)) return *v;
      break;
    case Kind::Loop: return loop_attr(obj, name);
    default: break;
  }
  return Value::undefined(repr_string(object_type_repr(obj)) + " has no attribute " + repr_string(name));
}

Value Interpreter::getitem(const Value& obj, const Value& key) {
  switch (obj.kind) {
    case Kind::Undefined: fail_undefined(obj);
    case Kind::Dict:
      if (const Value* v = obj.dict().find(key)) return *v;
      break;
    case Kind::List:
    case Kind::Tuple:
    case Kind::String:
      if (key.kind == Kind::Int || key.kind == Kind::Bool) {
        int64_t i = key.as_int();
        if (obj.kind == Kind::String) {
          if (is_ascii(obj.s)) {
            int64_t n = static_cast<int64_t>(obj.s.size());
            if (i < 0) i += n;
            if (i >= 0 && i < n) return Value::string(std::string(1, obj.s[static_cast<size_t>(i)]));
          } else {
            auto cps = decode_utf8(obj.s);
            int64_t n = static_cast<int64_t>(cps.size());
            if (i < 0) i += n;
            if (i >= 0 && i < n) {
              std::string s;
              append_utf8(s, cps[static_cast<size_t>(i)]);
              return Value::string(std::move(s));
            }
          }
        } else {
          const auto& items = obj.items();
          int64_t n = static_cast<int64_t>(items.size());
          if (i < 0) i += n;
          if (i >= 0 && i < n) return items[static_cast<size_t>(i)];
        }
        return Value::undefined(object_type_repr(obj) + " has no element " + repr(key));
      }
      break;
    default: break;
  }
  // obj[key] failed: a string key falls back to the attribute, as Jinja2's getitem does.
  if (key.kind == Kind::String && obj.kind != Kind::Dict) return getattr(obj, key.s);
  if (key.kind == Kind::String && obj.kind == Kind::Dict)
    if (auto m = find_method(obj, key.s)) return *m;
  if (key.kind == Kind::String)
    return Value::undefined(repr_string(object_type_repr(obj)) + " has no attribute " + repr_string(key.s));
  return Value::undefined(object_type_repr(obj) + " has no element " + repr(key));
}

Value Interpreter::call(const Value& callee, CallArgs& args) {
  if (callee.kind == Kind::Callable) return static_cast<const CallableObj&>(*callee.obj).fn(*this, args);
  if (callee.kind == Kind::Loop) {
    auto& loop = static_cast<LoopObj&>(*callee.obj);
    if (!loop.recursive) throw_error("'LoopContext' object is not callable (the loop is not recursive)");
    if (args.positional.size() != 1 || !args.keyword.empty()) throw_error("loop() takes exactly one argument");
    ScopePtr scope = loop.scope.lock();
    if (!scope) throw_error("the loop has ended");
    std::string out;
    exec_for(*loop.stmt, scope, out, args.positional[0], loop.depth0 + 1);
    return Value::string(std::move(out));
  }
  if (callee.is_undefined()) fail_undefined(callee);
  throw_error("'" + type_name(callee) + "' object is not callable");
}

Value Interpreter::call_filter(const std::string& name, const Value& input, CallArgs& args) {
  FilterFn f = find_filter(name);
  if (!f) throw_error("No filter named '" + name + "'.");
  return f(*this, input, args);
}

bool Interpreter::call_test(const std::string& name, const Value& value, CallArgs& args) {
  TestFn t = find_test(name);
  if (!t) throw_error("No test named '" + name + "'.");
  const size_t given = args.positional.size() + args.keyword.size();
  const int arity = test_arity(name);
  if (given != static_cast<size_t>(arity))
    throw_error("test '" + name + "' takes " + std::to_string(arity) + " argument(s), " + std::to_string(given) +
                " given");
  return t(*this, value, args);
}

std::vector<Value> Interpreter::iterate(const Value& v) {
  switch (v.kind) {
    case Kind::Undefined: {
      if (v.s.find("is unsafe") != std::string::npos) fail_undefined(v);
      return {};
    }
    case Kind::List:
    case Kind::Tuple: return v.items();
    case Kind::Dict: {
      std::vector<Value> keys;
      for (const auto& e : v.dict().entries) keys.push_back(e.first);
      return keys;
    }
    case Kind::String: {
      std::vector<Value> chars;
      for (char32_t c : decode_utf8(v.s)) {
        std::string s;
        append_utf8(s, c);
        chars.push_back(Value::string(std::move(s)));
      }
      charge_items(chars.size());
      return chars;
    }
    default: throw_error("'" + type_name(v) + "' object is not iterable");
  }
}

// ---------------------------------------------------------------------------------------------------
// Operators

bool contains(const Value& container, const Value& item) {
  switch (container.kind) {
    case Kind::Undefined: return false;
    case Kind::String:
      if (item.kind != Kind::String)
        throw_error("'in <string>' requires string as left operand, not " + type_name(item));
      return container.s.find(item.s) != std::string::npos;
    case Kind::List:
    case Kind::Tuple:
      for (const auto& x : container.items())
        if (py_equal(x, item)) return true;
      return false;
    case Kind::Dict:
      if (item.kind == Kind::List || item.kind == Kind::Dict || item.kind == Kind::Namespace)
        throw_error("unhashable type: '" + type_name(item) + "'");
      return container.dict().find(item) != nullptr;
    default: throw_error("argument of type '" + type_name(container) + "' is not iterable");
  }
}

namespace {

int64_t checked(bool overflow, int64_t v) {
  if (overflow) throw_error("integer overflow (values beyond 64 bits are not supported)");
  return v;
}
int64_t add_checked(int64_t a, int64_t b) {
  int64_t r = 0;
  bool overflow = __builtin_add_overflow(a, b, &r);
  return checked(overflow, r);
}
int64_t sub_checked(int64_t a, int64_t b) {
  int64_t r = 0;
  bool overflow = __builtin_sub_overflow(a, b, &r);
  return checked(overflow, r);
}
int64_t mul_checked(int64_t a, int64_t b) {
  int64_t r = 0;
  bool overflow = __builtin_mul_overflow(a, b, &r);
  return checked(overflow, r);
}

std::string repeat(Interpreter& in, const std::string& s, int64_t n) {
  if (n <= 0 || s.empty()) return {};
  if (static_cast<uint64_t>(n) > static_cast<uint64_t>(in.limits().max_work) / s.size())
    throw_error("template exceeded its work limit (string repetition too large)");
  in.charge(static_cast<int64_t>(s.size()) * n);
  std::string out;
  out.reserve(s.size() * static_cast<size_t>(n));
  for (int64_t k = 0; k < n; ++k) out += s;
  return out;
}

[[noreturn]] void unsupported(const char* op, const Value& a, const Value& b) {
  throw_error(std::string("unsupported operand type(s) for ") + op + ": '" + type_name(a) + "' and '" +
              type_name(b) + "'");
}

}  // namespace

Value binary_op(Interpreter& in, ast::BinOp op, const Value& a, const Value& b) {
  using ast::BinOp;
  if (a.is_undefined()) fail_undefined(a);
  if (b.is_undefined()) fail_undefined(b);
  const bool numeric = a.is_numeric() && b.is_numeric();
  const bool as_float = numeric && (a.kind == Kind::Float || b.kind == Kind::Float);
  switch (op) {
    case BinOp::Add:
      if (numeric) {
        if (as_float) return Value::number(a.as_double() + b.as_double());
        return Value::integer(add_checked(a.as_int(), b.as_int()));
      }
      if (a.kind == Kind::String && b.kind == Kind::String) {
        in.charge(static_cast<int64_t>(a.s.size() + b.s.size()));
        return Value::string(a.s + b.s);
      }
      if ((a.kind == Kind::List || a.kind == Kind::Tuple) && a.kind == b.kind) {
        std::vector<Value> items = a.items();
        items.insert(items.end(), b.items().begin(), b.items().end());
        in.charge_items(items.size());
        return a.kind == Kind::List ? Value::list(std::move(items)) : Value::tuple(std::move(items));
      }
      if (a.kind == Kind::String || a.kind == Kind::List || a.kind == Kind::Tuple)
        throw_error("can only concatenate " + type_name(a) + " (not \"" + type_name(b) + "\") to " + type_name(a));
      unsupported("+", a, b);
    case BinOp::Sub:
      if (!numeric) unsupported("-", a, b);
      if (as_float) return Value::number(a.as_double() - b.as_double());
      return Value::integer(sub_checked(a.as_int(), b.as_int()));
    case BinOp::Mul:
      if (numeric) {
        if (as_float) return Value::number(a.as_double() * b.as_double());
        return Value::integer(mul_checked(a.as_int(), b.as_int()));
      }
      if (a.kind == Kind::String && (b.kind == Kind::Int || b.kind == Kind::Bool))
        return Value::string(repeat(in, a.s, b.as_int()));
      if (b.kind == Kind::String && (a.kind == Kind::Int || a.kind == Kind::Bool))
        return Value::string(repeat(in, b.s, a.as_int()));
      if (((a.kind == Kind::List || a.kind == Kind::Tuple) && (b.kind == Kind::Int || b.kind == Kind::Bool)) ||
          ((b.kind == Kind::List || b.kind == Kind::Tuple) && (a.kind == Kind::Int || a.kind == Kind::Bool))) {
        const Value& seq = a.is_sequence() ? a : b;
        int64_t n = std::max<int64_t>(0, (a.is_sequence() ? b : a).as_int());
        const auto& src = seq.items();
        if (!src.empty() &&
            static_cast<uint64_t>(n) > static_cast<uint64_t>(in.limits().max_work) / (src.size() * sizeof(Value)))
          throw_error("template exceeded its work limit (list repetition too large)");
        in.charge_items(src.size() * static_cast<size_t>(n));
        std::vector<Value> items;
        for (int64_t k = 0; k < n; ++k) items.insert(items.end(), src.begin(), src.end());
        return seq.kind == Kind::List ? Value::list(std::move(items)) : Value::tuple(std::move(items));
      }
      if (a.kind == Kind::String || a.kind == Kind::List || a.kind == Kind::Tuple)
        throw_error("can't multiply sequence by non-int of type '" + type_name(b) + "'");
      if (b.kind == Kind::String || b.kind == Kind::List || b.kind == Kind::Tuple)
        throw_error("can't multiply sequence by non-int of type '" + type_name(a) + "'");
      unsupported("*", a, b);
    case BinOp::Div:
      if (!numeric) unsupported("/", a, b);
      if (b.as_double() == 0.0) throw_error("division by zero");
      return Value::number(a.as_double() / b.as_double());
    case BinOp::FloorDiv:
      if (!numeric) unsupported("//", a, b);
      if (as_float) {
        // CPython's float_floor_div: floor((a - fmod(a, b)) / b), corrected, so 1 // 0.1 == 9.0.
        double x = a.as_double(), y = b.as_double();
        if (y == 0.0) throw_error("float floor division by zero");
        double mod = std::fmod(x, y);
        double div = (x - mod) / y;
        if (mod != 0.0 && ((y < 0) != (mod < 0))) div -= 1.0;
        double floordiv;
        if (div != 0.0) {
          floordiv = std::floor(div);
          if (div - floordiv > 0.5) floordiv += 1.0;
        } else {
          floordiv = std::copysign(0.0, x / y);
        }
        return Value::number(floordiv);
      } else {
        int64_t x = a.as_int(), y = b.as_int();
        if (y == 0) throw_error("integer division or modulo by zero");
        if (x == std::numeric_limits<int64_t>::min() && y == -1) throw_error("integer overflow");
        int64_t q = x / y;
        if ((x % y != 0) && ((x < 0) != (y < 0))) --q;
        return Value::integer(q);
      }
    case BinOp::Mod:
      if (a.kind == Kind::String) return Value::string(percent_format(in, a.s, b));
      if (!numeric) unsupported("%", a, b);
      if (as_float) {
        double x = a.as_double(), y = b.as_double();
        if (y == 0.0) throw_error("float modulo");
        double r = std::fmod(x, y);
        if (r != 0 && ((r < 0) != (y < 0))) r += y;
        return Value::number(r);
      } else {
        int64_t x = a.as_int(), y = b.as_int();
        if (y == 0) throw_error("integer modulo by zero");
        if (y == -1) return Value::integer(0);
        int64_t r = x % y;
        if (r != 0 && ((r < 0) != (y < 0))) r += y;
        return Value::integer(r);
      }
    case BinOp::Pow: {
      if (!numeric) unsupported("** or pow()", a, b);
      if (!as_float && b.as_int() >= 0) {
        int64_t base = a.as_int(), exp = b.as_int(), result = 1;
        while (exp > 0) {
          if (exp & 1) result = mul_checked(result, base);
          exp >>= 1;
          if (exp) base = mul_checked(base, base);
        }
        return Value::integer(result);
      }
      if (a.as_double() == 0.0 && b.as_double() < 0) throw_error("0.0 cannot be raised to a negative power");
      return Value::number(std::pow(a.as_double(), b.as_double()));
    }
  }
  throw_error("unknown operator");
}

}  // namespace moe::tmpl::detail
