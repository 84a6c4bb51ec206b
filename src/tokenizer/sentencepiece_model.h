// sentencepiece_model.h: reads a SentencePiece `tokenizer.model` (a serialized ModelProto) into a
// Vocabulary, with a small bounds-checked protobuf wire-format reader instead of a protobuf dependency.
#pragma once
#include <cstdint>
#include <span>
#include <string>

#include "tokenizer/tokenizer.h"

namespace moe::tokenizer {

// Throws moe::Error, prefixed by `name`, on malformed bytes or a model this tokenizer cannot reproduce
// exactly (not BPE, a precompiled normalization map, whitespace as suffix).
Vocabulary parse_sentencepiece_model(std::span<const uint8_t> bytes, const std::string& name);

}  // namespace moe::tokenizer
