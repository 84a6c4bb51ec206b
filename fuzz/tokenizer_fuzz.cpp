// tokenizer_fuzz.cpp: libFuzzer target for the two tokenizer sources: a SentencePiece tokenizer.model
// (protobuf) and GGUF tokenizer metadata (tokenizer.ggml.*), chosen by the input's magic bytes as
// Tokenizer::load chooses for files. A vocabulary that loads is then used: a fixed text and the input's
// own tail are encoded (with and without special-token parsing) and decoded back, streaming too.
// fuzz-link: moe_tokenizer moe_gguf
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>

#include "gguf/gguf.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace moe;
  try {
    std::span<const uint8_t> bytes(data, size);
    tokenizer::Tokenizer tok;
    if (size >= 4 && std::memcmp(data, "GGUF", 4) == 0) {
      gguf::File file = gguf::File::parse(bytes, "<fuzz>");
      tok = tokenizer::Tokenizer::from_gguf(file);
    } else {
      tok = tokenizer::Tokenizer::from_sentencepiece_bytes(bytes, "<fuzz>");
    }
    std::string_view tail(reinterpret_cast<const char*>(data) + (size > 64 ? size - 64 : 0), size > 64 ? 64 : size);
    for (std::string_view text : {std::string_view("Hello <s> world </s>\n\t  ünïcødé 🤖 [INST]"), tail}) {
      for (bool special : {false, true}) {
        auto ids = tok.encode(text, true, special);
        for (int32_t id : ids)
          if (id < 0 || id >= tok.n_vocab()) __builtin_trap();  // encode must stay inside the vocabulary
        (void)tok.decode(ids);
        tokenizer::StreamDecoder stream(tok, false);
        for (int32_t id : ids) (void)stream.push(id);
        (void)stream.flush();
      }
    }
  } catch (const Error&) {
  }
  return 0;
}
