// lexer.cpp: Jinja2 3.1's lexer rules, hand-written (see lexer.h). The regular expressions of Jinja2's
// lexer are followed rule by rule: the root rule finds the next `{{`, `{%` or `{#` and strips the text
// before it (`-`: all trailing whitespace; lstrip_blocks: spaces and tabs back to the line start for
// block and comment tags only, when the tag starts its line); a block or comment end takes one newline
// after it (trim_blocks) unless written `+%}`; `-%}` and `-}}` take all whitespace after them.
#include "template/lexer.h"

#include <cmath>
#include <cstdlib>

#include "template/value.h"

namespace moe::tmpl::detail {

const char* describe(TokenType t) {
  switch (t) {
    case TokenType::Data: return "template data / text";
    case TokenType::BlockBegin: return "begin of statement block";
    case TokenType::BlockEnd: return "end of statement block";
    case TokenType::VariableBegin: return "begin of print statement";
    case TokenType::VariableEnd: return "end of print statement";
    case TokenType::Name: return "name";
    case TokenType::String: return "string";
    case TokenType::Integer: return "integer";
    case TokenType::Float: return "float";
    case TokenType::Operator: return "operator";
    case TokenType::Eof: return "end of template";
  }
  return "token";
}

namespace {

[[noreturn]] void lex_error(int line, std::string message) { throw TemplateError{std::move(message), line}; }

char32_t code_point_at(std::string_view s, size_t i, size_t* len) { return decode_one(s, i, len); }

// Length of `s` without its trailing (Python) whitespace.
size_t rstrip_length(std::string_view s) {
  size_t end = s.size();
  while (end > 0) {
    size_t start = end - 1;
    while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xc0) == 0x80 && end - start < 4) --start;
    size_t len;
    char32_t c = code_point_at(s, start, &len);
    if (start + len != end) {  // not one well-formed code point: treat the last byte alone
      start = end - 1;
      c = static_cast<unsigned char>(s[start]);
    }
    if (!py_isspace(c)) break;
    end = start;
  }
  return end;
}

// Index just past the whitespace run starting at i.
size_t skip_space(std::string_view s, size_t i) {
  while (i < s.size()) {
    size_t len;
    char32_t c = code_point_at(s, i, &len);
    if (!py_isspace(c)) break;
    i += len;
  }
  return i;
}

bool all_space(std::string_view s) { return !s.empty() && skip_space(s, 0) == s.size(); }

bool starts(std::string_view s, size_t i, std::string_view what) { return s.substr(i, what.size()) == what; }

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Python's unicode-escape decoding of a string literal's body (after HF's backslashreplace step, so a
// backslash before a non-ASCII character escapes the backslash-escape text of that character).
std::string unescape(std::string_view body, int line) {
  std::string out;
  out.reserve(body.size());
  for (size_t i = 0; i < body.size(); ++i) {
    char c = body[i];
    if (c != '\\') {
      out.push_back(c);
      continue;
    }
    if (i + 1 >= body.size()) lex_error(line, "\\ at end of string");
    char e = body[++i];
    switch (e) {
      case '\n': break;  // line continuation
      case '\\': out.push_back('\\'); break;
      case '\'': out.push_back('\''); break;
      case '"': out.push_back('"'); break;
      case 'a': out.push_back('\a'); break;
      case 'b': out.push_back('\b'); break;
      case 'f': out.push_back('\f'); break;
      case 'n': out.push_back('\n'); break;
      case 'r': out.push_back('\r'); break;
      case 't': out.push_back('\t'); break;
      case 'v': out.push_back('\v'); break;
      case 'x':
      case 'u':
      case 'U': {
        int digits = e == 'x' ? 2 : e == 'u' ? 4 : 8;
        uint32_t v = 0;
        for (int k = 0; k < digits; ++k) {
          int h = i + 1 + k < body.size() ? hex_value(body[i + 1 + k]) : -1;
          if (h < 0) lex_error(line, std::string("truncated \\") + e + " escape");
          v = v * 16 + static_cast<uint32_t>(h);
        }
        if (v > 0x10ffff) lex_error(line, "illegal Unicode character");
        append_utf8(out, v);
        i += digits;
        break;
      }
      case 'N': lex_error(line, "\\N{...} escapes are not supported");
      default:
        if (e >= '0' && e <= '7') {
          uint32_t v = static_cast<uint32_t>(e - '0');
          for (int k = 0; k < 2 && i + 1 < body.size() && body[i + 1] >= '0' && body[i + 1] <= '7'; ++k)
            v = v * 8 + static_cast<uint32_t>(body[++i] - '0');
          append_utf8(out, v);
        } else if (static_cast<unsigned char>(e) >= 0x80) {
          // "\é" became "\\xe9" before decoding: a backslash, then the escape's text.
          size_t len;
          char32_t cp = code_point_at(body, i, &len);
          char buf[16];
          if (cp < 0x100)
            std::snprintf(buf, sizeof buf, "\\x%02x", static_cast<unsigned>(cp));
          else if (cp < 0x10000)
            std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(cp));
          else
            std::snprintf(buf, sizeof buf, "\\U%08x", static_cast<unsigned>(cp));
          out += buf;
          i += len - 1;
        } else {
          out.push_back('\\');  // unknown escapes stay as written
          out.push_back(e);
        }
    }
  }
  return out;
}

