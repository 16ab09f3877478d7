#!/usr/bin/env bash
# Ocean's own validator (@oceanprotocol/ddo-js, pinned in package-lock.json) on Posthuman's
# DDOs: the committed fixture (the Rust builder's output, kept equal by a posthuman-chain unit
# test) and the DDOs a root and a derived model carry on chain (read back from their
# MetadataCreated events by posthuman-chain's `ddo` test on anvil, written to a temp dir).
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/env.sh
here=tests/ocean
if [[ ! -d $here/node_modules/@oceanprotocol/ddo-js ]]; then
  npm ci --prefix "$here" --no-audit --no-fund
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
POSTHUMAN_DDO_OUT="$out" cargo test -p posthuman-chain --locked --test ddo -q
node "$here/validate-ddo.mjs" "$here/fixtures" "$out"
