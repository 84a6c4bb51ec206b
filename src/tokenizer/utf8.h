// utf8.h: the UTF-8 rules of libsentencepiece, reproduced exactly because ids and decoded text depend on
// them: which byte sequences count as one valid character (no overlongs, no surrogates, nothing above
// U+10FFFF), that an invalid byte is consumed alone and stands for U+FFFD, and how many bytes a lead byte
// announces. Internal to the tokenizer.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace moe::tokenizer::utf8 {

inline constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD
inline constexpr std::string_view kSpaceSymbol = "\xE2\x96\x81";  // U+2581, SentencePiece's space

inline bool is_trail(uint8_t b) { return (b & 0xC0) == 0x80; }

// Bytes a character starting with `lead` claims, from the lead byte alone (1 for ASCII, trail bytes and
// 0xF8..0xFF). This is what SentencePiece uses to cut already-valid text into characters.
inline size_t lead_length(uint8_t lead) {
  static constexpr uint8_t kLen[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLen[lead >> 4];
}

// Decodes one character at the start of `s` (non-empty). Returns true and its length in `len` when it is
// a valid, shortest-form scalar value; false and len = 1 otherwise. An encoded U+FFFD counts as valid.
inline bool decode_one(std::string_view s, size_t* len) {
  const auto* b = reinterpret_cast<const uint8_t*>(s.data());
  const size_t n = s.size();
  auto valid_cp = [](uint32_t c) { return c < 0xD800 || (c >= 0xE000 && c <= 0x10FFFF); };
  if (b[0] < 0x80) {
    *len = 1;
    return true;
  }
  if (n >= 2 && (b[0] & 0xE0) == 0xC0) {
    const uint32_t c = ((b[0] & 0x1Fu) << 6) | (b[1] & 0x3Fu);
    if (is_trail(b[1]) && c >= 0x80 && valid_cp(c)) {
      *len = 2;
      return true;
    }
  } else if (n >= 3 && (b[0] & 0xF0) == 0xE0) {
    const uint32_t c = ((b[0] & 0x0Fu) << 12) | ((b[1] & 0x3Fu) << 6) | (b[2] & 0x3Fu);
    if (is_trail(b[1]) && is_trail(b[2]) && c >= 0x800 && valid_cp(c)) {
      *len = 3;
      return true;
    }
  } else if (n >= 4 && (b[0] & 0xF8) == 0xF0) {
    const uint32_t c = ((b[0] & 0x07u) << 18) | ((b[1] & 0x3Fu) << 12) | ((b[2] & 0x3Fu) << 6) | (b[3] & 0x3Fu);
    if (is_trail(b[1]) && is_trail(b[2]) && is_trail(b[3]) && c >= 0x10000 && valid_cp(c)) {
      *len = 4;
      return true;
    }
  }
  *len = 1;
  return false;
}

// True when `s` is entirely valid UTF-8 by decode_one's rules.
inline bool is_valid(std::string_view s) {
  size_t i = 0, len = 0;
  while (i < s.size()) {
    if (!decode_one(s.substr(i), &len)) return false;
    i += len;
  }
  return true;
}

}  // namespace moe::tokenizer::utf8
