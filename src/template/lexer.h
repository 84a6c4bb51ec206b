// lexer.h: splits a template into data text and the tokens inside {{ }} / {% %} tags, applying Jinja2's
// whitespace rules as HF configures them (trim_blocks, lstrip_blocks, keep_trailing_newline=False,
// `-`/`+` markers). Whitespace control is decided here, at the token level, exactly where Jinja2's lexer
// decides it, so the parser and interpreter never see stripped text.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace moe::tmpl::detail {

enum class TokenType : uint8_t {
  Data, BlockBegin, BlockEnd, VariableBegin, VariableEnd, Name, String, Integer, Float, Operator, Eof
};

struct Token {
  TokenType type = TokenType::Eof;
  std::string value;  // data text, name, decoded string literal, operator spelling
  int64_t int_value = 0;
  double float_value = 0;
  int line = 1;
};

// Throws TemplateError (with line) on a lexical error: an unterminated comment or raw block, an
// unexpected character, unbalanced brackets, a bad escape in a string literal.
std::vector<Token> tokenize(std::string_view source);

const char* describe(TokenType t);

}  // namespace moe::tmpl::detail
