#!/usr/bin/env bash
# Offline check of the AWS deployment: type-check, synth tests (node:test + CDK assertions),
# a full synth into cdk.out/ (cdk-nag's AwsSolutions pack: an unacknowledged finding fails it)
# and cfn-lint on the template. No AWS account or network needed
# after `npm ci` (the pinned toolchain in package-lock.json).
#
# Lambda bundles: $POSTHUMAN_LAMBDA_DIR or $CARGO_TARGET_DIR/lambda (cargo lambda build);
# when neither has them, stand-in files are used (the check is about the template).
set -euo pipefail
cd "$(dirname "$0")"
CACHE=${POSTHUMAN_CACHE:-$HOME/.cache/posthuman}

stamp=node_modules/.posthuman-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
    npm ci --no-audit --no-fund --loglevel=error
    echo "$want" >"$stamp"
fi

npx --no-install tsc -p .
node --test dist/test/

# Stand-ins live in temporary directories, removed on exit (never the real builds).
standins=()
trap 'rm -rf "${standins[@]}"' EXIT
lambda_dir=${POSTHUMAN_LAMBDA_DIR:-${CARGO_TARGET_DIR:-$CACHE/target}/lambda}
if [[ ! -f $lambda_dir/posthuman-api-lambda/bootstrap || ! -f $lambda_dir/posthuman-job-done-lambda/bootstrap || ! -f $lambda_dir/posthuman-publish-lambda/bootstrap ]]; then
    lambda_dir=$(mktemp -d)
    standins+=("$lambda_dir")
    for bin in posthuman-api-lambda posthuman-job-done-lambda posthuman-publish-lambda; do
        mkdir -p "$lambda_dir/$bin" && printf '#!/bin/sh\n' >"$lambda_dir/$bin/bootstrap"
    done
    echo "infra: no Lambda bundles built; synthesizing with stand-ins" >&2
fi
# The storefront: web/dist (web/build.sh) or $POSTHUMAN_STOREFRONT_DIR, else a stand-in page.
web_dir=${POSTHUMAN_STOREFRONT_DIR:-$PWD/../web/dist}
if [[ ! -f $web_dir/index.html ]]; then
    web_dir=$(mktemp -d)
    standins+=("$web_dir")
    printf '<!doctype html><title>Posthuman</title>\n' >"$web_dir/index.html"
    echo "infra: no storefront build (web/build.sh); synthesizing with a stand-in page" >&2
fi
rm -rf cdk.out
POSTHUMAN_LAMBDA_DIR=$lambda_dir POSTHUMAN_STOREFRONT_DIR=$web_dir node dist/bin/app.js

# cfn-lint is pinned in localstack/localstack-constraints.txt and installed in the twins' venv.
lint=$(command -v cfn-lint || echo "$CACHE/venvs/localstack-2026.3.0/bin/cfn-lint")
# W3005: CDK adds an explicit DependsOn beside a GetAtt on the Lambda role (harmless).
"$lint" --ignore-checks W3005 -- cdk.out/Posthuman.template.json
echo "infra: synth tests, synth (cdk-nag AwsSolutions clean) and cfn-lint passed"
