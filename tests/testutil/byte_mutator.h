// byte_mutator.h: the format-blind half of the file-mutation tests (GGUF, safetensors): a base file and
// a seeded generator, positions drawn mostly inside the header (where the structure a parser trusts
// is), and the edits any binary format should survive being given: flipped bytes, truncation, a region
// duplicated or deleted. Each format's test derives from it and adds the edits that know its layout.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <utility>
#include <vector>

namespace moe::testing {

class ByteMutator {
 public:
  ByteMutator(std::vector<uint8_t> base, uint64_t header_end, uint64_t seed)
      : base_(std::move(base)), header_end_(header_end), rng_(seed) {}

  const std::vector<uint8_t>& base() const { return base_; }

  // Three times in four a position in the header, where the structure is.
  size_t position(size_t size) {
    if (size == 0) return 0;
    const size_t limit = (rng_() % 4 != 0) ? std::min<size_t>(size, header_end_) : size;
    return static_cast<size_t>(rng_() % limit);
  }
  void flip_bytes(std::vector<uint8_t>& b) {
    const int n = 1 + static_cast<int>(rng_() % 4);
    for (int k = 0; k < n && !b.empty(); ++k) b[position(b.size())] ^= static_cast<uint8_t>(1 + rng_() % 255);
  }
  void truncate(std::vector<uint8_t>& b) { b.resize(static_cast<size_t>(rng_() % (b.size() + 1))); }
  // Up to max_len bytes copied elsewhere: inserted (the file grows) or, when `overwrite` and a coin
  // says so, written over what is there.
  void duplicate_region(std::vector<uint8_t>& b, size_t max_len, bool overwrite) {
    if (b.empty()) return;
    const size_t from = position(b.size());
    size_t len = std::min<size_t>(b.size() - from, 1 + rng_() % max_len);
    const std::vector<uint8_t> region(b.begin() + static_cast<long>(from), b.begin() + static_cast<long>(from + len));
    const size_t to = position(b.size());
    if (!overwrite || rng_() % 2) {
      b.insert(b.begin() + static_cast<long>(to), region.begin(), region.end());
    } else {
      len = std::min(len, b.size() - to);
      std::memcpy(b.data() + to, region.data(), len);
    }
  }
  void delete_region(std::vector<uint8_t>& b) {
    if (b.empty()) return;
    const size_t from = position(b.size());
    const size_t len = std::min<size_t>(b.size() - from, 1 + rng_() % 16);
    b.erase(b.begin() + static_cast<long>(from), b.begin() + static_cast<long>(from + len));
  }

 protected:
  uint64_t rng() { return rng_(); }  // the next random number
  uint64_t header_end() const { return header_end_; }

 private:
  std::vector<uint8_t> base_;
  uint64_t header_end_ = 0;
  std::mt19937_64 rng_;
};

}  // namespace moe::testing
