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

struct ChatTemplate::Impl {
  detail::ast::Body body;
  Limits limits;
};

ChatTemplate::ChatTemplate(const std::string& source, const Limits& limits) : impl_(std::make_unique<Impl>()) {
  impl_->limits = limits;
  try {
    impl_->body = detail::ast::parse(source);
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
