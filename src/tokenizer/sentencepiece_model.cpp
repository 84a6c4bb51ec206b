// sentencepiece_model.cpp: a SentencePiece ModelProto, read with a minimal protobuf wire-format reader.
//
// Only the fields that change how text is tokenized are read (field numbers of sentencepiece_model.proto):
//   ModelProto      pieces = 1 (repeated message), trainer_spec = 2, normalizer_spec = 3,
//                   denormalizer_spec = 5
//   SentencePiece   piece = 1 (string), score = 2 (float), type = 3 (enum, default NORMAL)
//   TrainerSpec     model_type = 3 (UNIGRAM=1 default, BPE=2, WORD=3, CHAR=4), treat_whitespace_as_suffix
//                   = 24, byte_fallback = 35, unk_surface = 44, unk_piece = 45, bos_piece = 46,
//                   eos_piece = 47, pad_piece = 48 (unk_id = 40 ... pad_id = 43 only describe training)
//   NormalizerSpec  name = 1, precompiled_charsmap = 2, add_dummy_prefix = 3 (default true),
//                   remove_extra_whitespaces = 4 (default true), escape_whitespaces = 5 (default true)
// Everything else is skipped by wire type. Every length and varint is checked against the bytes left, so a
// truncated or mutated file is an error, never an out-of-bounds read; memory grows only with content
// actually present. Like protobuf, a repeated occurrence of a message field merges into the earlier one.
#include "tokenizer/sentencepiece_model.h"

#include <cstring>
#include <optional>
#include <string_view>

#include "util/error.h"

namespace moe::tokenizer {
namespace {

enum WireType : uint32_t { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

const char* wire_type_name(uint32_t w) {
  switch (w) {
    case 0: return "varint";
    case 1: return "fixed64";
    case 2: return "length-delimited";
    case 3: return "start-group";
    case 4: return "end-group";
    case 5: return "fixed32";
    default: return "invalid";
  }
}

// One message's bytes. `where` names the message in errors ("pieces[17]").
class WireReader {
 public:
  WireReader(std::span<const uint8_t> bytes, const std::string& name, std::string where)
      : p_(bytes.data()), end_(bytes.data() + bytes.size()), base_(bytes.data()), name_(name), where_(std::move(where)) {}

  bool done() const { return p_ == end_; }

  // Reads a field key; returns false at the end of the message.
  bool next(uint32_t* field, uint32_t* wire) {
    if (done()) return false;
    const uint64_t key = varint("field key");
    *wire = static_cast<uint32_t>(key & 7);
    const uint64_t number = key >> 3;
    if (number == 0 || number > 0x1FFFFFFF) error("invalid field number ", number);
    *field = static_cast<uint32_t>(number);
    return true;
  }

  uint64_t varint(const char* what) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p_ == end_) error("truncated varint (", what, ")");
      const uint8_t b = *p_++;
      v |= static_cast<uint64_t>(b & 0x7F) << shift;
      if (!(b & 0x80)) return v;
    }
    error("varint longer than 10 bytes (", what, ")");
  }

  std::span<const uint8_t> bytes(const char* what) {
    const uint64_t len = varint(what);
    if (len > static_cast<uint64_t>(end_ - p_)) error(what, ": length ", len, " exceeds the ", end_ - p_, " bytes left");
    std::span<const uint8_t> out(p_, static_cast<size_t>(len));
    p_ += len;
    return out;
  }

  float fixed32_float(const char* what) {
    if (end_ - p_ < 4) error("truncated fixed32 (", what, ")");
    uint32_t bits = static_cast<uint32_t>(p_[0]) | static_cast<uint32_t>(p_[1]) << 8 |
                    static_cast<uint32_t>(p_[2]) << 16 | static_cast<uint32_t>(p_[3]) << 24;
    p_ += 4;
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
  }

  void skip(uint32_t field, uint32_t wire) {
    switch (wire) {
      case kVarint: varint("skipped field"); return;
      case kFixed64: advance(8, field); return;
      case kLengthDelimited: bytes("skipped field"); return;
      case kFixed32: advance(4, field); return;
      default: error("field ", field, " has unsupported wire type ", wire, " (", wire_type_name(wire), ")");
    }
  }

