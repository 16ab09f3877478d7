#!/usr/bin/env bash
# The project's main command (README): installs what it needs, builds the demo and the worker,
# and plays the whole Alice → Elena story on a fresh embedded deployment. Extra arguments go
# to `posthuman-demo` (e.g. `--size tiny`, `--data-dir DIR`, `--json`).
#
# It uses the same (dev-profile) build as the tests, with the numeric crates optimised in
# Cargo.toml, so a machine that ran the tests builds almost nothing more.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
scripts/setup.sh
cargo build --locked -p posthuman-demo -p posthuman-worker
exec "$CARGO_TARGET_DIR/debug/posthuman-demo" --wikitext data/wikitext-2 "$@"
