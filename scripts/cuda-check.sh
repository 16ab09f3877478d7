#!/usr/bin/env bash
# Proves the GPU build compiles, on a machine with no GPU and no system CUDA: runs clippy
# (a type check plus lints) over posthuman-gpt2 and posthuman-worker with the `cuda` feature.
# That runs candle-kernels' build script, in which nvcc compiles candle's .cu kernels to PTX
# (and its GGUF/MoE kernels to libmoe.a), and type-checks every cuda-gated line of ours.
# Not covered: linking (needs libcuda.so from an NVIDIA driver, which no registry we can
# reach ships) and running the kernels (needs a GPU).
#
# The toolkit comes from NVIDIA's PyPI wheels, in a venv outside the checkout. Idempotent:
# the venv is rebuilt only when the pin below changes. Overrides: CUDA_COMPUTE_CAP (default
# 86: the A10G of the g5 instances the Batch compute environment uses; PTX JIT-compiles
# forward to newer GPUs) and CUDAFORGE_THREADS (nvcc jobs; default all cores).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
t0=$SECONDS

# CUDA 13.0. On PyPI only the 13.x wheels carry a complete nvcc (driver, cicc, ptxas, CRT
# headers); the -cu12 ones ship ptxas alone. 13.0's PTX (ISA 9.0) loads on drivers >= 580,
# and cudarc 0.19 knows CUDA up to 13.4. The pin is also the layout's name (below), so a
# new pin reruns the build scripts that depend on it.
pin_version=13.0.3.0
pin="cuda-toolkit[nvcc,cccl]==$pin_version"
venv="$POSTHUMAN_CACHE/venvs/cuda"
stamp="$venv/.posthuman-pin"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$pin" ]; then
  echo "cuda-check: installing $pin into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "$pin"
  echo "$pin" >"$stamp"
fi

# The wheels already form a CUDA root (nvidia/cu13: bin/nvcc, include/, nvvm/, lib/); one
# symlink gives it a stable, versioned name. cudaforge (candle-kernels' builder) takes the
# include dir from nvcc's path, and cudarc reads the CUDA version from `nvcc --version`.
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
mkdir -p "$POSTHUMAN_CACHE/cuda"
root="$POSTHUMAN_CACHE/cuda/$pin_version"
ln -sfn "$site/nvidia/cu13" "$root"
[ -x "$root/bin/nvcc" ] || { echo "cuda-check: no nvcc at $root/bin/nvcc" >&2; exit 1; }

release=$("$root/bin/nvcc" --version | sed -n 's/.*release \([0-9]*\)\.\([0-9]*\),.*/\1 \2/p')
read -r major minor <<<"$release"
[ -n "${minor:-}" ] || { echo "cuda-check: cannot read the CUDA release from nvcc --version" >&2; exit 1; }
export PATH="$root/bin:$PATH"
export NVCC="$root/bin/nvcc"
export CUDA_HOME="$root"
export CUDARC_CUDA_VERSION="${major}0${minor}0"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-86}"
export CUDAFORGE_THREADS="${CUDAFORGE_THREADS:-$(nproc)}"
echo "cuda-check: nvcc $major.$minor ($root), compute capability $CUDA_COMPUTE_CAP"

cargo clippy --locked -p posthuman-gpt2 -p posthuman-worker --features cuda --all-targets \
  -- -D warnings
echo "cuda-check: the cuda build compiles ($((SECONDS - t0)) s)"