class Lexer {
 public:
  explicit Lexer(std::string_view source) {
    // Newlines become \n; one trailing newline is dropped (keep_trailing_newline=False).
    src_.reserve(source.size());
    for (size_t i = 0; i < source.size(); ++i) {
      if (source[i] == '\r') {
        if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
        src_.push_back('\n');
      } else {
        src_.push_back(source[i]);
      }
    }
    if (!src_.empty() && src_.back() == '\n') src_.pop_back();
  }

  std::vector<Token> run() {
    size_t pos = 0;
    const size_t n = src_.size();
    while (pos < n) {
      size_t tag = find_tag(pos);
      if (tag == std::string::npos) {
        emit_data(pos, src_.substr(pos));
        break;
      }
      char kind = src_[tag + 1];
      size_t after = tag + 2;
      char sign = (after < n && (src_[after] == '-' || src_[after] == '+')) ? src_[after] : 0;
      size_t raw_body = kind == '%' ? match_raw_begin(after) : std::string::npos;

      std::string text = src_.substr(pos, tag - pos);
      if (sign == '-') {
        text.resize(rstrip_length(text));
      } else if (sign != '+' && kind != '{') {
        size_t l_pos = text.rfind('\n');
        l_pos = l_pos == std::string::npos ? 0 : l_pos + 1;
        if ((l_pos > 0 || line_starting_) && all_space(std::string_view(text).substr(l_pos))) text.resize(l_pos);
      }
      emit_data(pos, std::move(text));

      if (raw_body != std::string::npos) {
        line_starting_ = src_[raw_body - 1] == '\n';
        pos = lex_raw(raw_body);
      } else if (kind == '#') {
        line_starting_ = false;
        pos = lex_comment(after + (sign ? 1 : 0), tag);
      } else {
        line_starting_ = false;
        pos = lex_tag(kind, after + (sign ? 1 : 0), tag);
      }
    }
    Token eof;
    eof.type = TokenType::Eof;
    eof.line = line_at(n);
    tokens_.push_back(std::move(eof));
    return std::move(tokens_);
  }

 private:
  int line_at(size_t pos) {
    while (line_pos_ < pos && line_pos_ < src_.size()) {
      if (src_[line_pos_] == '\n') ++line_;
      ++line_pos_;
    }
    return line_;
  }

  size_t find_tag(size_t pos) const {
    for (size_t p = src_.find('{', pos); p != std::string::npos; p = src_.find('{', p + 1))
      if (p + 1 < src_.size() && (src_[p + 1] == '{' || src_[p + 1] == '%' || src_[p + 1] == '#')) return p;
    return std::string::npos;
  }

  void emit_data(size_t pos, std::string text) {
    if (text.empty()) return;
    Token t;
    t.type = TokenType::Data;
    t.line = line_at(pos);
    t.value = std::move(text);
    tokens_.push_back(std::move(t));
  }

  void emit(TokenType type, size_t pos, std::string value = {}) {
    Token t;
    t.type = type;
    t.line = line_at(pos);
    t.value = std::move(value);
    tokens_.push_back(std::move(t));
  }

  // `{%[-+]?\s*raw\s*(-%}\s*|%})` at the tag whose body starts at `after`: the position after it, or npos.
  size_t match_raw_begin(size_t after) const {
    size_t p = after;
    if (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) ++p;
    p = skip_space(src_, p);
    if (!starts(src_, p, "raw")) return std::string::npos;
    p = skip_space(src_, p + 3);
    if (starts(src_, p, "-%}")) return skip_space(src_, p + 3);
    if (starts(src_, p, "%}")) return p + 2;
    return std::string::npos;
  }

