// parser.cpp: recursive-descent parser following Jinja2 3.1's grammar and operator precedence (lowest
// first): inline if/else, or, and, not, comparisons (chained, with in / not in), + -, ~, * / // %, **,
// unary - +, then postfix (.attr, [index], [a:b:c], calls) with filters (|f) and tests (is [not] t) bound
// tightest. Tags: if/elif/else, for (tuple targets, inline if, else, recursive), set (incl. namespace
// attributes and block set), macro, call, filter, with, block, break/continue (loopcontrols, which HF
// enables), generation (HF's assistant-mask tag, rendered in place). Nesting is bounded so a hostile
// template cannot exhaust the stack: brackets and statements count toward the limit, and so does every
// link of a left-leaning chain (`1 + 1 + 1`, `a.b.c`, `x|f|g`, `a if b else c if d …`), because each
// link makes the tree one level deeper just as a parenthesis would. That bound on the tree's height is
// also what keeps the recursive evaluation and the nodes' recursive destructors within the stack.
#include "template/ast.h"

#include <algorithm>
#include <string_view>

#include "template/lexer.h"

namespace moe::tmpl::detail::ast {
namespace {

constexpr int kMaxNesting = 100;

bool is_reserved_constant(const std::string& n) {
  return n == "true" || n == "false" || n == "none" || n == "True" || n == "False" || n == "None";
}

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : toks_(std::move(tokens)) {}

  Body parse_template() {
    Body body = subparse({});
    if (cur().type != TokenType::Eof) fail("unexpected " + describe_token(cur()));
    return body;
  }

 private:
  struct DepthGuard {
    explicit DepthGuard(Parser& p) : p_(p) {
      if (++p_.depth_ > kMaxNesting) p_.fail("template nested too deeply (more than 100 levels)");
    }
    ~DepthGuard() { --p_.depth_; }
    Parser& p_;
  };
  // Counts the links of one left-leaning chain toward the nesting limit for as long as the chain is being
  // parsed (the operands parsed after a link sit that much deeper in the tree, so counting them at the
  // chain's depth is conservative, never short).
  struct ChainGuard {
    explicit ChainGuard(Parser& p) : p_(p) {}
    ChainGuard(const ChainGuard&) = delete;
    ChainGuard& operator=(const ChainGuard&) = delete;
    void link() {
      ++links_;
      if (++p_.depth_ > kMaxNesting) p_.fail("template nested too deeply (more than 100 levels)");
    }
    ~ChainGuard() { p_.depth_ -= links_; }
    Parser& p_;
    int links_ = 0;
  };
  struct MacroScope {
    bool varargs = false, kwargs = false, caller = false;
  };

  const Token& cur() const { return toks_[pos_]; }
  const Token& look() const { return toks_[std::min(pos_ + 1, toks_.size() - 1)]; }
  const Token& next() {
    const Token& t = toks_[pos_];
    if (pos_ + 1 < toks_.size()) ++pos_;
    return t;
  }
  static bool is_op(const Token& t, std::string_view op) { return t.type == TokenType::Operator && t.value == op; }
  static bool is_name(const Token& t, std::string_view n) { return t.type == TokenType::Name && t.value == n; }
  bool skip_op(std::string_view op) {
    if (!is_op(cur(), op)) return false;
    next();
    return true;
  }
  bool skip_name(std::string_view n) {
    if (!is_name(cur(), n)) return false;
    next();
    return true;
  }

  [[noreturn]] void fail(const std::string& msg, int line = 0) const {
    throw TemplateError{msg, line ? line : cur().line};
  }
  static std::string describe_token(const Token& t) {
    if (t.type == TokenType::Name || t.type == TokenType::Operator) return "'" + t.value + "'";
    return std::string("'") + describe(t.type) + "'";
  }
  void expect_type(TokenType type) {
    if (cur().type == type) {
      next();
      return;
    }
    if (cur().type == TokenType::Eof)
      fail(std::string("unexpected end of template, expected '") + describe(type) + "'.");
    fail(std::string("expected token '") + describe(type) + "', got " + describe_token(cur()));
  }
  void expect_op(std::string_view op) {
    if (skip_op(op)) return;
    if (cur().type == TokenType::Eof) fail("unexpected end of template, expected '" + std::string(op) + "'.");
    fail("expected token '" + std::string(op) + "', got " + describe_token(cur()));
  }
  std::string expect_name() {
    if (cur().type != TokenType::Name) {
      if (cur().type == TokenType::Eof) fail("unexpected end of template, expected 'name'.");
      fail("expected token 'name', got " + describe_token(cur()));
    }
    return next().value;
  }

