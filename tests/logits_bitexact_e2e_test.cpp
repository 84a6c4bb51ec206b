// logits_bitexact_e2e_test.cpp: the logits of the fixture models are bit-identical to what the build
// before the model/backend and KV-layout refactor (commit 8a970de) produced. The other logits tests
// allow a tolerance against references; this one allows none, so a restructuring of the forward pass
// that changes even the order of one float sum fails here.
//
// tests/logits_checksums.txt holds one line per (model, ISA, flags): the FNV-1a 64-bit hash of the
// float32 logits that `moe logits` wrote for the golden tiny-mixtral token ids. Fast precision depends
// on the kernels the ISA selects, so each ISA is run through MOE_ISA (which caps the choice); an ISA
// this CPU lacks is skipped for that row, scalar always runs. The file was written by running this
// test with MOE_WRITE_LOGITS_CHECKSUMS=1 and MOE_BIN pointing at the pre-change binary.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "testutil/fixtures.h"
#include "util/cpu.h"
#include "util/error.h"

namespace moe {
namespace {

using moe::testing::fixture;

const char* kModels[] = {
    "tiny-mixtral/tiny-mixtral.F16.gguf",    "tiny-mixtral/tiny-mixtral.Q8_0.gguf",   "tiny-mixtral/tiny-mixtral.Q4_0.gguf",
    "tiny-mixtral/tiny-mixtral.Q4_1.gguf",   "tiny-mixtral/tiny-mixtral.Q5_0.gguf",   "tiny-mixtral/tiny-mixtral.Q5_1.gguf",
    "tiny-mixtral/tiny-mixtral.Q2_K.gguf",   "tiny-mixtral/tiny-mixtral.Q3_K_S.gguf", "tiny-mixtral/tiny-mixtral.Q3_K_M.gguf",
    "tiny-mixtral/tiny-mixtral.Q3_K_L.gguf", "tiny-mixtral/tiny-mixtral.Q4_K_S.gguf", "tiny-mixtral/tiny-mixtral.Q4_K_M.gguf",
    "tiny-mixtral/tiny-mixtral.Q5_K_S.gguf", "tiny-mixtral/tiny-mixtral.Q5_K_M.gguf", "tiny-mixtral/tiny-mixtral.Q6_K.gguf",
    "stories260K.gguf",                      "stories260K-moe.gguf"};
// Fast with each KV type the cache stores, and Exact (float64 accumulation, f32 KV).
const char* kFlags[] = {"--kv-cache-dtype f16", "--kv-cache-dtype bf16", "--kv-cache-dtype q8_0",
                        "--kv-cache-dtype f32", "--exact --kv-cache-dtype f32"};
const char* kIsas[] = {"scalar", "avx2"};

uint64_t fnv1a(const std::string& bytes) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

std::string checksums_path() { return moe::testing::source_dir() + "/tests/logits_checksums.txt"; }

// "model|isa|flags" -> hash, from the committed file.
std::vector<std::pair<std::string, std::string>> read_checksums() {
  std::vector<std::pair<std::string, std::string>> out;
  std::istringstream in(moe::testing::read_file(checksums_path()));
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const auto tab = line.rfind('\t');
    out.emplace_back(line.substr(0, tab), line.substr(tab + 1));
  }
  return out;
}

std::string logits_hash(const std::string& model, const std::string& isa, const std::string& flags) {
  const std::string out = moe::testing::temp_path("bitexact-logits");
  auto r = moe::testing::run_moe(cat("logits '", fixture("models/" + model), "' --tokens @'",
                                     fixture("golden/tiny-mixtral.tokens"), "' --out '", out, "' -t 2 ", flags));
  EXPECT_EQ(r.status, 0) << model << " " << flags << ": " << r.err;
  if (r.status != 0) return "failed";
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(fnv1a(moe::testing::read_file(out))));
  std::filesystem::remove(out);
  return hex;
}

// Asked before the test sets MOE_ISA itself (detected_isa() honours that cap).
bool isa_available(const std::string& isa, Isa best) { return isa == "scalar" || (isa == "avx2" && best >= Isa::AVX2); }

TEST(LogitsBitExact, FixtureLogitsEqualThePreRefactorBuild) {
  MOE_REQUIRE_FIXTURE("golden/tiny-mixtral.tokens");
  const bool write = std::getenv("MOE_WRITE_LOGITS_CHECKSUMS") != nullptr;
  const Isa best = detected_isa();
  const char* saved = std::getenv("MOE_ISA");
  const std::string saved_isa = saved ? saved : "";
  std::ostringstream written;
  std::vector<std::pair<std::string, std::string>> want;
  if (!write) want = read_checksums();
  size_t checked = 0;
  for (const char* isa : kIsas) {
    if (!isa_available(isa, best)) {
      std::printf("skipping ISA %s: this CPU lacks it\n", isa);
      continue;
    }
    setenv("MOE_ISA", isa, 1);  // inherited by the `moe` child process
    for (const char* model : kModels) {
      if (!moe::testing::fixture_exists(cat("models/", model))) {
        if (moe::testing::running_in_ci()) ADD_FAILURE() << "fixture models/" << model << " is missing";
        continue;
      }
      for (const char* flags : kFlags) {
        const std::string key = cat(model, "|", isa, "|", flags);
        const std::string got = logits_hash(model, isa, flags);
        if (write) {
          written << key << "\t" << got << "\n";
          continue;
        }
        bool found = false;
        for (const auto& [k, h] : want)
          if (k == key) {
            found = true;
            EXPECT_EQ(got, h) << key;
            ++checked;
          }
        EXPECT_TRUE(found) << key << " has no checksum in " << checksums_path();
      }
    }
  }
  if (saved) setenv("MOE_ISA", saved_isa.c_str(), 1);
  else unsetenv("MOE_ISA");
  if (write) {
    std::ofstream(checksums_path()) << "# model|ISA|flags<TAB>FNV-1a 64 of the float32 logits of `moe logits` on "
                                       "golden/tiny-mixtral.tokens (see tests/logits_bitexact_e2e_test.cpp)\n"
                                    << written.str();
    GTEST_SKIP() << "wrote " << checksums_path();
  }
  EXPECT_GT(checked, 0u);
}

}  // namespace
}  // namespace moe
