// ast.h: the parsed template. One node struct per family (expressions, statements) with a kind tag
// rather than a class hierarchy: the interpreter switches on the kind, and the parser fills only the
// fields a kind uses (documented per kind below).
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "template/value.h"

namespace moe::tmpl::detail::ast {

enum class ExprKind : uint8_t {
  Const,     // value
  Name,      // name
  GetAttr,   // a.name
  GetItem,   // a[b]  (b may be a Slice)
  Slice,     // a:b:c, each may be null
  Call,      // a(args, kwargs)
  Filter,    // a|name(args, kwargs); a is null inside {% filter %} / {% set x | f %} chains
  Test,      // a is [not] name(args)
  Neg, Pos, Not,  // a
  And, Or,   // a, b
  Binary,    // a op b
  Compare,   // a op1 items[0] op2 items[1] ...
  CondExpr,  // b if a else c (c may be null)
  List, Tuple,  // items
  Dict,      // items: key, value, key, value, ...
  Concat,    // items joined with ~
};

enum class BinOp : uint8_t { Add, Sub, Mul, Div, FloorDiv, Mod, Pow };
enum class CmpOp : uint8_t { Eq, Ne, Lt, Le, Gt, Ge, In, NotIn };

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  ExprKind kind = ExprKind::Const;
  int line = 0;
  Value value;
  std::string name;
  ExprPtr a, b, c;
  std::vector<ExprPtr> items;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  ExprPtr dyn_args, dyn_kwargs;  // *args, **kwargs in calls
  std::vector<CmpOp> ops;
  BinOp op = BinOp::Add;
};

// Left side of set / for / with: a name, a tuple of targets, or namespace.attr.
struct Target {
  enum class Kind : uint8_t { Name, Tuple, NsAttr } kind = Kind::Name;
  std::string name, attr;
  std::vector<Target> items;
};

enum class StmtKind : uint8_t {
  Text,        // text
  Output,      // expr
  If,          // branches (test, body)..., else_body
  For,         // target in expr [if test] body [else else_body]; recursive
  Set,         // target = expr
  SetBlock,    // target [| filter] = rendered body
  Macro,       // name(params=defaults) body
  CallBlock,   // {% call(params) expr %} body: body becomes `caller`
  FilterBlock, // filter applied to the rendered body
  With,        // with_assignments, body (own scope)
  Break, Continue,
  Scope,       // {% block %} / {% generation %}: body rendered in place in its own scope
};

struct Stmt;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

struct Stmt {
  StmtKind kind = StmtKind::Text;
  int line = 0;
  std::string text;
  ExprPtr expr;
  ExprPtr test;    // For: the inline `if` filter
  ExprPtr filter;  // SetBlock / FilterBlock: a Filter chain whose innermost input is null
  std::vector<std::pair<ExprPtr, Body>> branches;
  Body body, else_body;
  Target target;
  bool recursive = false;
  // Macro / CallBlock signature.
  std::string name;
  std::vector<std::string> params;
  std::vector<ExprPtr> defaults;  // for the last defaults.size() params
  bool uses_varargs = false, uses_kwargs = false, uses_caller = false;
  std::vector<std::pair<Target, ExprPtr>> assignments;  // With
};

// Parses tokens into a body; throws TemplateError (with line) on a syntax error.
Body parse(const std::string& source);

}  // namespace moe::tmpl::detail::ast
