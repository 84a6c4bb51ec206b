// tokenizer.h: SentencePiece BPE (the Llama/Mistral/Mixtral tokenizer), loaded from GGUF metadata
// (`tokenizer.ggml.*`) or from a SentencePiece `tokenizer.model` file, with ids identical to
// libsentencepiece. Decoding is the exact inverse (leading-space rule, byte-fallback tokens), and
// StreamDecoder emits text incrementally without ever splitting a UTF-8 code point.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace moe::gguf { class File; }

namespace moe::tokenizer {

enum class TokenType : int32_t { Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6 };
const char* token_type_name(TokenType t);

// Everything a tokenizer is built from, whichever file it came from. Tokenizer::from_vocabulary checks it
// (equal lengths, non-empty unique pieces, ids in range, byte pieces spelled <0xNN>, no NaN scores).
struct Vocabulary {
  std::vector<std::string> pieces;
  std::vector<float> scores;
  std::vector<TokenType> types;
  int32_t unk_id = -1;  // -1: the first piece of type Unknown, if any
  int32_t bos_id = -1;
  int32_t eos_id = -1;
  int32_t pad_id = -1;
  bool add_bos = true;
  bool add_eos = false;
  // SentencePiece normalizer settings (the identity normalization of Llama/Mistral models).
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = false;
  bool escape_whitespaces = true;
  // Characters outside the vocabulary become <0xNN> byte pieces (all 256 must exist) instead of unk.
  bool byte_fallback = false;
  std::string unk_surface = " \xE2\x81\x87 ";  // what decode() writes for the unknown token
  // libsentencepiece's load checks: no two pieces of one kind with the same text, exactly one piece of
  // type Unknown. Off for GGUF files, which llama.cpp loads more leniently (the first duplicate wins).
  bool strict = true;
  std::string source = "<vocabulary>";  // names the origin in error messages
};

// Longest user-defined or control piece a vocabulary may hold. Those pieces are matched as whole tokens
// at every position of a text, so the work of encode() is up to (text bytes) x (longest such piece):
// one 100,000-byte piece made a 100 KB prompt take 49 s. Real ones are short ("<|im_start|>", "[INST]",
// runs of spaces); a longer one is refused at load.
inline constexpr size_t kMaxMatchedPieceBytes = 1024;

// Bytes the whole-piece matcher (user-defined and control pieces) has examined on the calling thread
// since it started: lets tests bound the work of encode() by counting, not by timing.
uint64_t matcher_steps_on_this_thread();

class Tokenizer {
 public:
  // From `tokenizer.ggml.model` == "llama" metadata; throws moe::Error naming the bad key.
  static Tokenizer from_gguf(const gguf::File& file);
  // From a SentencePiece model protobuf; throws moe::Error on a malformed file.
  static Tokenizer from_sentencepiece_file(const std::string& path);
  // Either of the above, chosen by the file's magic bytes.
  static Tokenizer load(const std::string& path);
  // A SentencePiece model protobuf held in memory; `name` prefixes error messages.
  static Tokenizer from_sentencepiece_bytes(std::span<const uint8_t> bytes, const std::string& name = "<memory>");
  // From an explicit vocabulary (validated as described at Vocabulary).
  static Tokenizer from_vocabulary(Vocabulary vocabulary);

  Tokenizer();
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  Tokenizer(const Tokenizer&);
  Tokenizer& operator=(const Tokenizer&);

  // Text to ids. add_bos prepends bos_id() (nothing when there is none). User-defined pieces are always
  // matched as whole tokens (as libsentencepiece does). parse_special lets control-token texts in `text`
  // (e.g. "<s>", "</s>", "<|im_end|>", "[INST]" where it is a control token) become their ids: they split
  // the text (longest match first), and each fragment between them is encoded as a text of its own, with
  // its own dummy prefix, as llama.cpp does. Otherwise they are plain text, and the ids equal
  // libsentencepiece's EncodeAsIds.
  std::vector<int32_t> encode(std::string_view text, bool add_bos, bool parse_special = false) const;
  // Ids to text as libsentencepiece decodes them: control tokens produce no text, the unknown token reads
  // as Vocabulary::unk_surface, runs of byte tokens are reassembled (invalid UTF-8 becomes U+FFFD byte by
  // byte), and the dummy-prefix space of the first text piece is removed. Ids out of range throw.
  std::string decode(std::span<const int32_t> ids) const;
  // Ids that continue earlier text (a completion after its prompt): like decode() but the first piece
  // keeps its leading space. Equal to what StreamDecoder(tok, true) produces.
  std::string decode_continuation(std::span<const int32_t> ids) const;

  int32_t n_vocab() const;
  int32_t bos_id() const;   // -1 when the model has none
  int32_t eos_id() const;
  int32_t unk_id() const;
  int32_t pad_id() const;
  bool add_bos() const;     // tokenizer.ggml.add_bos_token (default true)
  bool add_eos() const;     // tokenizer.ggml.add_eos_token (default false)
  const std::string& piece(int32_t id) const;  // the raw piece ("▁Hello", "<0x0A>", "<s>")
  TokenType token_type(int32_t id) const;
  float score(int32_t id) const;
  std::optional<int32_t> token_id(std::string_view piece) const;
  const Vocabulary& vocabulary() const;  // what the tokenizer was built from

 private:
  struct Impl;
  const Impl& loaded() const;  // impl_, or moe::Error when default-constructed
  std::unique_ptr<Impl> impl_;
  friend class StreamDecoder;
};

// Incremental detokenizer for streaming: push ids one at a time, get back only complete UTF-8 text.
// `continuation` = true when the ids continue earlier text (a generated completion after a prompt),
// so a leading space is kept; false when they start a text (then decode()'s first-piece rule applies).
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tok, bool continuation = true);
  std::string push(int32_t id);
  std::string flush();  // whatever is pending (an incomplete sequence becomes U+FFFD)

 private:
  const Tokenizer* tok_;
  bool at_start_;
  std::string pending_;
};

}  // namespace moe::tokenizer
