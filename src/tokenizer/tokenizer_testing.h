// tokenizer_testing.h: helpers shared by the tokenizer tests: writing a SentencePiece ModelProto or a
// GGUF file from a Vocabulary (so the same vocabulary can be fed to libsentencepiece, to the .model reader
// and to the GGUF reader), escaping strings for failure messages, and random multilingual text.
#pragma once
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "gguf/gguf.h"
#include "tokenizer/tokenizer.h"

namespace moe::tokenizer::testing {

// ---- protobuf writer (the wire format the reader under test parses) ----
inline void pb_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}
inline void pb_key(std::string& out, uint32_t field, uint32_t wire) { pb_varint(out, (uint64_t{field} << 3) | wire); }
inline void pb_bytes(std::string& out, uint32_t field, std::string_view s) {
  pb_key(out, field, 2);
  pb_varint(out, s.size());
  out.append(s);
}
inline void pb_int(std::string& out, uint32_t field, int64_t v) {
  pb_key(out, field, 0);
  pb_varint(out, static_cast<uint64_t>(v));
}
inline void pb_float(std::string& out, uint32_t field, float f) {
  pb_key(out, field, 5);
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(bits >> (8 * i)));
}

// A BPE ModelProto carrying `v` (pieces, byte_fallback, unk_surface, normalizer flags).
inline std::string sentencepiece_model_bytes(const Vocabulary& v, int32_t model_type = 2) {
  std::string out;
  for (size_t i = 0; i < v.pieces.size(); ++i) {
    std::string p;
    pb_bytes(p, 1, v.pieces[i]);
    pb_float(p, 2, v.scores[i]);
    pb_int(p, 3, static_cast<int32_t>(v.types[i]));
    pb_bytes(out, 1, p);
  }
  std::string trainer;
  pb_int(trainer, 3, model_type);
  pb_int(trainer, 4, static_cast<int64_t>(v.pieces.size()));
  pb_int(trainer, 35, v.byte_fallback);
  pb_int(trainer, 43, -1);  // pad_id = -1: a ten-byte varint, as real files have
  pb_bytes(trainer, 44, v.unk_surface);
  pb_bytes(out, 2, trainer);
  std::string normalizer;
  pb_bytes(normalizer, 1, "identity");
  pb_int(normalizer, 3, v.add_dummy_prefix);
  pb_int(normalizer, 4, v.remove_extra_whitespaces);
  pb_int(normalizer, 5, v.escape_whitespaces);
  pb_bytes(out, 3, normalizer);
  return out;
}

// GGUF metadata as llama.cpp's converter writes it for this vocabulary.
inline gguf::Writer gguf_writer_for(const Vocabulary& v) {
  gguf::Writer w;
  w.set("general.architecture", gguf::Value::string("llama"));
  w.set("tokenizer.ggml.model", gguf::Value::string("llama"));
  w.set("tokenizer.ggml.tokens", gguf::Value::string_array(v.pieces));
  w.set("tokenizer.ggml.scores", gguf::Value::float32_array(v.scores));
  std::vector<int32_t> types;
  for (TokenType t : v.types) types.push_back(static_cast<int32_t>(t));
  w.set("tokenizer.ggml.token_type", gguf::Value::int32_array(types));
  auto id = [](int32_t x) { return gguf::Value::uint32(x < 0 ? 0xFFFFFFFFu : static_cast<uint32_t>(x)); };
  w.set("tokenizer.ggml.bos_token_id", id(v.bos_id));
  w.set("tokenizer.ggml.eos_token_id", id(v.eos_id));
  w.set("tokenizer.ggml.unknown_token_id", id(v.unk_id));
  w.set("tokenizer.ggml.padding_token_id", id(v.pad_id));
  w.set("tokenizer.ggml.add_bos_token", gguf::Value::boolean(v.add_bos));
  w.set("tokenizer.ggml.add_eos_token", gguf::Value::boolean(v.add_eos));
  w.set("tokenizer.ggml.add_space_prefix", gguf::Value::boolean(v.add_dummy_prefix));
  if (v.remove_extra_whitespaces) w.set("tokenizer.ggml.remove_extra_whitespaces", gguf::Value::boolean(true));
  return w;
}

