#!/usr/bin/env bash
# Side-by-side benchmark: the worker (candle) vs PyTorch + transformers, same model config
# (n_layer 4, n_embd 256, n_head 4, ctx 256, vocab 8000), same data (WikiText-2), batch 8,
# same thread count, interleaved runs, one process per measurement (peak RSS).
#
#   batch-worker/bench/bench.sh [ROUNDS]      (env: BENCH_THREADS=2, TRAIN_STEPS=20)
#
# Prints the numerical agreement (losses over 20 steps from the same initial weights and
# batches; perplexity), the HF round trip both ways, and a ratio table.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
ROUNDS="${1:-2}"
export BENCH_THREADS="${BENCH_THREADS:-2}"
STEPS="${TRAIN_STEPS:-20}"
DATA="${WIKITEXT:-$ROOT/data/wikitext-2}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/posthuman/target}"

VENV="$("$HERE/setup-venv.sh")"
PY="$VENV/bin/python"
# SKIP_BUILD=1 reuses an existing release binary (e.g. while other builds hold the lock).
[ "${SKIP_BUILD:-0}" = 1 ] || (cd "$ROOT" && cargo build --release -q -p posthuman-worker --bin worker-bench)
RB="$CARGO_TARGET_DIR/release/worker-bench"
WORK="$(mktemp -d)"
# Kept on failure for inspection (BENCH_KEEP=1 keeps it always).
trap 'st=$?; if [ "$st" = 0 ] && [ "${BENCH_KEEP:-0}" != 1 ]; then rm -rf "$WORK"; else echo "work dir kept: $WORK" >&2; fi' EXIT
export RAYON_NUM_THREADS="$BENCH_THREADS" OMP_NUM_THREADS="$BENCH_THREADS" MKL_NUM_THREADS="$BENCH_THREADS"

echo "== prepare (tokenizer on valid.txt, random-init model, eval on test.txt)"
"$RB" --dir "$WORK" prepare --train-text "$DATA/valid.txt" --eval-text "$DATA/test.txt"

echo "== numerical agreement (same init, same batches, $STEPS steps)"
"$RB" --dir "$WORK" agree --steps "$STEPS" > "$WORK/rust_agree.line"
"$PY" "$HERE/torch_bench.py" agree "$WORK" > "$WORK/torch_agree.json"
echo "== HF -> ours: a transformers-saved model evaluated by the worker"
"$PY" "$HERE/torch_bench.py" hf-save "$WORK" > "$WORK/hf_ppl.json"
"$RB" --dir "$WORK" eval --prefix models/hf > "$WORK/rust_hf.json"

for r in $(seq 1 "$ROUNDS"); do
  echo "== round $r (interleaved)"
  "$RB" --dir "$WORK" train --steps "$STEPS" > "$WORK/r_train_$r.json"
  "$PY" "$HERE/torch_bench.py" train "$WORK" "$STEPS" > "$WORK/t_train_$r.json"
  "$RB" --dir "$WORK" eval > "$WORK/r_eval_$r.json"
  "$PY" "$HERE/torch_bench.py" eval "$WORK" > "$WORK/t_eval_$r.json"
  "$RB" --dir "$WORK" gen --tokens 200 > "$WORK/r_gen_$r.json"
  "$PY" "$HERE/torch_bench.py" gen "$WORK" 200 > "$WORK/t_gen_$r.json"
done

"$PY" "$HERE/report.py" "$WORK" "$ROUNDS" "$BENCH_THREADS"
