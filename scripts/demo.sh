#!/usr/bin/env bash
# The one command that runs moe on the bundled default model: installs what is missing, builds, and
# generates a story with `moe run` (no arguments needed). Extra arguments go to `moe run`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
./build/moe run "$@"