  void expect(uint32_t field, uint32_t wire, uint32_t expected, const char* what) {
    if (wire != expected)
      error(what, " (field ", field, ") has wire type ", wire_type_name(wire), ", expected ", wire_type_name(expected));
  }

  // Typed field readers, each checking the wire type first.
  bool read_bool(uint32_t field, uint32_t wire, const char* what) {
    expect(field, wire, kVarint, what);
    return varint(what) != 0;
  }
  int32_t read_int32(uint32_t field, uint32_t wire, const char* what) {
    expect(field, wire, kVarint, what);
    return static_cast<int32_t>(static_cast<uint32_t>(varint(what)));  // protobuf int32: low 32 bits
  }
  std::string read_string(uint32_t field, uint32_t wire, const char* what) {
    expect(field, wire, kLengthDelimited, what);
    auto b = bytes(what);
    return std::string(reinterpret_cast<const char*>(b.data()), b.size());
  }
  std::span<const uint8_t> read_message(uint32_t field, uint32_t wire, const char* what) {
    expect(field, wire, kLengthDelimited, what);
    return bytes(what);
  }

  template <typename... Args>
  [[noreturn]] void error(Args&&... args) const {
    fail(name_, ": malformed SentencePiece model: ", where_, " at byte ", p_ - base_, ": ", std::forward<Args>(args)...);
  }

 private:
  void advance(size_t n, uint32_t field) {
    if (static_cast<size_t>(end_ - p_) < n) error("field ", field, " is truncated");
    p_ += n;
  }
  const uint8_t* p_;
  const uint8_t* end_;
  const uint8_t* base_;
  const std::string& name_;
  std::string where_;
};

struct TrainerSpec {
  int32_t model_type = 1;  // UNIGRAM, the proto default
  bool treat_whitespace_as_suffix = false;
  bool byte_fallback = false;
  std::optional<std::string> unk_surface;
  std::string unk_piece = "<unk>", bos_piece = "<s>", eos_piece = "</s>", pad_piece = "<pad>";
};

struct NormalizerSpec {
  std::string name;
  std::string precompiled_charsmap;
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = true;
  bool escape_whitespaces = true;
};

void parse_trainer(std::span<const uint8_t> bytes, const std::string& name, TrainerSpec& t) {
  WireReader r(bytes, name, "trainer_spec");
  uint32_t field, wire;
  while (r.next(&field, &wire)) {
    switch (field) {
      case 3: t.model_type = r.read_int32(field, wire, "trainer_spec.model_type"); break;
      case 24: t.treat_whitespace_as_suffix = r.read_bool(field, wire, "trainer_spec.treat_whitespace_as_suffix"); break;
      case 35: t.byte_fallback = r.read_bool(field, wire, "trainer_spec.byte_fallback"); break;
      case 44: t.unk_surface = r.read_string(field, wire, "trainer_spec.unk_surface"); break;
      case 45: t.unk_piece = r.read_string(field, wire, "trainer_spec.unk_piece"); break;
      case 46: t.bos_piece = r.read_string(field, wire, "trainer_spec.bos_piece"); break;
      case 47: t.eos_piece = r.read_string(field, wire, "trainer_spec.eos_piece"); break;
      case 48: t.pad_piece = r.read_string(field, wire, "trainer_spec.pad_piece"); break;
      default: r.skip(field, wire);
    }
  }
}

void parse_normalizer(std::span<const uint8_t> bytes, const std::string& name, const char* where, NormalizerSpec& n) {
  WireReader r(bytes, name, where);
  uint32_t field, wire;
  while (r.next(&field, &wire)) {
    switch (field) {
      case 1: n.name = r.read_string(field, wire, "normalizer name"); break;
      case 2: n.precompiled_charsmap = r.read_string(field, wire, "precompiled_charsmap"); break;
      case 3: n.add_dummy_prefix = r.read_bool(field, wire, "add_dummy_prefix"); break;
      case 4: n.remove_extra_whitespaces = r.read_bool(field, wire, "remove_extra_whitespaces"); break;
      case 5: n.escape_whitespaces = r.read_bool(field, wire, "escape_whitespaces"); break;
      default: r.skip(field, wire);
    }
  }
}

