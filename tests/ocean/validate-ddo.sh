#!/usr/bin/env bash
# Ocean's own validator (@oceanprotocol/ddo-js, pinned in package-lock.json) on Posthuman's
# DDOs: the committed fixture (the Rust builder's output, kept equal by a posthuman-chain unit
# test) and the DDOs models carry on chain, read back from their MetadataCreated events into a
# temp dir: a root and a derived model set by posthuman-chain's `ddo` test on anvil, and the
# ones the API itself published in the e2e (a root, and the model its train job derived; the
# e2e needs the posthuman-worker binary, as in scripts/test.sh), and the DDOs the API set
# again when owners edited their cards (card_edit: a root; e2e: the derived model).
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/env.sh
here=tests/ocean
"$here/npm-ci.sh"
# scripts/test.sh sets POSTHUMAN_DDO_OUT for its workspace test run, which writes the DDOs:
# validate those instead of running the two tests again (a `-p` build resolves features
# differently and would rebuild half the workspace).
if [[ -n ${POSTHUMAN_DDO_OUT:-} && -f $POSTHUMAN_DDO_OUT/api-derived.json ]]; then
  out=$POSTHUMAN_DDO_OUT
else
  out=$(mktemp -d)
  trap 'rm -rf "$out"' EXIT
  POSTHUMAN_DDO_OUT="$out" cargo test -p posthuman-chain --locked --test ddo -q
  POSTHUMAN_DDO_OUT="$out" cargo test -p posthuman-functions --locked --test e2e -q
  POSTHUMAN_DDO_OUT="$out" cargo test -p posthuman-functions --locked --test card_edit -q
fi
for f in root derived api-root api-derived api-root-edited api-derived-edited; do
  [[ -f $out/$f.json ]] || { echo "no $f.json: its test did not run (e2e skipped?)" >&2; exit 1; }
done
node "$here/validate-ddo.mjs" "$here/fixtures" "$out"
