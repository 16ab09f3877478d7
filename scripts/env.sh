# Sourced by the project's scripts: one place for the cache and target locations.
# Build outputs and virtual environments live OUTSIDE the checkout so a fresh clone (CI) reuses
# them when they exist, and a cold machine still builds everything from scratch.
export POSTHUMAN_CACHE="${POSTHUMAN_CACHE:-$HOME/.cache/posthuman}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$POSTHUMAN_CACHE/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
mkdir -p "$POSTHUMAN_CACHE"
