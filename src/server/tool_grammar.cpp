// tool_grammar.cpp: see tool_grammar.h.
#include "server/tool_grammar.h"

#include "grammar/grammar.h"
#include "server/request.h"
#include "util/error.h"

namespace moe::server {
namespace {

// A rule name for tool i: GBNF names are letters, digits and '-', and function names may hold '_'.
std::string args_rule(size_t i) { return cat("tool", i, "-args"); }

ApiError schema_error(size_t i, const grammar::GrammarError& e) {
  const std::string p = cat("tools[", i, "].function.parameters");
  return invalid_param(p, cat("'", p, "' cannot be compiled into a grammar",
                              e.keyword.empty() ? "" : cat(" (keyword '", e.keyword, "')"), ": ", e.what()),
                       "invalid_schema");
}

}  // namespace

void check_tool_schemas(const ToolRequest& tools) {
  for (size_t i = 0; i < tools.parameters.size(); ++i) {
    try {
      grammar::compile_gbnf("root ::= " + args_rule(i) + "\n" + grammar::json_schema_to_gbnf(tools.parameters[i], args_rule(i)));
    } catch (const grammar::GrammarError& e) {
      throw schema_error(i, e);
    }
  }
}

std::string tool_call_gbnf(const ToolRequest& tools, ToolFormat format, std::string_view template_source) {
  std::string rules;
  std::string alternatives;
  const bool mistral_args = template_source.find("[ARGS]") != std::string_view::npos;
  for (size_t i = 0; i < tools.names.size(); ++i) {
    if (tools.choice == ToolChoice::Named && tools.names[i] != tools.named) continue;
    rules += grammar::json_schema_to_gbnf(tools.parameters[i], args_rule(i));
    rules += "\n";
    const std::string& name = tools.names[i];
    std::string call;
    switch (format) {
      case ToolFormat::Hermes:
        call = grammar::gbnf_literal("<tool_call>\n{\"name\": \"" + name + "\", \"arguments\": ") + " " + args_rule(i) +
               " " + grammar::gbnf_literal("}\n</tool_call>");
        break;
      case ToolFormat::Mistral:
        call = mistral_args ? grammar::gbnf_literal("[TOOL_CALLS]" + name + "[ARGS]") + " " + args_rule(i)
                            : grammar::gbnf_literal("{\"name\": \"" + name + "\", \"arguments\": ") + " " + args_rule(i) +
                                  " " + grammar::gbnf_literal("}");
        break;
      case ToolFormat::Llama3:
        call = grammar::gbnf_literal("{\"name\": \"" + name + "\", \"parameters\": ") + " " + args_rule(i) + " " +
               grammar::gbnf_literal("}");
        break;
      case ToolFormat::None: fail("tool_call_gbnf: no tool format");
    }
    alternatives += (alternatives.empty() ? "" : " | ") + std::string("(") + call + ")";
  }
  const bool many = tools.parallel && format != ToolFormat::Llama3;
  std::string root;
  if (format == ToolFormat::Mistral && !mistral_args) {
    root = "root ::= " + grammar::gbnf_literal("[TOOL_CALLS][") + " call" + (many ? " (\", \" call)*" : "") + " \"]\"\n";
  } else if (format == ToolFormat::Hermes) {
    root = std::string("root ::= call") + (many ? " (\"\\n\" call)*" : "") + "\n";
  } else {
    root = std::string("root ::= call") + (many ? " call*" : "") + "\n";
  }
  return root + "call ::= " + alternatives + "\n" + rules;
}

std::shared_ptr<const grammar::Grammar> tool_call_grammar(const ToolRequest& tools, ToolFormat format,
                                                          std::string_view template_source) {
  try {
    return grammar::compile_gbnf(tool_call_gbnf(tools, format, template_source));
  } catch (const grammar::GrammarError& e) {
    throw invalid_param("tools", cat("the tool-call grammar of these tools cannot be compiled: ", e.what()),
                        "invalid_schema");
  }
}

}  // namespace moe::server
