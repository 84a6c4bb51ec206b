#!/usr/bin/env bash
# The one command that builds moe and runs every test: the GoogleTest suites and end-to-end tests
# (ctest), then the GGUF reader's mutation test under AddressSanitizer + UBSan. Fixtures are found
# through MOE_FIXTURES (default ../shared); without them those tests skip, except in CI where they fail.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
(cd build && ctest --output-on-failure -j "$(nproc)" --timeout 900)
bash scripts/test-asan.sh
bash scripts/test-server.sh
