#!/usr/bin/env bash
# Builds the storefront into web/dist/ (index.html, style.css, the wasm-bindgen JS and the
# wasm module), idempotently installing what it needs:
# - Debian's wasm32 toolchain (rustc-web, cargo-web, rust-web-src, lld-22) through
#   scripts/setup.sh --storefront: rustup here has no wasm32 std, so std is rebuilt from rust-web-src
#   (web/.cargo/config.toml: build-std, the wasm-ld-22 linker);
# - wasm-bindgen-cli at exactly the wasm-bindgen version in Cargo.lock, installed once into
#   ~/.cache/posthuman/tools (it must match the library byte for byte).
# Build outputs live in ~/.cache/posthuman/target-wasm (or $POSTHUMAN_WASM_TARGET), outside the
# checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
t0=$SECONDS

scripts/setup.sh --storefront

tools="$POSTHUMAN_CACHE/tools"
want=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/"/, "", $3); print $3; exit }' Cargo.lock)
if [ -z "$want" ]; then
  echo "build.sh: no wasm-bindgen in Cargo.lock" >&2
  exit 1
fi
have=$("$tools/bin/wasm-bindgen" --version 2>/dev/null | awk '{ print $2 }' || true)
if [ "$have" != "$want" ]; then
  echo "build.sh: installing wasm-bindgen-cli $want into $tools (one time, ~5 min)"
  # rustup's cargo: the CLI is a native tool (installed as RECIPES §4 found to work).
  cargo install wasm-bindgen-cli --version "$want" --root "$tools" --quiet
fi

# Size over speed (a storefront downloads it); the workspace's shared release profile is
# left alone, these apply to this build only. opt-level "z" over "s": on 2026-12-06 it took
# the gzipped module from 414,021 to 373,663 bytes, and the browser test verified each
# receipt as fast (0.3-0.6 s, both builds; the work is a few signature recoveries and hashes).
export CARGO_PROFILE_RELEASE_OPT_LEVEL=z
export CARGO_PROFILE_RELEASE_LTO=true
export CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1
export CARGO_PROFILE_RELEASE_PANIC=abort
export CARGO_PROFILE_RELEASE_DEBUG=false
# POSTHUMAN_WASM_TARGET: a private wasm target dir, for parallel worktrees (two builds sharing
# one overwrite each other's module).
target="${POSTHUMAN_WASM_TARGET:-$POSTHUMAN_CACHE/target-wasm}"
(
  cd web
  # Debian's toolchain by full path (rustup's proxies come first on PATH); RUSTC_BOOTSTRAP
  # lets its stable cargo take `-Z build-std` from web/.cargo/config.toml.
  RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$target" \
    /usr/bin/cargo build --release --locked --target wasm32-unknown-unknown -p posthuman-web
)

dist=web/dist
rm -rf "$dist.tmp"
mkdir -p "$dist.tmp"
# The function-name section is ~45% of the module (900 KB of Rust paths, ~110 KB gzipped)
# and serves only stack traces: shipped without it unless KEEP_NAMES=1 (size analysis).
names=--remove-name-section
[ -n "${KEEP_NAMES:-}" ] && names=
"$tools/bin/wasm-bindgen" --target web --no-typescript $names --out-dir "$dist.tmp" \
  --out-name posthuman_web "$target/wasm32-unknown-unknown/release/posthuman_web.wasm"
# Optional: WASM_OPT=/path/to/wasm-opt (binaryen ≥ 132, e.g. npm `binaryen@132`; Debian's is
# too old for these wasm features). Without the name section it buys little: on 2026-12-06
# -Oz took the module from 1,120,762 to 1,004,865 bytes but from 401,174 to 410,294 gzipped
# (its output compresses worse); most of its old ~50% came from dropping the names.
if [ -n "${WASM_OPT:-}" ]; then
  "$WASM_OPT" -Oz --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
    --enable-mutable-globals "$dist.tmp/posthuman_web_bg.wasm" -o "$dist.tmp/opt.wasm"
  mv "$dist.tmp/opt.wasm" "$dist.tmp/posthuman_web_bg.wasm"
fi
cp web/static/* "$dist.tmp/"
rm -rf "$dist"
mv "$dist.tmp" "$dist"
wasm="$dist/posthuman_web_bg.wasm"
echo "build.sh: $dist in $((SECONDS - t0)) s; wasm $(stat -c %s "$wasm") bytes, $(gzip -9c "$wasm" | wc -c) gzipped"
