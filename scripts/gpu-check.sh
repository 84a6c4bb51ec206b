#!/usr/bin/env bash
# gpu-check.sh: the Vulkan backend on a real GPU (issue 17): finds the Vulkan loader and driver, builds
# (or takes a build carried along), runs the GPU tests, then benchmarks the 4-layer Mixtral-geometry
# Q4_K_M synth model on --device vulkan: decode tokens/s as a fraction of the card's copy-shader
# bandwidth roofline, pp512, and aggregate tokens/s at B = 16 against B = 1. Made to finish in under 10
# minutes on a machine with an NVIDIA GPU and no network.
#
# The loader and the driver. NVIDIA's driver ships its Vulkan ICD (nvidia_icd.json) but a container
# image may lack the Vulkan loader (libvulkan.so.1). Then carry the loader as .deb files in an ignored
# folder of the tree and the script unpacks them (dpkg -x into /, as root):
#   on a networked Debian/Ubuntu machine, in the repository root:
#     echo /.gl/ >> .git/info/exclude; mkdir -p .gl; (cd .gl && apt-get download libvulkan1)
#   then run this script with MOE_VK_DEBS=.gl (the default) on the GPU machine.
# When both NVIDIA's ICD and Mesa's lavapipe are installed, NVIDIA's is chosen (VK_DRIVER_FILES), so the
# figures are the GPU's; with no GPU driver the script says so and runs on lavapipe (MOE_GPU_REQUIRED=1
# makes that an error).
#
# The build. With the build dependencies present (scripts/install-deps.sh, or a Debian 12 machine that
# can reach its mirror) it builds into build/. A GPU machine without them (no network, another
# distribution) takes a build packed here:
#   bash scripts/gpu-check.sh --pack     (on this machine: builds, then copies moe, vulkan_test and
#                                         e2e_test, the shared libraries they need beyond glibc, and the
#                                         fixtures the device tests use into .gl/moe)
#   MOE_BUILD_DIR=.gl/moe/bin bash scripts/gpu-check.sh      (on the GPU machine, with .gl carried)
# The packed fixtures hold three tiny-mixtral types, so there the every-type logits test is left out
# (CI runs it on lavapipe); the other device tests run.
#
# Knobs (environment): MOE_GPU_LAYERS (4), MOE_GPU_PP (512), MOE_GPU_GEN (64), MOE_GPU_BATCH (16),
# MOE_GPU_BATCH_PROMPT (128) and MOE_GPU_BATCH_GEN (32): each batched sequence's prompt and steps,
# MOE_GPU_REPS (3), MOE_GPU_SHAPE (mixtral-8x7b), MOE_GPU_TYPE (Q4_K_M), MOE_GPU_TESTS (1: run the
# tests), MOE_GPU_OUT (a folder for the logs and the JSON figures; default a temporary one).
# Small values prove the script on lavapipe (which runs the shaders on the CPU, slowly):
#   MOE_GPU_SHAPE=mini-mixtral MOE_GPU_LAYERS=1 MOE_GPU_PP=32 MOE_GPU_GEN=8 MOE_GPU_BATCH=4 \
#   MOE_GPU_BATCH_PROMPT=16 MOE_GPU_BATCH_GEN=8 MOE_GPU_REPS=1 bash scripts/gpu-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

