#!/usr/bin/env bash
# Installs every Debian package the build, the tests and the benchmarks need. Idempotent: it asks apt
# only for what is missing, and runs `apt-get update` first when it has to install anything.
set -euo pipefail
packages=(
  build-essential cmake ninja-build pkg-config
  libgtest-dev libgmock-dev libbenchmark-dev
  libsentencepiece-dev
  libcpp-httplib-dev nlohmann-json3-dev libcli11-dev libssl-dev
  python3
  libopenmpi-dev openmpi-bin  # Open MPI: `mpirun -np N moe batch` and its test
  chromium
  libvulkan-dev glslc mesa-vulkan-drivers  # Vulkan backend: loader + headers, GLSL compiler, lavapipe (CPU driver) for its tests
  clang libclang-rt-14-dev  # libFuzzer + sanitizer runtimes for scripts/fuzz.sh (clang 14 on Debian 12)
)
# chromium: the headless browser that tests/server/web_ui.test.mjs drives (through playwright-core).
# Node.js runs the end-to-end tests that drive the server with the official `openai` npm client; a
# machine that already has node and npm (from any source) keeps them.
command -v node >/dev/null && command -v npm >/dev/null || packages+=(nodejs npm)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fi
