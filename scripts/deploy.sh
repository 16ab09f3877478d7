#!/usr/bin/env bash
# Deploys Posthuman to one AWS account and region from this checkout (infra/README.md, "Deploy").
#
#   scripts/deploy.sh --region eu-west-1 --account 123456789012 --rpc-url https://... [options]
#   scripts/deploy.sh --dry-run ...        print every step and its exact commands; run nothing
#
# Steps, in order (each skips what is already done, so a rerun converges):
#   1 preflight       inputs checked before anything runs; the credentials' account must be --account
#   2 lambda bundles  cargo-lambda (PyPI, with ziglang) in a venv under the build cache
#   3 storefront      web/build.sh -> web/dist
#   4 worker images   batch-worker/Dockerfile (CPU, tagged with the git commit) and
#                     batch-worker/Dockerfile.cuda (the GPU queue's, tagged commit + -cuda)
#   5 contracts       the address book: the SSM parameter's, --address-book FILE's, or a new
#                     deployment to the chain the RPC URL names (posthuman-deploy-contracts)
#   6 address book    written to the SSM parameter the stack's functions read
#   7 cdk deploy      the aws-cdk CLI pinned in infra/package-lock.json (bootstraps if needed)
#   8 image push      both images to the stack's WorkerRepository (ECR login); before step 7 when
#                     the stack exists, after it on the first deploy (the repository is the
#                     stack's). The stack's job definition runs the -cuda image
#   9 operator        the lineage contract's operator role handed from the deployer to the key
#                     the stack generated (Secrets Manager), the book in SSM naming it
#                     (posthuman-deploy-contracts --operator-env), and the operator topped
#                     up to --operator-eth of the chain's coin from the deployer (it pays the
#                     gas of every job's completion); a no-op once done
#
# Inputs (flag, or environment variable):
#   --region R           AWS_REGION / AWS_DEFAULT_REGION
#   --account N          POSTHUMAN_AWS_ACCOUNT (12 digits; must match the credentials)
#   --rpc-url URL        POSTHUMAN_RPC_URL (http(s)://...; printed only as "$POSTHUMAN_RPC_URL")
#   --image-tag SHA      default: git rev-parse HEAD (refused with uncommitted tracked changes
#                        unless --allow-dirty: the tag would name a commit the image is not)
#   --gpu-family F       p3 (default), g5 or g6
#   --address-book FILE  an existing deployment's book for this chain (skips deploying contracts)
#   --ocean-book FILE    when contracts are deployed: reuse the Ocean v4 deployment this book
#                        names on that chain (deploys only ModelLineage + PeerMarket)
#   --address-book-param NAME   SSM parameter (default /posthuman/address-book)
#   --operator-eth E     POSTHUMAN_OPERATOR_ETH: the least the operator holds after step 9, in
#                        ether (default 0.05; the deployer sends the shortfall; 0 sends nothing
#                        and only warns when it holds none)
#   POSTHUMAN_DEPLOYER_KEY      hex key paying for a contract deployment, and the contracts'
#                               owner, which hands the operator role over (step 9)
#   POSTHUMAN_CONTAINER_TOOL    docker (default when present) or podman
#   POSTHUMAN_LAMBDA_DIR, POSTHUMAN_STOREFRONT_DIR   prebuilt bundles / storefront: skip steps 2 / 3
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

die() {
    echo "deploy: $*" >&2
    exit 2
}
usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
}

dry_run=0
allow_dirty=0
region=${AWS_REGION:-${AWS_DEFAULT_REGION:-}}
account=${POSTHUMAN_AWS_ACCOUNT:-}
rpc_url=${POSTHUMAN_RPC_URL:-}
operator_eth=${POSTHUMAN_OPERATOR_ETH:-0.05}
image_tag=""
gpu_family=p3
book_file=""
ocean_book=""
book_param=/posthuman/address-book
stack=Posthuman
while [[ $# -gt 0 ]]; do
    case $1 in
    --dry-run) dry_run=1 ;;
    --allow-dirty) allow_dirty=1 ;;
    --region) region=${2:?--region needs a value}; shift ;;
    --account) account=${2:?--account needs a value}; shift ;;
    --rpc-url) rpc_url=${2:?--rpc-url needs a value}; shift ;;
    --image-tag) image_tag=${2:?--image-tag needs a value}; shift ;;
    --gpu-family) gpu_family=${2:?--gpu-family needs a value}; shift ;;
    --address-book) book_file=${2:?--address-book needs a file}; shift ;;
    --ocean-book) ocean_book=${2:?--ocean-book needs a file}; shift ;;
    --address-book-param) book_param=${2:?--address-book-param needs a name}; shift ;;
    --operator-eth) operator_eth=${2:?--operator-eth needs an amount of ether}; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
    esac
    shift
