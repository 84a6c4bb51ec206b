// json_constraint.cpp: the JSON prefix recogniser (RFC 8259 grammar, one character at a time).
#include "engine/json_constraint.h"

namespace moe::engine {
namespace {
bool is_ws(unsigned char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }
bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
bool is_hex(unsigned char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
}  // namespace

bool JsonConstraint::accepts(std::string_view text) const {
  JsonConstraint copy = *this;
  for (unsigned char c : text)
    if (!copy.step(c)) return false;
  return true;
}

bool JsonConstraint::advance(std::string_view text) {
  JsonConstraint copy = *this;
  for (unsigned char c : text)
    if (!copy.step(c)) return false;
  *this = copy;
  return true;
}

bool JsonConstraint::after_value() {
  if (depth_ == 0) {
    state_ = State::Done;
    return true;
  }
  state_ = stack_[depth_ - 1] == '{' ? State::ObjCommaOrEnd : State::ArrCommaOrEnd;
  return true;
}

// A number ends at the first character that cannot continue it; that character is then structural.
bool JsonConstraint::end_number_then(unsigned char c) {
  after_value();
  return step(c);
}

bool JsonConstraint::step(unsigned char c) {
  // Whitespace between tokens, bounded.
  bool between_tokens = state_ == State::Start || state_ == State::Value || state_ == State::ObjKeyOrEnd ||
                        state_ == State::ObjKey || state_ == State::ObjColon || state_ == State::ObjCommaOrEnd ||
                        state_ == State::ArrValueOrEnd || state_ == State::ArrCommaOrEnd;
  if (between_tokens && is_ws(c)) {
    if (++whitespace_run_ > kMaxWhitespaceRun) return false;
    return true;
  }
  if (between_tokens) whitespace_run_ = 0;

  auto open = [&](char kind) {
    if (depth_ >= kMaxDepth) return false;
    stack_[depth_++] = kind;
    state_ = kind == '{' ? State::ObjKeyOrEnd : State::ArrValueOrEnd;
    return true;
  };
  auto close = [&](char kind) {
    if (depth_ == 0 || stack_[depth_ - 1] != kind) return false;
    --depth_;
    return after_value();
  };
  auto begin_value = [&](unsigned char v) {
    switch (v) {
      case '{': return open('{');
      case '[': return open('[');
      case '"': string_is_key_ = false; state_ = State::String; return true;
      case '-': state_ = State::NumMinus; return true;
      case '0': state_ = State::NumZero; return true;
      case 't': literal_ = "true"; literal_pos_ = 1; state_ = State::Literal; return true;
      case 'f': literal_ = "false"; literal_pos_ = 1; state_ = State::Literal; return true;
      case 'n': literal_ = "null"; literal_pos_ = 1; state_ = State::Literal; return true;
      default:
        if (v >= '1' && v <= '9') { state_ = State::NumInt; return true; }
        return false;
    }
  };

  switch (state_) {
    case State::Start: return c == '{' && open('{');
    case State::Value: return begin_value(c);
    case State::ObjKeyOrEnd:
      if (c == '}') return close('{');
      [[fallthrough]];
    case State::ObjKey:
      if (c != '"') return false;
      string_is_key_ = true;
      state_ = State::String;
      return true;
    case State::ObjColon:
      if (c != ':') return false;
      state_ = State::Value;
      return true;
    case State::ObjCommaOrEnd:
      if (c == ',') { state_ = State::ObjKey; return true; }
      return c == '}' && close('{');
    case State::ArrValueOrEnd:
      if (c == ']') return close('[');
      return begin_value(c);
    case State::ArrCommaOrEnd:
      if (c == ',') { state_ = State::Value; return true; }
      return c == ']' && close('[');
    case State::String:
      if (c == '"') {
        if (string_is_key_) { state_ = State::ObjColon; return true; }
        return after_value();
      }
      if (c == '\\') { state_ = State::StringEscape; return true; }
      return c >= 0x20;  // raw control characters must be escaped; bytes >= 0x80 are UTF-8
    case State::StringEscape:
      if (c == 'u') { state_ = State::StringUnicode; unicode_left_ = 4; return true; }
      if (c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' || c == 'r' || c == 't') {
        state_ = State::String;
        return true;
      }
      return false;
    case State::StringUnicode:
      if (!is_hex(c)) return false;
      if (--unicode_left_ == 0) state_ = State::String;
      return true;
    case State::NumMinus:
      if (c == '0') { state_ = State::NumZero; return true; }
      if (c >= '1' && c <= '9') { state_ = State::NumInt; return true; }
      return false;
    case State::NumZero:
      if (c == '.') { state_ = State::NumDot; return true; }
      if (c == 'e' || c == 'E') { state_ = State::NumExp; return true; }
      return end_number_then(c);
    case State::NumInt:
      if (is_digit(c)) return true;
      if (c == '.') { state_ = State::NumDot; return true; }
      if (c == 'e' || c == 'E') { state_ = State::NumExp; return true; }
      return end_number_then(c);
    case State::NumDot:
      if (!is_digit(c)) return false;
      state_ = State::NumFrac;
      return true;
    case State::NumFrac:
      if (is_digit(c)) return true;
      if (c == 'e' || c == 'E') { state_ = State::NumExp; return true; }
      return end_number_then(c);
    case State::NumExp:
      if (c == '+' || c == '-') { state_ = State::NumExpSign; return true; }
      [[fallthrough]];
    case State::NumExpSign:
      if (!is_digit(c)) return false;
      state_ = State::NumExpDigits;
      exp_digits_ = 1;
      return true;
    case State::NumExpDigits:
      if (is_digit(c)) return ++exp_digits_ <= kMaxExponentDigits;
      return end_number_then(c);
    case State::Literal:
      if (c != static_cast<unsigned char>(literal_[literal_pos_])) return false;
      if (literal_[++literal_pos_] == '\0') return after_value();
      return true;
    case State::Done:
      return false;
  }
  return false;
}

std::string JsonConstraint::closing_suffix() const {
  std::string s;
  switch (state_) {
    case State::Start: return "{}";
    case State::Done: return "";
    case State::Value: s = "0"; break;
    case State::ObjKey: s = "\"\":0"; break;
    case State::ObjColon: s = ":0"; break;
    case State::ObjKeyOrEnd:
    case State::ObjCommaOrEnd:
    case State::ArrValueOrEnd:
    case State::ArrCommaOrEnd: break;
    case State::String: s = string_is_key_ ? "\":0" : "\""; break;
    case State::StringEscape: s = string_is_key_ ? "n\":0" : "n\""; break;
    case State::StringUnicode: s = std::string(unicode_left_, '0') + (string_is_key_ ? "\":0" : "\""); break;
    case State::NumMinus:
    case State::NumDot:
    case State::NumExp:
    case State::NumExpSign: s = "0"; break;
    case State::NumZero:
    case State::NumInt:
    case State::NumFrac:
    case State::NumExpDigits: break;
    case State::Literal: s = literal_ + literal_pos_; break;
  }
  for (int d = depth_ - 1; d >= 0; --d) s += stack_[d] == '{' ? '}' : ']';
  return s;
}

}  // namespace moe::engine
