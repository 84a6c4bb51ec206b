#!/usr/bin/env bash
# Configures and builds moe into build/ (Release). Extra arguments go to cmake's configure step.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
werror=OFF
[ "${CI:-}" = "true" ] && werror=ON
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DMOE_WERROR=$werror "$@" >/dev/null
cmake --build build -j "$(nproc)"