  size_t lex_raw(size_t body) {
    const size_t n = src_.size();
    for (size_t q = src_.find("{%", body); q != std::string::npos; q = src_.find("{%", q + 1)) {
      size_t p = q + 2;
      char sign = (p < n && (src_[p] == '-' || src_[p] == '+')) ? src_[p] : 0;
      if (sign) ++p;
      p = skip_space(src_, p);
      if (!starts(src_, p, "endraw")) continue;
      p = skip_space(src_, p + 6);
      size_t end;
      if (starts(src_, p, "+%}")) {
        end = p + 3;
      } else if (starts(src_, p, "-%}")) {
        end = skip_space(src_, p + 3);
      } else if (starts(src_, p, "%}")) {
        end = p + 2;
        if (end < n && src_[end] == '\n') ++end;
      } else {
        continue;
      }
      std::string text = src_.substr(body, q - body);
      if (sign == '-') {
        text.resize(rstrip_length(text));
      } else if (sign != '+') {
        size_t l_pos = text.rfind('\n');
        l_pos = l_pos == std::string::npos ? 0 : l_pos + 1;
        if ((l_pos > 0 || line_starting_) && all_space(std::string_view(text).substr(l_pos))) text.resize(l_pos);
      }
      emit_data(body, std::move(text));
      line_starting_ = src_[end - 1] == '\n';
      return end;
    }
    lex_error(line_at(body), "Missing end of raw directive");
  }

  size_t lex_comment(size_t body, size_t tag) {
    for (size_t r = src_.find("#}", body); r != std::string::npos; r = src_.find("#}", r + 1)) {
      size_t end = r + 2;
      if (r > body && src_[r - 1] == '+') {
        // `+#}` keeps what follows
      } else if (r > body && src_[r - 1] == '-') {
        end = skip_space(src_, end);
      } else if (end < src_.size() && src_[end] == '\n') {
        ++end;
      }
      line_starting_ = src_[end - 1] == '\n';
      return end;
    }
    lex_error(line_at(tag), "Missing end of comment tag");
  }

  size_t lex_tag(char kind, size_t pos, size_t tag) {
    const size_t n = src_.size();
    const bool block = kind == '%';
    emit(block ? TokenType::BlockBegin : TokenType::VariableBegin, tag);
    std::string balance;
    while (pos < n) {
      if (balance.empty()) {
        if (block) {
          if (starts(src_, pos, "+%}")) {
            emit(TokenType::BlockEnd, pos);
            line_starting_ = false;
            return pos + 3;
          }
          if (starts(src_, pos, "-%}")) {
            emit(TokenType::BlockEnd, pos);
            size_t end = skip_space(src_, pos + 3);
            line_starting_ = src_[end - 1] == '\n';
            return end;
          }
          if (starts(src_, pos, "%}")) {
            emit(TokenType::BlockEnd, pos);
            size_t end = pos + 2;
            if (end < n && src_[end] == '\n') ++end;
            line_starting_ = src_[end - 1] == '\n';
            return end;
          }
        } else {
          if (starts(src_, pos, "-}}")) {
            emit(TokenType::VariableEnd, pos);
            size_t end = skip_space(src_, pos + 3);
            line_starting_ = src_[end - 1] == '\n';
            return end;
          }
          if (starts(src_, pos, "}}")) {
            emit(TokenType::VariableEnd, pos);
            line_starting_ = false;
            return pos + 2;
          }
        }
      }
      size_t space_end = skip_space(src_, pos);
      if (space_end > pos) {
        pos = space_end;
        continue;
      }
      unsigned char c = static_cast<unsigned char>(src_[pos]);
      if (c >= '0' && c <= '9') {
        pos = lex_number(pos);
        continue;
      }
      if (c == '\'' || c == '"') {
        size_t end = pos + 1;
        while (end < n && src_[end] != static_cast<char>(c)) end += src_[end] == '\\' ? 2 : 1;
        if (end < n) {
          Token t;
          t.type = TokenType::String;
          t.line = line_at(pos);
          t.value = unescape(std::string_view(src_).substr(pos + 1, end - pos - 1), t.line);
          tokens_.push_back(std::move(t));
          pos = end + 1;
          continue;
        }
        lex_error(line_at(pos), std::string("unexpected char ") + repr_string(std::string(1, c)) + " at " +
                                    std::to_string(pos));
      }
      size_t name_end = pos;
      while (name_end < n) {
        size_t len;
        char32_t cp = code_point_at(src_, name_end, &len);
        if (!(cp == '_' || is_alnum(cp))) break;
        name_end += len;
      }
      if (name_end > pos) {
        emit(TokenType::Name, pos, src_.substr(pos, name_end - pos));
        pos = name_end;
        continue;
      }
      static const char* const two[] = {"//", "**", "==", "!=", ">=", "<="};
      bool matched = false;
      for (const char* op : two)
        if (starts(src_, pos, op)) {
          emit(TokenType::Operator, pos, op);
          pos += 2;
          matched = true;
          break;
        }
      if (matched) continue;
      if (std::string_view("+-/*%~[](){}><=.:|,;").find(static_cast<char>(c)) != std::string_view::npos) {
        if (c == '(' || c == '[' || c == '{') {
          balance.push_back(c == '(' ? ')' : c == '[' ? ']' : '}');
        } else if (c == ')' || c == ']' || c == '}') {
          if (balance.empty()) lex_error(line_at(pos), std::string("unexpected '") + static_cast<char>(c) + "'");
          if (balance.back() != static_cast<char>(c))
            lex_error(line_at(pos), std::string("unexpected '") + static_cast<char>(c) + "', expected '" +
                                        balance.back() + "'");
          balance.pop_back();
        }
        emit(TokenType::Operator, pos, std::string(1, static_cast<char>(c)));
        ++pos;
        continue;
      }
      size_t len;
      char32_t cp = code_point_at(src_, pos, &len);
      std::string ch;
      append_utf8(ch, cp);
      lex_error(line_at(pos), "unexpected char " + repr_string(ch) + " at " + std::to_string(pos));
    }
    return pos;  // end of template inside a tag: the parser reports it
  }

