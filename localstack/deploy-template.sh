#!/usr/bin/env bash
# Deploys infra/cdk.out/Posthuman.template.json (from infra/check.sh) into emulated
# CloudFormation and asserts the deployed resources: moto's CloudFormation (a private
# in-process moto server) for the stack, LocalStack's ($POSTHUMAN_S3_ENDPOINT, from
# `eval "$(localstack/twins.sh start)"`) for the secret and the bucket/queue policies.
# What neither emulates is listed, with reasons, in deploy_template.py (SKIPPED).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${POSTHUMAN_CACHE:-$HOME/.cache/posthuman}
[[ -f $HERE/../infra/cdk.out/Posthuman.template.json ]] ||
    { echo "deploy-template: no infra/cdk.out/Posthuman.template.json: run infra/check.sh" >&2; exit 1; }
exec "$CACHE/venvs/moto-5.2.5/bin/python" -W ignore "$HERE/deploy_template.py" "$@"
