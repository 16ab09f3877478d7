#!/usr/bin/env bash
# Installs tests/ocean's pinned npm packages (ddo-js, ocean.js) when package-lock.json changed
# since the last install (a stamp of its hash), so the Ocean checks run against exactly the
# locked versions without reinstalling every time.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
stamp=$here/node_modules/.posthuman-lock.sha256
want=$(sha256sum "$here/package-lock.json" | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  npm ci --prefix "$here" --no-audit --no-fund --loglevel=error
  echo "$want" >"$stamp"
fi
