#!/usr/bin/env bash
# The project's test command (README, .ci/run): installs what it needs, starts the local AWS
# twins, then runs formatting, lints, the contract-artifact check and every test.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
t0=$SECONDS
stage() { printf '\n== %s (t=%ss)\n' "$1" "$((SECONDS - t0))"; }

stage "setup"
scripts/setup.sh --storefront

stage "format"
cargo fmt --all -- --check

stage "contract artifacts are up to date"
node contracts/build.mjs --check

stage "AWS twins: virtual environments (LocalStack, moto, cfn-lint)"
localstack/twins.sh setup

stage "infrastructure as code (CDK synth tests + cfn-lint, offline)"
infra/check.sh

stage "AWS twins: start (LocalStack S3, moto Batch)"
eval "$(localstack/twins.sh start)"
trap 'localstack/twins.sh stop >/dev/null 2>&1 || true' EXIT
export POSTHUMAN_REQUIRE_TWINS=1

stage "CDK template deployed into moto's and LocalStack's CloudFormation, resources asserted"
localstack/deploy-template.sh

stage "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

# The GPU build (the production target on Batch, CUDA 12.4 for compute 7.0: scripts/cuda-env.sh)
# compiles candle's kernels to PTX and type-checks the cuda-gated code; no GPU needed (12.5 min
# cold on 2 busy cores on 2026-12-07, seconds warm).
stage "clippy, cuda feature (GPU build compiles)"
scripts/cuda-check.sh

stage "tests"
# The chain ddo test and the API e2e write the DDOs they read back from chain here, for
# Ocean's validator below.
export POSTHUMAN_DDO_OUT="$POSTHUMAN_CACHE/ddo-out"
rm -rf "$POSTHUMAN_DDO_OUT" && mkdir -p "$POSTHUMAN_DDO_OUT"
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$POSTHUMAN_CACHE/last-test.log"
# Re-print the per-binary summaries so the end of a long log says what ran.
grep -E '^test result:' "$POSTHUMAN_CACHE/last-test.log" | awk '
  { p += $4; f += $6; i += $8 }
  END { printf "\n(%d ignored)\ntotal: %d passed, %d failed\n", i, p, f }'

# On a CPU with AMX the large products above ran on it (ops/amx.rs), but the tiny reference
# models stay under its size threshold: run their PyTorch-parity tests (logits, perplexity,
# 20 training steps, PEFT adapters) again with every product on AMX. ~5 s, binaries reused.
stage "Llama/Qwen/LoRA reference tests with every product on AMX"
if grep -q amx_bf16 /proc/cpuinfo 2>/dev/null; then
  POSTHUMAN_AMX=always cargo test -p posthuman-gpt2 --locked --test llama --test qwen --test lora
else
  echo "this CPU has no AMX: the products above ran on the gemm crate only"
fi

# The API's OpenAPI document (generated; the tests above keep the committed file equal to it)
# against the OpenAPI 3.1 schema, every $ref resolved. ~1 s (the venv once, ~10 s).
stage "OpenAPI document validated (openapi-spec-validator)"
functions/check-openapi.sh

# The image AWS Batch runs, assembled here without a registry (debootstrap + podman), with the
# debug worker the tests just built; it runs a train job and a bad one against LocalStack's S3
# with the job definition's command (infra/cdk.out), directly and as moto Batch jobs through
# podman's Docker API. Skips loudly only if podman cannot run containers on the machine.
# ~2 min cold (debootstrap), ~20 s warm.
stage "worker container image (podman + runc) runs jobs against LocalStack's S3"
localstack/run-worker-image.sh --binary "$CARGO_TARGET_DIR/debug/posthuman-worker"

# The real Lambda binaries (the tests' debug builds) under cargo-lambda's Runtime API emulator,
# fed API Gateway v2 events by the CLI and EventBridge's Batch event: publish -> order ->
# submit -> moto's Batch runs the worker image -> job-done -> the derived model on chain with
# its reward. Prints the api function's cold start and the bundle sizes. Skips loudly only if
# podman cannot run containers. ~25 s warm.
stage "Lambda binaries under the Runtime API emulator: the story against the twins and anvil"
localstack/run-lambdas.sh

# A storefront's direct upload in headless Chromium, through the data bucket's CORS as the
# template deploys it (LocalStack's CloudFormation), with a URL from the AWS presigner (the
# `presign_put` example the tests built): the allowed origin's PUT arrives byte-exact, a foreign
# origin's is refused at the preflight. ~10 s.
stage "browser PUT through the data bucket's CORS (LocalStack, headless Chromium, AWS presigner)"
localstack/browser-cors.sh

stage "Ocean's DDO validator (@oceanprotocol/ddo-js) on the DDOs models carry"
tests/ocean/validate-ddo.sh

stage "ocean.js (@oceanprotocol/lib) buys, runs and reads jobs through the Ocean Provider API"
tests/ocean/compute.sh

stage "storefront: wasm build + receipt view in headless Chromium"
web/check.sh
stage "done"
