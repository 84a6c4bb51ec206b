// tool_grammar.h: the grammar that makes a `tool_choice: "required"` or named-function answer a
// well-formed call in the template's own format, with arguments that follow the function's parameter
// schema (grammar/grammar.h compiles the schema), so such an answer always parses and validates. Also
// checks every tool's schema at request time, so a schema the compiler refuses is a 400 naming it.
//
// The call text is the one the template teaches (tools.h):
//   Hermes   <tool_call>\n{"name": "NAME", "arguments": ARGS}\n</tool_call>   (parallel: "\n" between)
//   Mistral  templates with [ARGS] (Small 3.x, v7): [TOOL_CALLS]NAME[ARGS]ARGS, repeated when parallel;
//            the others (Nemo): [TOOL_CALLS][{"name": "NAME", "arguments": ARGS}, …]
//   Llama3   {"name": "NAME", "parameters": ARGS}   (always one call: Llama 3's template takes one)
// With parallel_tool_calls false there is exactly one call; otherwise one or more, until the model
// ends (the grammar allows end-of-sequence after each complete call).
#pragma once
#include <memory>
#include <string>
#include <string_view>

#include "server/tools.h"

namespace moe::grammar { class Grammar; }

namespace moe::server {

// The parameter schemas of every tool compiled (each alone); 400 naming
// tools[i].function.parameters (and the keyword the compiler refused) for the first that fails.
void check_tool_schemas(const ToolRequest& tools);

// The GBNF text of the constraint for a required / named tool choice.
std::string tool_call_gbnf(const ToolRequest& tools, ToolFormat format, std::string_view template_source);

// Compiled; 400 naming `tools` when the combined grammar is refused (e.g. past the limits).
std::shared_ptr<const grammar::Grammar> tool_call_grammar(const ToolRequest& tools, ToolFormat format,
                                                          std::string_view template_source);

}  // namespace moe::server
