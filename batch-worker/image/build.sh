#!/usr/bin/env bash
# Builds the batch worker's container image WITHOUT a registry (the shared notes' RECIPES.md §8):
# Debian's own mirror gives a minbase root filesystem (debootstrap), podman imports it
# as posthuman-base:<suite>, and Containerfile adds the worker binary built on this host.
# batch-worker/Dockerfile makes the same image for people with Docker and a registry.
#
#   batch-worker/image/build.sh [--debug] [--binary PATH] [--suite bookworm|trixie]
#                               [--cuda [--cuda-binary PATH]]
#
#   --debug        the debug worker (cargo build without --release; tag suffix -debug): what the
#                  CI test runs, since the tests have built it already and a release build of
#                  the AWS SDK costs minutes
#   --binary PATH  use this worker binary instead of building one (e.g. a CI artifact)
#   --suite S      Debian release of the base (default bookworm, glibc 2.36). The binary must
#                  not need a newer glibc than the base has; build.sh checks and says so.
#   --cuda         also build the CUDA variant, the GPU queue's image (Containerfile.cuda): the
#                  release worker with `--features cuda` (scripts/cuda-worker.sh: CUDA 12.4,
#                  compute_70 PTX for the p3's V100 and newer, in its own target dir; ~12 min of
#                  kernel compile cold) and NVIDIA's CUDA 12.4 user-space libraries from their
#                  PyPI wheels (~700 MB, downloaded once). Not built in CI (slow, and no GPU to
#                  run it on); check-cuda.sh beside this file checks the built image.
#   --cuda-binary PATH   with --cuda: this `--features cuda` worker instead of building one
#
# Idempotent: Debian packages are installed only when missing (scripts/apt.sh), the rootfs is
# cached in $POSTHUMAN_CACHE/rootfs/ and reused while its recipe is unchanged, the base image
# is imported only when absent or rebuilt (POSTHUMAN_ROOTFS_DIR moves the rootfs cache).
# Tags: posthuman-worker:<commit>[-dirty][-debug], the commit both short and in full (the
# full one is scripts/deploy.sh's tag; `-dirty`: tracked files differ from that commit, so the
# tag would lie without it), and :latest (release) or :debug, local only; the CUDA image
# posthuman-worker:<commit>[-dirty]-cuda (short and full, deploy.sh's GPU tag) and :cuda.
# Prints the image and its size on the last line of stdout as `image=NAME size_bytes=N`, after
# `cuda_image=NAME size_bytes=N` with --cuda.
# Exit 3: podman cannot run containers here.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/env.sh
. scripts/apt.sh

profile=release
binary=""
suite=${POSTHUMAN_IMAGE_SUITE:-bookworm}
cuda=0
cuda_binary=""
while [ $# -gt 0 ]; do
  case $1 in
  --debug) profile=debug ;;
  --binary) binary=${2:?--binary needs a path}; shift ;;
  --suite) suite=${2:?--suite needs a Debian release}; shift ;;
  --cuda) cuda=1 ;;
  --cuda-binary) cuda_binary=${2:?--cuda-binary needs a path}; shift ;;
  -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  *) echo "build.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case $suite in bookworm | trixie) ;; *) echo "build.sh: --suite must be bookworm or trixie" >&2; exit 2 ;; esac
if [ $cuda = 0 ] && [ -n "$cuda_binary" ]; then
  echo "build.sh: --cuda-binary goes with --cuda" >&2
  exit 2
fi

log() { echo "image: $*" >&2; }
podman_() { podman --runtime runc "$@"; }
t0=$SECONDS

# 1. Tools. runc, not podman's default crun: crun fails on these hosts' hybrid cgroups.
# Exit 3 means "no container runtime here" (see step 3): callers may skip on it, and only it.
if [ "$(id -u)" != 0 ] && [ -n "$(missing_debs debootstrap podman runc binutils)" ]; then
  log "podman cannot run containers here: debootstrap/podman/runc are missing and installing them needs root"
  exit 3
