// tokenizer_test.cpp: the tokenizer against its references. Golden cases made by libsentencepiece 0.1.97,
// then libsentencepiece itself (linked into this test) on thousands of random multilingual strings and
// random id sequences, for the real Mixtral vocabulary, the 512-piece TinyStories vocabulary and variants
// of it written here (user-defined and unused pieces, every normalizer flag, no byte fallback), the same
// vocabularies through GGUF metadata, llama.cpp's golden prompt ids, and streaming decoding.
#include "tokenizer/tokenizer.h"

#include <gtest/gtest.h>
#include <sentencepiece_processor.h>

#include <chrono>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "gguf/gguf.h"
#include "testutil/fixtures.h"
#include "tokenizer/tokenizer_testing.h"
#include "tokenizer/utf8.h"
#include "util/error.h"

namespace moe::tokenizer {
namespace {

using testing::escaped;
using testing::random_text;
using ::moe::testing::fixture;
using ::moe::testing::read_file;

const char* kMixtral = "models/mixtral-tokenizer.model";
const char* kTok512 = "models/tok512.model";
const char* kStoriesGguf = "models/stories260K.gguf";
const char* kMixtralCases = "golden/mixtral-tokenizer.cases.jsonl";
const char* kStoriesGreedy = "golden/stories260K.greedy.jsonl";

std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::istringstream in(read_file(path));
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  return out;
}

std::vector<int32_t> to_ids(const std::vector<int>& v) { return {v.begin(), v.end()}; }
std::vector<int> to_ints(const std::vector<int32_t>& v) { return {v.begin(), v.end()}; }

// Base seed of the random tests: MOE_TEST_SEED, else fixed (so a CI failure reproduces).
uint64_t base_seed() {
  const char* s = std::getenv("MOE_TEST_SEED");
  return s && *s ? std::strtoull(s, nullptr, 10) : 20240611u;
}

// The tokenizer read from a GGUF built, in memory, from the same vocabulary.
Tokenizer via_gguf(const Tokenizer& tok, std::vector<uint8_t>& storage) {
  storage = testing::gguf_writer_for(tok.vocabulary()).to_bytes();
  return Tokenizer::from_gguf(gguf::File::parse(storage, "vocab.gguf"));
}

std::unique_ptr<sentencepiece::SentencePieceProcessor> reference(const std::string& serialized) {
  auto sp = std::make_unique<sentencepiece::SentencePieceProcessor>();
  const auto status = sp->LoadFromSerializedProto(serialized);
  EXPECT_TRUE(status.ok()) << status.ToString();
  return sp;
}

// Compares encode and decode with libsentencepiece on `count` random strings and random id sequences.
void compare_with_reference(const Tokenizer& tok, const sentencepiece::SentencePieceProcessor& sp, uint64_t seed,
                            int count, size_t max_units, bool invalid_utf8 = true) {
  for (int i = 0; i < count; ++i) {
    const uint64_t case_seed = seed * 1000003u + static_cast<uint64_t>(i);
    std::mt19937_64 case_rng(case_seed);
    const std::string text = random_text(case_rng, case_rng() % (max_units + 1), invalid_utf8);
    std::vector<int> expected;
    ASSERT_TRUE(sp.Encode(text, &expected).ok());
    const auto ids = tok.encode(text, false);
    ASSERT_EQ(to_ints(ids), expected) << "seed " << case_seed << " text \"" << escaped(text) << "\"";
    std::string expected_text;
    ASSERT_TRUE(sp.Decode(expected, &expected_text).ok());
    ASSERT_EQ(tok.decode(ids), expected_text) << "seed " << case_seed << " text \"" << escaped(text) << "\"";
  }
  // One long text (long enough for the encoder's per-call word cache).
  {
    std::mt19937_64 case_rng(seed ^ 0x5A5A5A5Au);
    std::string text;
    while (text.size() < 12000) text += random_text(case_rng, max_units);
    std::vector<int> expected;
    ASSERT_TRUE(sp.Encode(text, &expected).ok());
    ASSERT_EQ(to_ints(tok.encode(text, false)), expected) << "long text, seed " << (seed ^ 0x5A5A5A5Au);
  }
  // Random id sequences exercise the decoder beyond what encoding produces: control and unknown pieces
  // anywhere, byte pieces that do not form characters, pieces starting with "▁" after nothing.
  const int n = tok.n_vocab();
  for (int i = 0; i < count / 2; ++i) {
    const uint64_t case_seed = seed * 7919u + static_cast<uint64_t>(i);
    std::mt19937_64 case_rng(case_seed);
    std::vector<int> ids(case_rng() % 12);
    for (int& id : ids) {
      const auto pick = case_rng() % 4;
      if (pick == 0) id = static_cast<int>(case_rng() % 8);           // specials and low bytes
      else if (pick == 1) id = 3 + static_cast<int>(case_rng() % 256) % (n - 3);  // byte pieces
      else id = static_cast<int>(case_rng() % static_cast<uint64_t>(n));
    }
    std::string expected_text;
    ASSERT_TRUE(sp.Decode(ids, &expected_text).ok());
    ASSERT_EQ(tok.decode(to_ids(ids)), expected_text) << "decode seed " << case_seed;
  }
}

// ---- golden cases ----

void check_golden_cases(const Tokenizer& tok, const char* what) {
  const auto cases = read_jsonl(fixture(kMixtralCases));
  ASSERT_GE(cases.size(), 30u);
  for (const auto& c : cases) {
    const std::string text = c["text"];
    SCOPED_TRACE(std::string(what) + ": \"" + escaped(text) + "\"");
    EXPECT_EQ(tok.encode(text, false), c["ids"].get<std::vector<int32_t>>());
    EXPECT_EQ(tok.encode(text, true), c["ids_with_bos"].get<std::vector<int32_t>>());
    EXPECT_EQ(tok.decode(c["ids"].get<std::vector<int32_t>>()), c["decoded"].get<std::string>());
    EXPECT_EQ(tok.decode(c["ids_with_bos"].get<std::vector<int32_t>>()), c["decoded"].get<std::string>());
  }
}

TEST(TokenizerGolden, MixtralCasesFromModelFile) {
  MOE_REQUIRE_FIXTURE(kMixtral);
  MOE_REQUIRE_FIXTURE(kMixtralCases);
  const auto tok = Tokenizer::from_sentencepiece_file(fixture(kMixtral));
  EXPECT_EQ(tok.n_vocab(), 32000);
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  EXPECT_EQ(tok.unk_id(), 0);
  EXPECT_EQ(tok.pad_id(), -1);
  EXPECT_EQ(tok.piece(13), "<0x0A>");
  EXPECT_EQ(tok.token_type(13), TokenType::Byte);
  EXPECT_EQ(tok.token_type(1), TokenType::Control);
  EXPECT_EQ(tok.token_id("▁Hello"), 22557);
  EXPECT_EQ(tok.token_id("no such piece"), std::nullopt);
  check_golden_cases(tok, "model file");
}

TEST(TokenizerGolden, MixtralCasesFromGguf) {
  MOE_REQUIRE_FIXTURE(kMixtral);
  MOE_REQUIRE_FIXTURE(kMixtralCases);
  const auto file_tok = Tokenizer::from_sentencepiece_file(fixture(kMixtral));
  std::vector<uint8_t> storage;
  const auto tok = via_gguf(file_tok, storage);
  ASSERT_EQ(tok.n_vocab(), 32000);
  for (int32_t id = 0; id < tok.n_vocab(); ++id) {
    ASSERT_EQ(tok.piece(id), file_tok.piece(id));
    ASSERT_EQ(tok.token_type(id), file_tok.token_type(id));
    ASSERT_EQ(tok.score(id), file_tok.score(id));
  }
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  EXPECT_EQ(tok.unk_id(), 0);
  EXPECT_EQ(tok.pad_id(), -1);
  EXPECT_TRUE(tok.vocabulary().byte_fallback);
  check_golden_cases(tok, "gguf");
}

TEST(TokenizerGolden, LoadChoosesTheFormatByMagic) {
  MOE_REQUIRE_FIXTURE(kMixtral);
  MOE_REQUIRE_FIXTURE(kStoriesGguf);
  EXPECT_EQ(Tokenizer::load(fixture(kMixtral)).n_vocab(), 32000);
  EXPECT_EQ(Tokenizer::load(fixture(kStoriesGguf)).n_vocab(), 512);
}

TEST(TokenizerGolden, StoriesPromptsAndGreedyText) {
  MOE_REQUIRE_FIXTURE(kStoriesGguf);
  MOE_REQUIRE_FIXTURE(kStoriesGreedy);
  const auto tok = Tokenizer::from_gguf(gguf::File::open(fixture(kStoriesGguf)));
  EXPECT_TRUE(tok.add_bos());
  int checked = 0;
  for (const auto& c : read_jsonl(fixture(kStoriesGreedy))) {
    if (c["model"] != "stories260K.gguf") continue;
    const std::string prompt = c["prompt"];
    SCOPED_TRACE(prompt);
    EXPECT_EQ(tok.encode(prompt, true), c["prompt_ids"].get<std::vector<int32_t>>());
    // The golden text is the completion as llama.cpp prints it after the prompt: a continuation, so the
    // first piece keeps its leading space.
    const auto greedy = c["greedy_ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(tok.decode_continuation(greedy), c["greedy_text"].get<std::string>());
    StreamDecoder stream(tok, true);
    std::string streamed;
    for (int32_t id : greedy) streamed += stream.push(id);
    streamed += stream.flush();
    EXPECT_EQ(streamed, c["greedy_text"].get<std::string>());
    ++checked;
  }
  EXPECT_GE(checked, 4);
}

TEST(TokenizerGolden, Tok512AgreesWithStoriesGguf) {
  MOE_REQUIRE_FIXTURE(kStoriesGguf);
  MOE_REQUIRE_FIXTURE(kTok512);
  const auto from_gguf = Tokenizer::load(fixture(kStoriesGguf));
  const auto from_model = Tokenizer::load(fixture(kTok512));
  ASSERT_EQ(from_gguf.n_vocab(), from_model.n_vocab());
  for (int32_t id = 0; id < from_gguf.n_vocab(); ++id) {
    ASSERT_EQ(from_gguf.piece(id), from_model.piece(id)) << id;
    ASSERT_EQ(from_gguf.token_type(id), from_model.token_type(id)) << id;
  }
  // tok512.model asks for remove_extra_whitespaces; the GGUF (like llama.cpp) keeps spaces.
  EXPECT_TRUE(from_model.vocabulary().remove_extra_whitespaces);
  EXPECT_FALSE(from_gguf.vocabulary().remove_extra_whitespaces);
  EXPECT_EQ(from_gguf.encode("Once upon a time", true), from_model.encode("Once upon a time", true));
}

// ---- libsentencepiece as the oracle ----

TEST(TokenizerReference, MixtralRandomStrings) {
  MOE_REQUIRE_FIXTURE(kMixtral);
  const std::string bytes = read_file(fixture(kMixtral));
  const auto sp = reference(bytes);
  const auto tok = Tokenizer::from_sentencepiece_file(fixture(kMixtral));
  compare_with_reference(tok, *sp, base_seed(), 3000, 40);
  std::vector<uint8_t> storage;
  compare_with_reference(via_gguf(tok, storage), *sp, base_seed() + 1, 1000, 40);
}

TEST(TokenizerReference, Tok512RandomStrings) {
  MOE_REQUIRE_FIXTURE(kTok512);
  const auto sp = reference(read_file(fixture(kTok512)));
  const auto tok = Tokenizer::from_sentencepiece_file(fixture(kTok512));
  compare_with_reference(tok, *sp, base_seed() + 2, 3000, 40);
}

TEST(TokenizerReference, LongTextMatchesInOnePiece) {
  MOE_REQUIRE_FIXTURE(kMixtral);
  const auto sp = reference(read_file(fixture(kMixtral)));
  const auto tok = Tokenizer::from_sentencepiece_file(fixture(kMixtral));
  std::mt19937_64 rng(base_seed() + 3);
  std::string text;
  while (text.size() < 300000) text += random_text(rng, 50);
  std::vector<int> expected;
  auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(sp->Encode(text, &expected).ok());
  const double sp_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  start = std::chrono::steady_clock::now();
  const auto ids = tok.encode(text, false);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_EQ(to_ints(ids), expected) << "seed " << base_seed() + 3;
  std::string expected_text;
  ASSERT_TRUE(sp->Decode(expected, &expected_text).ok());
  EXPECT_EQ(tok.decode(ids), expected_text);
  std::printf("encoded %zu bytes of random text in %.3f s (libsentencepiece: %.3f s)\n", text.size(), seconds,
              sp_seconds);
}

TEST(TokenizerReference, EdgeStrings) {
  MOE_REQUIRE_FIXTURE(kMixtral);
  MOE_REQUIRE_FIXTURE(kTok512);
  const std::vector<std::string> edge = {
      "", " ", "  ", "\t", "\n", " \n", "a", " a", "a ", "  a  b  ", "▁", "▁▁Hello", "Hello▁world",
      std::string("a\0b", 3), std::string(1, '\0'), "\xFF", "\xE2\x96", "\xE2\x96\x81\xE2", "\xC0\x80", "\xED\xA0\x80",
      "\xF4\x90\x80\x80", "\xEF\xBF\xBD", "<s>Hello</s>", "<unk>", "<0x0A>", "[INST]", std::string(300, ' '),
      std::string(200, 'a'), "ﬁ ﬂ Ǆ ǅ", "\xF0\x9F\x98", "\r\n\r\n", "\x7F\x01\x1F", "日本語のテキスト、句読点。",
  };
  for (const char* model : {kMixtral, kTok512}) {
    const auto sp = reference(read_file(fixture(model)));
    const auto tok = Tokenizer::from_sentencepiece_file(fixture(model));
    for (const auto& text : edge) {
      std::vector<int> expected;
      ASSERT_TRUE(sp->Encode(text, &expected).ok());
      EXPECT_EQ(to_ints(tok.encode(text, false)), expected) << model << " \"" << escaped(text) << "\"";
      std::string expected_text;
      ASSERT_TRUE(sp->Decode(expected, &expected_text).ok());
      EXPECT_EQ(tok.decode(to_ids(expected)), expected_text) << model << " \"" << escaped(text) << "\"";
    }
  }
}

// Variants of tok512 written as ModelProtos: each exercises a rule the real models leave unused.
struct Variant {
  const char* name;
  void (*edit)(Vocabulary&);
};

void add_piece(Vocabulary& v, const std::string& piece, float score, TokenType type) {
  v.pieces.push_back(piece);
  v.scores.push_back(score);
  v.types.push_back(type);
}

const Variant kVariants[] = {
    {"plain", [](Vocabulary&) {}},
    {"keep-spaces", [](Vocabulary& v) { v.remove_extra_whitespaces = false; }},
    {"no-dummy-prefix", [](Vocabulary& v) { v.add_dummy_prefix = false; v.remove_extra_whitespaces = false; }},
    {"no-prefix-remove-spaces", [](Vocabulary& v) { v.add_dummy_prefix = false; v.remove_extra_whitespaces = true; }},
    {"no-escape", [](Vocabulary& v) { v.escape_whitespaces = false; v.remove_extra_whitespaces = false; }},
    {"user-defined",
     [](Vocabulary& v) {
       for (const char* p : {"<|im_end|>", "[INST]", "the", "xyz", "ab", "😀", "日本", "a b", "▁▁", "▁zq"})
         add_piece(v, p, 0.0f, TokenType::UserDefined);
     }},
    {"user-defined-inner-space",  // a piece with "▁" inside turns off per-word merging
     [](Vocabulary& v) {
       for (const char* p : {"<|im_end|>", "x▁y", "the▁dog", "ab"}) add_piece(v, p, 0.0f, TokenType::UserDefined);
     }},
    {"control-pieces",
     [](Vocabulary& v) {
       for (const char* p : {"[INST]", "<|im_end|>", "xyz"}) add_piece(v, p, 0.0f, TokenType::Control);
     }},
    {"unused",
     [](Vocabulary& v) {
       for (size_t i = 259; i < v.pieces.size(); i += 3)
         if (v.types[i] == TokenType::Normal) v.types[i] = TokenType::Unused;
     }},
    {"no-byte-fallback",
     [](Vocabulary& v) {
       Vocabulary out;
       out = v;
       out.pieces.clear();
       out.scores.clear();
       out.types.clear();
       for (size_t i = 0; i < v.pieces.size(); ++i)
         if (v.types[i] != TokenType::Byte) add_piece(out, v.pieces[i], v.scores[i], v.types[i]);
       out.byte_fallback = false;
       v = out;
     }},
    {"equal-scores",
     [](Vocabulary& v) {
       for (size_t i = 0; i < v.scores.size(); ++i) v.scores[i] = static_cast<float>(-static_cast<int>(i / 4));
     }},
    {"signed-zero-scores",  // -0 and +0 are equal scores: the leftmost pair merges first
     [](Vocabulary& v) {
       for (size_t i = 0; i < v.scores.size(); ++i) v.scores[i] = i % 2 ? -0.0f : 0.0f;
     }},
    {"unk-surface", [](Vocabulary& v) { v.unk_surface = "<?>"; }},
};

TEST(TokenizerReference, VocabularyVariants) {
  MOE_REQUIRE_FIXTURE(kTok512);
  const auto base = Tokenizer::from_sentencepiece_file(fixture(kTok512)).vocabulary();
  uint64_t seed = base_seed() + 100;
  for (const Variant& variant : kVariants) {
    SCOPED_TRACE(variant.name);
    Vocabulary v = base;
    variant.edit(v);
    const std::string bytes = testing::sentencepiece_model_bytes(v);
    const auto sp = reference(bytes);
    const auto tok = Tokenizer::from_sentencepiece_bytes(
        {reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()}, variant.name);
    compare_with_reference(tok, *sp, ++seed, 600, 30);
  }
}

// ---- behaviour beyond libsentencepiece ----

TEST(TokenizerSpecial, ParseSpecialSplitsOnControlPieces) {
  MOE_REQUIRE_FIXTURE(kMixtral);
  const auto tok = Tokenizer::from_sentencepiece_file(fixture(kMixtral));
  const std::string text = "<s>[INST] Hi [/INST] Hello</s>";
  // Plain text: "<s>" is characters.
  const auto plain = tok.encode(text, false);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), 1), 0);
  // Parsed: <s>, then "[INST] Hi [/INST] Hello" encoded as a text of its own, then </s>.
  std::vector<int32_t> expected{1};
  for (int32_t id : tok.encode("[INST] Hi [/INST] Hello", false)) expected.push_back(id);
  expected.push_back(2);
  EXPECT_EQ(tok.encode(text, false, true), expected);
  // The canonical Mistral prompt starts 1, 733 ("▁["), 16289 ("INST"), 28793 ("]").
  const auto prompt = tok.encode("<s>[INST] Explain [/INST]", false, true);
  ASSERT_GE(prompt.size(), 4u);
  EXPECT_EQ(std::vector<int32_t>(prompt.begin(), prompt.begin() + 4), (std::vector<int32_t>{1, 733, 16289, 28793}));
  EXPECT_EQ(tok.encode("</s></s>", false, true), (std::vector<int32_t>{2, 2}));
  EXPECT_EQ(tok.encode("a</s", false, true), tok.encode("a</s", false));
  // add_bos with parse_special does not double a leading "<s>" on its own: the caller decides.
  EXPECT_EQ(tok.encode("<s>x", true, true).front(), 1);
  EXPECT_EQ(tok.decode(tok.encode(text, true, true)), "[INST] Hi [/INST] Hello");
}