  ExprPtr node(ExprKind kind, int line) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = line;
    return e;
  }
  StmtPtr stmt(StmtKind kind, int line) {
    auto s = std::make_unique<Stmt>();
    s->kind = kind;
    s->line = line;
    return s;
  }

  // ---- statements -------------------------------------------------------------------------------

  bool at_end_token(const std::vector<std::string_view>& end_tokens) const {
    if (cur().type != TokenType::Name) return false;
    return std::find(end_tokens.begin(), end_tokens.end(), cur().value) != end_tokens.end();
  }

  Body subparse(const std::vector<std::string_view>& end_tokens) {
    Body body;
    while (cur().type != TokenType::Eof) {
      const Token& t = cur();
      if (t.type == TokenType::Data) {
        auto s = stmt(StmtKind::Text, t.line);
        s->text = t.value;
        body.push_back(std::move(s));
        next();
      } else if (t.type == TokenType::VariableBegin) {
        int line = t.line;
        next();
        auto s = stmt(StmtKind::Output, line);
        s->expr = parse_tuple(false, true, {}, false);
        expect_type(TokenType::VariableEnd);
        body.push_back(std::move(s));
      } else if (t.type == TokenType::BlockBegin) {
        next();
        if (!end_tokens.empty() && at_end_token(end_tokens)) return body;
        body.push_back(parse_statement());
        expect_type(TokenType::BlockEnd);
      } else {
        fail("internal parser error: unexpected " + describe_token(t));
      }
    }
    return body;
  }

  [[noreturn]] void fail_unclosed(const std::vector<std::string_view>& end_tokens, const std::string& tag_name) {
    std::string expected;
    for (size_t k = 0; k < end_tokens.size(); ++k)
      expected += (k ? " or '" : "'") + std::string(end_tokens[k]) + "'";
    std::string msg = cur().type == TokenType::Eof ? "Unexpected end of template."
                                                    : "Encountered unknown tag '" + tag_name + "'.";
    fail(msg + " Jinja was looking for the following tags: " + expected +
         ". The innermost block that needs to be closed is '" + open_blocks_.back() + "'.");
  }

  // After a statement's head: `%}`, the body up to one of end_tokens, which is consumed when drop_needle.
  Body parse_statements(const std::vector<std::string_view>& end_tokens, bool drop_needle) {
    skip_op(":");
    expect_type(TokenType::BlockEnd);
    Body body = subparse(end_tokens);
    if (cur().type == TokenType::Eof) fail_unclosed(end_tokens, "");
    if (drop_needle) next();
    return body;
  }

  StmtPtr parse_statement() {
    DepthGuard guard(*this);
    const Token& t = cur();
    if (t.type != TokenType::Name) fail("tag name expected");
    const std::string name = t.value;
    open_blocks_.push_back(name);
    StmtPtr result;
    if (name == "if") {
      result = parse_if();
    } else if (name == "for") {
      result = parse_for();
    } else if (name == "set") {
      result = parse_set();
    } else if (name == "macro") {
      result = parse_macro();
    } else if (name == "call") {
      result = parse_call_block();
    } else if (name == "filter") {
      int line = next().line;
      auto s = stmt(StmtKind::FilterBlock, line);
      s->filter = parse_filter(nullptr, true);
      s->body = parse_statements({"endfilter"}, true);
      result = std::move(s);
    } else if (name == "with") {
      result = parse_with();
    } else if (name == "block" || name == "generation") {
      int line = next().line;
      auto s = stmt(StmtKind::Scope, line);
      if (name == "block") {
        s->name = expect_name();
        while (skip_name("scoped") || skip_name("required")) {
        }
        s->body = parse_statements({"endblock"}, true);
        if (cur().type == TokenType::Name) {
          if (cur().value != s->name) fail("mismatching name of block: '" + cur().value + "'");
          next();
        }
      } else {
        s->body = parse_statements({"endgeneration"}, true);
      }
      result = std::move(s);
    } else if (name == "print") {
      int line = next().line;
      auto s = stmt(StmtKind::Output, line);
      s->expr = parse_tuple(false, true, {}, false);
      result = std::move(s);
    } else if (name == "break" || name == "continue") {
      int line = next().line;
      if (loop_depth_ == 0) fail("'" + name + "' outside of a loop", line);
      result = stmt(name == "break" ? StmtKind::Break : StmtKind::Continue, line);
    } else if (name == "extends" || name == "include" || name == "import" || name == "from") {
      fail("'" + name + "' needs a template loader, which chat templates do not have");
    } else {
      open_blocks_.pop_back();
      if (!open_blocks_.empty() && name.rfind("end", 0) == 0)
        fail("Encountered unknown tag '" + name + "'. You probably made a nesting mistake: the innermost "
             "block that needs to be closed is '" + open_blocks_.back() + "'.");
      fail("Encountered unknown tag '" + name + "'.");
    }
    open_blocks_.pop_back();
    return result;
  }