  // Digits with single underscores between them, from `pos`: the end, or pos when none.
  size_t digits_end(size_t pos, int base = 10) const {
    size_t p = pos;
    auto is_digit_b = [&](char ch) { return hex_value(ch) >= 0 && hex_value(ch) < base; };
    if (p >= src_.size() || !is_digit_b(src_[p])) return pos;
    ++p;
    while (p < src_.size()) {
      if (is_digit_b(src_[p])) {
        ++p;
      } else if (src_[p] == '_' && p + 1 < src_.size() && is_digit_b(src_[p + 1])) {
        p += 2;
      } else {
        break;
      }
    }
    return p;
  }

  size_t lex_number(size_t pos) {
    const size_t n = src_.size();
    int line = line_at(pos);
    auto strip = [](std::string s) {
      std::string out;
      for (char c : s)
        if (c != '_') out.push_back(c);
      return out;
    };
    // Float: digits, then a fraction and/or an exponent; never right after a dot (`a.0.1`).
    if (pos == 0 || src_[pos - 1] != '.') {
      size_t p = digits_end(pos);
      bool is_float = false;
      if (p < n && src_[p] == '.' && digits_end(p + 1) > p + 1) {
        p = digits_end(p + 1);
        is_float = true;
      }
      if (p < n && (src_[p] == 'e' || src_[p] == 'E')) {
        size_t q = p + 1;
        if (q < n && (src_[q] == '+' || src_[q] == '-')) ++q;
        if (digits_end(q) > q) {
          p = digits_end(q);
          is_float = true;
        }
      }
      if (is_float) {
        Token t;
        t.type = TokenType::Float;
        t.line = line;
        t.value = src_.substr(pos, p - pos);
        t.float_value = std::strtod(strip(t.value).c_str(), nullptr);
        tokens_.push_back(std::move(t));
        return p;
      }
    }
    // Integer: 0b/0o/0x prefixes, a decimal without leading zeros, or zeros.
    int base = 10;
    size_t start = pos, end;
    if (src_[pos] == '0' && pos + 2 < n && (src_[pos + 1] == 'b' || src_[pos + 1] == 'B' || src_[pos + 1] == 'o' ||
                                            src_[pos + 1] == 'O' || src_[pos + 1] == 'x' || src_[pos + 1] == 'X')) {
      char p = static_cast<char>(src_[pos + 1] | 0x20);
      base = p == 'b' ? 2 : p == 'o' ? 8 : 16;
      size_t q = pos + 2;
      if (q < n && src_[q] == '_') ++q;
      end = digits_end(q, base);
      if (end > q) {
        start = pos + 2;
      } else {
        base = 10;
        end = pos + 1;
      }
    } else if (src_[pos] == '0') {
      end = pos + 1;
      while (end < n && (src_[end] == '0' || (src_[end] == '_' && end + 1 < n && src_[end + 1] == '0')))
        end += src_[end] == '_' ? 2 : 1;
    } else {
      end = digits_end(pos);
    }
    std::string digits = strip(src_.substr(start, end - start));
    if (!digits.empty() && digits[0] == '_') digits.erase(0, 1);
    uint64_t v = 0;
    for (char c : digits) {
      uint64_t d = static_cast<uint64_t>(hex_value(c));
      if (v > (static_cast<uint64_t>(INT64_MAX) - d) / static_cast<uint64_t>(base))
        lex_error(line, "integer literal too large");
      v = v * static_cast<uint64_t>(base) + d;
    }
    Token t;
    t.type = TokenType::Integer;
    t.line = line;
    t.value = src_.substr(pos, end - pos);
    t.int_value = static_cast<int64_t>(v);
    tokens_.push_back(std::move(t));
    return end;
  }

  std::string src_;
  std::vector<Token> tokens_;
  bool line_starting_ = true;
  size_t line_pos_ = 0;
  int line_ = 1;
};

}  // namespace

std::vector<Token> tokenize(std::string_view source) { return Lexer(source).run(); }

}  // namespace moe::tmpl::detail
