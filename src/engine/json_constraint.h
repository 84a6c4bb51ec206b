// json_constraint.h: a character-level JSON recogniser used for `response_format: json_object`.
// The sampler asks accepts(token_text) for candidate tokens and keeps only those that leave the output
// a valid prefix of one JSON object; once the object is closed only end-of-sequence is allowed. The
// state is a small fixed-size value, so testing a token copies ~100 bytes and never allocates.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace moe::engine {

class JsonConstraint {
 public:
  static constexpr int kMaxDepth = 48;
  static constexpr int kMaxWhitespaceRun = 8;  // keeps a model from padding forever
  static constexpr int kMaxExponentDigits = 2;

  // True if appending `text` keeps the output a prefix of a single JSON object (leading whitespace
  // allowed; nothing but the object).
  bool accepts(std::string_view text) const;
  // Appends `text`; returns false (and leaves the state unchanged) if it is not accepted.
  bool advance(std::string_view text);
  // The top-level object is closed.
  bool complete() const { return state_ == State::Done; }
  // Inside a string's characters (not in an escape): every text of bytes >= 0x20 other than '"' and
  // '\\' is accepted here and leaves the state as it is (what JsonVocabulary precomputes per token).
  bool in_string() const { return state_ == State::String; }
  // The shortest text that closes the object from here (finishing the open string, number, literal or
  // key/value, then every open container). The engine forces it, one allowed token at a time, when the
  // token budget left is no longer than it, so json_object output is complete JSON even when the model
  // would never close it.
  std::string closing_suffix() const;

 private:
  enum class State : uint8_t {
    Start, Value, ObjKeyOrEnd, ObjKey, ObjColon, ObjCommaOrEnd, ArrValueOrEnd, ArrCommaOrEnd,
    String, StringEscape, StringUnicode, NumMinus, NumZero, NumInt, NumDot, NumFrac, NumExp, NumExpSign,
    NumExpDigits, Literal, Done,
  };
  bool step(unsigned char c);
  bool after_value();           // a value just ended: move to the container's next state
  bool end_number_then(unsigned char c);

  State state_ = State::Start;
  uint8_t depth_ = 0;
  char stack_[kMaxDepth] = {};  // '{' or '['
  bool string_is_key_ = false;
  uint8_t unicode_left_ = 0;
  uint8_t exp_digits_ = 0;  // exponents are capped at two digits so every parser can hold the number
  uint8_t whitespace_run_ = 0;
  const char* literal_ = nullptr;  // "true", "false" or "null"
  uint8_t literal_pos_ = 0;
};

}  // namespace moe::engine