  StmtPtr parse_if() {
    auto s = stmt(StmtKind::If, next().line);
    while (true) {
      ExprPtr test = parse_tuple(false, false, {}, false);
      Body body = parse_statements({"elif", "else", "endif"}, false);
      s->branches.emplace_back(std::move(test), std::move(body));
      std::string tok = next().value;
      if (tok == "elif") continue;
      if (tok == "else") s->else_body = parse_statements({"endif"}, true);
      break;
    }
    return s;
  }

  StmtPtr parse_for() {
    auto s = stmt(StmtKind::For, next().line);
    s->target = parse_assign_target(true, false, {"in"}, false);
    if (!skip_name("in")) fail("expected token 'in', got " + describe_token(cur()));
    s->expr = parse_tuple(false, false, {"recursive"}, false);
    if (skip_name("if")) s->test = parse_expression(true);
    s->recursive = skip_name("recursive");
    ++loop_depth_;
    s->body = parse_statements({"endfor", "else"}, false);
    --loop_depth_;
    if (next().value == "else") s->else_body = parse_statements({"endfor"}, true);
    return s;
  }

  StmtPtr parse_set() {
    int line = next().line;
    Target target = parse_assign_target(true, false, {}, true);
    if (skip_op("=")) {
      auto s = stmt(StmtKind::Set, line);
      s->target = std::move(target);
      s->expr = parse_tuple(false, true, {}, false);
      return s;
    }
    auto s = stmt(StmtKind::SetBlock, line);
    s->target = std::move(target);
    if (is_op(cur(), "|")) s->filter = parse_filter(nullptr, false);
    s->body = parse_statements({"endset"}, true);
    return s;
  }

  void parse_signature(Stmt& s) {
    expect_op("(");
    while (!is_op(cur(), ")")) {
      if (!s.params.empty()) expect_op(",");
      Target t = parse_assign_target(false, true, {}, false);
      if (skip_op("=")) {
        s.defaults.push_back(parse_expression(true));
      } else if (!s.defaults.empty()) {
        fail("non-default argument follows default argument");
      }
      s.params.push_back(t.name);
    }
    expect_op(")");
  }

  Body parse_macro_body(Stmt& s, std::string_view end_tag) {
    MacroScope scope;
    macro_scopes_.push_back(&scope);
    int saved_loops = loop_depth_;
    loop_depth_ = 0;
    Body body = parse_statements({end_tag}, true);
    loop_depth_ = saved_loops;
    macro_scopes_.pop_back();
    s.uses_varargs = scope.varargs;
    s.uses_kwargs = scope.kwargs;
    s.uses_caller = scope.caller;
    return body;
  }

  StmtPtr parse_macro() {
    auto s = stmt(StmtKind::Macro, next().line);
    s->name = parse_assign_target(false, true, {}, false).name;
    parse_signature(*s);
    s->body = parse_macro_body(*s, "endmacro");
    return s;
  }

  StmtPtr parse_call_block() {
    auto s = stmt(StmtKind::CallBlock, next().line);
    s->name = "caller";
    if (is_op(cur(), "(")) parse_signature(*s);
    s->expr = parse_expression(true);
    if (s->expr->kind != ExprKind::Call) fail("expected call", s->line);
    s->body = parse_macro_body(*s, "endcall");
    return s;
  }