TEST(TokenizerSpecial, ChatMlControlPiecesInGguf) {
  MOE_REQUIRE_FIXTURE(kTok512);
  Vocabulary v = Tokenizer::from_sentencepiece_file(fixture(kTok512)).vocabulary();
  add_piece(v, "<|im_start|>", 0.0f, TokenType::Control);
  add_piece(v, "<|im_end|>", 0.0f, TokenType::Control);
  auto bytes = testing::gguf_writer_for(v).to_bytes();
  const auto tok = Tokenizer::from_gguf(gguf::File::parse(bytes, "chatml.gguf"));
  const auto ids = tok.encode("<|im_start|>user\nHi<|im_end|>", true, true);
  ASSERT_EQ(ids.size(), 2 + tok.encode("user\nHi", false).size() + 1);
  EXPECT_EQ(ids[0], tok.bos_id());
  EXPECT_EQ(ids[1], 512);
  EXPECT_EQ(ids.back(), 513);
  EXPECT_EQ(tok.decode(ids), "user\nHi");
}

TEST(TokenizerDecode, OutOfRangeIdsThrow) {
  MOE_REQUIRE_FIXTURE(kTok512);
  const auto tok = Tokenizer::load(fixture(kTok512));
  EXPECT_THROW(tok.decode(std::vector<int32_t>{5, 512}), Error);
  EXPECT_THROW(tok.decode(std::vector<int32_t>{-1}), Error);
  EXPECT_THROW(tok.piece(512), Error);
  StreamDecoder stream(tok);
  EXPECT_THROW(stream.push(100000), Error);
  Tokenizer empty;
  EXPECT_THROW(empty.encode("x", false), Error);
}

