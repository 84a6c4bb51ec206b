// checked.h: overflow-safe size arithmetic. Every size that comes from a file or a request goes through
// these before anything is allocated or indexed: a multiplication that wraps is how hostile GGUF files
// turned into heap overflows elsewhere.
#pragma once
#include <cstdint>
#include <optional>
#include <string_view>

#include "util/error.h"

namespace moe {

inline std::optional<uint64_t> mul_u64(uint64_t a, uint64_t b) {
  uint64_t r;
  if (__builtin_mul_overflow(a, b, &r)) return std::nullopt;
  return r;
}
inline std::optional<uint64_t> add_u64(uint64_t a, uint64_t b) {
  uint64_t r;
  if (__builtin_add_overflow(a, b, &r)) return std::nullopt;
  return r;
}

// Throwing forms; `what` names the quantity in the error message.
inline uint64_t checked_mul(uint64_t a, uint64_t b, std::string_view what) {
  auto r = mul_u64(a, b);
  if (!r) fail(what, ": ", a, " * ", b, " overflows 64 bits");
  return *r;
}
inline uint64_t checked_add(uint64_t a, uint64_t b, std::string_view what) {
  auto r = add_u64(a, b);
  if (!r) fail(what, ": ", a, " + ", b, " overflows 64 bits");
  return *r;
}

// Rounds x up to a multiple of `align` (a power of two), or nullopt on overflow.
inline std::optional<uint64_t> align_up(uint64_t x, uint64_t align) {
  auto r = add_u64(x, align - 1);
  if (!r) return std::nullopt;
  return *r & ~(align - 1);
}

}  // namespace moe
