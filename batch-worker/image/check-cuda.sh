#!/usr/bin/env bash
# Checks the CUDA worker image (`build.sh --cuda`, the GPU queue's) as far as a machine with no
# GPU and no NVIDIA driver can, inside the image itself (podman with runc, RECIPES §8):
#
#   1. libraries: `ldd` of the worker resolves every library but the driver's libcuda.so.1
#      (which the NVIDIA container runtime mounts from the host), the CUDA ones from the image's
#      /opt/nvidia/lib; the CUDA libraries' own dependencies all resolve;
#   2. kernels: the PTX embedded in the worker targets sm_70 only (the p3's V100; the driver
#      JIT-compiles it for newer GPUs), with a PTX ISA a driver >= 550 loads (<= 8.4);
#   3. without a driver the worker cannot start at all (the loader's exit 127, naming
#      libcuda.so.1): what a GPU queue without the NVIDIA runtime would show;
#   4. with scripts/cuda-stubs.sh's generated libcuda.so.1 bind-mounted where the NVIDIA runtime
#      puts the driver's (every call answers CUDA_ERROR_NO_DEVICE, as a driver on a host with
#      no GPU does) it starts: --version and --help;
#   5. a real train job (a tiny GPT-2 made by the image's own init subcommands, a local store
#      mounted in) as the job definition runs it, POSTHUMAN_REQUIRE_GPU=1: exit 19 (NO_GPU)
#      with the worker's message and its error.json, no crash; without that variable the same
#      job runs to the end on the CPU, with the warning that names why the GPU could not open.
#
#   batch-worker/image/check-cuda.sh [IMAGE]        (default posthuman-worker:cuda)
#
# What only a GPU host can check: that the kernels JIT and compute there (scripts/gpu-bundle.sh
# + scripts/gpu-run.sh run the GPU tests). Not a CI stage: the CUDA image takes a ~12 min kernel
# compile and a release build to make; run it after build.sh --cuda (infra/README.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/env.sh
image=${1:-posthuman-worker:cuda}
case $image in -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;; esac
podman image exists "$image" || { echo "check-cuda: no image $image (build it: batch-worker/image/build.sh --cuda)" >&2; exit 2; }
# The libcuda stub: the one the CUDA worker was linked against.
. scripts/cuda-env.sh
. scripts/cuda-stubs.sh
stub="$CUDA_STUB_DIR/libcuda.so"
t0=$SECONDS
failures=0
ok() { echo "  ok: $*"; }
bad() { echo "  FAILED: $*"; failures=$((failures + 1)); }
check() { # check CONDITION-STATUS MESSAGE
  if [ "$1" = 0 ]; then ok "$2"; else bad "$2"; fi
}
run_() { podman --runtime runc run --rm --network none --ulimit nproc=1024:1024 --ulimit nofile=1024:1024 "$@"; }
# Where the NVIDIA container toolkit mounts the driver's library on Debian/Ubuntu images.
driver=(-v "$stub:/usr/lib/x86_64-linux-gnu/libcuda.so.1:ro")
worker=/usr/local/bin/posthuman-worker

echo "check-cuda: $image ($(podman image inspect --format '{{index .Labels "posthuman.cuda"}}' "$image"), $(($(podman image inspect --format '{{.Size}}' "$image") / 1000000)) MB)"

echo "1. libraries"
ldd_out=$(run_ "$image" ldd "$worker" 2>&1 || true)
missing=$(sed -n 's/^[[:space:]]*\([^ ]*\) => not found$/\1/p' <<<"$ldd_out" | sort -u | paste -sd' ' -)
check "$([ "$missing" = libcuda.so.1 ] && echo 0 || echo 1)" "only the driver's libcuda.so.1 is unresolved (unresolved: ${missing:-none})"
# The CUDA libraries it loads (the linker keeps only those it calls into) come from the image.
cuda_libs=$(sed -n 's/^[[:space:]]*\(lib\(cu\|nvrtc\)[^ ]*\) => .*/\1/p' <<<"$ldd_out" | grep -vx libcuda.so.1 || true)
check "$([ -n "$cuda_libs" ] && echo 0 || echo 1)" "the worker loads CUDA libraries: $(paste -sd' ' - <<<"$cuda_libs")"
for so in $cuda_libs; do
  check "$(grep -q "^[[:space:]]*$so => /opt/nvidia/lib/$so " <<<"$ldd_out" && echo 0 || echo 1)" "$so from /opt/nvidia/lib"