TEST(TokenizerDecode, CopiesAreIndependent) {
  MOE_REQUIRE_FIXTURE(kTok512);
  auto original = std::make_unique<Tokenizer>(Tokenizer::load(fixture(kTok512)));
  const auto expected = original->encode("Once upon a time, a big dog", true);
  Tokenizer copy(*original);
  Tokenizer assigned;
  assigned = *original;
  original.reset();  // the copies must not point into the original's memory
  EXPECT_EQ(copy.encode("Once upon a time, a big dog", true), expected);
  EXPECT_EQ(assigned.encode("Once upon a time, a big dog", true), expected);
  Tokenizer moved(std::move(copy));
  EXPECT_EQ(moved.encode("Once upon a time, a big dog", true), expected);
}

// ---- streaming ----

void check_stream(const Tokenizer& tok, const std::vector<int32_t>& ids, bool continuation, const std::string& what) {
  StreamDecoder stream(tok, continuation);
  std::string all;
  for (size_t i = 0; i < ids.size(); ++i) {
    const std::string chunk = stream.push(ids[i]);
    ASSERT_TRUE(utf8::is_valid(chunk)) << what << ": chunk after id #" << i << " is not UTF-8: \"" << escaped(chunk) << "\"";
    all += chunk;
  }
  const std::string tail = stream.flush();
  ASSERT_TRUE(utf8::is_valid(tail)) << what;
  all += tail;
  const std::string expected = continuation ? tok.decode_continuation(ids) : tok.decode(ids);
  ASSERT_EQ(all, expected) << what;
}

