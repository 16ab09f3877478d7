#!/usr/bin/env bash
# A storefront's direct upload through the data bucket's CORS, in headless Chromium, against
# the bucket the synthesized template creates in LocalStack's CloudFormation, with a URL the
# AWS presigner made (localstack/browser_cors.py says what is asserted). Needs infra/check.sh
# (infra/cdk.out), the twins up (`eval "$(localstack/twins.sh start)"`), web/node_modules
# (playwright-core; web/check.sh or `npm ci --prefix web`) and Debian's chromium.
# The presigner is functions' `presign_put` example: `$POSTHUMAN_BIN_DIR/examples/presign_put`
# (default the debug target dir's, which `cargo test` builds), built here if missing.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
CACHE=${POSTHUMAN_CACHE:-$HOME/.cache/posthuman}
[[ -f $ROOT/infra/cdk.out/Posthuman.template.json ]] ||
    { echo "browser-cors: no infra/cdk.out/Posthuman.template.json: run infra/check.sh" >&2; exit 1; }
[[ -d $ROOT/web/node_modules/playwright-core ]] ||
    npm ci --prefix "$ROOT/web" --no-audit --no-fund --loglevel=error
BIN=${POSTHUMAN_BIN_DIR:-${CARGO_TARGET_DIR:-$CACHE/target}/debug}
TOOL=$BIN/examples/presign_put
if [[ ! -x $TOOL ]]; then
    (cd "$ROOT" && cargo build --locked -q -p posthuman-functions --example presign_put)
    TOOL=${CARGO_TARGET_DIR:-$CACHE/target}/debug/examples/presign_put
fi
exec "$CACHE/venvs/moto-5.2.5/bin/python" -W ignore "$HERE/browser_cors.py" "$TOOL"
