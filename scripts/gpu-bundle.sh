#!/usr/bin/env bash
# Builds the GPU (`cuda` feature) test binaries and worker HERE, on a machine with no GPU and no
# NVIDIA driver, and packs them into one archive that scripts/gpu-run.sh runs on a GPU host
# (which needs neither Rust nor the repository's build cache: only the driver, >= 550, and CUDA
# 12's cuBLAS, cuRAND, NVRTC and runtime libraries, as a PyTorch cu12x install or the CUDA
# worker image carries them). Built with CUDA 12.4 for compute capability 7.0 (scripts/
# cuda-env.sh): PTX that the driver JIT-compiles for the V100, the A10G, the L4 and newer.
#
#   scripts/gpu-bundle.sh [ARCHIVE]     (default: $POSTHUMAN_CACHE/gpu-bundle.tar.xz)
#
# Linking needs libcuda.so (shipped only with the driver) and cuBLAS/cuRAND/NVRTC (hundreds of
# MB of wheels): scripts/cuda-stubs.sh generates link stubs with the real libraries' SONAMEs
# (the GPU host's dynamic loader binds every symbol to the real library at start). The CUDA
# runtime (libcudart.so.12, used by candle-kernels' static MoE kernels) is the real one from the
# toolkit's nvidia-cuda-runtime-cu12 wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
. scripts/cuda-env.sh
archive="${1:-$POSTHUMAN_CACHE/gpu-bundle.tar.xz}"
# A target dir of its own: building the worker with `cuda` where the CPU build lives would put
# a binary that needs libcuda where the demo and the tests run the worker.
export CARGO_TARGET_DIR="${POSTHUMAN_CUDA_TARGET_DIR:-$POSTHUMAN_CACHE/target-cuda}"
# The copies are stripped of debug info below anyway: not generating it saves gigabytes of this
# target dir and minutes of linking.
export CARGO_PROFILE_DEV_DEBUG="${CARGO_PROFILE_DEV_DEBUG:-0}"
t0=$SECONDS

# cudarc's build script searches $CUDA_HOME/lib64 and lib64/stubs for the link inputs.
. scripts/cuda-stubs.sh

# What runs on the GPU host: the GPU smoke test, the worker's job and CLI tests and its unit
# tests (which then run on the GPU), and the worker binaries (the CLI tests find the worker
# where cargo built it, so every file keeps its absolute path). Debug info is stripped from
# copies, and one large xz dictionary stores the content the binaries share (candle's kernels,
# ~40 MB each) once: ~25 MB in all, within what a GPU host's working tree may carry.
list="$POSTHUMAN_CACHE/gpu-bundle.list"
cargo test --locked --no-run --features cuda -p posthuman-gpt2 -p posthuman-worker \
  --message-format=json-render-diagnostics \
  | python3 -c '
import json, sys
tests = {"cuda_smoke", "jobs", "cli", "bad_inputs"}
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    t, test = m["target"], m["profile"]["test"]
    worker = "posthuman-worker" in m["package_id"]
    if (test and t["name"] in tests) or (test and worker and "lib" in t["kind"]) \
            or (not test and worker and "bin" in t["kind"]):
        print(m["executable"])
' | sort -u >"$list"
stage="$POSTHUMAN_CACHE/gpu-bundle.stage"
rm -rf "$stage"
while read -r exe; do
  mkdir -p "$stage$(dirname "$exe")"
  strip --strip-debug -o "$stage$exe" "$exe"
done <"$list"
tar -C "$stage" -cf - . | xz -6e --lzma2=dict=256MiB >"$archive.tmp"
mv "$archive.tmp" "$archive"
rm -rf "$stage"
echo "gpu-bundle: $(wc -l <"$list") executables, $(du -h "$archive" | cut -f1) in $archive ($((SECONDS - t0)) s)"
