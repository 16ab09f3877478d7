#!/usr/bin/env bash
# Local AWS twins for tests, without Docker: LocalStack (S3, SQS, SSM, Secrets Manager, ...)
# and moto (the AWS Batch API, also S3). Both listen on free loopback ports.
#
#   localstack/twins.sh setup            create/reuse the venvs (outside the checkout)
#   localstack/twins.sh start            start both (reuses running healthy twins), print env
#   localstack/twins.sh env              print `export POSTHUMAN_S3_ENDPOINT=... ` lines
#   localstack/twins.sh stop             stop both
#   localstack/twins.sh run -- CMD ...   start, run CMD with the env set, always stop after
#
# Typical: `localstack/twins.sh run -- cargo test -p posthuman-store`, or
#          `eval "$(localstack/twins.sh start)"; cargo test ...; localstack/twins.sh stop`.
#
# Env: POSTHUMAN_CACHE (default ~/.cache/posthuman: venvs/ live there),
#      POSTHUMAN_TWINS_DIR (pids, logs, endpoints; default $POSTHUMAN_CACHE/twins),
#      POSTHUMAN_LOCALSTACK_PYTHON (a Python >= 3.12), POSTHUMAN_MOTO_PYTHON (3.11 works).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${POSTHUMAN_CACHE:-$HOME/.cache/posthuman}
VENVS=$CACHE/venvs
STATE=${POSTHUMAN_TWINS_DIR:-$CACHE/twins}
LS_PY=${POSTHUMAN_LOCALSTACK_PYTHON:-/root/.pyenv/versions/3.13.0/bin/python3}
MOTO_PY=${POSTHUMAN_MOTO_PYTHON:-$(command -v python3.11 || echo /root/.pyenv/versions/3.11.7/bin/python3)}
# The last open-source LocalStack; it only installs with the pinned dependency set beside us.
LS_SPEC='localstack-core[runtime]==2026.3.0'
MOTO_SPEC='moto[server,batch,s3]==5.2.5'
LS_VENV=$VENVS/localstack-2026.3.0
MOTO_VENV=$VENVS/moto-5.2.5
HEALTH_TIMEOUT_S=${POSTHUMAN_TWINS_TIMEOUT_S:-120}
# Offline, LocalStack's CloudFormation cannot fetch its resource catalog and then refuses every
# type as "not supported" before looking for a provider. The types listed here skip that check
# (those with a community provider deploy; localstack/deploy_template.py uses them).
LS_CFN_TYPES=AWS::S3::Bucket,AWS::S3::BucketPolicy,AWS::SQS::Queue,AWS::SQS::QueuePolicy,AWS::SecretsManager::Secret,AWS::SSM::Parameter,AWS::IAM::Role,AWS::IAM::Policy,AWS::Events::Rule

log() { echo "twins: $*" >&2; }

# A venv is reused when its stamp matches what we would install now.
ensure_venv() { # dir python stamp pip-args...
    local dir=$1 py=$2 stamp=$3; shift 3
    if [[ -f $dir/.posthuman-stamp && $(cat "$dir/.posthuman-stamp") == "$stamp" ]]; then
        return 0
    fi
    log "creating $dir"
    rm -rf "$dir"
    "$py" -m venv "$dir"
    "$dir/bin/pip" install --quiet --disable-pip-version-check "$@"
    echo "$stamp" >"$dir/.posthuman-stamp"
}

setup() {
    mkdir -p "$VENVS"
    local cons_hash
    cons_hash=$(sha256sum "$HERE/localstack-constraints.txt" | cut -c1-16)
    # The two installs are independent: run them side by side.
    ensure_venv "$LS_VENV" "$LS_PY" "$LS_SPEC $cons_hash" \
        -c "$HERE/localstack-constraints.txt" "$LS_SPEC" &
    local ls_pid=$!
    ensure_venv "$MOTO_VENV" "$MOTO_PY" "$MOTO_SPEC" "$MOTO_SPEC" &
    local moto_pid=$!
    local rc=0
    wait "$ls_pid" || rc=1
    wait "$moto_pid" || rc=1
    [[ $rc == 0 ]] || { log "venv setup failed"; return 1; }
}

