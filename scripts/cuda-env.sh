# Sourced by scripts/cuda-check.sh and scripts/gpu-bundle.sh: a CUDA toolkit for building the
# `cuda` feature on a machine with no GPU and no system CUDA, and the environment candle's and
# cudarc's build scripts read. Expects scripts/env.sh to be sourced first.
#
# CUDA 12.4, for compute capability 7.0 by default: the V100 of the p3 instances the Batch
# compute environment uses. CUDA 13 dropped sm_70 (Volta), and PTX built for compute_70 is
# JIT-compiled by the driver for every newer GPU, so one build serves p3 (V100), g5 (A10G) and
# g6 (L4). 12.4's PTX (ISA 8.4) loads on drivers >= 550. Overrides: CUDA_COMPUTE_CAP (e.g. 86
# for a g5-only build) and CUDAFORGE_THREADS (nvcc jobs; default all cores).
#
# Where the toolkit comes from, and why from two places: NVIDIA's PyPI -cu12 wheels carry the
# headers (runtime, CRT, CCCL), libdevice, libnvvm, ptxas and libcudart, but no compiler driver
# (no nvcc, cicc, cudafe++, fatbinary); those come from Debian's non-free nvidia-cuda-toolkit
# package of the same release (NVIDIA's own binaries, built against glibc 2.7, so they run on
# any current Linux). Debian's nvidia-cuda-dev would bring the headers too, but it is a 934 MB
# download (2.5 GB of static libraries); the wheels are 26 MB. Every file is pinned by SHA-256
# and assembled once into a standard CUDA layout (bin/, nvvm/, include/, lib64/) under
# $POSTHUMAN_CACHE/cuda/<release>, outside the checkout; the pin stamp in it makes this
# idempotent, and a changed pin rebuilds it. DEBIAN_MIRROR overrides deb.debian.org.

cuda_release_pin=12.4.131
# name sha256 url-or-pip-requirement, one a line: the whole pin, also the stamp's content.
cuda_files="nvidia-cuda-toolkit_12.4.131~12.4.1-2_amd64.deb cd5fe85aee38d108b315f408a688641478f2402622a10c677478eb7a6c4e5319 deb:pool/non-free/n/nvidia-cuda-toolkit/nvidia-cuda-toolkit_12.4.131~12.4.1-2_amd64.deb
nvidia_cuda_nvcc_cu12-12.4.131-py3-none-manylinux2014_x86_64.whl e4c9a35435c3b0e36c6397c5696334c9ea6650e524736cbd1c5d345ea099bb04 pip:nvidia-cuda-nvcc-cu12==12.4.131
nvidia_cuda_runtime_cu12-12.4.127-py3-none-manylinux2014_x86_64.whl 64403288fa2136ee8e467cdc9c9427e0434110899d07c779f25b5c068934faa5 pip:nvidia-cuda-runtime-cu12==12.4.127
nvidia_cuda_cccl_cu12-12.4.127.post1-py3-none-manylinux2014_x86_64.whl 2027fa5fc75fbee703bf24e8275a40a605cf94a3e8fef8a7187897d49b34facb pip:nvidia-cuda-cccl-cu12==12.4.127.post1"
CUDA_ROOT_DIR="$POSTHUMAN_CACHE/cuda/$cuda_release_pin"

