#!/usr/bin/env bash
# Validates functions/openapi.json (generated from the route table and the wire types; see
# functions/src/openapi.rs) with a real validator: openapi-spec-validator (PyPI, pinned), which
# checks the document against the OpenAPI 3.1 schema and resolves every $ref. It lives in a venv
# under the build cache, outside the checkout, made once (~10 s).
#   functions/check-openapi.sh [FILE]     (default functions/openapi.json)
# That the committed file is the generated one is `cargo test -p posthuman-functions --test
# openapi`; this script checks what that test cannot: that the document is valid OpenAPI.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
pin="openapi-spec-validator==0.9.0"
venv="$POSTHUMAN_CACHE/venvs/openapi-spec-validator-0.9.0"
if [[ ! -x $venv/bin/openapi-spec-validator || $(cat "$venv/.posthuman-pin" 2>/dev/null) != "$pin" ]]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "$pin"
  echo "$pin" >"$venv/.posthuman-pin"
fi
file=${1:-functions/openapi.json}
"$venv/bin/openapi-spec-validator" --schema 3.1 "$file"
"$venv/bin/python" functions/check-openapi-examples.py "$file"