if [ "${1:-}" = --pack ]; then
  dest=${MOE_PACK_DIR:-.gl}/moe
  fixtures=${MOE_FIXTURES:-$root/../shared}
  bash scripts/install-deps.sh
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build build -j "$(nproc)" --target moe vulkan_test e2e_test
  rm -rf "$dest"
  mkdir -p "$dest/bin" "$dest/lib" "$dest/fixtures/models/tiny-mixtral" "$dest/fixtures/models/hf" "$dest/fixtures/golden"
  cp build/moe build/vulkan_test build/e2e_test "$dest/bin/"
  # Every shared library but glibc's own (libstdc++ travels: the GPU machine's may be older).
  for lib in $(ldd build/moe build/vulkan_test build/e2e_test | awk '/=> \//{print $3}' | sort -u); do
    case $(basename "$lib") in libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*) ;; *) cp -L "$lib" "$dest/lib/" ;; esac
  done
  for t in Q4_K_M Q8_0 Q4_0; do cp "$fixtures/models/tiny-mixtral/tiny-mixtral.$t.gguf" "$dest/fixtures/models/tiny-mixtral/"; done
  cp "$fixtures"/models/stories260K*.gguf "$dest/fixtures/models/"
  cp -r "$fixtures/models/hf/tiny-mixtral-lora-attn" "$dest/fixtures/models/hf/"
  cp "$fixtures/golden/stories260K.greedy.jsonl" "$dest/fixtures/golden/"
  echo "gpu-check: packed into $dest ($(du -sh "$dest" | cut -f1)); add /$(basename "${MOE_PACK_DIR:-.gl}")/ to .git/info/exclude,"
  echo "carry it, and on the GPU machine run: MOE_BUILD_DIR=$dest/bin bash scripts/gpu-check.sh"
  exit 0
fi
layers=${MOE_GPU_LAYERS:-4}
pp=${MOE_GPU_PP:-512}
gen=${MOE_GPU_GEN:-64}
batch=${MOE_GPU_BATCH:-16}
reps=${MOE_GPU_REPS:-3}
batch_prompt=${MOE_GPU_BATCH_PROMPT:-128}
batch_gen=${MOE_GPU_BATCH_GEN:-32}
shape=${MOE_GPU_SHAPE:-mixtral-8x7b}
type=${MOE_GPU_TYPE:-Q4_K_M}
out=${MOE_GPU_OUT:-$(mktemp -d)}
mkdir -p "$out"
t0=$(date +%s)
say() { echo "gpu-check [$(( $(date +%s) - t0 ))s]: $*"; }
die() { echo "gpu-check: $*" >&2; exit 1; }

