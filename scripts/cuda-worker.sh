#!/usr/bin/env bash
# Builds the GPU queue's worker HERE, on a machine with no GPU and no NVIDIA driver: the release
# `posthuman-worker` with the `cuda` feature, as scripts/deploy.sh ships it in the CUDA image.
# CUDA 12.4 for compute capability 7.0 (scripts/cuda-env.sh: PTX the driver JIT-compiles for the
# p3's V100, the g5's A10G, the g6's L4), linked against generated stubs of the driver's and
# NVIDIA's libraries (scripts/cuda-stubs.sh). Prints the binary's path on the last line of stdout.
#
#   scripts/cuda-worker.sh [CARGO BUILD ARGS...]     (e.g. --timings: where the minutes go)
#
# Its own target dir, $POSTHUMAN_CUDA_TARGET_DIR (default $POSTHUMAN_CACHE/target-cuda, the one
# scripts/gpu-bundle.sh uses): a `cuda` worker where the CPU build lives would put a binary that
# needs libcuda where the demo and the tests run the worker. Cold, candle's kernels take ~12 min
# of nvcc on 2 cores and the release build of the rest (AWS SDK included) more; run it `nice`d
# on a shared machine.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
. scripts/cuda-env.sh
. scripts/cuda-stubs.sh
export CARGO_TARGET_DIR="${POSTHUMAN_CUDA_TARGET_DIR:-$POSTHUMAN_CACHE/target-cuda}"
t0=$SECONDS
cargo build --release --locked --features cuda -p posthuman-worker --bin posthuman-worker "$@" >&2
bin="$CARGO_TARGET_DIR/release/posthuman-worker"
echo "cuda-worker: built $bin ($((SECONDS - t0)) s)" >&2
echo "$bin"