void parse_piece(std::span<const uint8_t> bytes, const std::string& name, size_t index, Vocabulary& v) {
  WireReader r(bytes, name, cat("pieces[", index, "]"));
  std::string piece;
  float score = 0;
  int32_t type = 1;  // NORMAL, the proto default
  uint32_t field, wire;
  while (r.next(&field, &wire)) {
    switch (field) {
      case 1: piece = r.read_string(field, wire, "piece"); break;
      case 2:
        r.expect(field, wire, kFixed32, "score");
        score = r.fixed32_float("score");
        break;
      case 3: type = r.read_int32(field, wire, "type"); break;
      default: r.skip(field, wire);
    }
  }
  if (type < 1 || type > 6) r.error("type ", type, " is not a SentencePiece piece type (1..6)");
  v.pieces.push_back(std::move(piece));
  v.scores.push_back(score);
  v.types.push_back(static_cast<TokenType>(type));
}

const char* model_type_name(int32_t t) {
  switch (t) {
    case 1: return "UNIGRAM";
    case 2: return "BPE";
    case 3: return "WORD";
    case 4: return "CHAR";
    default: return "unknown";
  }
}

// SentencePiece's lookup for the special ids: the piece's id if it has the expected type, else -1.
int32_t find_piece(const Vocabulary& v, const std::string& piece, TokenType type) {
  for (size_t i = 0; i < v.pieces.size(); ++i)
    if (v.types[i] == type && v.pieces[i] == piece) return static_cast<int32_t>(i);
  return -1;
}

}  // namespace

Vocabulary parse_sentencepiece_model(std::span<const uint8_t> bytes, const std::string& name) {
  Vocabulary v;
  v.source = name;
  TrainerSpec trainer;
  NormalizerSpec normalizer, denormalizer;
  bool has_trainer = false;
  WireReader r(bytes, name, "ModelProto");
  uint32_t field, wire;
  while (r.next(&field, &wire)) {
    switch (field) {
      case 1: parse_piece(r.read_message(field, wire, "pieces"), name, v.pieces.size(), v); break;
      case 2:
        parse_trainer(r.read_message(field, wire, "trainer_spec"), name, trainer);
        has_trainer = true;
        break;
      case 3: parse_normalizer(r.read_message(field, wire, "normalizer_spec"), name, "normalizer_spec", normalizer); break;
      case 5:
        parse_normalizer(r.read_message(field, wire, "denormalizer_spec"), name, "denormalizer_spec", denormalizer);
        break;
      default: r.skip(field, wire);
    }
  }

  if (v.pieces.empty()) fail(name, ": SentencePiece model has no pieces");
  if (!has_trainer) fail(name, ": SentencePiece model has no trainer_spec, so its model type is UNIGRAM; only BPE is supported");
  if (trainer.model_type != 2)
    fail(name, ": SentencePiece model type is ", model_type_name(trainer.model_type), " (", trainer.model_type,
         "); only BPE (the Llama/Mistral tokenizer) is supported");
  if (trainer.treat_whitespace_as_suffix)
    fail(name, ": trainer_spec.treat_whitespace_as_suffix is set; only whitespace as prefix is supported");
  if (!normalizer.precompiled_charsmap.empty())
    fail(name, ": normalizer '", normalizer.name,
         "' uses a precompiled character map; only the identity normalization (Llama/Mistral) is supported");
  if (!denormalizer.precompiled_charsmap.empty())
    fail(name, ": the model has a denormalizer character map, which is not supported");

  v.add_dummy_prefix = normalizer.add_dummy_prefix;
  v.remove_extra_whitespaces = normalizer.remove_extra_whitespaces;
  v.escape_whitespaces = normalizer.escape_whitespaces;
  v.byte_fallback = trainer.byte_fallback;
  if (trainer.unk_surface) v.unk_surface = *trainer.unk_surface;
  v.strict = true;
  // SentencePiece's unknown token is the piece of type UNKNOWN (exactly one; from_vocabulary checks);
  // BOS/EOS/PAD are the pieces named by the trainer spec when they are control pieces.
  v.unk_id = -1;
  v.bos_id = find_piece(v, trainer.bos_piece, TokenType::Control);
  v.eos_id = find_piece(v, trainer.eos_piece, TokenType::Control);
  v.pad_id = find_piece(v, trainer.pad_piece, TokenType::Control);
  v.add_bos = true;
  v.add_eos = false;
  return v;
}

}  // namespace moe::tokenizer
