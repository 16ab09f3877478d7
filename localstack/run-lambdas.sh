#!/usr/bin/env bash
# The real Lambda binaries (posthuman-api-lambda, posthuman-publish-lambda, posthuman-job-done-lambda) under a Lambda
# Runtime API emulator, `cargo lambda watch --only-lambda-apis` (cargo-lambda 1.9.2 from PyPI,
# in the venv scripts/deploy.sh uses), fed API Gateway v2 and EventBridge events, against
# LocalStack's S3/SSM/Secrets Manager, moto's Batch (running the worker image through podman's
# Docker API) and anvil: publish -> buy -> order -> submit -> the worker image runs the job ->
# job-done -> the derived model on chain with its rewards. run_lambdas.py says exactly what is
# checked, and prints the api function's cold start and the bundle sizes.
#
#   localstack/run-lambdas.sh [--image NAME]
#
# Needs the twins' environment (eval "$(localstack/twins.sh start)") and the debug binaries
# posthuman, posthuman-api-lambda, posthuman-job-done-lambda, posthuman-publish-lambda, posthuman-deploy-contracts and
# posthuman-worker in $POSTHUMAN_BIN_DIR (default $CARGO_TARGET_DIR/debug: what the workspace
# tests built; this script builds no Rust). Builds the debug worker image around that worker
# (batch-worker/image/build.sh, cached) unless --image names one. Skips, loudly and with
# exit 0, only when podman cannot run containers on this machine (build.sh's exit 3); with
# POSTHUMAN_REQUIRE_CONTAINERS=1 that fails instead.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

image=""
while [ $# -gt 0 ]; do
  case $1 in
  --image) image=${2:?--image needs a name}; shift ;;
  *) sed -n '2,18p' "$0" >&2; exit 2 ;;
  esac
  shift
done
: "${POSTHUMAN_S3_ENDPOINT:?no S3 twin: run under eval \"\$(localstack/twins.sh start)\"}"
t0=$SECONDS
bin=${POSTHUMAN_BIN_DIR:-$CARGO_TARGET_DIR/debug}
for b in posthuman posthuman-api-lambda posthuman-job-done-lambda posthuman-publish-lambda posthuman-deploy-contracts posthuman-worker; do
  [[ -x $bin/$b ]] || {
    echo "no $bin/$b: cargo build -p posthuman-cli -p posthuman-functions -p posthuman-chain -p posthuman-worker --bins" >&2
    exit 1
  }
done
anvil=${POSTHUMAN_ANVIL:-$PWD/contracts/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil}
[[ -x $anvil ]] || { echo "no anvil at $anvil: npm ci --prefix contracts (scripts/setup.sh)" >&2; exit 1; }

# cargo-lambda, pinned, in deploy.sh's venv and with deploy.sh's pin (read from it, so both
# keep one venv). Only its emulator is used here, but cargo-lambda's PyPI package depends on
# ziglang anyway (unpinned, it would pull another version), so the pin is deploy.sh's whole.
lambda_pin=$(sed -n 's/^lambda_pin="\(.*\)"$/\1/p' scripts/deploy.sh)
[[ $lambda_pin == *cargo-lambda==* ]] || { echo "no lambda_pin in scripts/deploy.sh" >&2; exit 1; }
lambda_venv=$POSTHUMAN_CACHE/venvs/cargo-lambda
cargo_lambda=$lambda_venv/bin/cargo-lambda
if [[ ! -x $cargo_lambda || $(cat "$lambda_venv/.posthuman-pin" 2>/dev/null) != "$lambda_pin" ]]; then
  rm -rf "$lambda_venv"
  python3 -m venv "$lambda_venv"
  # shellcheck disable=SC2086 # the pin is several requirement specifiers
  "$lambda_venv/bin/pip" install -q --disable-pip-version-check $lambda_pin
  echo "$lambda_pin" >"$lambda_venv/.posthuman-pin"
fi

. localstack/docker-batch.sh
if [ -z "$image" ]; then
  build_test_image "the Lambdas' story (its Batch job runs the worker image)" \
    --debug --binary "$bin/posthuman-worker"
  built_test_image=1
fi
t1=$SECONDS
MOTO_VENV="$POSTHUMAN_CACHE/venvs/moto-5.2.5"
docker_batch_session lambdas

# The Runtime API emulator (no compiling: --only-lambda-apis). It names functions after the
# workspace's binaries; each function process polls /.rt/<binary>/2018-06-01/runtime/...
emu_port=$("$MOTO_VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
setsid "$cargo_lambda" lambda watch --only-lambda-apis --invoke-address 127.0.0.1 \
  --invoke-port "$emu_port" >"$run_dir/cargo-lambda.log" 2>&1 </dev/null &
pids+=($!)
# Ready when it listens (any HTTP request outside /.rt and the Invoke API would queue an
# event for its default function).
for _ in $(seq 150); do
  (: <"/dev/tcp/127.0.0.1/$emu_port") 2>/dev/null && break
  sleep 0.2
done

rc=0
PYTHONDONTWRITEBYTECODE=1 "$MOTO_VENV/bin/python" -W ignore localstack/run_lambdas.py --bin-dir "$bin" --image "$image" \
  --emulator-port "$emu_port" --cargo-lambda "$cargo_lambda" --batch-endpoint "$batch_endpoint" \
  --anvil "$anvil" --work "$run_dir" --release-dir "$CARGO_TARGET_DIR" || rc=$?
if [ $rc != 0 ]; then
  echo "--- cargo lambda watch log:" >&2; tail -30 "$run_dir/cargo-lambda.log" >&2
  docker_batch_logs "$run_dir"
  exit $rc
fi
if [ "${built_test_image:-0}" = 1 ]; then drop_test_tags "$image"; fi
echo "lambdas: image $((t1 - t0))s, story $((SECONDS - t1))s"
