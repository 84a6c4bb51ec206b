#!/usr/bin/env bash
# Builds the parsers of untrusted input with AddressSanitizer + UBSan into build-asan/ and runs their
# hostile-input tests: the GGUF mutation test feeds the reader thousands of corrupted files, the
# template fuzz test feeds the Jinja interpreter random token soup and mutated built-in templates, and
# the tokenizer's malformed-input tests feed it broken tokenizer.model files and GGUF vocabularies, the
# safetensors mutation test feeds its reader corrupted checkpoints, and the grammar tests cover the GBNF,
# JSON Schema and regex compilers and the matcher, with their fuzz tests. The sanitizers turn any
# out-of-bounds read, overflow or undefined behaviour that a plain run would survive into a failure. Only
# gguf_test, safetensors_test, template_test, tokenizer_test and grammar_test are built (not the model,
# engine or server), so this stays quick. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
werror=OFF
[ "${CI:-}" = "true" ] && werror=ON
# -O1 -g1 (line tables only): what the sanitizers need for useful reports, and about 40% less compile
# time than -O2 -g for these template-heavy parsers (measured on builtins.cpp: 50 s against 84 s).
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1 -DNDEBUG" \
  -DMOE_SANITIZE=ON -DMOE_BUILD_BENCH=OFF -DMOE_WERROR=$werror >/dev/null
cmake --build build-asan -j "${MOE_JOBS:-$(nproc)}" --target gguf_test template_test tokenizer_test safetensors_test grammar_test
export ASAN_OPTIONS="halt_on_error=1:detect_leaks=1:abort_on_error=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
export MOE_SOURCE_DIR="$PWD"
./build-asan/gguf_test --gtest_brief=1
./build-asan/safetensors_test --gtest_brief=1
./build-asan/template_test --gtest_brief=1 --gtest_filter='TemplateFuzz.*'
./build-asan/tokenizer_test --gtest_brief=1 --gtest_filter='TokenizerMalformed.*'
./build-asan/grammar_test --gtest_brief=1