fi
ensure_debs debootstrap podman runc binutils

# 2. The root filesystem, cached. ca-certificates comes in here (S3 over TLS), so building the
# image needs no package manager and no network inside a container.
mirror=${POSTHUMAN_DEBIAN_MIRROR:-http://deb.debian.org/debian}
recipe="debootstrap --variant=minbase --include=ca-certificates $suite $mirror (apt lists and .debs dropped)"
rootfs="${POSTHUMAN_ROOTFS_DIR:-$POSTHUMAN_CACHE/rootfs}/debian-$suite-minbase"
base="posthuman-base:$suite"
fresh_rootfs=0
if [ "$(cat "$rootfs/.posthuman-recipe" 2>/dev/null)" != "$recipe" ]; then
  log "debootstrap $suite into $rootfs (a few minutes, once)"
  tmp="$rootfs.partial.$$"
  mkdir -p "$(dirname "$rootfs")"
  trap 'rm -rf "$tmp"' EXIT
  debootstrap --variant=minbase --include=ca-certificates "$suite" "$tmp" "$mirror" >"$tmp.log" 2>&1 ||
    { tail -20 "$tmp.log" >&2; rm -f "$tmp.log"; log "debootstrap failed"; exit 1; }
  rm -f "$tmp.log"
  rm -rf "$tmp"/var/lib/apt/lists/* "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/cache/apt/*.bin
  echo "$recipe" >"$tmp/.posthuman-recipe"
  # Replace the previous rootfs of this recipe's name only (it is ours: same path).
  rm -rf "$rootfs"
  mv "$tmp" "$rootfs"
  trap - EXIT
  fresh_rootfs=1
  log "rootfs ready ($(du -sh "$rootfs" | cut -f1)) at t=$((SECONDS - t0))s"
fi

# 3. The base image: imported when absent or when the rootfs was just rebuilt.
if [ $fresh_rootfs = 1 ] || ! podman image exists "$base"; then
  log "importing $rootfs as $base"
  tar -C "$rootfs" --exclude=./.posthuman-recipe -c . | podman import --quiet - "$base" >/dev/null
fi
# Can podman run a container at all on this machine (kernel, cgroups, privileges)?
if ! out=$(podman_ run --rm --network none --ulimit nproc=1024:1024 --ulimit nofile=1024:1024 \
  "$base" true 2>&1); then
  log "podman cannot run containers on this machine: $out"
  exit 3
fi
base_glibc=$(sed -n '/^Package: libc6$/,/^$/s/^Version: \([0-9]*\.[0-9]*\).*/\1/p' "$rootfs/var/lib/dpkg/status")

# 4. The worker binary.
if [ -z "$binary" ]; then
  flag=()
  [ $profile = release ] && flag=(--release)
  log "cargo build ${flag[*]:+${flag[*]} }-p posthuman-worker"
  cargo build ${flag[@]+"${flag[@]}"} --locked -p posthuman-worker --bin posthuman-worker
  binary="$CARGO_TARGET_DIR/$profile/posthuman-worker"
fi
[ -x "$binary" ] || { log "no executable worker at $binary"; exit 1; }
if [ $cuda = 1 ] && [ -z "$cuda_binary" ]; then
  log "scripts/cuda-worker.sh (release, --features cuda)"
  cuda_binary=$(scripts/cuda-worker.sh | tail -1)
fi
[ $cuda = 0 ] || [ -x "$cuda_binary" ] || { log "no executable CUDA worker at $cuda_binary"; exit 1; }

# The binary is linked on this host: it runs in the image only if the base's glibc is at least
# the newest symbol version it uses (bookworm: 2.36). A newer host needs --suite trixie.
glibc_need() { objdump -T "$1" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1; }
for b in "$binary" ${cuda_binary:+"$cuda_binary"}; do
  need=$(glibc_need "$b")
  if [ "$(printf '%s\n%s\n' "$need" "$base_glibc" | sort -V | tail -1)" != "$base_glibc" ]; then
    log "$b needs glibc $need but $suite has $base_glibc: rerun with --suite trixie (2.41)"
    exit 1
  fi
  log "$b needs glibc >= $need; $suite has $base_glibc"
done

# 5. Tags: the commit the binary was built from (build.rs records the same one in receipts),
# short, and in full as scripts/deploy.sh names the image it pushes (so a deploy with
# POSTHUMAN_CONTAINER_TOOL=podman finds this image and skips its Dockerfile build).
suffix=""
git diff --quiet HEAD -- || suffix="-dirty"
# build.rs embeds the short commit in the binary (receipts name it); a --binary from another
# checkout would make the tag lie.
for b in "$binary" ${cuda_binary:+"$cuda_binary"}; do
  if ! grep -qaF "$(git rev-parse --short=12 HEAD)" "$b"; then
    log "WARNING: $b does not record this checkout's commit $(git rev-parse --short=12 HEAD): built elsewhere, or before the last commit?"
  fi
done
[ $profile = debug ] && suffix="$suffix-debug"
image="posthuman-worker:$(git rev-parse --short=12 HEAD)$suffix"
full_image="posthuman-worker:$(git rev-parse HEAD)$suffix"
local_tag=latest
[ $profile = debug ] && local_tag=debug

# The image :latest/:debug named before this build: removed below once nothing names it, so
# rebuilds (CI's, one a commit) do not fill the disk with untagged images.
previous=$(podman image inspect --format '{{.Id}}' "posthuman-worker:$local_tag" 2>/dev/null || true)

ctx=$(mktemp -d "${TMPDIR:-/tmp}/posthuman-image.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
cp batch-worker/image/Containerfile "$ctx/"
cp "$binary" "$ctx/posthuman-worker"
# The release profile keeps line tables (backtraces, profiles): 136 MB of the release worker's
# 168; the image ships without them (32 MB), so every fresh Batch instance pulls less.
objcopy --strip-debug "$ctx/posthuman-worker"
# Labels name what the tag says, so an image copied elsewhere still tells its origin.
podman_ build --quiet --ulimit nproc=1024:1024 --ulimit nofile=1024:1024 --network none \
  --build-arg "BASE=$base" --label "org.opencontainers.image.revision=$(git rev-parse HEAD)" \
  --label "posthuman.profile=$profile" -f "$ctx/Containerfile" -t "$image" -t "$full_image" \
  -t "posthuman-worker:$local_tag" "$ctx" >/dev/null
size=$(podman image inspect --format '{{.Size}}' "$image")
if [ -n "$previous" ] && [ "$previous" != "$(podman image inspect --format '{{.Id}}' "$image")" ] &&
  [ -z "$(podman image inspect --format '{{join .RepoTags ""}}' "$previous" 2>/dev/null)" ]; then
  podman rmi --force "$previous" >/dev/null 2>&1 || true
fi
log "built $image (+ :$local_tag) in $((SECONDS - t0))s: $((size / 1000000)) MB"

if [ $cuda = 1 ]; then
  t1=$SECONDS
  # NVIDIA's CUDA user-space libraries from PyPI, in a venv of their own (once per pin): the
  # release scripts/cuda-env.sh compiles with (12.4), so everything in the image is one CUDA
  # release and runs on the drivers that release supports (>= 550). Newer wheels would be
  # larger (12.8's cuBLAS alone: +500 MB) and their NVRTC would emit PTX such drivers refuse.
  cuda_pins="nvidia-cuda-runtime-cu12==12.4.127 nvidia-cublas-cu12==12.4.5.8 nvidia-curand-cu12==10.3.5.147 nvidia-cuda-nvrtc-cu12==12.4.127"
  venv="$POSTHUMAN_CACHE/venvs/cuda12-runtime"
  if [ "$(cat "$venv/.posthuman-pin" 2>/dev/null)" != "$cuda_pins" ]; then
    log "installing $cuda_pins into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    # shellcheck disable=SC2086 # the pins are words
    "$venv/bin/pip" install -q --disable-pip-version-check $cuda_pins
    echo "$cuda_pins" >"$venv/.posthuman-pin"
  fi
  site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  # The libraries the worker links (cudart, cuBLAS, cuBLASLt, cuRAND, NVRTC) and the one NVRTC
  # loads at run time (its builtins); batch-worker/Dockerfile.cuda copies the same set.
  mkdir -p "$ctx/cuda-lib"
  for so in libcudart.so.12 libcublas.so.12 libcublasLt.so.12 libcurand.so.10 libnvrtc.so.12 libnvrtc-builtins.so.12.4; do
    cp -L "$site"/nvidia/*/lib/"$so" "$ctx/cuda-lib/" || { log "the CUDA wheels carry no $so"; exit 1; }
  done
  # Every CUDA library the binary asks for must be in the image, but libcuda (the driver's).
  for so in $(readelf -d "$cuda_binary" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p' | grep -E '^lib(cu|nvrtc)'); do
    [ "$so" = libcuda.so.1 ] && continue
    [ -e "$ctx/cuda-lib/$so" ] ||
      { log "the CUDA worker needs $so, which the CUDA 12.4 wheels do not carry (built for another CUDA?)"; exit 1; }
  done
  # The PTX targets candle's kernels were compiled for (embedded as text), for the label.
  ptx_targets=$(grep -ao '\.target sm_[0-9a-z]*' "$cuda_binary" | sed 's/.target //' | sort -u | paste -sd, -)
  [ -n "$ptx_targets" ] || { log "$cuda_binary carries no PTX: not a --features cuda worker?"; exit 1; }
  cp batch-worker/image/Containerfile.cuda "$ctx/"
  cp "$cuda_binary" "$ctx/posthuman-worker"
  objcopy --strip-debug "$ctx/posthuman-worker"
  # Not -debug: the CUDA worker is always the release build deploy.sh ships.
  cuda_suffix=""
  git diff --quiet HEAD -- || cuda_suffix="-dirty"
  cuda_image="posthuman-worker:$(git rev-parse --short=12 HEAD)$cuda_suffix-cuda"
  cuda_previous=$(podman image inspect --format '{{.Id}}' posthuman-worker:cuda 2>/dev/null || true)
  podman_ build --quiet --ulimit nproc=1024:1024 --ulimit nofile=1024:1024 --network none \
    --build-arg "BASE=$base" --label "org.opencontainers.image.revision=$(git rev-parse HEAD)" \
    --label "posthuman.profile=release" --label "posthuman.cuda=12.4 ptx $ptx_targets" \
    -f "$ctx/Containerfile.cuda" -t "$cuda_image" \
    -t "posthuman-worker:$(git rev-parse HEAD)$cuda_suffix-cuda" -t posthuman-worker:cuda "$ctx" >/dev/null
  cuda_size=$(podman image inspect --format '{{.Size}}' "$cuda_image")
  if [ -n "$cuda_previous" ] && [ "$cuda_previous" != "$(podman image inspect --format '{{.Id}}' "$cuda_image")" ] &&
    [ -z "$(podman image inspect --format '{{join .RepoTags ""}}' "$cuda_previous" 2>/dev/null)" ]; then
    podman rmi --force "$cuda_previous" >/dev/null 2>&1 || true
  fi
  log "built $cuda_image (+ :cuda) in $((SECONDS - t1))s given the binary: $((cuda_size / 1000000)) MB (check it: batch-worker/image/check-cuda.sh)"
  echo "cuda_image=$cuda_image size_bytes=$cuda_size"
fi
echo "image=$image size_bytes=$size"
