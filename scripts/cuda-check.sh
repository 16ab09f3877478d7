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

# Diagnostics go to stderr as usual; stdout's JSON names candle-kernels' build dir (OUT_DIR).
kernels_out=$(cargo clippy --locked -p posthuman-gpt2 -p posthuman-worker --features cuda \
  --all-targets --message-format=json-render-diagnostics -- -D warnings |
  python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "build-script-executed" and "candle-kernels" in m["package_id"]:
        print(m["out_dir"])
' | tail -1)
# The kernels must be PTX for the compute capability asked for (what the V100 can JIT): a
# toolkit or flag that silently built for another target would only fail on the GPU host.
ptx=("$kernels_out"/*.ptx)
[ -e "${ptx[0]}" ] || { echo "cuda-check: no PTX in candle-kernels' OUT_DIR ($kernels_out)" >&2; exit 1; }
wrong=$(grep -L "^\.target sm_$CUDA_COMPUTE_CAP" "${ptx[@]}" || true)
[ -z "$wrong" ] || { echo "cuda-check: PTX not for sm_$CUDA_COMPUTE_CAP: $wrong" >&2; exit 1; }
echo "cuda-check: the cuda build compiles; ${#ptx[@]} PTX files, $(grep -h -m1 '^\.version' "${ptx[0]}"), all .target sm_$CUDA_COMPUTE_CAP ($((SECONDS - t0)) s)"
