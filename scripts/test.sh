#!/usr/bin/env bash
# The one command that builds moe and runs every test: the GoogleTest suites and end-to-end tests
# (ctest, natively and with the kernels capped at AVX2), then the hostile-input tests of the parsers
# (GGUF mutation, template fuzz, tokenizer malformed input) under AddressSanitizer + UBSan, then every
# libFuzzer target for 15 s (scripts/fuzz.sh; MOE_FUZZ_SECONDS changes it), then the
# server tests. Fixtures are found through MOE_FIXTURES (default
# ../shared); without them those tests skip, except in CI where they fail.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
(cd build && ctest --output-on-failure -j "$(nproc)" --timeout 900)
# Again with the kernels capped at AVX2 (util/cpu.h honours MOE_ISA), so the path of AVX2-only CPUs is
# tested on this AVX-512 machine too: the dispatch picks other kernels (no lane kernels, AVX2 dots).
if grep -q avx512 /proc/cpuinfo; then
  (cd build && MOE_ISA=avx2 ctest --output-on-failure -j "$(nproc)" --timeout 900)
fi
bash scripts/test-asan.sh
# Every libFuzzer target (fuzz/*_fuzz.cpp) under ASan + UBSan for a bounded time each; any crash fails.
bash scripts/fuzz.sh "${MOE_FUZZ_SECONDS:-15}"
bash scripts/test-server.sh
