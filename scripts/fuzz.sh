#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/*_fuzz.cpp) with clang, AddressSanitizer and UBSan into build-fuzz/
# and runs each for a bounded time: `bash scripts/fuzz.sh [SECONDS_PER_TARGET]` (default 60).
# Each target starts from its committed seeds (fuzz/corpus/<name>/, never written to) plus what earlier
# runs found (build-fuzz/corpus/<name>/); every run is capped in time, memory (-rss_limit_mb) and time per
# input (-timeout), and the script fails on any crash, sanitizer report, leak, timeout or out-of-memory,
# leaving the input that caused it in build-fuzz/artifacts/ with the command to reproduce it.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
bash scripts/install-deps.sh
werror=OFF
[ "${CI:-}" = "true" ] && werror=ON
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
# -O1 -g1 as the ASan build (scripts/test-asan.sh): line tables for reports, quick to compile.
cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1 -DNDEBUG" \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DMOE_FUZZ=ON -DMOE_BUILD_TESTS=OFF -DMOE_BUILD_BENCH=OFF \
  -DMOE_WERROR=$werror "${launcher[@]}" >/dev/null
cmake --build build-fuzz -j "${MOE_JOBS:-$(nproc)}" --target moe_fuzz
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
mkdir -p build-fuzz/artifacts
failed=()
for src in fuzz/*_fuzz.cpp; do
  name=$(basename "$src" _fuzz.cpp)
  bin=build-fuzz/fuzz/${name}_fuzz
  seeds=fuzz/corpus/$name
  work=build-fuzz/corpus/$name
  mkdir -p "$work"
  [ -d "$seeds" ] || seeds=""
  echo "fuzz: $name for ${seconds}s"
  log=build-fuzz/artifacts/$name.log
  if "$bin" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -malloc_limit_mb=2048 -print_final_stats=1 \
       -artifact_prefix="build-fuzz/artifacts/$name-" "$work" $seeds >"$log" 2>&1; then
    grep -E "^(Done|stat::number_of_executed_units|stat::peak_rss_mb)" "$log" | tr '\n' ' ' | sed 's/^/fuzz:   /;s/ $/\n/'
    echo "fuzz:   corpus: $(ls "$work" | wc -l) inputs in $work"
  else
    failed+=("$name")
    tail -n 60 "$log"
    echo "fuzz: $name FAILED (log: $log; reproduce: $bin build-fuzz/artifacts/$name-*)"
  fi
done
if ((${#failed[@]})); then
  echo "fuzz: failures in: ${failed[*]}"
  exit 1
fi
echo "fuzz: every target ran ${seconds}s without a crash"