done
libs_out=$(run_ "$image" sh -c 'for f in /opt/nvidia/lib/*.so*; do echo "== $f"; ldd "$f"; done' 2>&1 || true)
grep -q "not found" <<<"$libs_out" && { bad "a CUDA library's dependency is missing:"; grep -B3 "not found" <<<"$libs_out" | sed 's/^/    /'; } ||
  ok "the CUDA libraries' own dependencies resolve ($(grep -c '^== ' <<<"$libs_out") libraries)"

echo "2. kernels"
targets=$(run_ "$image" sh -c "grep -ao '\.target sm_[0-9a-z]*' $worker | sort | uniq -c" 2>&1 || true)
n_ptx=$(awk '{ s += $1 } END { print s + 0 }' <<<"$targets")
check "$([ "$n_ptx" -gt 0 ] && [ "$(awk '{ print $3 }' <<<"$targets" | sort -u)" = sm_70 ] && echo 0 || echo 1)" \
  "$n_ptx embedded PTX modules, every one .target sm_70 (found: $(awk '{ printf "%s x%s ", $3, $1 }' <<<"$targets"))"
isa=$(run_ "$image" sh -c "grep -ao '^\.version [0-9.]*' $worker | sort -u" 2>&1 | awk '{ print $2 }' | sort -V | tail -1)
check "$([ -n "$isa" ] && [ "$(printf '%s\n8.4\n' "$isa" | sort -V | tail -1)" = 8.4 ] && echo 0 || echo 1)" \
  "PTX ISA $isa (<= 8.4, CUDA 12.4's: drivers >= 550 load it)"

echo "3. no driver: the loader refuses the worker before it runs"
set +e
out=$(run_ "$image" posthuman-worker --version 2>&1); rc=$?
set -e
check "$([ $rc = 127 ] && grep -q 'libcuda.so.1: cannot open shared object file' <<<"$out" && echo 0 || echo 1)" \
  "exit $rc: $(head -1 <<<"$out")"

echo "4. the driver stub mounted as the NVIDIA runtime mounts the driver: it starts"
set +e
version=$(run_ "${driver[@]}" "$image" posthuman-worker --version 2>&1); rc=$?
set -e
check "$([ $rc = 0 ] && grep -q '^posthuman-worker ' <<<"$version" && echo 0 || echo 1)" "--version exits $rc: $version"
set +e
help=$(run_ "${driver[@]}" "$image" posthuman-worker --help 2>&1); rc=$?
set -e
check "$([ $rc = 0 ] && grep -q 'train / infer / evaluate' <<<"$help" && echo 0 || echo 1)" "--help exits $rc"

