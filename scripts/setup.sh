#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian machine, idempotently:
# Debian packages (only when missing), the pinned npm packages of contracts/ (anvil, solc-js,
# Ocean v4 and OpenZeppelin contracts). The AWS twins (LocalStack, moto) are set up by
# localstack/twins.sh when the tests start them.
#
#   scripts/setup.sh               what the demo needs (scripts/demo.sh)
#   scripts/setup.sh --storefront  also the storefront's build and browser checks: Debian's
#                                  wasm32 toolchain, chromium, sqlite3 (scripts/test.sh,
#                                  web/build.sh, web/check.sh)
# The demo never builds the storefront, so a newcomer's first `scripts/demo.sh` does not
# download the wasm toolchain and a browser it would not use.
set -euo pipefail
storefront=0
for arg in "$@"; do
  case $arg in
    --storefront) storefront=1 ;;
    *) echo "setup.sh: unknown argument $arg (expected --storefront)" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
. scripts/env.sh
. scripts/apt.sh

need_apt=()
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
command -v cc >/dev/null || need_apt+=(build-essential)
command -v pkg-config >/dev/null || need_apt+=(pkg-config)
# The storefront (web/build.sh): Debian's wasm32 Rust toolchain (the three rust packages are
# installed together so their versions match), its linker, the browser its test drives, and
# sqlite3, with which the test writes a 1,000-model catalogue straight into the API's database.
if [ $storefront = 1 ]; then
  mapfile -t -O ${#need_apt[@]} need_apt < <(missing_debs rustc-web cargo-web rust-web-src lld-22 chromium sqlite3)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${need_apt[*]}"
  install_debs "${need_apt[@]}"
fi

# npm ci only when the lock file changed since the last install (it wipes node_modules).
stamp=contracts/node_modules/.posthuman-lock.sha256
want=$(sha256sum contracts/package-lock.json | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: npm ci in contracts/"
  npm ci --prefix contracts --no-audit --no-fund --loglevel=error
  echo "$want" >"$stamp"
fi