  StmtPtr parse_with() {
    auto s = stmt(StmtKind::With, next().line);
    while (cur().type != TokenType::BlockEnd && cur().type != TokenType::Eof) {
      if (!s->assignments.empty()) expect_op(",");
      Target t = parse_assign_target(true, false, {}, false);
      expect_op("=");
      s->assignments.emplace_back(std::move(t), parse_expression(true));
    }
    s->body = parse_statements({"endwith"}, true);
    return s;
  }

  Target to_target(const Expr& e) {
    Target t;
    if (e.kind == ExprKind::Name) {
      if (is_reserved_constant(e.name)) fail("can't assign to 'const'", e.line);
      t.kind = Target::Kind::Name;
      t.name = e.name;
      return t;
    }
    if (e.kind == ExprKind::Tuple) {
      t.kind = Target::Kind::Tuple;
      for (const auto& item : e.items) t.items.push_back(to_target(*item));
      return t;
    }
    if (e.kind == ExprKind::Const) fail("can't assign to 'const'", e.line);
    fail("can't assign to this expression", e.line);
  }

  Target parse_assign_target(bool with_tuple, bool name_only, const std::vector<std::string_view>& extra_end,
                             bool with_namespace) {
    if (with_namespace && cur().type == TokenType::Name && is_op(look(), ".")) {
      Target t;
      t.kind = Target::Kind::NsAttr;
      t.name = next().value;
      next();  // the dot
      t.attr = expect_name();
      return t;
    }
    if (name_only) {
      Target t;
      t.name = expect_name();
      if (is_reserved_constant(t.name)) fail("can't assign to 'const'");
      return t;
    }
    ExprPtr e = with_tuple ? parse_tuple(true, true, extra_end, false) : parse_primary();
    return to_target(*e);
  }

  // ---- expressions ------------------------------------------------------------------------------

  bool is_tuple_end(const std::vector<std::string_view>& extra_end) const {
    const Token& t = cur();
    if (t.type == TokenType::VariableEnd || t.type == TokenType::BlockEnd || t.type == TokenType::Eof ||
        is_op(t, ")"))
      return true;
    return at_end_token(extra_end);
  }

  ExprPtr parse_tuple(bool simplified, bool with_condexpr, const std::vector<std::string_view>& extra_end,
                      bool explicit_parentheses) {
    int line = cur().line;
    std::vector<ExprPtr> args;
    bool is_tuple = false;
    while (true) {
      if (!args.empty()) expect_op(",");
      if (is_tuple_end(extra_end)) break;
      args.push_back(simplified ? parse_primary() : parse_expression(with_condexpr));
      if (is_op(cur(), ",")) {
        is_tuple = true;
      } else {
        break;
      }
    }
    if (!is_tuple) {
      if (!args.empty()) return std::move(args[0]);
      if (!explicit_parentheses) fail("Expected an expression, got " + describe_token(cur()));
    }
    auto e = node(ExprKind::Tuple, line);
    e->items = std::move(args);
    return e;
  }

  ExprPtr parse_expression(bool with_condexpr) {
    DepthGuard guard(*this);
    return with_condexpr ? parse_condexpr() : parse_or();
  }

  ExprPtr parse_condexpr() {
    int line = cur().line;
    ExprPtr expr1 = parse_or();
    ChainGuard chain(*this);
    while (skip_name("if")) {
      chain.link();
      ExprPtr expr2 = parse_or();
      ExprPtr expr3;
      if (skip_name("else")) expr3 = parse_condexpr();
      auto e = node(ExprKind::CondExpr, line);
      e->a = std::move(expr2);
      e->b = std::move(expr1);
      e->c = std::move(expr3);
      expr1 = std::move(e);
      line = cur().line;
    }
    return expr1;
  }

  ExprPtr parse_or() {
    int line = cur().line;
    ExprPtr left = parse_and();
    ChainGuard chain(*this);
    while (skip_name("or")) {
      chain.link();
      auto e = node(ExprKind::Or, line);
      e->a = std::move(left);
      e->b = parse_and();
      left = std::move(e);
      line = cur().line;
    }
    return left;
  }