cuda_assemble() { # builds the toolkit in $1 (a fresh directory); returns non-zero on any failure
  local root=$1 dl=$1.download name sum src f pip=(python3 -m pip)
  mkdir -p "$dl" "$root/bin/crt" "$root/nvvm/bin" "$root/include" "$root/lib64"
  # pip only downloads here (no install); a python3 without pip gets a throwaway venv's.
  if ! python3 -m pip --version >/dev/null 2>&1; then
    python3 -m venv "$dl/venv" || return 1
    pip=("$dl/venv/bin/python" -m pip)
  fi
  while read -r name sum src; do
    case $src in
      deb:*) curl -sSfL --retry 3 -o "$dl/$name" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}/${src#deb:}" || return 1 ;;
      pip:*) "${pip[@]}" download -q --disable-pip-version-check --no-deps --only-binary :all: \
               -d "$dl" "${src#pip:}" || return 1 ;;
    esac
    echo "$sum  $dl/$name" | sha256sum -c --quiet - || return 1
  done <<<"$cuda_files"
  # The compiler driver and its tools, from the .deb (a plain ar archive: no dpkg needed).
  local deb=$dl/x
  mkdir -p "$deb"
  (cd "$deb" && ar x "$dl"/nvidia-cuda-toolkit_*.deb data.tar.xz && tar -xJf data.tar.xz ./usr/bin ./usr/lib/nvidia-cuda-toolkit/bin) || return 1
  local tk=$deb/usr/lib/nvidia-cuda-toolkit/bin
  cp "$tk/nvcc" "$deb/usr/bin/ptxas" "$deb/usr/bin/fatbinary" "$deb/usr/bin/cudafe++" \
    "$deb/usr/bin/nvlink" "$deb/usr/bin/bin2c" "$deb/usr/bin/cuobjdump" "$root/bin/" || return 1
  cp "$tk/crt/link.stub" "$tk/crt/prelink.stub" "$root/bin/crt/" || return 1
  cp "$tk/cicc" "$root/nvvm/bin/" || return 1
  # Headers, libdevice, libnvvm and libcudart, from the wheels (zip files).
  local w=$dl/w
  for f in "$dl"/*.whl; do python3 -m zipfile -e "$f" "$w" || return 1; done
  cp -r "$w"/nvidia/cuda_runtime/include/. "$w"/nvidia/cuda_nvcc/include/. \
    "$w"/nvidia/cuda_cccl/include/. "$root/include/" || return 1
  cp -r "$w"/nvidia/cuda_nvcc/nvvm/libdevice "$w"/nvidia/cuda_nvcc/nvvm/lib64 "$root/nvvm/" || return 1
  cp "$w"/nvidia/cuda_runtime/lib/libcudart.so.12 "$root/lib64/" || return 1
  find "$root/include" -name __init__.py -delete
  ln -s libcudart.so.12 "$root/lib64/libcudart.so"
  # Where scripts/gpu-bundle.sh puts its link stubs. cudarc's build script adds only the
  # search dirs that exist when it runs, and does not rerun when one appears later.
  mkdir -p "$root/lib64/stubs"
  ln -s lib64 "$root/lib"
  chmod +x "$root"/bin/* "$root/nvvm/bin/cicc"
  # nvcc reads nvcc.profile beside itself: NVIDIA's own, relative to the root (Debian's names
  # /usr paths).
  cat >"$root/bin/nvcc.profile" <<'EOF'
TOP              = $(_HERE_)/..
NVVMIR_LIBRARY_DIR = $(TOP)/nvvm/libdevice
LD_LIBRARY_PATH += $(TOP)/lib64:
PATH            += $(TOP)/nvvm/bin:$(_HERE_):
INCLUDES        +=  "-I$(TOP)/include" $(_SPACE_)
LIBRARIES        =+ $(_SPACE_) "-L$(TOP)/lib64"
CUDAFE_FLAGS    +=
PTXAS_FLAGS     +=
EOF
  rm -rf "$dl"
}

# The stamp: the pinned files and the recipe, so a change to either reassembles the toolkit.
cuda_stamp="$cuda_files
recipe $(declare -f cuda_assemble | sha256sum | cut -c1-16)"
# One assembler at a time (cuda-check and gpu-bundle may start together on a cold cache).
mkdir -p "$POSTHUMAN_CACHE/cuda"
exec {cuda_lock}>"$POSTHUMAN_CACHE/cuda/.lock"
flock "$cuda_lock"
if [ "$(cat "$CUDA_ROOT_DIR/.posthuman-pin" 2>/dev/null)" != "$cuda_stamp" ]; then
  echo "cuda-env: assembling CUDA $cuda_release_pin into $CUDA_ROOT_DIR" >&2
  cuda_t0=$SECONDS
  rm -rf "$CUDA_ROOT_DIR" "$CUDA_ROOT_DIR.tmp" "$CUDA_ROOT_DIR.tmp.download"
  if ! cuda_assemble "$CUDA_ROOT_DIR.tmp"; then
    rm -rf "$CUDA_ROOT_DIR.tmp" "$CUDA_ROOT_DIR.tmp.download"
    exec {cuda_lock}>&-
    echo "cuda-env: could not assemble CUDA $cuda_release_pin" >&2
    return 1
  fi
  echo "$cuda_stamp" >"$CUDA_ROOT_DIR.tmp/.posthuman-pin"
  mv "$CUDA_ROOT_DIR.tmp" "$CUDA_ROOT_DIR"
  echo "cuda-env: CUDA $cuda_release_pin assembled in $((SECONDS - cuda_t0)) s ($(du -sh "$CUDA_ROOT_DIR" | cut -f1))" >&2
fi
exec {cuda_lock}>&-

# cudarc reads the CUDA version from CUDARC_CUDA_VERSION (else `nvcc --version`); both are
# taken from the nvcc that will compile, so they cannot disagree.
cuda_release=$("$CUDA_ROOT_DIR/bin/nvcc" --version | sed -n 's/.*release \([0-9]*\)\.\([0-9]*\),.*/\1 \2/p')
read -r cuda_major cuda_minor <<<"$cuda_release"
if [ -z "${cuda_minor:-}" ]; then
  echo "cuda-env: cannot read the CUDA release from $CUDA_ROOT_DIR/bin/nvcc --version" >&2
  return 1
fi
export PATH="$CUDA_ROOT_DIR/bin:$PATH"
export NVCC="$CUDA_ROOT_DIR/bin/nvcc"
export CUDA_HOME="$CUDA_ROOT_DIR"
export CUDARC_CUDA_VERSION="${cuda_major}0${cuda_minor}0"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-70}"
# candle-kernels compiles its static GGUF/MoE kernels (libmoe.a) with code=sm_NN alone: machine
# code that runs on that architecture generation only (sm_70's not on an A10G or L4). nvcc
# appends these flags to every command, so the objects also carry compute_NN PTX, which the
# driver JIT-compiles for newer GPUs as it does the other kernels' (harmless with --ptx).
cuda_ptx_flag="-gencode=arch=compute_${CUDA_COMPUTE_CAP%a},code=compute_${CUDA_COMPUTE_CAP%a}"
case " ${NVCC_APPEND_FLAGS:-} " in
  *" $cuda_ptx_flag "*) ;;
  *) export NVCC_APPEND_FLAGS="${NVCC_APPEND_FLAGS:+$NVCC_APPEND_FLAGS }$cuda_ptx_flag" ;;
esac
export CUDAFORGE_THREADS="${CUDAFORGE_THREADS:-$(nproc)}"
echo "cuda-env: nvcc $cuda_major.$cuda_minor ($CUDA_ROOT_DIR), compute capability $CUDA_COMPUTE_CAP" >&2
