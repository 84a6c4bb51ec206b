// chat_template.cpp: the public face of the interpreter: parse once, render many times (render is
// const and thread-safe: each call has its own interpreter state), with the variables HF's
// apply_chat_template passes: messages, add_generation_prompt, bos_token, eos_token, tools (left
// undefined when null, so `tools is defined` and `for tool in tools` behave as with no tools), plus
// any extra variables.
#include "template/chat_template.h"

#include "template/ast.h"
#include "template/builtins.h"
#include "template/interpreter.h"
#include "util/error.h"

namespace moe::tmpl {

namespace {

using detail::ast::Expr;
using detail::ast::ExprKind;
using detail::ast::Stmt;
using detail::ast::StmtKind;

// Jinja2 rejects an unknown filter or test when it compiles the template, unless the use sits inside
// an if-statement or an inline if ("soft" frames: there it fails only if that branch runs). A loop,
// macro, call, filter, set or with body starts a new frame that is not soft again.
void check_expr(const Expr* e, bool soft) {
  if (!e) return;
  if (!soft) {
    if (e->kind == ExprKind::Filter && !detail::find_filter(e->name))
      throw detail::TemplateError{"No filter named '" + e->name + "'.", e->line};
    if (e->kind == ExprKind::Test && !detail::find_test(e->name))
      throw detail::TemplateError{"No test named '" + e->name + "'.", e->line};
  }
  const bool inner_soft = soft || e->kind == ExprKind::CondExpr;
  check_expr(e->a.get(), inner_soft);
  check_expr(e->b.get(), inner_soft);
  check_expr(e->c.get(), inner_soft);
  check_expr(e->dyn_args.get(), inner_soft);
  check_expr(e->dyn_kwargs.get(), inner_soft);
  for (const auto& item : e->items) check_expr(item.get(), inner_soft);
  for (const auto& kw : e->kwargs) check_expr(kw.second.get(), inner_soft);
}

void check_body(const detail::ast::Body& body, bool soft);

void check_stmt(const Stmt& s, bool soft) {
  switch (s.kind) {
    case StmtKind::If:
      for (const auto& [test, body] : s.branches) {
        check_expr(test.get(), true);
        check_body(body, true);
      }
      check_body(s.else_body, true);
      return;
    case StmtKind::For:
      check_expr(s.expr.get(), soft);
      check_expr(s.test.get(), false);
      check_body(s.body, false);
      check_body(s.else_body, false);
      return;
    case StmtKind::Macro:
    case StmtKind::CallBlock:
      for (const auto& d : s.defaults) check_expr(d.get(), false);
      check_expr(s.expr.get(), soft);
      check_body(s.body, false);
      return;
    case StmtKind::With:
      for (const auto& a : s.assignments) check_expr(a.second.get(), soft);
      check_body(s.body, false);
      return;
    case StmtKind::SetBlock:
    case StmtKind::FilterBlock:
      check_expr(s.filter.get(), soft);
      check_body(s.body, false);
      return;
    case StmtKind::Scope: check_body(s.body, false); return;
    default: check_expr(s.expr.get(), soft); return;
  }
}

void check_body(const detail::ast::Body& body, bool soft) {
  for (const auto& s : body) check_stmt(*s, soft);
}

}  // namespace

struct ChatTemplate::Impl {
  detail::ast::Body body;
  Limits limits;
};

ChatTemplate::ChatTemplate(const std::string& source, const Limits& limits) : impl_(std::make_unique<Impl>()) {
  impl_->limits = limits;
  try {
    impl_->body = detail::ast::parse(source);
    check_body(impl_->body, false);
  } catch (const detail::TemplateError& e) {
    fail("chat template syntax error at line ", e.line, ": ", e.message);
  }
}

ChatTemplate::~ChatTemplate() = default;
ChatTemplate::ChatTemplate(ChatTemplate&&) noexcept = default;
ChatTemplate& ChatTemplate::operator=(ChatTemplate&&) noexcept = default;

std::string ChatTemplate::render(const nlohmann::ordered_json& messages, const RenderOptions& options) const {
  using namespace detail;
  try {
    Interpreter interpreter(impl_->limits, options);
    auto globals = std::make_shared<Scope>();
    install_globals(*globals);
    auto context = std::make_shared<Scope>();
    context->parent = globals;
    context->vars["messages"] = from_json(messages);
    context->vars["add_generation_prompt"] = Value::boolean(options.add_generation_prompt);
    context->vars["bos_token"] = Value::string(options.bos_token);
    context->vars["eos_token"] = Value::string(options.eos_token);
    if (!options.tools.is_null()) context->vars["tools"] = from_json(options.tools);
    if (options.extra.is_object())
      for (auto it = options.extra.begin(); it != options.extra.end(); ++it)
        context->vars[it.key()] = from_json(it.value());
    auto top = std::make_shared<Scope>();
    top->parent = context;
    return interpreter.render(impl_->body, top);
  } catch (const RaisedException& e) {
    throw Error(e.message);
  } catch (const TemplateError& e) {
    if (e.line > 0) fail("chat template error at line ", e.line, ": ", e.message);
    fail("chat template error: ", e.message);
  }
}

}  // namespace moe::tmpl