free_port() {
    "$MOTO_PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

healthy() { # endpoints file exists, both processes alive and answering
    [[ -f $STATE/env ]] && alive "$STATE/localstack.pid" && alive "$STATE/moto.pid" || return 1
    # shellcheck disable=SC1091
    (source "$STATE/env" &&
        curl -sf -o /dev/null "$POSTHUMAN_S3_ENDPOINT/_localstack/health" &&
        curl -sf -o /dev/null "$POSTHUMAN_MOTO_ENDPOINT/moto-api/data.json")
}

wait_for() { # name url pidfile
    local deadline=$((SECONDS + HEALTH_TIMEOUT_S))
    until curl -sf -o /dev/null "$2"; do
        if ! alive "$3"; then log "$1 died; log: $STATE/$1.log"; tail -20 "$STATE/$1.log" >&2; return 1; fi
        if ((SECONDS > deadline)); then log "$1 not healthy after ${HEALTH_TIMEOUT_S}s"; return 1; fi
        sleep 0.2
    done
}

start() {
    mkdir -p "$STATE"
    if healthy; then log "already running"; cat "$STATE/env"; return 0; fi
    stop_quiet
    setup
    local ls_port moto_port
    ls_port=$(free_port)
    moto_port=$(free_port)
    while [[ $moto_port == "$ls_port" ]]; do moto_port=$(free_port); done
    rm -rf "$STATE/localstack-fs"
    mkdir -p "$STATE/localstack-fs"
    # S3_SKIP_SIGNATURE_VALIDATION=0: S3 checks request signatures as AWS does, so presigned
    # upload URLs are refused once expired or altered (functions/tests/upload_contract.rs).
    # setsid: each twin leads its own process group, so stop can kill it with its children.
    GATEWAY_LISTEN=127.0.0.1:$ls_port LOCALSTACK_HOST=127.0.0.1:$ls_port \
        S3_SKIP_SIGNATURE_VALIDATION=0 SQS_ENDPOINT_STRATEGY=path FILESYSTEM_ROOT=$STATE/localstack-fs DISABLE_EVENTS=1 \
        DNS_ADDRESS=0 SKIP_SSL_CERT_DOWNLOAD=1 OVERRIDE_IN_DOCKER=0 \
        CFN_IGNORE_UNSUPPORTED_RESOURCE_TYPES=0 CFN_IGNORE_UNSUPPORTED_TYPE_CREATE=$LS_CFN_TYPES \
        setsid "$LS_VENV/bin/python" -m localstack.runtime.main \
        >"$STATE/localstack.log" 2>&1 </dev/null &
    echo $! >"$STATE/localstack.pid"
    setsid "$MOTO_VENV/bin/moto_server" -H 127.0.0.1 -p "$moto_port" \
        >"$STATE/moto.log" 2>&1 </dev/null &
    echo $! >"$STATE/moto.pid"
    wait_for moto "http://127.0.0.1:$moto_port/moto-api/data.json" "$STATE/moto.pid" || { stop_quiet; return 1; }
    # Batch jobs then go to SUCCEEDED without Docker: enough for submit-and-poll code.
    curl -sf -o /dev/null -X POST -H 'content-type: application/json' \
        -d '{"batch":{"use_docker":false},"lambda":{"use_docker":false}}' \
        "http://127.0.0.1:$moto_port/moto-api/config"
    wait_for localstack "http://127.0.0.1:$ls_port/_localstack/health" "$STATE/localstack.pid" || { stop_quiet; return 1; }
    cat >"$STATE/env" <<ENV
export POSTHUMAN_S3_ENDPOINT=http://127.0.0.1:$ls_port
export POSTHUMAN_MOTO_ENDPOINT=http://127.0.0.1:$moto_port
export AWS_ACCESS_KEY_ID=test
export AWS_SECRET_ACCESS_KEY=test
export AWS_REGION=us-east-1
ENV
    log "LocalStack on :$ls_port, moto on :$moto_port (logs in $STATE)"
    cat "$STATE/env"
}

# TERM both process groups at once, give them a second, then KILL: the twins keep nothing
# worth a graceful shutdown (LocalStack takes ~5 s to stop on TERM).
stop_quiet() {
    local pids=() f pid
    for f in "$STATE/localstack.pid" "$STATE/moto.pid"; do
        [[ -f $f ]] || continue
        pid=$(cat "$f")
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid")
        fi
        rm -f "$f"
    done
    for _ in $(seq 10); do
        local left=0
        for pid in ${pids[@]+"${pids[@]}"}; do kill -0 "$pid" 2>/dev/null && left=1; done
        ((left)) || break
        sleep 0.1
    done
    for pid in ${pids[@]+"${pids[@]}"}; do kill -KILL -- "-$pid" 2>/dev/null || true; done
    rm -f "$STATE/env"
}

cmd=${1:-}
shift || true
case $cmd in
setup) setup ;;
start) start ;;
stop) stop_quiet; log "stopped" ;;
env)
    [[ -f $STATE/env ]] || { log "not running: start with localstack/twins.sh start"; exit 1; }
    cat "$STATE/env" ;;
run)
    [[ ${1:-} == -- ]] && shift
    [[ $# -gt 0 ]] || { echo "usage: $0 run -- CMD..." >&2; exit 2; }
    # A private state dir: this run's twins are its own and always die with it.
    if [[ -z ${POSTHUMAN_TWINS_DIR:-} ]]; then
        STATE=$(mktemp -d "${TMPDIR:-/tmp}/posthuman-twins.XXXXXX")
        trap 'stop_quiet; rm -rf "$STATE"' EXIT
    else
        trap 'stop_quiet' EXIT
    fi
    export POSTHUMAN_TWINS_DIR=$STATE
    trap 'exit 130' INT TERM HUP
    env_lines=$(start)
    eval "$env_lines"
    "$@" ;;
*)
    sed -n '2,16p' "$0" >&2
    exit 2 ;;
esac
