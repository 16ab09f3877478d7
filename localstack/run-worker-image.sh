#!/usr/bin/env bash
# The worker's container image, built here without a registry (batch-worker/image/build.sh),
# runs real jobs against LocalStack's S3: a train job written as the API writes it, run with
# the Batch job definition's command and environment (from infra/cdk.out when synthesized),
# outputs checked in S3; and a bad dataset exits 40 (BAD_DATASET). Then both again as AWS Batch
# jobs: moto's Batch runs the image through podman's Docker-compatible API socket.
# run_worker_image.py says exactly what is checked.
#
#   localstack/run-worker-image.sh [--release | --binary PATH] [--image NAME]
#
# Needs the twins' environment (eval "$(localstack/twins.sh start)"). By default it builds and
# runs the DEBUG worker image (the tests build that binary anyway; a release build of the AWS
# SDK costs minutes on CI's two cores); --binary PATH puts that debug worker in the image
# instead of building one (scripts/test.sh passes the one its tests built); --release builds
# the release image; --image runs a given one. Skips, loudly and with exit 0, only when
# podman cannot run containers on this machine (build.sh's exit 3); with
# POSTHUMAN_REQUIRE_CONTAINERS=1 that fails instead.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

build_args=(--debug)
image=""
while [ $# -gt 0 ]; do
  case $1 in
  --release) build_args=() ;;
  --binary) build_args=(--debug --binary "${2:?--binary needs a path}"); shift ;;
  --image) image=${2:?--image needs a name}; shift ;;
  *) sed -n '2,16p' "$0" >&2; exit 2 ;;
  esac
  shift
done
: "${POSTHUMAN_S3_ENDPOINT:?no S3 twin: run under eval \"\$(localstack/twins.sh start)\"}"
t0=$SECONDS

# moto's Batch runs job containers through podman's Docker API (localstack/docker-batch.sh);
# both die with this script.
. localstack/docker-batch.sh
if [ -z "$image" ]; then
  build_test_image "the worker image" "${build_args[@]}"
  built_test_image=${build_args[0]:-}
  echo "worker image: built in ${SECONDS}s"
fi
t1=$SECONDS
MOTO_VENV="$POSTHUMAN_CACHE/venvs/moto-5.2.5"
docker_batch_session batch

rc=0
"$MOTO_VENV/bin/python" -W ignore localstack/run_worker_image.py --image "$image" \
  --batch-endpoint "$batch_endpoint" || rc=$?
if [ $rc != 0 ]; then
  docker_batch_logs "$run_dir"
  exit $rc
fi
if [ "${built_test_image:-}" = --debug ]; then drop_test_tags "$image"; fi
echo "worker image: build $((t1 - t0))s, jobs $((SECONDS - t1))s"
