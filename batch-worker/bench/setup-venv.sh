#!/usr/bin/env bash
# Creates the benchmark-only PyTorch + transformers venv OUTSIDE the checkout (idempotent).
# PyPI only has the CUDA build of torch (~540 MB wheel, ~4.6 GB installed, ~3.5 min); it
# runs on CPU. Never used by tests or the worker. `peft` makes the LoRA fixtures
# (crates/gpt2/tests/fixtures/make_lora_fixtures.py) and the LoRA comparison.
set -euo pipefail
VENV="${POSTHUMAN_CACHE:-$HOME/.cache/posthuman}/venvs/bench"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import torch, transformers, safetensors, peft' 2>/dev/null; then
  echo "$VENV"; exit 0
fi
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip >&2
"$VENV/bin/pip" install --quiet torch transformers safetensors peft >&2
echo "$VENV"
