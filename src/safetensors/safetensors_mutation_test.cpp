// safetensors_mutation_test.cpp: the reader against thousands of corrupted files (run under ASan/UBSan
// by scripts/test-asan.sh). A valid writer-made file is corrupted by deterministic random mutations —
// byte flips (in the JSON header three times in four), digits of the header's numbers replaced, the
// length field overwritten with extreme values, truncation, duplicated and deleted regions, stacks of
// these — and each result is parsed from an exact-size heap copy. The only acceptable outcomes are a
// File whose every tensor lies inside the bytes and agrees with its dtype and shape, or a moe::Error
// naming the file; anything else fails, and under the sanitizers any out-of-bounds access aborts.
#include <gtest/gtest.h>

#include <cstring>
#include <iostream>
#include <memory>
#include <random>
#include <typeinfo>

#include "safetensors/safetensors.h"
#include "safetensors/safetensors_testing.h"
#include "testutil/byte_mutator.h"

namespace moe::safetensors {
namespace {

struct Outcome {
  size_t accepted = 0, rejected = 0;
};

void exercise(const File& f, const uint8_t* begin, size_t size, const std::string& label) {
  uint64_t checksum = 0, covered = 0;
  for (const TensorInfo& t : f.tensors()) {
    ASSERT_GE(t.data, begin + f.data_offset()) << label;
    ASSERT_LE(t.n_bytes(), size) << label;
    ASSERT_LE(t.data + t.n_bytes(), begin + size) << label;
    uint64_t n = 1;
    for (int64_t d : t.shape) {
      ASSERT_GE(d, 0) << label;
      n *= static_cast<uint64_t>(d);
    }
    ASSERT_EQ(n, t.n_elements) << label;
    ASSERT_EQ(n * dtype_size(t.dtype), t.n_bytes()) << label;
    for (uint64_t k = 0; k < t.n_bytes(); ++k) checksum += t.data[k];
    ASSERT_EQ(f.find(t.name), &t) << label;
    covered += t.n_bytes();
  }
  ASSERT_EQ(f.data_offset() + covered, size) << label;
  for (const auto& [k, v] : f.metadata()) checksum += k.size() + v.size();
  volatile uint64_t sink = checksum;
  (void)sink;
}

void parse_one(const std::vector<uint8_t>& bytes, const std::string& label, Outcome& out) {
  std::unique_ptr<uint8_t[]> copy(new uint8_t[bytes.size() + 1]);
  if (!bytes.empty()) std::memcpy(copy.get(), bytes.data(), bytes.size());
  try {
    File f = File::parse(std::span<const uint8_t>(copy.get(), bytes.size()), "mut");
    exercise(f, copy.get(), bytes.size(), label);
    ++out.accepted;
  } catch (const Error& e) {
    const std::string msg = e.what();
    if (msg.rfind("mut: ", 0) != 0) ADD_FAILURE() << label << ": error does not name the file: " << msg;
    ++out.rejected;
  } catch (const std::exception& e) {
    ADD_FAILURE() << label << ": threw " << typeid(e).name() << " (not moe::Error): " << e.what();
  } catch (...) {
    ADD_FAILURE() << label << ": threw something that is not a std::exception";
  }
}

// The safetensors edits on top of the format-blind ones (testutil/byte_mutator.h): numbers in the JSON
// header changed, and the 8-byte header length overwritten.
class Mutator : public ::moe::testing::ByteMutator {
 public:
  explicit Mutator(uint64_t seed)
      : ByteMutator(testing::sample_file(), File::parse(testing::sample_file()).data_offset(), seed) {}

  // A digit of the header replaced by another character that keeps the JSON plausible.
  void edit_number(std::vector<uint8_t>& b) {
    static const char kChars[] = "0123456789999-.e,]";
    for (int tries = 0; tries < 64 && b.size() > 8; ++tries) {
      const size_t p = 8 + static_cast<size_t>(rng() % (std::min<size_t>(b.size(), header_end()) - 8));
      if (b[p] >= '0' && b[p] <= '9') {
        if (rng() % 3 == 0) {
          const std::string big = std::to_string(rng());
          b.insert(b.begin() + static_cast<long>(p), big.begin(), big.end());
        } else {
          b[p] = static_cast<uint8_t>(kChars[rng() % (sizeof kChars - 1)]);
        }
        return;
      }
    }
  }
  void overwrite_length(std::vector<uint8_t>& b) {
    static const uint64_t kValues[] = {0, 1, 2, 7, 8, 0xffffffffull, 0x7fffffffffffffffull, 0xffffffffffffffffull,
                                       100u << 20, (100u << 20) + 1};
    if (b.size() < 8) return;
    uint64_t v = (rng() % 2) ? kValues[rng() % std::size(kValues)] : (header_end() - 8 + rng() % 17 - 8);
    std::memcpy(b.data(), &v, 8);
  }
  void any(std::vector<uint8_t>& b) {
    switch (rng() % 6) {
      case 0: flip_bytes(b); break;
      case 1: edit_number(b); break;
      case 2: overwrite_length(b); break;
      case 3: truncate(b); break;
      case 4: duplicate_region(b, 48, /*overwrite=*/false); break;
      default: delete_region(b); break;
    }
  }
};

template <typename Mutate>
Outcome run_mutations(uint64_t seed, int iterations, Mutate mutate) {
  Outcome out;
  Mutator m(seed);
  for (int k = 0; k < iterations; ++k) {
    std::vector<uint8_t> b = m.base();
    mutate(m, b);
    parse_one(b, "seed " + std::to_string(seed) + " iteration " + std::to_string(k), out);
    if (::testing::Test::HasFailure()) break;
  }
  std::cout << "  accepted " << out.accepted << ", rejected " << out.rejected << "\n";
  return out;
}

TEST(SafetensorsMutation, TheBaseFileIsValid) {
  Outcome o;
  parse_one(testing::sample_file(), "base", o);
  EXPECT_EQ(o.accepted, 1u);
}

TEST(SafetensorsMutation, ByteFlips) {
  Outcome o = run_mutations(1, 3000, [](Mutator& m, std::vector<uint8_t>& b) { m.flip_bytes(b); });
  EXPECT_GT(o.accepted, 0u);  // flips inside tensor data or names still parse
  EXPECT_GT(o.rejected, 0u);
}

TEST(SafetensorsMutation, EditedNumbers) {
  Outcome o = run_mutations(2, 3000, [](Mutator& m, std::vector<uint8_t>& b) { m.edit_number(b); });
  EXPECT_GT(o.rejected, 0u);
}

TEST(SafetensorsMutation, LengthFieldAndTruncation) {
  Outcome o = run_mutations(3, 2000, [](Mutator& m, std::vector<uint8_t>& b) {
    m.overwrite_length(b);
    if (b.size() % 3 == 0) m.truncate(b);
  });
  EXPECT_GT(o.rejected, 0u);
}

TEST(SafetensorsMutation, DuplicatedAndDeletedRegions) {
  Outcome o = run_mutations(4, 2000, [](Mutator& m, std::vector<uint8_t>& b) {
    m.duplicate_region(b, 48, /*overwrite=*/false);
    m.delete_region(b);
  });
  EXPECT_GT(o.rejected, 0u);
}

TEST(SafetensorsMutation, StackedCorruptions) {
  Outcome o = run_mutations(5, 3000, [](Mutator& m, std::vector<uint8_t>& b) {
    for (int k = 0; k < 3; ++k) m.any(b);
  });
  EXPECT_GT(o.rejected, 0u);
}

}  // namespace
}  // namespace moe::safetensors
