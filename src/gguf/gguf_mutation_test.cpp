// gguf_mutation_test.cpp: the reader against thousands of corrupted files. A valid writer-made file
// (metadata arrays, nested arrays, several tensor types) is corrupted by deterministic random
// mutations — byte flips, 4- and 8-byte fields overwritten with extreme values, truncation, duplicated
// and deleted regions, and stacks of these — and each result is parsed. The only acceptable outcomes
// are a File whose every tensor lies inside the bytes, or a moe::Error naming the file; any other
// exception is a failure, and under scripts/test-asan.sh any out-of-bounds access, overflow or leak
// aborts the run.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <iostream>
#include <memory>
#include <random>
#include <typeinfo>

#include "gguf/gguf.h"
#include "gguf/gguf_testing.h"
#include "testutil/byte_mutator.h"

namespace moe::gguf {
namespace {

struct Outcome {
  size_t accepted = 0;
  size_t rejected = 0;
};

// Uses everything a caller could use, so that a File that looks valid but is not would be caught.
void exercise(const File& f, const uint8_t* begin, size_t size, const std::string& label) {
  uint64_t checksum = 0;
  for (const TensorInfo& t : f.tensors()) {
    ASSERT_GE(t.data, begin) << label;
    ASSERT_LE(t.n_bytes, size) << label;
    ASSERT_LE(t.data + t.n_bytes, begin + size) << label;
    for (uint64_t k = 0; k < t.n_bytes; ++k) checksum += t.data[k];
    ASSERT_GE(t.n_dims, 1u);
    ASSERT_LE(t.n_dims, 4u);
    auto row = row_bytes(t.type, static_cast<uint64_t>(t.ne[0]));
    ASSERT_TRUE(row.has_value()) << label;
    ASSERT_EQ(t.n_bytes, *row * t.rows()) << label;
    ASSERT_EQ(f.find_tensor(t.name), &t) << label;
  }
  // The getter that fits each value's type (mismatches throw moe::Error, which is fine: u64 > INT64_MAX
  // for get_int, negatives for get_uint, nested arrays for the array getters). Calling every getter on
  // every key would spend most of the run unwinding expected exceptions.
  for (const auto& [key, value] : f.metadata()) {
    ASSERT_EQ(f.find(key), &value) << label;
    auto attempt = [](const std::function<void()>& get) {
      try {
        get();
      } catch (const Error&) {
      }
    };
    if (value.is_integer()) {
      attempt([&] { (void)f.get_int(key); });
      attempt([&] { (void)f.get_uint(key); });
    } else if (value.is_float()) {
      attempt([&] { (void)f.get_float(key); });
    } else if (value.type == ValueType::BOOL) {
      attempt([&] { (void)f.get_bool(key); });
    } else if (value.type == ValueType::STRING) {
      attempt([&] { (void)f.get_string(key); });
    } else if (value.array_type == ValueType::STRING) {
      attempt([&] { (void)f.get_string_array(key); });
    } else if (value.array_type == ValueType::FLOAT32 || value.array_type == ValueType::FLOAT64) {
      attempt([&] { (void)f.get_float_array(key); });
    } else {
      attempt([&] { (void)f.get_int_array(key); });
    }
  }
  if (!f.metadata().empty()) {
    const std::string& key = f.metadata().front().first;
    try {
      (void)f.get_bool(key);
      (void)f.get_string(key);
    } catch (const Error&) {
    }
  }
  ASSERT_EQ(f.alignment() & (f.alignment() - 1), 0u);
  volatile uint64_t sink = checksum;
  (void)sink;
}

void parse_one(const std::vector<uint8_t>& bytes, const std::string& label, Outcome& out) {
  // An exact-size heap copy, so that AddressSanitizer flags any read past the end.
  std::unique_ptr<uint8_t[]> copy(new uint8_t[bytes.size() + 1]);
  if (!bytes.empty()) std::memcpy(copy.get(), bytes.data(), bytes.size());
  try {
    File f = File::parse(std::span<const uint8_t>(copy.get(), bytes.size()), "mut");
    exercise(f, copy.get(), bytes.size(), label);
    ++out.accepted;
  } catch (const Error& e) {
    std::string msg = e.what();
    if (msg.rfind("mut: ", 0) != 0) ADD_FAILURE() << label << ": error does not name the file: " << msg;
    ++out.rejected;
  } catch (const std::exception& e) {
    ADD_FAILURE() << label << ": threw " << typeid(e).name() << " (not moe::Error): " << e.what();
  } catch (...) {
    ADD_FAILURE() << label << ": threw something that is not a std::exception";
  }
}

// The GGUF edits on top of the format-blind ones (testutil/byte_mutator.h): numbers a reader trusts
// (counts, lengths, types, offsets) overwritten with extreme values.
class Mutator : public ::moe::testing::ByteMutator {
 public:
  Mutator(std::vector<uint8_t> base, uint64_t header_end, uint64_t seed)
      : ByteMutator(std::move(base), header_end, seed) {}

