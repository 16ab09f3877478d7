#!/usr/bin/env bash
# Proves the GPU build compiles, on a machine with no GPU and no system CUDA: runs clippy
# (a type check plus lints) over posthuman-gpt2 and posthuman-worker with the `cuda` feature.
# That runs candle-kernels' build script, in which nvcc compiles candle's .cu kernels to PTX
# (and its GGUF/MoE kernels to libmoe.a), and type-checks every cuda-gated line of ours.
# The toolkit is CUDA 12.4 (Debian's nvcc, NVIDIA's PyPI headers: scripts/cuda-env.sh), for
# compute capability 7.0 (the p3's V100; the PTX JIT-compiles for every newer GPU). Linking and
# running the GPU build need a GPU host: scripts/gpu-bundle.sh builds what runs there.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
t0=$SECONDS
. scripts/cuda-env.sh

cargo clippy --locked -p posthuman-gpt2 -p posthuman-worker --features cuda --all-targets \
  -- -D warnings
echo "cuda-check: the cuda build compiles ($((SECONDS - t0)) s)"
