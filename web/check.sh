#!/usr/bin/env bash
# The storefront's checks beyond `cargo test -p posthuman-web` (scripts/test.sh runs this after
# the Rust tests): builds the wasm (web/build.sh), then the browser test — the tiny demo into a
# data dir, `posthuman-server --static-dir web/dist` over it, and headless Chromium driving the
# receipt view (web/tests/browser.mjs); then the whole story through the UI alone on a fresh
# deployment (web/tests/story.mjs), its wall time printed.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

web/build.sh
# Issue 14's budget: the module a storefront visitor downloads stays within 400 KB gzipped.
# A build over it fails here, with the figure, rather than being found in a later review.
budget=400000
gz=$(gzip -9c web/dist/posthuman_web_bg.wasm | wc -c)
if [ "$gz" -gt "$budget" ]; then
  echo "check.sh: the storefront's wasm is $gz bytes gzipped, over the $budget budget (web/README.md: where the bytes go)" >&2
  exit 1
fi
echo "check.sh: wasm $gz bytes gzipped (budget $budget)"
# The binaries the test runs (already built by the workspace tests; this only checks).
cargo build --locked -q -p posthuman-demo -p posthuman-worker -p posthuman-functions --bins
# playwright-core only (never `playwright install`: the browser is Debian's chromium).
stamp=web/node_modules/.posthuman-lock.sha256
want=$(sha256sum web/package-lock.json | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  npm ci --prefix web --no-audit --no-fund --loglevel=error
  echo "$want" >"$stamp"
fi
node web/tests/browser.mjs
t_story=$SECONDS
node web/tests/story.mjs
echo "web/check.sh: the browser story (web/tests/story.mjs) took $((SECONDS - t_story)) s wall time"