  uint64_t extreme_u64() {
    static const uint64_t kValues[] = {0, 1, 2, 3, 4, 5, 8, 12, 13, 31, 32, 33, 255, 256, 4096,
                                       0x7fffffffull, 0x80000000ull, 0xffffffffull, 0x100000000ull,
                                       1ull << 40, 1ull << 62, 0x7fffffffffffffffull, 0x8000000000000000ull,
                                       0xffffffffffffffffull, 0xfffffffffffffff0ull};
    switch (rng() % 4) {
      case 0: return rng();
      case 1: return rng() % 2048;
      default: return kValues[rng() % std::size(kValues)];
    }
  }

  uint32_t extreme_u32() {
    static const uint32_t kValues[] = {0, 1, 2, 3, 4, 5, 8, 9, 10, 12, 13, 14, 15, 28, 30, 31, 34, 35, 36,
                                       255, 0x7fffffffu, 0x80000000u, 0xffffffffu};
    switch (rng() % 4) {
      case 0: return static_cast<uint32_t>(rng());
      case 1: return static_cast<uint32_t>(rng() % 64);
      default: return kValues[rng() % std::size(kValues)];
    }
  }

  void overwrite_u64(std::vector<uint8_t>& b) {
    if (b.size() < 8) return;
    uint64_t v = extreme_u64();
    std::memcpy(b.data() + std::min(position(b.size()), b.size() - 8), &v, 8);
  }
  void overwrite_u32(std::vector<uint8_t>& b) {
    if (b.size() < 4) return;
    uint32_t v = extreme_u32();
    std::memcpy(b.data() + std::min(position(b.size()), b.size() - 4), &v, 4);
  }

  void any(std::vector<uint8_t>& b) {
    switch (rng() % 6) {
      case 0: flip_bytes(b); break;
      case 1: overwrite_u64(b); break;
      case 2: overwrite_u32(b); break;
      case 3: truncate(b); break;
      case 4: duplicate_region(b, 64, /*overwrite=*/true); break;
      default: delete_region(b); break;
    }
  }
};

// Runs `iterations` mutations on the sample file (alignments alternate between 32 and 64).
template <typename Mutate>
Outcome run_mutations(uint64_t seed, int iterations, Mutate mutate) {
  Outcome out;
  for (uint64_t alignment : {32, 64}) {
    std::vector<uint8_t> base = testing::sample_file(alignment);
    uint64_t header_end = File::parse(base).data_offset();
    Mutator m(base, header_end, seed * 2 + alignment);
    for (int k = 0; k < iterations / 2; ++k) {
      std::vector<uint8_t> b = m.base();
      mutate(m, b);
      parse_one(b, "seed " + std::to_string(seed) + " alignment " + std::to_string(alignment) + " iteration " + std::to_string(k), out);
      if (::testing::Test::HasFailure()) return out;
    }
  }
  return out;
}

// Each corruption class: some results must still parse (e.g. flips inside tensor data or string
// bytes) and many must not, or the test would not be exercising the validation at all.
void expect_both_outcomes(const Outcome& o) {
  EXPECT_GT(o.accepted, 0u);
  EXPECT_GT(o.rejected, 0u);
  std::cout << "  accepted " << o.accepted << ", rejected " << o.rejected << "\n";
}

TEST(Mutation, ByteFlips) {
  expect_both_outcomes(run_mutations(1, 4000, [](Mutator& m, std::vector<uint8_t>& b) { m.flip_bytes(b); }));
}

TEST(Mutation, Extreme64BitFields) {
  expect_both_outcomes(run_mutations(2, 4000, [](Mutator& m, std::vector<uint8_t>& b) { m.overwrite_u64(b); }));
}

TEST(Mutation, Extreme32BitFields) {
  expect_both_outcomes(run_mutations(3, 3000, [](Mutator& m, std::vector<uint8_t>& b) { m.overwrite_u32(b); }));
}

TEST(Mutation, Truncation) {
  expect_both_outcomes(run_mutations(4, 2000, [](Mutator& m, std::vector<uint8_t>& b) { m.truncate(b); }));
}

TEST(Mutation, DuplicatedAndDeletedRegions) {
  expect_both_outcomes(run_mutations(5, 3000, [](Mutator& m, std::vector<uint8_t>& b) {
    m.duplicate_region(b, 64, /*overwrite=*/true);
    m.delete_region(b);
  }));
}

TEST(Mutation, StackedCorruptions) {
  Outcome o = run_mutations(6, 4000, [](Mutator& m, std::vector<uint8_t>& b) {
    for (int k = 0; k < 3; ++k) m.any(b);
  });
  EXPECT_GT(o.rejected, 0u);
  std::cout << "  accepted " << o.accepted << ", rejected " << o.rejected << "\n";
}

TEST(Mutation, TheBaseFilesAreValid) {
  // Otherwise every mutation would be rejected for the wrong reason.
  for (uint64_t alignment : {32, 64}) {
    Outcome o;
    parse_one(testing::sample_file(alignment), "base", o);
    EXPECT_EQ(o.accepted, 1u);
  }
}

}  // namespace
}  // namespace moe::gguf