# --- 1. the Vulkan loader ---------------------------------------------------------------------------
have_loader() { ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1' || [ -e /usr/lib/x86_64-linux-gnu/libvulkan.so.1 ]; }
if ! have_loader; then
  debs=${MOE_VK_DEBS:-.gl}
  if compgen -G "$debs/*.deb" >/dev/null; then
    [ "$(id -u)" -eq 0 ] || die "the Vulkan loader must be unpacked from $debs/*.deb into /, which needs root"
    for f in "$debs"/*.deb; do dpkg -x "$f" /; done
    ldconfig
    say "unpacked the Vulkan loader from $debs/*.deb"
  fi
fi
have_loader || die "no Vulkan loader (libvulkan.so.1). Install libvulkan1, or carry it: on a networked Debian/Ubuntu
machine run  mkdir -p .gl && (cd .gl && apt-get download libvulkan1)  in the repository root (add /.gl/ to
.git/info/exclude), bring the tree here and run this script again (it unpacks .gl/*.deb; MOE_VK_DEBS names another folder)."

# --- 2. the driver: NVIDIA's ICD before lavapipe ---------------------------------------------------------
nvidia_icd=""
for d in /usr/share/vulkan/icd.d /etc/vulkan/icd.d /usr/local/nvidia/share/vulkan/icd.d /usr/local/share/vulkan/icd.d; do
  for f in "$d"/nvidia_icd*.json; do [ -e "$f" ] && nvidia_icd=${nvidia_icd:-$f}; done
done
if [ -n "$nvidia_icd" ]; then
  export VK_DRIVER_FILES=$nvidia_icd VK_ICD_FILENAMES=$nvidia_icd
  say "NVIDIA's Vulkan driver: $nvidia_icd"
elif command -v nvidia-smi >/dev/null; then
  [ "${MOE_GPU_REQUIRED:-0}" = 1 ] && die "an NVIDIA GPU is present but not its Vulkan ICD (nvidia_icd.json): the driver's
Vulkan part is missing from this image (install the driver's libnvidia-gl package, or mount /usr/local/nvidia)"
  say "warning: nvidia-smi sees a GPU but no nvidia_icd.json was found; using whatever Vulkan driver exists"
else
  [ "${MOE_GPU_REQUIRED:-0}" = 1 ] && die "no NVIDIA GPU here (MOE_GPU_REQUIRED=1)"
  say "no NVIDIA driver: running on the Vulkan devices present (lavapipe proves the script, its figures are a CPU's)"
fi

# --- 3. the build -----------------------------------------------------------------------------------
bin=${MOE_BUILD_DIR:-$root/build}
if [ -z "${MOE_BUILD_DIR:-}" ]; then
  say "building (scripts/install-deps.sh, then cmake)"
  bash scripts/install-deps.sh
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build build -j "$(nproc)" --target moe vulkan_test e2e_test
fi
moe=$bin/moe
[ -x "$moe" ] || die "no moe binary in $bin (build first, or set MOE_BUILD_DIR to a build folder)"
e2e_filter='Vulkan*'
if [ -d "$bin/../lib" ] && [ -d "$bin/../fixtures" ]; then  # a packed build (--pack)
  export LD_LIBRARY_PATH=$(cd "$bin/../lib" && pwd)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  export MOE_FIXTURES=$(cd "$bin/../fixtures" && pwd)
  e2e_filter='Vulkan*:-VulkanLogits.*'
fi
missing=$(ldd "$moe" | awk '/not found/{print $1}' | tr '\n' ' ')
[ -z "$missing" ] || die "moe cannot start here, these libraries are missing: $missing
(build on this machine, or pack a build with its libraries elsewhere: bash scripts/gpu-check.sh --pack)"

# --- 4. the device ----------------------------------------------------------------------------------
"$moe" info --devices | tee "$out/devices.txt"
grep -q '^vulkan:' "$out/devices.txt" || die "moe sees no Vulkan device (see above)"

# --- 5. the GPU tests -------------------------------------------------------------------------------
if [ "${MOE_GPU_TESTS:-1}" = 1 ]; then
  export MOE_BIN=$moe
  for t in vulkan_test e2e_test; do [ -x "$bin/$t" ] || die "no $t in $bin"; done
  say "shader tests (vulkan_test)"
  "$bin/vulkan_test" --gtest_brief=1 2>&1 | tail -n 5 | tee "$out/vulkan_test.txt"
  say "end-to-end tests on the device (e2e_test Vulkan*)"
  "$bin/e2e_test" --gtest_filter="$e2e_filter" --gtest_brief=1 2>&1 | tail -n 8 | tee "$out/vulkan_e2e.txt"
  grep -q FAILED "$out/vulkan_test.txt" "$out/vulkan_e2e.txt" && die "GPU tests failed (logs in $out)"
fi

# --- 6. the benchmark -------------------------------------------------------------------------------
model=$out/$shape-$layers-layers.$type.gguf
say "synthesizing $shape ($layers layers, $type) into $model"
"$moe" synth --shape "$shape" --layers "$layers" --type "$type" -q "$model"
say "bench on --device vulkan: pp$pp, tg$gen, B=1 and B=$batch"
"$moe" bench "$model" --device vulkan -p "$pp" -n "$gen" --batch "1,$batch" --batch-prompt "$batch_prompt" --batch-gen "$batch_gen" \
  --reps "$reps" --json | tee "$out/bench.jsonl"
python3 - "$out/bench.jsonl" "$pp" "$batch" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
main = rows[0]
agg = {r["batch"]: r["aggregate_tokens_per_s"] for r in rows[1:]}
b = int(sys.argv[3])
print(f"device:      {main.get('device_name', main['device'])} (experts on the card: {main.get('experts_on_device')} of {main.get('experts_total')})")
print(f"bandwidth:   {main['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s (copy shader, read + write)")
print(f"decode:      {main['tg_tokens_per_s']:.2f} t/s = {100 * main['roofline_fraction']:.1f} % of the roofline "
      f"({main['roofline_tokens_per_s']:.2f} t/s at {main['active_bytes_per_token'] / 1e9:.3f} GB/token; target 80 %)")
print(f"pp{sys.argv[2]}:       {main['pp_tokens_per_s']:.1f} t/s")
if 1 in agg and b in agg:
    print(f"aggregate:   B=1 {agg[1]:.2f} t/s, B={b} {agg[b]:.2f} t/s = {agg[b] / agg[1]:.2f}x (target 6x)")
EOF
say "done (logs and figures in $out)"
