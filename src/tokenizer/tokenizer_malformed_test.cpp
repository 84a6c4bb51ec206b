// tokenizer_malformed_test.cpp: broken inputs must give a moe::Error that says what is wrong, never a
// crash or a hang: hand-made SentencePiece models and GGUF metadata with one defect each, then many
// truncations and thousands of random mutations of a real .model file (a mutant that still loads must
// tokenize and detokenize without incident).
#include <gtest/gtest.h>

#include <algorithm>

#include <random>

#include "gguf/gguf.h"
#include "testutil/fixtures.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_testing.h"
#include "util/error.h"

namespace moe::tokenizer {
namespace {

using testing::pb_bytes;
using testing::pb_int;
using ::moe::testing::fixture;
using ::moe::testing::read_file;

const char* kTok512 = "models/tok512.model";

std::span<const uint8_t> as_bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// Loads `bytes` and expects a moe::Error whose message contains `needle`.
void expect_model_error(const std::string& bytes, const std::string& needle, const std::string& what) {
  try {
    Tokenizer::from_sentencepiece_bytes(as_bytes(bytes), "bad.model");
    ADD_FAILURE() << what << ": loaded, expected an error containing '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << what << ": message was: " << e.what();
    EXPECT_NE(std::string(e.what()).find("bad.model"), std::string::npos) << what << ": " << e.what();
  }
}

// A small valid vocabulary: unk, two control pieces, all 256 bytes, a few merges.
Vocabulary small_vocabulary() {
  Vocabulary v;
  auto add = [&](const std::string& p, float s, TokenType t) {
    v.pieces.push_back(p);
    v.scores.push_back(s);
    v.types.push_back(t);
  };
  add("<unk>", 0, TokenType::Unknown);
  add("<s>", 0, TokenType::Control);
  add("</s>", 0, TokenType::Control);
  for (int b = 0; b < 256; ++b) {
    static const char* hex = "0123456789ABCDEF";
    add(std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">", 0, TokenType::Byte);
  }
  float score = 0;
  for (const char* p : {"▁", "a", "b", "c", "ab", "▁a", "▁ab", "abc", "▁abc"}) add(p, --score, TokenType::Normal);
  v.byte_fallback = true;
  v.bos_id = 1;
  v.eos_id = 2;
  return v;
}

std::string model_with(void (*edit)(Vocabulary&), int32_t model_type = 2) {
  Vocabulary v = small_vocabulary();
  edit(v);
  return testing::sentencepiece_model_bytes(v, model_type);
}

TEST(TokenizerMalformed, SmallVocabularyIsValid) {
  const std::string bytes = testing::sentencepiece_model_bytes(small_vocabulary());
  const auto tok = Tokenizer::from_sentencepiece_bytes(as_bytes(bytes));
  EXPECT_EQ(tok.encode("abc ab", true), (std::vector<int32_t>{1, 267, 265}));
  EXPECT_EQ(tok.decode(tok.encode("abc ab", true)), "abc ab");
}

TEST(TokenizerMalformed, WireFormatErrors) {
  expect_model_error("", "no pieces", "empty file");
  expect_model_error("\x0A", "truncated varint", "key then nothing");
  expect_model_error("\x0A\x10" "abc", "exceeds", "length past the end");
  expect_model_error(std::string("\x0A\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\x01", 12), "longer than 10 bytes", "11-byte varint");
  expect_model_error(std::string("\x00\x00", 2), "invalid field number 0", "field 0");
  expect_model_error("\x4B", "wire type 3", "start-group in field 9");
  expect_model_error("\x4E", "wire type 6", "wire type 6 in field 9");
  expect_model_error("\x4D\x01\x02", "field 9 is truncated", "fixed32 cut short");
  expect_model_error("\x0D\x01\x02\x03\x04", "pieces (field 1) has wire type fixed32", "pieces as fixed32");
  expect_model_error("\x08\x01", "pieces", "pieces as a varint");
  std::string piece_bad_score;
  pb_bytes(piece_bad_score, 1, "a");
  pb_int(piece_bad_score, 2, 5);  // score as varint
  std::string model;
  pb_bytes(model, 1, piece_bad_score);
  expect_model_error(model, "score", "score with wire type varint");
  std::string piece_bad_type;
  pb_bytes(piece_bad_type, 1, "a");
  pb_int(piece_bad_type, 3, 9);
  model.clear();
  pb_bytes(model, 1, piece_bad_type);
  expect_model_error(model, "type 9", "piece type 9");
  // A field inside a piece whose length runs past the piece's end (though not past the file's).
  model.clear();
  pb_bytes(model, 1, "\x0A\x05" "x");
  model += "padding bytes";
  expect_model_error(model, "pieces[0] at byte 2: piece: length 5 exceeds the 1 bytes left", "nested overrun");
}

TEST(TokenizerMalformed, ModelContentErrors) {
  expect_model_error(model_with([](Vocabulary&) {}, 1), "UNIGRAM", "unigram model");
  expect_model_error(model_with([](Vocabulary&) {}, 4), "CHAR", "char model");
  {
    // No trainer_spec at all: SentencePiece's default model type, UNIGRAM.
    std::string piece, model;
    pb_bytes(piece, 1, "<unk>");
    pb_int(piece, 3, 2);
    pb_bytes(model, 1, piece);
    expect_model_error(model, "UNIGRAM", "no trainer spec");
  }
  expect_model_error(model_with([](Vocabulary& v) { v.types[0] = TokenType::Normal; }), "UNKNOWN", "no unk");
  expect_model_error(model_with([](Vocabulary& v) { v.types[1] = TokenType::Unknown; }), "UNKNOWN", "two unk");
  expect_model_error(model_with([](Vocabulary& v) { v.pieces.back() = v.pieces[260]; }), "already defined", "duplicate");
  expect_model_error(model_with([](Vocabulary& v) { v.pieces.back() = ""; }), "is empty", "empty piece");
  expect_model_error(model_with([](Vocabulary& v) { v.pieces[3] = "<0xZZ>"; }), "<0xNN>", "bad byte piece");
  expect_model_error(model_with([](Vocabulary& v) { v.pieces[3] = "<0x0a>"; }), "<0xNN>", "lowercase byte piece");
  expect_model_error(model_with([](Vocabulary& v) { v.byte_fallback = false; }), "byte_fallback", "bytes, no fallback");
  expect_model_error(model_with([](Vocabulary& v) { v.types[10] = TokenType::Normal; }), "<0x07> is missing",
                     "a byte missing");
  expect_model_error(model_with([](Vocabulary& v) { v.scores.back() = std::nanf(""); }), "NaN", "NaN score");
  {
    std::string model = model_with([](Vocabulary&) {});
    std::string normalizer;
    pb_bytes(normalizer, 1, "nmt_nfkc");
    pb_bytes(normalizer, 2, std::string("\x04\x00\x00\x00xxxx", 8));
    pb_bytes(model, 3, normalizer);  // merges into the earlier normalizer_spec
    expect_model_error(model, "precompiled character map", "charsmap");
  }
  {
    std::string model = model_with([](Vocabulary&) {});
    std::string trainer;
    pb_int(trainer, 24, 1);
    pb_bytes(model, 2, trainer);
    expect_model_error(model, "treat_whitespace_as_suffix", "suffix");
  }
}

TEST(TokenizerMalformed, VocabularyChecks) {
  auto expect_vocab_error = [](Vocabulary v, const std::string& needle) {
    v.source = "vocab";
    try {
      Tokenizer::from_vocabulary(std::move(v));
      ADD_FAILURE() << "loaded, expected '" << needle << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_vocab_error(Vocabulary{}, "empty");
  Vocabulary v = small_vocabulary();
  v.scores.pop_back();
  expect_vocab_error(v, "scores");
  v = small_vocabulary();
  v.types.pop_back();
  expect_vocab_error(v, "token types");
  v = small_vocabulary();
  v.types[5] = static_cast<TokenType>(0);
  expect_vocab_error(v, "invalid token type 0");
  v = small_vocabulary();
  v.bos_id = 100000;
  expect_vocab_error(v, "BOS id 100000");
  v = small_vocabulary();
  v.eos_id = -7;
  expect_vocab_error(v, "EOS id -7");
  v = small_vocabulary();
  v.unk_id = 5000;
  expect_vocab_error(v, "unknown token id 5000");
}

TEST(TokenizerMalformed, LongWholeMatchPiecesAreRefusedAndMatchingWorkIsLinear) {
  // One 100,000-byte user-defined piece made tokenization quadratic (49 s for a 100 KB prompt): the
  // matcher walks the piece at every position of the text. Such pieces are refused at load now.
  for (TokenType type : {TokenType::UserDefined, TokenType::Control}) {
    Vocabulary v = small_vocabulary();
    v.pieces.push_back(std::string(100000, 'a') + "b");
    v.scores.push_back(0.0f);
    v.types.push_back(type);
    v.source = "vocab";
    try {
      Tokenizer::from_vocabulary(std::move(v));
      ADD_FAILURE() << "a 100,001-byte " << token_type_name(type) << " piece loaded";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("piece of 100001 bytes; the limit is 1024"), std::string::npos) << e.what();
    }
  }
  // At the limit, the worst text (a long run that matches all but the last byte of the piece at every
  // position) costs at most (text bytes) x (piece bytes) matcher steps, counted, not timed.
  Vocabulary v = small_vocabulary();
  v.pieces.push_back(std::string(kMaxMatchedPieceBytes - 1, 'a') + "b");
  v.scores.push_back(0.0f);
  v.types.push_back(TokenType::UserDefined);
  Tokenizer tok = Tokenizer::from_vocabulary(std::move(v));
  const std::string text(100000, 'a');
  const uint64_t before = matcher_steps_on_this_thread();
  auto ids = tok.encode(text, false);
  const uint64_t steps = matcher_steps_on_this_thread() - before;
  EXPECT_FALSE(ids.empty());
  EXPECT_GT(steps, text.size());  // the counter counts: the run is walked at many positions
  EXPECT_LE(steps, 3 * text.size() * kMaxMatchedPieceBytes) << steps;  // normalize + BPE passes, each <= n x L
  // The piece itself is still found as one token.
  const std::string piece = std::string(kMaxMatchedPieceBytes - 1, 'a') + "b";
  ids = tok.encode("x" + piece, false);
  EXPECT_NE(std::find(ids.begin(), ids.end(), tok.n_vocab() - 1), ids.end());
}

TEST(TokenizerMalformed, TruncationsOfARealModel) {
  MOE_REQUIRE_FIXTURE(kTok512);
  const std::string bytes = read_file(fixture(kTok512));
  // Every cut in the first kilobyte (keys, lengths and the first pieces), then 800 random cuts.
  std::vector<size_t> cuts;
  for (size_t n = 0; n < std::min<size_t>(1024, bytes.size()); ++n) cuts.push_back(n);
  std::mt19937_64 rng(4242);
  for (int i = 0; i < 800; ++i) cuts.push_back(rng() % bytes.size());
  int loaded = 0;
  for (size_t n : cuts) {
    try {
      Tokenizer::from_sentencepiece_bytes(as_bytes(bytes.substr(0, n)), "truncated.model");
      ++loaded;
    } catch (const Error&) {
    }
  }
  // Cuts inside the trailing normalizer_spec can leave a loadable model; no cut through the pieces can.
  EXPECT_LT(loaded, 64);
}

TEST(TokenizerMalformed, RandomMutationsOfARealModel) {
  MOE_REQUIRE_FIXTURE(kTok512);
  const std::string original = read_file(fixture(kTok512));
  int loaded = 0, rejected = 0;
  for (uint64_t i = 0; i < 3000; ++i) {
    const uint64_t seed = 77000 + i;
    std::mt19937_64 rng(seed);
    std::string bytes = original;
    const int edits = 1 + static_cast<int>(rng() % 6);
    for (int e = 0; e < edits; ++e) {
      const size_t at = rng() % bytes.size();
      switch (rng() % 4) {
        case 0: bytes[at] = static_cast<char>(rng()); break;
        case 1: bytes[at] = static_cast<char>(bytes[at] ^ (1 << (rng() % 8))); break;
        case 2: bytes.erase(at, 1 + rng() % 4); break;
        default: bytes.insert(at, 1, static_cast<char>(rng())); break;
      }
      if (bytes.empty()) bytes = "x";
    }
    try {
      const auto tok = Tokenizer::from_sentencepiece_bytes(as_bytes(bytes), "mutant.model");
      ++loaded;
      std::mt19937_64 text_rng(seed);
      const std::string text = testing::random_text(text_rng, 20);
      const auto ids = tok.encode(text, true, true);
      for (int32_t id : ids) ASSERT_TRUE(id >= 0 && id < tok.n_vocab()) << "seed " << seed;
      (void)tok.decode(ids);
      StreamDecoder stream(tok, false);
      for (int32_t id : ids) (void)stream.push(id);
      (void)stream.flush();
    } catch (const Error&) {
      ++rejected;
    }
  }
  // Both outcomes occur: most single-byte edits land in a piece's text or score and still load.
  EXPECT_GT(loaded, 100);
  EXPECT_GT(rejected, 100);
}

// ---- GGUF metadata ----

gguf::Writer valid_gguf() { return testing::gguf_writer_for(small_vocabulary()); }

void expect_gguf_error(const gguf::Writer& w, const std::string& needle, const std::string& what) {
  const auto bytes = w.to_bytes();
  try {
    Tokenizer::from_gguf(gguf::File::parse(bytes, "bad.gguf"));
    ADD_FAILURE() << what << ": loaded, expected an error containing '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << what << ": message was: " << e.what();
  }
}

TEST(TokenizerMalformed, GgufMetadata) {
  {
    const auto bytes = valid_gguf().to_bytes();
    const auto tok = Tokenizer::from_gguf(gguf::File::parse(bytes, "good.gguf"));
    EXPECT_EQ(tok.encode("abc ab", true), (std::vector<int32_t>{1, 267, 265}));
  }
  auto w = valid_gguf();
  w.set("tokenizer.ggml.model", gguf::Value::string("gpt2"));
  expect_gguf_error(w, "'gpt2'", "gpt2 model");
  w = valid_gguf();
  w.remove("tokenizer.ggml.model");
  expect_gguf_error(w, "tokenizer.ggml.model is missing", "no model key");
  w = valid_gguf();
  w.remove("tokenizer.ggml.tokens");
  expect_gguf_error(w, "tokenizer.ggml.tokens is missing", "no tokens");
  w = valid_gguf();
  w.set("tokenizer.ggml.tokens", gguf::Value::string_array({}));
  expect_gguf_error(w, "tokenizer.ggml.tokens is empty", "empty tokens");
  w = valid_gguf();
  w.set("tokenizer.ggml.tokens", gguf::Value::int32_array({1, 2, 3}));
  expect_gguf_error(w, "tokenizer.ggml.tokens", "tokens of the wrong type");
  w = valid_gguf();
  w.set("tokenizer.ggml.scores", gguf::Value::float32_array({1.0f, 2.0f}));
  expect_gguf_error(w, "tokenizer.ggml.scores", "scores too short");
  w = valid_gguf();
  w.remove("tokenizer.ggml.scores");
  expect_gguf_error(w, "tokenizer.ggml.scores is missing", "no scores");
  w = valid_gguf();
  w.set("tokenizer.ggml.token_type", gguf::Value::int32_array({1, 2}));
  expect_gguf_error(w, "tokenizer.ggml.token_type", "types too short");
  {
    Vocabulary v = small_vocabulary();
    w = testing::gguf_writer_for(v);
    std::vector<int32_t> types(v.types.size(), 1);
    types[0] = 2;
    types[7] = 9;
    w.set("tokenizer.ggml.token_type", gguf::Value::int32_array(types));
    expect_gguf_error(w, "tokenizer.ggml.token_type[7] = 9", "type 9");
  }
  w = valid_gguf();
  w.set("tokenizer.ggml.bos_token_id", gguf::Value::uint32(100000));
  expect_gguf_error(w, "tokenizer.ggml.bos_token_id = 100000", "bos out of range");
  w = valid_gguf();
  w.set("tokenizer.ggml.eos_token_id", gguf::Value::string("2"));
  expect_gguf_error(w, "tokenizer.ggml.eos_token_id", "eos as a string");
  w = valid_gguf();
  w.set("tokenizer.ggml.unknown_token_id", gguf::Value::int64(268));
  expect_gguf_error(w, "tokenizer.ggml.unknown_token_id = 268", "unk out of range");
  {
    Vocabulary v = small_vocabulary();
    v.types[100] = TokenType::Normal;  // one byte piece no longer a byte piece
    expect_gguf_error(testing::gguf_writer_for(v), "<0x61> is missing", "incomplete byte pieces");
  }
  w = valid_gguf();
  w.set("tokenizer.ggml.precompiled_charsmap", gguf::Value::array_of(gguf::ValueType::UINT8, {gguf::Value::uint8(1)}));
  expect_gguf_error(w, "precompiled_charsmap", "charsmap");
}

TEST(TokenizerMalformed, GgufDefaults) {
  // Without the optional keys: llama.cpp's defaults (BOS 1, EOS 2, unk 0, space prefix, types Normal).
  Vocabulary v = small_vocabulary();
  auto w = testing::gguf_writer_for(v);
  for (const char* key : {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id",
                          "tokenizer.ggml.padding_token_id", "tokenizer.ggml.add_bos_token",
                          "tokenizer.ggml.add_eos_token", "tokenizer.ggml.add_space_prefix"})
    w.remove(key);
  auto bytes = w.to_bytes();
  const auto tok = Tokenizer::from_gguf(gguf::File::parse(bytes, "defaults.gguf"));
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  EXPECT_EQ(tok.unk_id(), 0);
  EXPECT_EQ(tok.pad_id(), -1);
  EXPECT_TRUE(tok.add_bos());
  EXPECT_FALSE(tok.add_eos());
  EXPECT_EQ(tok.encode("ab", false), (std::vector<int32_t>{265}));
  // add_space_prefix = false: no dummy "▁".
  w.set("tokenizer.ggml.add_space_prefix", gguf::Value::boolean(false));
  bytes = w.to_bytes();
  const auto no_prefix = Tokenizer::from_gguf(gguf::File::parse(bytes, "no-prefix.gguf"));
  EXPECT_EQ(no_prefix.encode("ab", false), (std::vector<int32_t>{263}));
  EXPECT_EQ(no_prefix.decode(std::vector<int32_t>{265}), " ab");
}

}  // namespace
}  // namespace moe::tokenizer