echo "5. a train job on a host with no GPU"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/posthuman-check-cuda.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
chmod 0777 "$tmp" # the image's user (uid 10001) writes here
# A few KB of text: the tokenizer, the model and the job's dataset.
python3 -c '
import random
r = random.Random(5)
words = "the model trains on text and the weights stay private while buyers pay for compute".split()
print("\n".join(" ".join(r.choice(words) for _ in range(12)) for _ in range(200)))' >"$tmp/corpus.txt"
set +e
init=$(run_ "${driver[@]}" -v "$tmp:/w" "$image" sh -c \
  "posthuman-worker train-tokenizer --corpus /w/corpus.txt --vocab-size 320 --out /w/tokenizer.json &&
   posthuman-worker init-model --tokenizer /w/tokenizer.json --n-layer 2 --n-embd 32 --n-head 2 \
     --n-positions 64 --seed 7 --out /w/model" 2>&1); rc=$?
set -e
hash=$(tail -1 <<<"$init" | awk '{ print $NF }')
if [ $rc != 0 ] || [[ ! $hash =~ ^0x[0-9a-f]{64}$ ]]; then
  bad "the image's init subcommands (exit $rc): $init"
  echo "check-cuda: $failures check(s) failed" >&2
  exit 1
fi
ok "a tiny GPT-2 made in the image (weights ${hash:0:18}...)"
mkdir -p "$tmp/store/models"
mv "$tmp/model" "$tmp/store/models/${hash#0x}"
# A paid train job as the API writes it (functions/src/handlers/jobs.rs `enqueue`).
job() { # job ID -> writes its spec and dataset into the store
  python3 - "$tmp/store" "$1" "${hash#0x}" <<'EOF'
import json, os, sys
store, job, model = sys.argv[1:]
d = os.path.join(store, "jobs", job)
os.makedirs(d)
with open(os.path.join(store, "..", "corpus.txt"), "rb") as f, open(os.path.join(d, "dataset.txt"), "wb") as g:
    g.write(f.read())
spec = {"job_id": job, "model_prefix": "models/" + model, "dataset_key": f"jobs/{job}/dataset.txt",
        "private_prefix": f"jobs/{job}/private", "public_prefix": f"jobs/{job}/public",
        "params": {"kind": "train", "steps": 4, "learning_rate": 3e-3, "warmup_steps": 1,
                   "batch_size": 2, "context_len": 16, "checkpoint_every": 2, "seed": 11},
        "budget": {"tokens": 1_000_000, "flops": 10**13, "checkpoint_bytes": 1 << 30, "max_seconds": 600},
        "salt": "0x" + "11" * 32}
with open(os.path.join(d, "spec.json"), "w") as f:
    json.dump(spec, f)
EOF
  chmod -R a+rwX "$tmp/store"
}
# The job definition's command and variables (infra/lib/posthuman-stack.ts), a local store for S3.
job_run() { # job_run ID [podman args...]
  local id=$1
  shift
  run_ "${driver[@]}" -v "$tmp/store:/store" -e POSTHUMAN_STORE_DIR=/store -e POSTHUMAN_THREADS=2 "$@" \
    "$image" posthuman-worker run --spec "jobs/$id/spec.json"
}
job gpu-queue
set +e
out=$(job_run gpu-queue -e POSTHUMAN_REQUIRE_GPU=1 2>&1); rc=$?
set -e
check "$([ $rc = 19 ] && echo 0 || echo 1)" "POSTHUMAN_REQUIRE_GPU=1: exit $rc (19 = NO_GPU)"
check "$(grep -q 'requires a GPU and none could be opened' <<<"$out" && echo 0 || echo 1)" \
  "the worker says why: $(grep -m1 -o 'this worker requires a GPU[^"]*' <<<"$out" || echo "${out:0:200}")"
check "$(grep -qi 'panick\|SIGSEGV\|core dumped' <<<"$out" && echo 1 || echo 0)" "no panic, no crash"
err="$tmp/store/jobs/gpu-queue/public/error.json"
check "$(python3 -c 'import json,sys; e=json.load(open(sys.argv[1])); sys.exit(0 if "gpu" in json.dumps(e).lower() else 1)' "$err" 2>/dev/null && echo 0 || echo 1)" \
  "error.json for the buyer: $(cat "$err" 2>/dev/null || echo none)"
check "$([ ! -e "$tmp/store/jobs/gpu-queue/private" ] && echo 0 || echo 1)" "nothing was trained (no private outputs)"
job cpu-fallback
set +e
t1=$SECONDS
out=$(job_run cpu-fallback 2>&1); rc=$?
set -e
check "$([ $rc = 0 ] && [ -s "$tmp/store/jobs/cpu-fallback/public/metrics.json" ] && echo 0 || echo 1)" \
  "without POSTHUMAN_REQUIRE_GPU the same job runs on the CPU to its metrics.json: exit $rc in $((SECONDS - t1)) s"
out=$(sed 's/\x1b\[[0-9;]*m//g' <<<"$out") # tracing's colours
check "$(grep -q 'no usable CUDA device, running on the CPU' <<<"$out" && grep -q CUDA_ERROR_NO_DEVICE <<<"$out" && echo 0 || echo 1)" \
  "and warns why: $(grep -m1 -o 'no usable CUDA device.*' <<<"$out" | cut -c1-160)"
[ $rc = 0 ] || tail -20 <<<"$out" | sed 's/^/    /'

echo
if [ $failures != 0 ]; then
  echo "check-cuda: $failures check(s) failed ($((SECONDS - t0)) s)" >&2
  exit 1
fi
echo "check-cuda: all checks passed on $image ($((SECONDS - t0)) s)"
