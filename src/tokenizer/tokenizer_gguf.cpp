// tokenizer_gguf.cpp: the tokenizer stored in a GGUF file's metadata (`tokenizer.ggml.*`, as llama.cpp's
// converter writes it for Llama/Mistral/Mixtral). GGUF does not record byte_fallback or the normalizer
// rules, so they follow llama.cpp: byte fallback when byte pieces exist, a space prefix unless
// `tokenizer.ggml.add_space_prefix` says otherwise, spaces kept as they are unless
// `tokenizer.ggml.remove_extra_whitespaces` is true.
#include <limits>

#include "gguf/gguf.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace moe::tokenizer {
namespace {

constexpr const char* kModel = "tokenizer.ggml.model";
constexpr const char* kTokens = "tokenizer.ggml.tokens";
constexpr const char* kScores = "tokenizer.ggml.scores";
constexpr const char* kTypes = "tokenizer.ggml.token_type";

// A special token id: absent → `fallback`; "none" spellings (negative, or 0xFFFFFFFF as llama.cpp writes
// for a missing id) → -1; otherwise it must index the vocabulary.
int32_t special_id(const gguf::File& f, const char* key, int32_t fallback, size_t n_vocab) {
  const auto v = f.get_int(key);
  if (!v) return fallback < static_cast<int64_t>(n_vocab) ? fallback : -1;
  if (*v < 0 || *v == 0xFFFFFFFFll) return -1;
  if (*v >= static_cast<int64_t>(n_vocab))
    fail(f.name(), ": ", key, " = ", *v, " is out of range (the vocabulary has ", n_vocab, " tokens)");
  return static_cast<int32_t>(*v);
}

}  // namespace

Tokenizer Tokenizer::from_gguf(const gguf::File& f) {
  const auto model = f.get_string(kModel);
  if (!model) fail(f.name(), ": ", kModel, " is missing; the file carries no tokenizer");
  if (*model != "llama")
    fail(f.name(), ": ", kModel, " is '", *model,
         "'; only 'llama' (the SentencePiece BPE tokenizer of Llama/Mistral/Mixtral) is supported");

  Vocabulary v;
  v.source = f.name();
  v.strict = false;
  auto tokens = f.get_string_array(kTokens);
  if (!tokens) fail(f.name(), ": ", kTokens, " is missing");
  if (tokens->empty()) fail(f.name(), ": ", kTokens, " is empty");
  const size_t n = tokens->size();
  if (n > static_cast<size_t>(std::numeric_limits<int32_t>::max())) fail(f.name(), ": ", kTokens, " has too many tokens");
  v.pieces = std::move(*tokens);

  auto scores = f.get_float_array(kScores);
  if (!scores) fail(f.name(), ": ", kScores, " is missing (a BPE vocabulary needs its merge scores)");
  if (scores->size() != n) fail(f.name(), ": ", kScores, " has ", scores->size(), " entries but ", kTokens, " has ", n);
  v.scores = std::move(*scores);

  const auto types = f.get_int_array(kTypes);
  if (types) {
    if (types->size() != n) fail(f.name(), ": ", kTypes, " has ", types->size(), " entries but ", kTokens, " has ", n);
    v.types.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      const int64_t t = (*types)[i];
      if (t < 1 || t > 6)
        fail(f.name(), ": ", kTypes, "[", i, "] = ", t, " is not a token type (1 normal .. 6 byte)");
      v.types.push_back(static_cast<TokenType>(t));
    }
  } else {
    v.types.assign(n, TokenType::Normal);  // llama.cpp's reading of a vocabulary without types
  }

  // llama.cpp's defaults for a SentencePiece vocabulary when an id is not recorded.
  v.unk_id = special_id(f, "tokenizer.ggml.unknown_token_id", 0, n);
  v.bos_id = special_id(f, "tokenizer.ggml.bos_token_id", 1, n);
  v.eos_id = special_id(f, "tokenizer.ggml.eos_token_id", 2, n);
  v.pad_id = special_id(f, "tokenizer.ggml.padding_token_id", -1, n);
  v.add_bos = f.get_bool("tokenizer.ggml.add_bos_token").value_or(true);
  v.add_eos = f.get_bool("tokenizer.ggml.add_eos_token").value_or(false);
  v.add_dummy_prefix = f.get_bool("tokenizer.ggml.add_space_prefix").value_or(true);
  v.remove_extra_whitespaces = f.get_bool("tokenizer.ggml.remove_extra_whitespaces").value_or(false);
  v.escape_whitespaces = true;
  if (const gguf::Value* charsmap = f.find("tokenizer.ggml.precompiled_charsmap");
      charsmap && !charsmap->array.empty())
    fail(f.name(), ": tokenizer.ggml.precompiled_charsmap is set; only the identity normalization is supported");
  return from_vocabulary(std::move(v));
}

}  // namespace moe::tokenizer
