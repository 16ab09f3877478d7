# shellcheck shell=bash
# Sourced (not run) by run-worker-image.sh and run-lambdas.sh: AWS Batch as moto emulates it,
# running job containers through podman's Docker-compatible API socket.
#
#   start_docker_batch DIR    starts both in DIR (socket, logs); sets $batch_endpoint and
#                             appends their process-group ids to the caller's $pids array
#   docker_batch_logs DIR     prints the tails of their logs (on failure)
#
# moto's own server (the twins' keeps use_docker off for the other tests), on the host
# network so a job's container reaches LocalStack and anvil at 127.0.0.1. podman runs with
# localstack/podman-containers.conf: runc and the two rlimits it needs, which a Docker client
# cannot ask for. The caller kills "${pids[@]}" (as process groups) when it exits.

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
