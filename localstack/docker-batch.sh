# shellcheck shell=bash
# Sourced (not run) by run-worker-image.sh and run-lambdas.sh: AWS Batch as moto emulates it,
# running job containers through podman's Docker-compatible API socket.
#
#   start_docker_batch DIR    starts both in DIR (socket, logs); sets $batch_endpoint and
#                             appends their process-group ids to the caller's $pids array
#   docker_batch_logs DIR     prints the tails of their logs (on failure)
#   docker_batch_session NAME makes a run dir ($run_dir, removed on exit with the processes
#                             in $pids) and starts both there
#   build_test_image WHAT ARGS...
#                             builds the worker image (batch-worker/image/build.sh ARGS) and
#                             sets $image; where podman cannot run containers (build.sh's
#                             exit 3) it says WHAT was not run and exits the caller with 0, or
#                             1 under POSTHUMAN_REQUIRE_CONTAINERS=1
#   drop_test_tags IMAGE      keeps a test image's :debug tag, drops its commit tags
#
# moto's own server (the twins' keeps use_docker off for the other tests), on the host
# network so a job's container reaches LocalStack and anvil at 127.0.0.1. podman runs with
# localstack/podman-containers.conf: runc and the two rlimits it needs, which a Docker client
# cannot ask for. The caller kills "${pids[@]}" (as process groups) when it exits
# (docker_batch_session arranges that).

start_docker_batch() {
  local dir=$1 moto_venv="$POSTHUMAN_CACHE/venvs/moto-5.2.5" port
  CONTAINERS_CONF="$PWD/localstack/podman-containers.conf" setsid podman system service --time=0 \
    "unix://$dir/podman.sock" >"$dir/podman.log" 2>&1 </dev/null &
  pids+=($!)
  port=$("$moto_venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  DOCKER_HOST="unix://$dir/podman.sock" MOTO_DOCKER_NETWORK_MODE=host \
    setsid "$moto_venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$dir/moto.log" 2>&1 </dev/null &
  pids+=($!)
  batch_endpoint="http://127.0.0.1:$port"
  for _ in $(seq 100); do
    [ -S "$dir/podman.sock" ] && curl -sf -o /dev/null "$batch_endpoint/moto-api/data.json" && return 0
    sleep 0.2
  done
  echo "moto's Batch or podman's API socket did not come up:" >&2
  docker_batch_logs "$dir"
  return 1
}

docker_batch_logs() {
  echo "--- moto (Batch) log:" >&2; grep -v ' HTTP/1.1" ' "$1/moto.log" | tail -30 >&2
  echo "--- podman API service log:" >&2; tail -20 "$1/podman.log" >&2
}

docker_batch_session() {
  run_dir=$(mktemp -d "${TMPDIR:-/tmp}/posthuman-$1.XXXXXX")
  pids=()
  trap _docker_batch_cleanup EXIT
  start_docker_batch "$run_dir"
}

_docker_batch_cleanup() {
  local p
  for p in ${pids[@]+"${pids[@]}"}; do kill -TERM -- "-$p" 2>/dev/null || true; done
  rm -rf "$run_dir"
}

build_test_image() {
  local what=$1 rc=0 out msg
  shift
  out=$(batch-worker/image/build.sh "$@") || rc=$?
  if [ $rc = 3 ]; then
    msg="podman cannot run containers on this machine (see above): $what was NOT run"
    if [ "${POSTHUMAN_REQUIRE_CONTAINERS:-0}" = 1 ]; then echo "$msg" >&2; exit 1; fi
    printf '\n*** SKIPPED: %s ***\n\n' "$msg" >&2
    exit 0
  fi
  [ $rc = 0 ] || exit $rc
  image=$(sed -n 's/^image=\([^ ]*\) .*/\1/p' <<<"$out" | tail -1)
  echo "worker image: $out"
}

# A test image a commit built: its commit tags (short and full) go, :debug stays, so test
# images do not pile up; the next build removes this one when it replaces :debug.
drop_test_tags() {
  local id t
  id=$(podman image inspect --format '{{.Id}}' "$1")
  for t in $(podman image inspect --format '{{join .RepoTags " "}}' "$id"); do
    case $t in *:debug) ;; *) podman untag "$id" "$t" ;; esac
  done
}
