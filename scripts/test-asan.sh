#!/usr/bin/env bash
# Builds the GGUF reader's tests with AddressSanitizer + UBSan into build-asan/ and runs them: the
# mutation test feeds the reader thousands of corrupted files, and the sanitizers turn any out-of-bounds
# read, overflow or undefined behaviour that a plain run would survive into a failure. Only gguf_test
# is built, so this stays quick. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
werror=OFF
[ "${CI:-}" = "true" ] && werror=ON
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMOE_SANITIZE=ON -DMOE_BUILD_BENCH=OFF \
  -DMOE_WERROR=$werror >/dev/null
cmake --build build-asan -j "${MOE_JOBS:-$(nproc)}" --target gguf_test
export ASAN_OPTIONS="halt_on_error=1:detect_leaks=1:abort_on_error=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
MOE_SOURCE_DIR="$PWD" ./build-asan/gguf_test --gtest_brief=1