  ExprPtr parse_and() {
    int line = cur().line;
    ExprPtr left = parse_not();
    ChainGuard chain(*this);
    while (skip_name("and")) {
      chain.link();
      auto e = node(ExprKind::And, line);
      e->a = std::move(left);
      e->b = parse_not();
      left = std::move(e);
      line = cur().line;
    }
    return left;
  }

  ExprPtr parse_not() {
    if (is_name(cur(), "not")) {
      DepthGuard guard(*this);
      auto e = node(ExprKind::Not, next().line);
      e->a = parse_not();
      return e;
    }
    return parse_compare();
  }

  ExprPtr parse_compare() {
    int line = cur().line;
    ExprPtr expr = parse_math1();
    auto cmp = node(ExprKind::Compare, line);
    while (true) {
      const Token& t = cur();
      CmpOp op;
      if (is_op(t, "==")) op = CmpOp::Eq;
      else if (is_op(t, "!=")) op = CmpOp::Ne;
      else if (is_op(t, "<")) op = CmpOp::Lt;
      else if (is_op(t, "<=")) op = CmpOp::Le;
      else if (is_op(t, ">")) op = CmpOp::Gt;
      else if (is_op(t, ">=")) op = CmpOp::Ge;
      else if (is_name(t, "in")) op = CmpOp::In;
      else if (is_name(t, "not") && is_name(look(), "in")) {
        next();
        op = CmpOp::NotIn;
      } else {
        break;
      }
      next();
      cmp->ops.push_back(op);
      cmp->items.push_back(parse_math1());
    }
    if (cmp->ops.empty()) return expr;
    cmp->a = std::move(expr);
    return cmp;
  }

  ExprPtr binary(BinOp op, ExprPtr left, ExprPtr right, int line) {
    auto e = node(ExprKind::Binary, line);
    e->op = op;
    e->a = std::move(left);
    e->b = std::move(right);
    return e;
  }

  ExprPtr parse_math1() {
    int line = cur().line;
    ExprPtr left = parse_concat();
    ChainGuard chain(*this);
    while (is_op(cur(), "+") || is_op(cur(), "-")) {
      chain.link();
      BinOp op = next().value == "+" ? BinOp::Add : BinOp::Sub;
      left = binary(op, std::move(left), parse_concat(), line);
      line = cur().line;
    }
    return left;
  }

  ExprPtr parse_concat() {
    int line = cur().line;
    ExprPtr first = parse_math2();
    if (!is_op(cur(), "~")) return first;
    auto e = node(ExprKind::Concat, line);
    e->items.push_back(std::move(first));
    while (skip_op("~")) e->items.push_back(parse_math2());
    return e;
  }

  ExprPtr parse_math2() {
    int line = cur().line;
    ExprPtr left = parse_pow();
    ChainGuard chain(*this);
    while (is_op(cur(), "*") || is_op(cur(), "/") || is_op(cur(), "//") || is_op(cur(), "%")) {
      chain.link();
      std::string op = next().value;
      BinOp b = op == "*" ? BinOp::Mul : op == "/" ? BinOp::Div : op == "//" ? BinOp::FloorDiv : BinOp::Mod;
      left = binary(b, std::move(left), parse_pow(), line);
      line = cur().line;
    }
    return left;
  }

  ExprPtr parse_pow() {
    int line = cur().line;
    ExprPtr left = parse_unary(true);
    ChainGuard chain(*this);
    while (skip_op("**")) {
      chain.link();
      left = binary(BinOp::Pow, std::move(left), parse_unary(true), line);
      line = cur().line;
    }
    return left;
  }

  ExprPtr parse_unary(bool with_filter) {
    DepthGuard guard(*this);
    int line = cur().line;
    ExprPtr e;
    if (is_op(cur(), "-") || is_op(cur(), "+")) {
      e = node(next().value == "-" ? ExprKind::Neg : ExprKind::Pos, line);
      e->a = parse_unary(false);
    } else {
      e = parse_primary();
    }
    e = parse_postfix(std::move(e));
    if (with_filter) e = parse_filter_expr(std::move(e));
    return e;
  }

