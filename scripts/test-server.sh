#!/usr/bin/env bash
# End-to-end tests of `moe serve` (tests/server/*.test.mjs): each file starts the real server on a free
# loopback port and drives it with the official `openai` or `ollama` npm client, or its web page in
# Debian's headless Chromium through playwright-core (node --test). Uses build/moe, or
# $MOE_BIN. Installs the npm dependencies pinned by tests/server/package-lock.json when they are
# missing or older than the lock file (npm ci, cache first: no network needed once the cache has them).
# Files run one after another: each starts its own server, and the load test wants the CPU to itself.
set -euo pipefail
cd "$(dirname "$0")/.."
MOE_BIN="${MOE_BIN:-$PWD/build/moe}"
export MOE_BIN
if [ ! -x "$MOE_BIN" ]; then
  echo "test-server: $MOE_BIN is not built (run scripts/build.sh, or set MOE_BIN)" >&2
  exit 1
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "test-server: node and npm are needed (scripts/install-deps.sh installs them)" >&2
  exit 1
fi
cd tests/server
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "test-server: installing npm dependencies (tests/server/package-lock.json)"
  npm ci --prefer-offline --no-audit --no-fund --loglevel=error
fi
files=(*.test.mjs)
node_major=$(node -p 'process.versions.node.split(".")[0]')
node_minor=$(node -p 'process.versions.node.split(".")[1]')
if [ "$node_major" -gt 20 ] || { [ "$node_major" -eq 20 ] && [ "$node_minor" -ge 10 ]; }; then
  exec timeout 900 node --test --test-concurrency=1 --test-timeout=300000 "${files[@]}"
fi
# Older Node (18): no --test-concurrency; one file per run, failing if any failed.
status=0
for f in "${files[@]}"; do timeout 600 node --test "$f" || status=1; done
exit $status