// "a\x01é" → "a\\x01é" for messages; invalid bytes shown as \xNN.
inline std::string escaped(std::string_view s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (char c : s) {
    const auto b = static_cast<uint8_t>(c);
    if (c == '\\') out += "\\\\";
    else if (b < 0x20 || b == 0x7F) out += std::string("\\x") + hex[b >> 4] + hex[b & 15];
    else out += c;
  }
  return out;
}

inline std::string utf8_encode(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    s += static_cast<char>(0xF0 | (cp >> 18));
    s += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

// Random text that stresses a SentencePiece tokenizer: words of five European languages with accents,
// CJK, kana, Hangul, emoji with modifiers and joiners, runs of spaces, tabs and newlines, control
// characters, digits, punctuation, special-token look-alikes, rare code points (byte fallback) and, when
// `invalid_utf8`, stray bytes that are not UTF-8.
inline std::string random_text(std::mt19937_64& rng, size_t units, bool invalid_utf8 = true) {
  static const std::vector<std::string> words = {
      "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "Hello", "world", "tokenizer", "Mixtral",
      "experts", "routing", "Bonjour", "aujourd'hui", "Très", "bien", "français", "être", "Noël", "œuvre",
      "Grüß", "Straße", "schön", "Übermäßig", "Äpfel", "Öl", "naß", "Buongiorno", "caffè", "perché", "città",
      "virtù", "España", "niño", "¿Qué", "tal?", "¡Olé!", "corazón", "pingüino", "mañana", "Ελληνικά",
      "Русский", "日本語", "中文", "こんにちは", "カタカナ", "한국어", "안녕하세요", "東京", "北京", "العربية",
      "עברית", "हिन्दी", "ไทย", "int", "main()", "{", "}", "return", "0;", "x+=1", "std::vector<int>",
      "def", "f(x):", "<s>", "</s>", "<unk>", "[INST]", "[/INST]", "<|im_end|>", "<0x41>", "▁", "▁▁", "__",
      "...", "—", "–", "«", "»", "“", "”", "‘", "’", "€", "£", "¥", "°C", "½", "™", "©", "µ", "ß", "ﬁ",
      "2024", "3.14159", "1,000,000", "0x7F", "12:30", "#", "@", "$", "%", "^", "&", "*", "~", "`", "|"};
  static const std::vector<std::string> emoji = {"😀", "🎉", "👍", "👍🏽", "❤️", "🇫🇷", "👨‍👩‍👧", "🤖", "🙂", "🦊",
                                                 "✅", "⚡", "🏳️‍🌈", "🧑🏿‍💻", "㊙️", "🈚"};
  static const std::vector<std::string> spaces = {" ", " ", " ", "  ", "   ", "    ", "\t", "\n", "\n\n", "\r\n",
                                                  " \n ", "\t\t", "\xC2\xA0", "\xE3\x80\x80", "\xE2\x80\x8B"};
  std::uniform_int_distribution<int> kind(0, 99);
  std::string s;
  for (size_t u = 0; u < units; ++u) {
    const int k = kind(rng);
    if (k < 40) {
      s += words[rng() % words.size()];
    } else if (k < 62) {
      s += spaces[rng() % spaces.size()];
    } else if (k < 68) {
      s += emoji[rng() % emoji.size()];
    } else if (k < 74) {
      s += static_cast<char>('0' + rng() % 10);
    } else if (k < 80) {
      s += "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"[rng() % 32];
    } else if (k < 84) {
      const char c = static_cast<char>(rng() % 32);
      if (c != 0) s += c;
      else s += '\x7F';
    } else if (k < 88) {
      s += utf8_encode(0x4E00 + static_cast<uint32_t>(rng() % (0x9FFF - 0x4E00)));  // CJK ideographs
    } else if (k < 93) {
      uint32_t cp;
      do {
        cp = static_cast<uint32_t>(rng() % 0x110000);
      } while ((cp >= 0xD800 && cp < 0xE000) || cp == 0);
      s += utf8_encode(cp);
    } else if (k < 97) {
      s += static_cast<char>('a' + rng() % 26);
      s += utf8_encode(0xC0 + static_cast<uint32_t>(rng() % 0x180));  // Latin-1 / Latin Extended-A letters
    } else if (invalid_utf8) {
      s += static_cast<char>(0x80 + rng() % 0x80);
    } else {
      s += " ";
    }
  }
  return s;
}

}  // namespace moe::tokenizer::testing