TEST(TokenizerStream, ChunksAreWholeCharactersAndSumToDecode) {
  MOE_REQUIRE_FIXTURE(kMixtral);
  const auto tok = Tokenizer::from_sentencepiece_file(fixture(kMixtral));
  const auto sp = reference(read_file(fixture(kMixtral)));
  const uint64_t seed = base_seed() + 4;
  for (int i = 0; i < 1500; ++i) {
    std::mt19937_64 rng(seed + static_cast<uint64_t>(i));
    // Valid text only: the vocabulary's byte pieces then always form whole characters.
    const auto ids = tok.encode(random_text(rng, rng() % 30, false), i % 2 == 0);
    check_stream(tok, ids, false, cat("seed ", seed + i));
    check_stream(tok, ids, true, cat("seed ", seed + i, " continuation"));
    std::string reference_text;
    ASSERT_TRUE(sp->Decode(to_ints(ids), &reference_text).ok());
    ASSERT_EQ(tok.decode(ids), reference_text);
  }
}

TEST(TokenizerStream, BrokenByteRunsBecomeReplacementCharacters) {
  MOE_REQUIRE_FIXTURE(kMixtral);
  const auto tok = Tokenizer::from_sentencepiece_file(fixture(kMixtral));
  auto byte = [&](int b) { return *tok.token_id(cat("<0x", "0123456789ABCDEF"[b >> 4], "0123456789ABCDEF"[b & 15], ">")); };
  const int32_t hello = *tok.token_id("▁Hello");
  // "€" is E2 82 AC: pushed one byte at a time, nothing shows until the character is complete.
  StreamDecoder stream(tok, true);
  EXPECT_EQ(stream.push(byte(0xE2)), "");
  EXPECT_EQ(stream.push(byte(0x82)), "");
  EXPECT_EQ(stream.push(byte(0xAC)), "€");
  // A lead byte followed by a piece: the lone byte is U+FFFD, as libsentencepiece decodes it.
  EXPECT_EQ(stream.push(byte(0xE2)), "");
  EXPECT_EQ(stream.push(hello), "\xEF\xBF\xBD Hello");
  EXPECT_EQ(stream.push(byte(0xF0)), "");
  EXPECT_EQ(stream.push(byte(0x9F)), "");
  EXPECT_EQ(stream.flush(), "\xEF\xBF\xBD\xEF\xBF\xBD");
  // Random byte ids against libsentencepiece and the stream.
  const auto sp = reference(read_file(fixture(kMixtral)));
  for (int i = 0; i < 2000; ++i) {
    std::mt19937_64 rng(base_seed() + 5 + static_cast<uint64_t>(i));
    std::vector<int32_t> ids(rng() % 10);
    for (auto& id : ids) id = rng() % 5 == 0 ? hello : byte(static_cast<int>(rng() % 256));
    std::string reference_text;
    ASSERT_TRUE(sp->Decode(to_ints(ids), &reference_text).ok());
    ASSERT_EQ(tok.decode(ids), reference_text) << "seed " << base_seed() + 5 + i;
    check_stream(tok, ids, false, cat("byte seed ", base_seed() + 5 + i));
    check_stream(tok, ids, true, cat("byte seed ", base_seed() + 5 + i, " continuation"));
  }
}

TEST(TokenizerStream, LeadingSpaceRule) {
  MOE_REQUIRE_FIXTURE(kMixtral);
  const auto tok = Tokenizer::from_sentencepiece_file(fixture(kMixtral));
  const auto ids = tok.encode("Hello world", true);
  EXPECT_EQ(tok.decode(ids), "Hello world");
  EXPECT_EQ(tok.decode_continuation(tok.encode("Hello world", false)), " Hello world");
  StreamDecoder start(tok, false);
  std::string text;
  for (int32_t id : ids) text += start.push(id);
  EXPECT_EQ(text, "Hello world");
}

}  // namespace
}  // namespace moe::tokenizer
