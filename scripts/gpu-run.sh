#!/usr/bin/env bash
# Runs scripts/gpu-bundle.sh's archive on a GPU host, from the repository root (it needs no Rust
# and no build cache there):
#   1. every test of posthuman-gpt2 and posthuman-worker built with `cuda`: tests/cuda_smoke
#      compares a tiny model's logits, NLL and gradients on the GPU with the CPU's, and the
#      worker's job tests then train, infer and evaluate on the GPU (determinism with and
#      without dropout, resume after a stop or a SIGKILL ending on the same weights);
#   2. the side-by-side benchmark (batch-worker/bench) with both sides on the GPU: the worker's
#      `cuda` build against PyTorch + transformers (BENCH_DEVICE=cuda), numerical agreement
#      and a ratio table. Skipped when the host's python3 has no torch with CUDA.
#
#   scripts/gpu-run.sh ARCHIVE [OUT_DIR]   (env: GPU_BENCH=0 skips the benchmark; GPU_BENCH_ROUNDS=2,
#                                           TRAIN_STEPS=20)
#
# Needs the NVIDIA driver (>= 550: the kernels are CUDA 12.4 PTX for compute capability 7.0,
# JIT-compiled at first use) and CUDA 12's cuBLAS, cuRAND, NVRTC and runtime libraries: on the
# loader's path, or found under /usr/local, /usr/lib or /opt (a PyTorch cu12x install's
# nvidia/*/lib directories do). Exits non-zero if any test fails.
set -uo pipefail
cd "$(dirname "$0")/.."
archive=$1
out=${2:-/tmp/posthuman-gpu}
mkdir -p "$out"
t0=$SECONDS
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader

dirs=""
for so in libcuda.so.1 libcudart.so.12 libcublas.so.12 libcublasLt.so.12 libcurand.so.10 libnvrtc.so.12; do
  if ldconfig -p | grep -q "^[[:space:]]*$so "; then continue; fi
  f=$(find /usr/local /usr/lib /opt -name "$so" -print -quit 2>/dev/null)
  [ -n "$f" ] || { echo "gpu-run: warning: $so not found" >&2; continue; }
  dirs="$dirs:$(dirname "$f")"
done
export LD_LIBRARY_PATH="${dirs#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "gpu-run: LD_LIBRARY_PATH=$LD_LIBRARY_PATH"

# The archive holds paths relative to / (the CLI tests find the worker binary where cargo built
# it): extract there, and list the files as absolute paths.
tar -xJf "$archive" -C /
mapfile -t exes < <(tar -tJf "$archive" | grep -v '/$' | sed 's|^\.||')
worker=""; bench=""
for e in "${exes[@]}"; do
  case "$(basename "$e")" in posthuman-worker) worker=$e ;; worker-bench) bench=$e ;; esac
done
[ -n "$worker" ] && [ -n "$bench" ] || { echo "gpu-run: the archive has no worker binaries" >&2; exit 1; }
ldd "$worker" | grep -E 'cuda|cublas|curand|nvrtc'

failed=0
for e in "${exes[@]}"; do
  name=$(basename "$e")
  [ "$e" = "$worker" ] || [ "$e" = "$bench" ] && continue
  t=$SECONDS
  if "$e" --test-threads 4 --nocapture >"$out/$name.log" 2>&1; then st=ok; else st=FAILED; failed=1; fi
  echo "gpu-run: $name: $st in $((SECONDS - t)) s: $(grep -E '^test result' "$out/$name.log" | tail -1)"
  [ $st = ok ] || grep -E '^test .* FAILED$|panicked|assert' "$out/$name.log" | head -20
done
grep -h -E 'max \|cpu - gpu\||loss cpu|gradients agree|SKIPPED' "$out"/cuda_smoke-*.log

if [ "${GPU_BENCH:-1}" = 0 ]; then
  echo "gpu-run: benchmark skipped (GPU_BENCH=0)"
elif python3 -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  w="$out/bench"
  rm -rf "$w"; mkdir -p "$w"
  py="python3 batch-worker/bench/torch_bench.py"
  export BENCH_DEVICE=cuda BENCH_THREADS=${BENCH_THREADS:-2}
  rounds=${GPU_BENCH_ROUNDS:-2}; steps=${TRAIN_STEPS:-20}
  echo "== GPU side by side: prepare, agreement, $rounds rounds ($((SECONDS - t0)) s)"
  "$bench" --dir "$w" prepare --train-text data/wikitext-2/valid.txt --eval-text data/wikitext-2/test.txt \
    && "$bench" --dir "$w" agree --steps "$steps" >"$w/rust_agree.line" \
    && $py agree "$w" >"$w/torch_agree.json" \
    && $py hf-save "$w" >"$w/hf_ppl.json" \
    && "$bench" --dir "$w" eval --prefix models/hf >"$w/rust_hf.json" || failed=1
  for r in $(seq 1 "$rounds"); do
    "$bench" --dir "$w" train --steps "$steps" >"$w/r_train_$r.json"
    $py train "$w" "$steps" >"$w/t_train_$r.json"
    "$bench" --dir "$w" eval >"$w/r_eval_$r.json"
    $py eval "$w" >"$w/t_eval_$r.json"
    "$bench" --dir "$w" gen --tokens 200 >"$w/r_gen_$r.json"
    $py gen "$w" 200 >"$w/t_gen_$r.json"
  done
  python3 batch-worker/bench/report.py "$w" "$rounds" "GPU, $BENCH_THREADS CPU"
else
  echo "gpu-run: no PyTorch with CUDA here: benchmark skipped"
fi
echo "gpu-run: done in $((SECONDS - t0)) s, tests $([ $failed = 0 ] && echo passed || echo FAILED)"
exit $failed
