// regex_internal.h: the regex compiler's entry shared with the JSON Schema compiler (for `pattern`).
#pragma once
#include <string>
#include <string_view>

#include "grammar/grammar.h"

namespace moe::grammar {

// A GBNF expression for the regex subset of regex.cpp. With `json_string`, the expression spells the
// matched text as the inside of a JSON string (escaped) and an unanchored end may have any characters.
std::string regex_expression(std::string_view pattern, bool json_string, const Limits& limits);

}  // namespace moe::grammar