done

# --- 1. Inputs, checked before anything runs. -------------------------------------------------
[[ -n $region ]] || die "no AWS region: pass --region or set AWS_REGION (e.g. eu-west-1)"
[[ $region =~ ^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]+$ ]] || die "region '$region' is not an AWS region (e.g. eu-west-1)"
[[ -n $account ]] || die "no AWS account: pass --account or set POSTHUMAN_AWS_ACCOUNT (the 12-digit id the deploy must land in)"
[[ $account =~ ^[0-9]{12}$ ]] || die "account '$account' is not a 12-digit AWS account id"
[[ -n $rpc_url ]] || die "no RPC URL: pass --rpc-url or set POSTHUMAN_RPC_URL (the chain's JSON-RPC endpoint)"
[[ $rpc_url =~ ^https?://[^[:space:]/]+(/[^[:space:]]*)?$ ]] || die "the RPC URL is not an http(s):// URL"
if [[ $rpc_url =~ ^http://(127\.|localhost|\[::1\]) ]]; then
    die "the RPC URL is a loopback address: the Lambdas in AWS could not reach it"
fi
if [[ -z $image_tag ]]; then
    image_tag=$(git rev-parse HEAD 2>/dev/null) || die "no --image-tag and no git commit to take it from"
    if [[ $allow_dirty == 0 ]] && ! git diff --quiet HEAD -- 2>/dev/null; then
        die "tracked files differ from HEAD $image_tag: the worker image tag would name a commit the image is not (commit, pass --image-tag, or --allow-dirty)"
    fi
fi
[[ $image_tag =~ ^[0-9a-f]{7,40}$ ]] || die "image tag '$image_tag' is not a git commit (7 to 40 lowercase hex digits; the repository's tags are immutable)"
case $gpu_family in p3 | g5 | g6) ;; *) die "gpu family '$gpu_family': one of p3, g5, g6" ;; esac
[[ $operator_eth =~ ^[0-9]+(\.[0-9]{1,18})?$ ]] || die "--operator-eth '$operator_eth': an amount of ether such as 0.05 (0: send nothing)"
[[ $book_param =~ ^/[A-Za-z0-9_./-]+$ ]] || die "address book parameter '$book_param' is not an SSM parameter path (/a/b)"
if [[ -n $book_file ]]; then
    [[ -f $book_file ]] || die "--address-book $book_file: no such file"
    book_file=$(realpath "$book_file")
fi
if [[ -n $ocean_book ]]; then
    [[ -f $ocean_book ]] || die "--ocean-book $ocean_book: no such file"
    ocean_book=$(realpath "$ocean_book")
fi

# shellcheck source=scripts/env.sh
. scripts/env.sh
# Prebuilt bundles or storefront (CI artifacts, say) skip steps 2 and 3.
lambda_dir=${POSTHUMAN_LAMBDA_DIR:-$CARGO_TARGET_DIR/lambda}
storefront_dir=${POSTHUMAN_STOREFRONT_DIR:-$ROOT/web/dist}
if [[ -n ${POSTHUMAN_LAMBDA_DIR:-} ]]; then
    for bin in posthuman-api-lambda posthuman-job-done-lambda posthuman-publish-lambda; do
        [[ -f $lambda_dir/$bin/bootstrap ]] || die "POSTHUMAN_LAMBDA_DIR=$lambda_dir has no $bin/bootstrap"
    done
fi
if [[ -n ${POSTHUMAN_STOREFRONT_DIR:-} && ! -f $storefront_dir/index.html ]]; then
    die "POSTHUMAN_STOREFRONT_DIR=$storefront_dir has no index.html"
fi
image=posthuman-worker:$image_tag
# The GPU queue's image: the same commit built with the `cuda` feature (the stack's job
# definition names <WorkerImageTag>-cuda).
cuda_image=$image-cuda
registry=$account.dkr.ecr.$region.amazonaws.com
work=$POSTHUMAN_CACHE/deploy/$account-$region
book_out=$work/address-book.json
if [[ -n ${POSTHUMAN_CONTAINER_TOOL:-} ]]; then
    ctr=$POSTHUMAN_CONTAINER_TOOL
elif command -v docker >/dev/null; then
    ctr=docker
else
    ctr=podman
fi
export AWS_REGION=$region AWS_DEFAULT_REGION=$region CDK_DEFAULT_ACCOUNT=$account CDK_DEFAULT_REGION=$region
export CDK_DISABLE_CLI_TELEMETRY=true
# The steps' commands read the URL from here, never from their arguments (it may carry a key).
export POSTHUMAN_RPC_URL=$rpc_url

# cargo-lambda and the zig it links with, pinned, in a venv outside the checkout (like the
# CUDA toolkit in scripts/cuda-env.sh): rebuilt only when the pin changes.
lambda_pin="cargo-lambda==1.9.2 ziglang==0.17.0"
lambda_venv=$POSTHUMAN_CACHE/venvs/cargo-lambda

# --- How each step runs, or is only printed. ------------------------------------------------------
step_no=0
step() {
    step_no=$((step_no + 1))
    echo
    echo "[$step_no/9] $1"
    [[ $# -lt 2 ]] || echo "      $2"
}
# Runs a command, or prints it exactly (shell-quoted) under --dry-run.
run() {
    if [[ $dry_run == 1 ]]; then
        echo "    \$ $(printf '%q ' "$@" | sed 's/ $//')"
    else
        echo "    \$ $*" >&2
        "$@"
    fi
}
# A pipeline or redirection, given as one shell string (printed as it is written).
run_sh() {
    if [[ $dry_run == 1 ]]; then
        echo "    \$ $1"
    else
        echo "    \$ $1" >&2
        bash -c "$1"
    fi
}
# A question to AWS or the chain that decides what a step does; under --dry-run it is printed
# and answered "unknown", so the plan shows both branches.
ask() {
    if [[ $dry_run == 1 ]]; then
        echo "    ? $1"
        return 2
    fi
    bash -c "$1"
}

[[ $dry_run == 1 ]] && echo "deploy: DRY RUN: nothing below runs; each \$ line is a command a real run executes"
echo "deploy: stack $stack in account $account, $region; worker images $image_tag (CPU) and $image_tag-cuda (GPU queue); GPUs $gpu_family"

# --- 1. preflight ---------------------------------------------------------------------------
step "preflight" "tools on PATH, and the credentials' account is $account (never deploy to another)"
missing=()
for tool in aws cargo node npm python3 git "$ctr"; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if [[ $dry_run == 1 ]]; then
    [[ ${#missing[@]} == 0 ]] || echo "    note: not on PATH here: ${missing[*]} (a real run stops)"
    ask "aws sts get-caller-identity --query Account --output text   # must print $account" || true
else
    [[ ${#missing[@]} == 0 ]] || die "not on PATH: ${missing[*]}"
    caller=$(aws sts get-caller-identity --query Account --output text) || die "no AWS credentials (aws sts get-caller-identity failed)"
    [[ $caller == "$account" ]] || die "the credentials are for account $caller, not $account"
    mkdir -p "$work"
fi

# --- 2. Lambda bundles ------------------------------------------------------------------------
step "lambda bundles" "cargo lambda build (x86_64, provided.al2023) -> $lambda_dir/<bin>/bootstrap"
if [[ -n ${POSTHUMAN_LAMBDA_DIR:-} ]]; then
    echo "    prebuilt: POSTHUMAN_LAMBDA_DIR=$lambda_dir"
else
    if [[ $dry_run == 1 || ! -x $lambda_venv/bin/cargo-lambda || $(cat "$lambda_venv/.posthuman-pin" 2>/dev/null) != "$lambda_pin" ]]; then
        [[ $dry_run == 0 ]] || echo "    (the venv only when it is missing or its pin differs)"
        run rm -rf "$lambda_venv"
        run python3 -m venv "$lambda_venv"
        # shellcheck disable=SC2086 # the pin is two requirement specifiers
        run "$lambda_venv/bin/pip" install -q --disable-pip-version-check $lambda_pin
        run_sh "echo '$lambda_pin' >$lambda_venv/.posthuman-pin"
    fi
    # The venv's bin on PATH: cargo finds the `lambda` subcommand there, and it finds zig.
    run_sh "PATH=\"$lambda_venv/bin:\$PATH\" cargo lambda build --release --x86-64 -p posthuman-functions --bin posthuman-api-lambda --bin posthuman-job-done-lambda --bin posthuman-publish-lambda"
fi

# --- 3. Storefront ----------------------------------------------------------------------------
step "storefront" "web/build.sh -> $storefront_dir (the stack uploads it behind CloudFront)"
if [[ -n ${POSTHUMAN_STOREFRONT_DIR:-} ]]; then
    echo "    prebuilt: POSTHUMAN_STOREFRONT_DIR=$storefront_dir"
else
    run web/build.sh
fi

# --- 4. Worker images ------------------------------------------------------------------------
step "worker image" "$ctr build batch-worker/Dockerfile -> $image, batch-worker/Dockerfile.cuda -> $cuda_image"
# Each is skipped when built already (e.g. by batch-worker/image/build.sh [--cuda] with podman,
# which tags both with the full commit as here). The CUDA build compiles candle's kernels with
# nvcc: ~12 min on 2 cores, once per commit.
for df in Dockerfile:"$image" Dockerfile.cuda:"$cuda_image"; do
    file=batch-worker/${df%%:*}
    tag=${df#*:}
    if [[ ! -f $file ]]; then
        [[ $dry_run == 1 ]] || die "no $file in this checkout"
        echo "    NOT AVAILABLE in this checkout: no $file (a real run stops here)"
    fi
    if [[ $dry_run == 0 ]] && "$ctr" image inspect "$tag" >/dev/null 2>&1; then
        echo "    $tag is built already"
    else
        run "$ctr" build -f "$file" --build-arg "GIT_COMMIT=$image_tag" -t "$tag" .
    fi
done

# --- 5. Contracts -----------------------------------------------------------------------------
step "contracts" "the address book for the chain at \$POSTHUMAN_RPC_URL: SSM $book_param, --address-book, or a new deployment"
chain_id_cmd="curl -fsS -H 'content-type: application/json' --data '{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"eth_chainId\",\"params\":[]}' \"\$POSTHUMAN_RPC_URL\" | python3 -c 'import json,sys; print(int(json.load(sys.stdin)[\"result\"], 16))'"
get_book_cmd="aws ssm get-parameter --name $book_param --query Parameter.Value --output text"
# The contracts' deployer (crates/chain/src/bin/posthuman-deploy-contracts.rs): Ocean v4 +
# ModelLineage + PeerMarket, or only ours on --ocean-book's Ocean. It reads the RPC URL from
# $POSTHUMAN_RPC_URL and the key from the variable --key-env names, so neither is in its
# arguments (which any local user can list); an existing --out whose contracts have code on the
# chain is kept, so a rerun after a later step failed deploys nothing twice.
deploy_args=(--key-env POSTHUMAN_DEPLOYER_KEY --out "$book_out")
[[ -z $ocean_book ]] || deploy_args+=(--ocean-book "$ocean_book")
deploy_cmd="cargo run --release -q -p posthuman-chain --bin posthuman-deploy-contracts -- $(printf '%q ' "${deploy_args[@]}" | sed 's/ $//')"
book_source=""
if [[ $dry_run == 1 ]]; then
    ask "$chain_id_cmd   # the chain's id" || true
    if [[ -n $book_file ]]; then
        echo "    uses --address-book $book_file (its chain_id must be the chain's)"
        run cp "$book_file" "$book_out"
    else
        ask "$get_book_cmd   # a book whose chain_id is the chain's is kept" || true
        if [[ -n $ocean_book ]]; then
            echo "    if SSM has none for this chain, deploys ModelLineage + PeerMarket on the Ocean v4 that --ocean-book names (paid by \$POSTHUMAN_DEPLOYER_KEY):"
        else
            echo "    if SSM has none for this chain, deploys Ocean v4 + ModelLineage + PeerMarket (paid by \$POSTHUMAN_DEPLOYER_KEY):"
        fi
        echo "    \$ $deploy_cmd"
    fi
else
    rpc_chain=$(bash -c "$chain_id_cmd") || die "the RPC URL does not answer eth_chainId"
    book_chain() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["chain_id"])' "$1"; }
    if [[ -n $book_file ]]; then
        [[ $(book_chain "$book_file") == "$rpc_chain" ]] || die "--address-book $book_file is for chain $(book_chain "$book_file"), the RPC URL's is $rpc_chain"
        cp "$book_file" "$book_out"
        book_source="--address-book"
    elif current=$(bash -c "$get_book_cmd" 2>/dev/null) && printf '%s' "$current" >"$book_out.ssm" &&
        [[ $(book_chain "$book_out.ssm" 2>/dev/null) == "$rpc_chain" ]]; then
        mv "$book_out.ssm" "$book_out"
        book_source="ssm"
        echo "    SSM $book_param already holds this chain's book (chain $rpc_chain): contracts not redeployed"
    else
        [[ -n ${POSTHUMAN_DEPLOYER_KEY:-} ]] || die "no address book for chain $rpc_chain in SSM $book_param and no --address-book; deploying the contracts needs POSTHUMAN_DEPLOYER_KEY (the hex key that pays for them)"
        echo "    no address book for chain $rpc_chain in SSM $book_param: deploying the contracts"
        echo "    \$ $deploy_cmd" >&2
        cargo run --release -q -p posthuman-chain --bin posthuman-deploy-contracts -- "${deploy_args[@]}" ||
            die "the contract deployment failed: a half-finished one writes no book, so a rerun deploys them all again"
        book_source="deployed"
    fi
fi

# --- 6. Address book -> SSM ---------------------------------------------------------------------
step "address book" "SSM $book_param (the functions read it at cold start)"
if [[ $dry_run == 1 ]]; then
    echo "    written unless step 5 took the book from this parameter:"
    run aws ssm put-parameter --name "$book_param" --type String --overwrite --value "file://$book_out"
elif [[ $book_source == ssm ]]; then
    echo "    unchanged"
else
    run aws ssm put-parameter --name "$book_param" --type String --overwrite --value "file://$book_out" >/dev/null
fi

# --- 7. cdk deploy (and 8. the image push, before it when the stack exists) ---------------------
repo_cmd="aws cloudformation describe-stacks --stack-name $stack --query \"Stacks[0].Outputs[?OutputKey=='WorkerRepository'].OutputValue\" --output text"
push_image() { # repository URI: pushes the CPU and the CUDA image, each unless it is there
    local repo=$1
    local name=${repo#*/} tag local_image logged_in=0
    for tag in "$image_tag" "$image_tag-cuda"; do
        local_image=posthuman-worker:$tag
        if [[ $dry_run == 0 ]] && aws ecr describe-images --repository-name "$name" --image-ids "imageTag=$tag" >/dev/null 2>&1; then
            echo "    $repo:$tag is pushed already (the repository's tags are immutable)"
            continue
        fi
        if [[ $logged_in == 0 ]]; then
            run_sh "aws ecr get-login-password --region $region | $ctr login --username AWS --password-stdin $registry"
            logged_in=1
        fi
        run_sh "$ctr tag $local_image $repo:$tag"
        run_sh "$ctr push $repo:$tag"
    done
}
existing_repo=""
if [[ $dry_run == 0 ]]; then
    existing_repo=$(bash -c "$repo_cmd" 2>/dev/null || true)
fi

step "cdk deploy" "infra/ with the pinned aws-cdk CLI; bootstraps the account/region once"
if [[ $dry_run == 1 ]]; then
    ask "$repo_cmd   # the stack exists: push the image (step 8) before deploying" || true
fi
if [[ -n $existing_repo && $existing_repo != None ]]; then
    echo "    the stack exists: pushing the images first, so no job names a tag the repository lacks"
    push_image "$existing_repo"
fi
run_sh "cd infra && npm ci --no-audit --no-fund --loglevel=error && npx --no-install tsc -p ."
if ask "aws cloudformation describe-stacks --stack-name CDKToolkit >/dev/null 2>&1   # bootstrapped?"; then
    :
else
    [[ $dry_run == 1 ]] && echo "    if not bootstrapped:"
    run_sh "cd infra && npx --no-install cdk bootstrap aws://$account/$region"
fi
# npx --no-install: the CLI in infra/node_modules (pinned by package-lock.json), never a download.
cdk=(npx --no-install cdk deploy "$stack" --require-approval never
    -c "workerImageTag=$image_tag" -c "gpuFamily=$gpu_family" -c "addressBookParam=$book_param"
    --outputs-file "$work/outputs.json")
if [[ $dry_run == 1 ]]; then
    echo "    \$ cd infra && POSTHUMAN_LAMBDA_DIR=$lambda_dir POSTHUMAN_STOREFRONT_DIR=$storefront_dir $(printf '%q ' "${cdk[@]}")--parameters RpcUrl=\"\$POSTHUMAN_RPC_URL\""
else
    echo "    \$ cd infra && ${cdk[*]} --parameters RpcUrl=\$POSTHUMAN_RPC_URL" >&2
    (cd infra && POSTHUMAN_LAMBDA_DIR=$lambda_dir POSTHUMAN_STOREFRONT_DIR=$storefront_dir \
        "${cdk[@]}" --parameters "RpcUrl=$rpc_url")
fi

# --- 8. Image push (first deploy: the repository exists only now) ------------------------------
step "image push" "$image and $cuda_image -> the stack's WorkerRepository"
if [[ $dry_run == 1 ]]; then
    echo "    (before step 7 when the stack exists; on the first deploy, here)"
    push_image "$registry/<WorkerRepository output>"
elif [[ -z $existing_repo || $existing_repo == None ]]; then
    repo=$(bash -c "$repo_cmd") || repo=""
    [[ -n $repo && $repo != None ]] || die "the stack has no WorkerRepository output after the deploy"
    push_image "$repo"
else
    echo "    pushed before the deploy"
fi

# --- 9. Operator hand-over ---------------------------------------------------------------------
# The stack generates the key its functions sign and send with; the contracts' deployer is their
# operator until it hands the role over (as the lineage contract's owner). Until then job-done
# refuses its cold start and no job can complete. The key goes from Secrets Manager into this
# process's environment only (never an argument, never printed).
step "operator" "the lineage contract's operator role to the stack's generated key; the book in SSM names it"
secret_cmd="aws cloudformation describe-stack-resources --stack-name $stack --query \"StackResources[?starts_with(LogicalResourceId, 'OperatorKey')].PhysicalResourceId\" --output text"
op_args=(--key-env POSTHUMAN_DEPLOYER_KEY --operator-env POSTHUMAN_OPERATOR_KEY --out "$book_out")
# Zero in any spelling (0, 0.0, 00.000) sends nothing.
[[ $operator_eth =~ ^0*(\.0*)?$ ]] || op_args+=(--fund-operator "$operator_eth")
op_cmd="cargo run --release -q -p posthuman-chain --bin posthuman-deploy-contracts -- $(printf '%q ' "${op_args[@]}" | sed 's/ $//')"
if [[ $dry_run == 1 ]]; then
    ask "$secret_cmd   # the stack's OperatorKey secret" || true
    echo "    its value into POSTHUMAN_OPERATOR_KEY (never printed): aws secretsmanager get-secret-value --secret-id <that ARN> --query SecretString --output text"
    echo "    \$ $op_cmd"
    echo "    if that changed the book's operator:"
    run aws ssm put-parameter --name "$book_param" --type String --overwrite --value "file://$book_out"
else
    secret_arn=$(bash -c "$secret_cmd") || die "cannot list the stack's resources to find its OperatorKey secret"
    [[ $secret_arn == arn:* && $secret_arn != *[[:space:]]* ]] || die "the stack $stack has no single OperatorKey secret (found '$secret_arn')"
    [[ -n ${POSTHUMAN_DEPLOYER_KEY:-} ]] || die "handing the operator role to the stack's key needs POSTHUMAN_DEPLOYER_KEY (the contracts' owner)"
    POSTHUMAN_OPERATOR_KEY=$(aws secretsmanager get-secret-value --secret-id "$secret_arn" --query SecretString --output text) ||
        die "cannot read the operator key secret $secret_arn"
    export POSTHUMAN_OPERATOR_KEY
    before=$(sha256sum "$book_out")
    echo "    \$ $op_cmd" >&2
    cargo run --release -q -p posthuman-chain --bin posthuman-deploy-contracts -- "${op_args[@]}" ||
        die "the operator hand-over failed (the stack's functions cannot complete jobs until it is done; rerun)"
    unset POSTHUMAN_OPERATOR_KEY
    if [[ $(sha256sum "$book_out") != "$before" ]]; then
        run aws ssm put-parameter --name "$book_param" --type String --overwrite --value "file://$book_out" >/dev/null
    else
        echo "    the book already names the stack's operator"
    fi
fi

echo
if [[ $dry_run == 1 ]]; then
    echo "deploy: dry run done: 9 steps printed, nothing run"
else
    echo "deploy: done; outputs (ApiUrl, StorefrontUrl, WorkerRepository, ...) in $work/outputs.json"
fi