  ExprPtr parse_primary() {
    DepthGuard guard(*this);
    const Token& t = cur();
    int line = t.line;
    if (t.type == TokenType::Name) {
      ExprPtr e;
      if (t.value == "true" || t.value == "True" || t.value == "false" || t.value == "False") {
        e = node(ExprKind::Const, line);
        e->value = Value::boolean(t.value == "true" || t.value == "True");
      } else if (t.value == "none" || t.value == "None") {
        e = node(ExprKind::Const, line);
        e->value = Value::none();
      } else {
        e = node(ExprKind::Name, line);
        e->name = t.value;
        if (!macro_scopes_.empty()) {
          MacroScope& m = *macro_scopes_.back();
          if (t.value == "varargs") m.varargs = true;
          if (t.value == "kwargs") m.kwargs = true;
          if (t.value == "caller") m.caller = true;
        }
      }
      next();
      return e;
    }
    if (t.type == TokenType::String) {
      std::string s;
      while (cur().type == TokenType::String) s += next().value;
      auto e = node(ExprKind::Const, line);
      e->value = Value::string(std::move(s));
      return e;
    }
    if (t.type == TokenType::Integer || t.type == TokenType::Float) {
      auto e = node(ExprKind::Const, line);
      e->value = t.type == TokenType::Integer ? Value::integer(t.int_value) : Value::number(t.float_value);
      next();
      return e;
    }
    if (is_op(t, "(")) {
      next();
      ExprPtr e = parse_tuple(false, true, {}, true);
      expect_op(")");
      return e;
    }
    if (is_op(t, "[")) {
      next();
      auto e = node(ExprKind::List, line);
      while (!is_op(cur(), "]")) {
        if (!e->items.empty()) expect_op(",");
        if (is_op(cur(), "]")) break;
        e->items.push_back(parse_expression(true));
      }
      expect_op("]");
      return e;
    }
    if (is_op(t, "{")) {
      next();
      auto e = node(ExprKind::Dict, line);
      while (!is_op(cur(), "}")) {
        if (!e->items.empty()) expect_op(",");
        if (is_op(cur(), "}")) break;
        e->items.push_back(parse_expression(true));
        expect_op(":");
        e->items.push_back(parse_expression(true));
      }
      expect_op("}");
      return e;
    }
    if (t.type == TokenType::Eof) fail("unexpected end of template");
    fail("unexpected " + describe_token(t));
  }

  ExprPtr parse_postfix(ExprPtr e) {
    ChainGuard chain(*this);
    while (true) {
      if (is_op(cur(), ".") || is_op(cur(), "[") || is_op(cur(), "(")) chain.link();
      if (is_op(cur(), ".") || is_op(cur(), "[")) {
        e = parse_subscript(std::move(e));
      } else if (is_op(cur(), "(")) {
        e = parse_call(std::move(e));
      } else {
        break;
      }
    }
    return e;
  }

  ExprPtr parse_filter_expr(ExprPtr e) {
    ChainGuard chain(*this);
    while (true) {
      if (is_op(cur(), "|") || is_name(cur(), "is") || is_op(cur(), "(")) chain.link();
      if (is_op(cur(), "|")) {
        e = parse_filter(std::move(e), false);
      } else if (is_name(cur(), "is")) {
        e = parse_test(std::move(e));
      } else if (is_op(cur(), "(")) {
        e = parse_call(std::move(e));
      } else {
        break;
      }
    }
    return e;
  }

  ExprPtr parse_subscript(ExprPtr obj) {
    const Token& t = next();
    int line = t.line;
    if (t.value == ".") {
      const Token& attr = next();
      if (attr.type == TokenType::Name) {
        auto e = node(ExprKind::GetAttr, line);
        e->a = std::move(obj);
        e->name = attr.value;
        return e;
      }
      if (attr.type != TokenType::Integer) fail("expected name or number", attr.line);
      auto e = node(ExprKind::GetItem, line);
      e->a = std::move(obj);
      e->b = node(ExprKind::Const, attr.line);
      e->b->value = Value::integer(attr.int_value);
      return e;
    }
    std::vector<ExprPtr> args;
    while (!is_op(cur(), "]")) {
      if (!args.empty()) expect_op(",");
      args.push_back(parse_subscribed());
    }
    expect_op("]");
    auto e = node(ExprKind::GetItem, line);
    e->a = std::move(obj);
    if (args.size() == 1) {
      e->b = std::move(args[0]);
    } else {
      e->b = node(ExprKind::Tuple, line);
      e->b->items = std::move(args);
    }
    return e;
  }

