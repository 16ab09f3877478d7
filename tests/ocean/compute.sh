#!/usr/bin/env bash
# Ocean's own client end to end (tests/ocean/compute.mjs): ocean.js, pinned in
# package-lock.json, discovers the demo's models from their DDOs on chain, buys, orders with
# initializeCompute + orderAsset / startOrder, runs infer and evaluate jobs through the Ocean
# Provider API and reads their results, and sees the refusals. Uses the debug binaries the
# workspace tests built (scripts/test.sh runs this after them); builds nothing itself.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/env.sh
bin=${POSTHUMAN_BIN_DIR:-$CARGO_TARGET_DIR/debug}
for b in posthuman posthuman-demo posthuman-worker posthuman-server; do
  [[ -x $bin/$b ]] || {
    echo "no $bin/$b: cargo build -p posthuman-cli -p posthuman-demo -p posthuman-worker -p posthuman-functions --bins" >&2
    exit 1
  }
done
tests/ocean/npm-ci.sh
node tests/ocean/compute.mjs
