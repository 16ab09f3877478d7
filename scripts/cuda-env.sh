# Sourced by scripts/cuda-check.sh and scripts/gpu-bundle.sh: a CUDA toolkit for building the
# `cuda` feature on a machine with no GPU and no system CUDA, and the environment candle's and
# cudarc's build scripts read. Expects scripts/env.sh to be sourced first.
#
# The toolkit comes from NVIDIA's PyPI wheels, in a venv outside the checkout. Idempotent:
# the venv is rebuilt only when the pin below changes. Overrides: CUDA_COMPUTE_CAP (default
# 86: the A10G of the g5 instances the Batch compute environment uses; PTX JIT-compiles
# forward to newer GPUs) and CUDAFORGE_THREADS (nvcc jobs; default all cores).

# CUDA 13.0. On PyPI only the 13.x wheels carry a complete nvcc (driver, cicc, ptxas, CRT
# headers); the -cu12 ones ship ptxas alone. 13.0's PTX (ISA 9.0) loads on drivers >= 580,
# and cudarc 0.19 knows CUDA up to 13.4. The pin is also the layout's name (below), so a
# new pin reruns the build scripts that depend on it.
cuda_pin_version=13.0.3.0
cuda_pin="cuda-toolkit[nvcc,cccl]==$cuda_pin_version"
cuda_venv="$POSTHUMAN_CACHE/venvs/cuda"
if [ ! -x "$cuda_venv/bin/python" ] || [ "$(cat "$cuda_venv/.posthuman-pin" 2>/dev/null)" != "$cuda_pin" ]; then
  echo "cuda-env: installing $cuda_pin into $cuda_venv" >&2
  rm -rf "$cuda_venv"
  python3 -m venv "$cuda_venv"
  "$cuda_venv/bin/pip" install -q --disable-pip-version-check "$cuda_pin"
  echo "$cuda_pin" >"$cuda_venv/.posthuman-pin"
fi

# The wheels already form a CUDA root (nvidia/cu13: bin/nvcc, include/, nvvm/, lib/); one
# symlink gives it a stable, versioned name. cudaforge (candle-kernels' builder) takes the
# include dir from nvcc's path, and cudarc reads the CUDA version from `nvcc --version`.
cuda_site=$("$cuda_venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
mkdir -p "$POSTHUMAN_CACHE/cuda"
CUDA_ROOT_DIR="$POSTHUMAN_CACHE/cuda/$cuda_pin_version"
ln -sfn "$cuda_site/nvidia/cu13" "$CUDA_ROOT_DIR"
if [ ! -x "$CUDA_ROOT_DIR/bin/nvcc" ]; then
  echo "cuda-env: no nvcc at $CUDA_ROOT_DIR/bin/nvcc" >&2
  return 1
fi
cuda_release=$("$CUDA_ROOT_DIR/bin/nvcc" --version | sed -n 's/.*release \([0-9]*\)\.\([0-9]*\),.*/\1 \2/p')
read -r cuda_major cuda_minor <<<"$cuda_release"
if [ -z "${cuda_minor:-}" ]; then
  echo "cuda-env: cannot read the CUDA release from nvcc --version" >&2
  return 1
fi
export PATH="$CUDA_ROOT_DIR/bin:$PATH"
export NVCC="$CUDA_ROOT_DIR/bin/nvcc"
export CUDA_HOME="$CUDA_ROOT_DIR"
export CUDARC_CUDA_VERSION="${cuda_major}0${cuda_minor}0"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-86}"
export CUDAFORGE_THREADS="${CUDAFORGE_THREADS:-$(nproc)}"
echo "cuda-env: nvcc $cuda_major.$cuda_minor ($CUDA_ROOT_DIR), compute capability $CUDA_COMPUTE_CAP" >&2