  ExprPtr parse_subscribed() {
    int line = cur().line;
    ExprPtr start;
    if (!skip_op(":")) {
      ExprPtr e = parse_expression(true);
      if (!is_op(cur(), ":")) return e;
      next();
      start = std::move(e);
    }
    auto s = node(ExprKind::Slice, line);
    s->a = std::move(start);
    if (!is_op(cur(), ":") && !is_op(cur(), "]") && !is_op(cur(), ",")) s->b = parse_expression(true);
    if (skip_op(":")) {
      if (!is_op(cur(), "]") && !is_op(cur(), ",")) s->c = parse_expression(true);
    }
    return s;
  }

  void parse_call_args(Expr& call) {
    int line = cur().line;
    expect_op("(");
    bool require_comma = false;
    auto ensure = [&](bool ok) {
      if (!ok) fail("invalid syntax for function call expression", line);
    };
    while (!is_op(cur(), ")")) {
      if (require_comma) {
        expect_op(",");
        if (is_op(cur(), ")")) break;
      }
      if (is_op(cur(), "*")) {
        ensure(!call.dyn_args && !call.dyn_kwargs);
        next();
        call.dyn_args = parse_expression(true);
      } else if (is_op(cur(), "**")) {
        ensure(!call.dyn_kwargs);
        next();
        call.dyn_kwargs = parse_expression(true);
      } else if (cur().type == TokenType::Name && is_op(look(), "=")) {
        ensure(!call.dyn_kwargs);
        std::string key = next().value;
        next();
        call.kwargs.emplace_back(key, parse_expression(true));
      } else {
        ensure(!call.dyn_args && !call.dyn_kwargs && call.kwargs.empty());
        call.items.push_back(parse_expression(true));
      }
      require_comma = true;
    }
    expect_op(")");
  }

  ExprPtr parse_call(ExprPtr callee) {
    auto e = node(ExprKind::Call, cur().line);
    e->a = std::move(callee);
    parse_call_args(*e);
    return e;
  }

  ExprPtr parse_filter(ExprPtr input, bool start_inline) {
    ChainGuard chain(*this);
    while (is_op(cur(), "|") || start_inline) {
      chain.link();
      if (!start_inline) next();
      int line = cur().line;
      std::string name = expect_name();
      while (skip_op(".")) {
      name.push_back('.');
      name += expect_name();
    }
      auto e = node(ExprKind::Filter, line);
      e->a = std::move(input);
      e->name = name;
      if (is_op(cur(), "(")) parse_call_args(*e);
      input = std::move(e);
      start_inline = false;
    }
    return input;
  }

  ExprPtr parse_test(ExprPtr subject) {
    int line = next().line;  // 'is'
    bool negated = skip_name("not");
    std::string name = expect_name();
    while (skip_op(".")) {
      name.push_back('.');
      name += expect_name();
    }
    auto e = node(ExprKind::Test, line);
    e->a = std::move(subject);
    e->name = name;
    const Token& t = cur();
    if (is_op(t, "(")) {
      parse_call_args(*e);
    } else if ((t.type == TokenType::Name || t.type == TokenType::String || t.type == TokenType::Integer ||
                t.type == TokenType::Float || is_op(t, "[") || is_op(t, "{")) &&
               !is_name(t, "else") && !is_name(t, "or") && !is_name(t, "and")) {
      if (is_name(t, "is")) fail("You cannot chain multiple tests with is");
      e->items.push_back(parse_postfix(parse_primary()));
    }
    if (!negated) return e;
    auto n = node(ExprKind::Not, line);
    n->a = std::move(e);
    return n;
  }

  std::vector<Token> toks_;
  size_t pos_ = 0;
  int depth_ = 0;
  int loop_depth_ = 0;
  std::vector<std::string> open_blocks_;
  std::vector<MacroScope*> macro_scopes_;
};

}  // namespace

Body parse(const std::string& source) { return Parser(tokenize(source)).parse_template(); }

}  // namespace moe::tmpl::detail::ast
