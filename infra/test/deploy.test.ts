// scripts/deploy.sh: its --dry-run prints every step in order with the commands a real run
// executes, and runs none of them (each tool it could call is a stand-in on PATH that records
// any call); bad or missing inputs stop it before anything, with a message naming the input.
import { test } from "node:test";
import * as assert from "node:assert/strict";
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";

const root = path.join(__dirname, "../../..");
const script = path.join(root, "scripts/deploy.sh");
const RPC_SECRET = "k3y-in-the-url-0123456789";
/** The operator key the stack generated (the stand-in Secrets Manager's value): never printed. */
const OPERATOR_KEY = "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";

/** Tools a real deploy calls; under --dry-run none may run. Each stand-in logs its call and fails. */
const TOOLS = ["aws", "cargo", "docker", "podman", "npm", "npx", "node", "curl", "python3", "pip", "web-build"];

interface Sandbox {
  dir: string;
  calls: string;
  cache: string;
  /** Where the stand-ins keep what "AWS" holds between runs (the stack, SSM, ECR). */
  state: string;
}

/** A directory with stand-ins for every tool (`stubs` replaces a stand-in's body). */
function sandbox(stubs: Record<string, string> = {}): Sandbox {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "posthuman-deploy-"));
  const bin = path.join(dir, "bin");
  const calls = path.join(dir, "calls.log");
  const state = path.join(dir, "state");
  fs.mkdirSync(bin);
  fs.mkdirSync(state);
  for (const tool of TOOLS) {
    const body = (stubs[tool] ?? "exit 97").replaceAll("$STATE", state);
    fs.writeFileSync(path.join(bin, tool), `#!/bin/sh\necho "${tool} $*" >>"${calls}"\n${body}\n`, { mode: 0o755 });
  }
  return { dir, calls, cache: path.join(dir, "cache"), state };
}

/** Runs deploy.sh in `sb`; `called` is what the stand-ins were asked in this run, in order. */
function deployIn(sb: Sandbox, args: string[], env: Record<string, string | undefined> = {}) {
  fs.rmSync(sb.calls, { force: true });
  const base: Record<string, string | undefined> = {
    PATH: `${path.join(sb.dir, "bin")}:${process.env.PATH}`,
    HOME: sb.dir,
    POSTHUMAN_CACHE: sb.cache,
    CARGO_TARGET_DIR: path.join(sb.cache, "target"),
    POSTHUMAN_CONTAINER_TOOL: "docker",
    AWS_REGION: "eu-west-1",
    POSTHUMAN_AWS_ACCOUNT: "123456789012",
    POSTHUMAN_RPC_URL: `https://rpc.example.org/v3/${RPC_SECRET}`,
    POSTHUMAN_DEPLOYER_KEY: "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
  };
  const merged = { ...base, ...env };
  for (const [k, v] of Object.entries(merged)) if (v === undefined) delete merged[k];
  const r = spawnSync("bash", [script, ...args], { cwd: sb.dir, env: merged as NodeJS.ProcessEnv, encoding: "utf8" });
  const called = fs.existsSync(sb.calls) ? fs.readFileSync(sb.calls, "utf8") : "";
  const cacheEntries = fs.existsSync(sb.cache) ? fs.readdirSync(sb.cache) : [];
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, called, cacheEntries };
}

function deploy(args: string[], env: Record<string, string | undefined> = {}, stubs: Record<string, string> = {}) {
  return deployIn(sandbox(stubs), args, env);
}

test("deploy --dry-run prints the nine steps in order with their commands, and runs nothing", () => {
  const r = deploy(["--dry-run", "--image-tag", "abcdef1", "--gpu-family", "g5"]);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.called, "", "the dry run called a tool");
  assert.deepEqual(r.cacheEntries, [], "the dry run wrote to the build cache");
  const steps = ["preflight", "lambda bundles", "storefront", "worker image", "contracts", "address book", "cdk deploy", "image push", "operator"];
  let at = 0;
  for (const [i, name] of steps.entries()) {
    const header = `[${i + 1}/9] ${name}`;
    const found = r.stdout.indexOf(header, at);
    assert.ok(found >= at, `no "${header}" after position ${at} in:\n${r.stdout}`);
    at = found;
  }
  // What each step would run, in the step it belongs to.
  const section = (name: string) => {
    const i = steps.indexOf(name);
    const start = r.stdout.indexOf(`[${i + 1}/9] ${name}`);
    const end = i + 1 < steps.length ? r.stdout.indexOf(`[${i + 2}/9]`) : r.stdout.length;
    return r.stdout.slice(start, end);
  };
  assert.match(section("preflight"), /aws sts get-caller-identity/);
  assert.match(section("lambda bundles"), /pip install .*cargo-lambda==[0-9.]+ ziglang==[0-9.]+/);
  assert.match(section("lambda bundles"), /cargo lambda build --release --x86-64 -p posthuman-functions --bin posthuman-api-lambda --bin posthuman-job-done-lambda --bin posthuman-publish-lambda/);
  assert.match(section("storefront"), /\$ web\/build\.sh/);
  assert.match(section("worker image"), /\$ docker build -f batch-worker\/Dockerfile --build-arg GIT_COMMIT=abcdef1 -t posthuman-worker:abcdef1 \./);
  // The GPU queue's image: the CUDA variant of the same commit, tagged <commit>-cuda.
  assert.match(section("worker image"), /\$ docker build -f batch-worker\/Dockerfile\.cuda --build-arg GIT_COMMIT=abcdef1 -t posthuman-worker:abcdef1-cuda \./);
  assert.doesNotMatch(r.stdout, /WARNING|NOT AVAILABLE/);
  assert.match(section("contracts"), /aws ssm get-parameter --name \/posthuman\/address-book/);
  assert.match(section("contracts"), /eth_chainId/);
  // The deployer exists: the plan runs it, with the key's variable and the RPC URL only in the
  // environment (not its arguments), and nothing is missing from this checkout.
  assert.match(section("contracts"), /deploys Ocean v4 \+ ModelLineage \+ PeerMarket/);
  assert.match(section("contracts"), /\$ cargo run --release -q -p posthuman-chain --bin posthuman-deploy-contracts -- --key-env POSTHUMAN_DEPLOYER_KEY --out \S+\/address-book\.json\n/);
  assert.doesNotMatch(section("contracts"), /NOT AVAILABLE|--rpc-url/);
  assert.match(section("address book"), /\$ aws ssm put-parameter --name \/posthuman\/address-book --type String --overwrite --value file:\/\//);
  const cdk = section("cdk deploy");
  assert.match(cdk, /cdk bootstrap aws:\/\/123456789012\/eu-west-1/);
  assert.match(cdk, /npx --no-install cdk deploy Posthuman --require-approval never -c workerImageTag=abcdef1 -c gpuFamily=g5 -c addressBookParam=\/posthuman\/address-book/);
  assert.match(cdk, /--parameters RpcUrl="\$POSTHUMAN_RPC_URL"/);
  const push = section("image push");
  assert.match(push, /aws ecr get-login-password --region eu-west-1 \| docker login --username AWS --password-stdin 123456789012\.dkr\.ecr\.eu-west-1\.amazonaws\.com/);
  assert.match(push, /\$ docker push 123456789012\.dkr\.ecr\.eu-west-1\.amazonaws\.com\/.*:abcdef1\n/);
  assert.match(push, /\$ docker tag posthuman-worker:abcdef1-cuda 123456789012\.dkr\.ecr\.eu-west-1\.amazonaws\.com\/.*:abcdef1-cuda\n/);
  assert.match(push, /\$ docker push 123456789012\.dkr\.ecr\.eu-west-1\.amazonaws\.com\/.*:abcdef1-cuda\n/);
  assert.equal(push.match(/docker login/g)?.length, 1, "one ECR login for both pushes");
  // The operator hand-over: the stack's secret found by its logical id, its value read into the
  // environment, the deployer's binary run with both keys' variable names only.
  const op = section("operator");
  assert.match(op, /aws cloudformation describe-stack-resources --stack-name Posthuman .*starts_with\(LogicalResourceId, 'OperatorKey'\)/);
  assert.match(op, /aws secretsmanager get-secret-value --secret-id/);
  // ...and tops the operator up to 0.05 ETH by default: it pays every completion's gas.
  assert.match(op, /\$ cargo run --release -q -p posthuman-chain --bin posthuman-deploy-contracts -- --key-env POSTHUMAN_DEPLOYER_KEY --operator-env POSTHUMAN_OPERATOR_KEY --out \S+\/address-book\.json --fund-operator 0\.05\n/);
  assert.match(op, /\$ aws ssm put-parameter --name \/posthuman\/address-book /);
  // Secrets stay out of the plan: the RPC URL (it may carry an API key) and the deployer key.
  for (const out of [r.stdout, r.stderr]) {
    assert.ok(!out.includes(RPC_SECRET), "the RPC URL's key is printed");
    assert.ok(!out.includes("ac0974bec39a17e3"), "the deployer key is printed");
  }
});

test("deploy --dry-run with --address-book uses that book instead of deploying contracts", () => {
  const book = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "posthuman-book-")), "book.json");
  fs.writeFileSync(book, JSON.stringify({ chain_id: 11155111 }));
  const r = deploy(["--dry-run", "--image-tag", "abcdef1", "--address-book", book]);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.called, "");
  assert.match(r.stdout, new RegExp(`\\$ cp ${book.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")} `));
  // The deployer's binary runs only to hand the operator role over (step 9), not to deploy.
  assert.doesNotMatch(r.stdout, /posthuman-deploy-contracts -- --key-env POSTHUMAN_DEPLOYER_KEY --out/);
  assert.match(r.stdout, /posthuman-deploy-contracts -- --key-env POSTHUMAN_DEPLOYER_KEY --operator-env POSTHUMAN_OPERATOR_KEY --out/);
});

test("deploy --operator-eth sets the operator's top-up; 0 sends nothing; a non-amount is refused before anything runs", () => {
  const withEth = (v: string) => deploy(["--dry-run", "--image-tag", "abcdef1", "--operator-eth", v]);
  let r = withEth("1.5");
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /--operator-env POSTHUMAN_OPERATOR_KEY --out \S+ --fund-operator 1\.5\n/);
  for (const zero of ["0", "0.0", "00.000"]) {
    r = withEth(zero);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /--operator-env POSTHUMAN_OPERATOR_KEY --out \S+\n/);
    assert.doesNotMatch(r.stdout, /--fund-operator/);
  }
  for (const bad of ["-1", "lots", "1e3", "0.1234567890123456789"]) {
    r = withEth(bad);
    assert.notEqual(r.status, 0, `--operator-eth ${bad} accepted`);
    assert.match(r.stderr, /--operator-eth .*an amount of ether/);
    assert.equal(r.called, "");
  }
});

test("deploy --dry-run with --ocean-book deploys only ours on that Ocean", () => {
  const ocean = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "posthuman-ocean-")), "ocean.json");
  fs.writeFileSync(ocean, JSON.stringify({ chain_id: 11155111 }));
  const r = deploy(["--dry-run", "--image-tag", "abcdef1", "--ocean-book", ocean]);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.called, "");
  assert.match(r.stdout, /deploys ModelLineage \+ PeerMarket on the Ocean v4 that --ocean-book names/);
  assert.ok(r.stdout.includes(`--bin posthuman-deploy-contracts -- --key-env POSTHUMAN_DEPLOYER_KEY --out `), r.stdout);
  assert.ok(r.stdout.includes(` --ocean-book ${ocean}\n`), r.stdout);
});

for (const [what, args, env, message] of [
  ["no region", [], { AWS_REGION: undefined, AWS_DEFAULT_REGION: undefined }, /no AWS region: pass --region or set AWS_REGION/],
  ["a bad region", ["--region", "Europe"], {}, /region 'Europe' is not an AWS region/],
  ["no account", [], { POSTHUMAN_AWS_ACCOUNT: undefined }, /no AWS account: pass --account/],
  ["a bad account", ["--account", "12345"], {}, /account '12345' is not a 12-digit AWS account id/],
  ["no RPC URL", [], { POSTHUMAN_RPC_URL: undefined }, /no RPC URL: pass --rpc-url or set POSTHUMAN_RPC_URL/],
  ["a RPC URL that is not http(s)", ["--rpc-url", "ftp://rpc.example.org"], {}, /the RPC URL is not an http\(s\):\/\/ URL/],
  ["a loopback RPC URL", ["--rpc-url", "http://127.0.0.1:8545"], {}, /loopback address: the Lambdas in AWS could not reach it/],
  ["an image tag that is no commit", ["--image-tag", "latest"], {}, /image tag 'latest' is not a git commit/],
  ["an unknown GPU family", ["--gpu-family", "p5"], {}, /gpu family 'p5': one of p3, g5, g6/],
  ["a missing address book", ["--address-book", "/nonexistent/book.json"], {}, /--address-book \/nonexistent\/book\.json: no such file/],
  ["a missing Ocean book", ["--ocean-book", "/nonexistent/ocean.json"], {}, /--ocean-book \/nonexistent\/ocean\.json: no such file/],
  ["an unknown flag", ["--regoin", "eu-west-1"], {}, /unknown argument --regoin/],
] as [string, string[], Record<string, string | undefined>, RegExp][]) {
  test(`deploy stops on ${what} before running anything (dry run or not)`, () => {
    for (const dry of [["--dry-run"], []]) {
      const r = deploy([...dry, "--image-tag", "abcdef1", ...args], env);
      assert.equal(r.status, 2, `exit ${r.status}; stdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
      assert.match(r.stderr, message);
      assert.equal(r.called, "", `a tool ran before the inputs were checked: ${r.called}`);
      assert.equal(r.stdout, "", "a step started before the inputs were checked");
    }
  });
}

// --- Real runs against stand-ins that keep what "AWS" holds (the stack, SSM, ECR, the image). ---

const AWS_STUB = `
case "$1 $2" in
"sts get-caller-identity") echo 123456789012 ;;
"ssm get-parameter") [ -f $STATE/ssm ] && cat $STATE/ssm || exit 254 ;;
"ssm put-parameter") for a; do case $a in file://*) cp "\${a#file://}" $STATE/ssm ;; esac; done ;;
"cloudformation describe-stacks")
  case "$*" in
  *CDKToolkit*) [ -f $STATE/bootstrapped ] || exit 254 ;;
  *) [ -f $STATE/stack ] && echo 123456789012.dkr.ecr.eu-west-1.amazonaws.com/posthuman-worker-repo || exit 254 ;;
  esac ;;
"ecr describe-images") grep -qx "$6" $STATE/pushed 2>/dev/null || exit 254 ;;
"ecr get-login-password") echo not-a-password ;;
"cloudformation describe-stack-resources") [ -f $STATE/stack ] && echo arn:aws:secretsmanager:eu-west-1:123456789012:secret:OperatorKey9F2B-Ab12Cd || exit 254 ;;
"secretsmanager get-secret-value") echo ${OPERATOR_KEY} ;;
*) exit 97 ;;
esac`;
/** The contract deployer's stand-in: the operator hand-over (--operator-env) writes the
 *  operator's address into the book when it is not there yet and records which key it saw; a
 *  plain deployment fails (tests that deploy contracts give their own). The binary itself is
 *  tested on anvil in crates/chain/tests/deploy_contracts.rs. */
const OPERATOR = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
const CARGO_OPERATOR = `case "$*" in
*--operator-env*)
  out=""; while [ $# -gt 0 ]; do [ "$1" = --out ] && out=$2; shift; done
  echo "$POSTHUMAN_OPERATOR_KEY" >$STATE/operator-key
  python3 -c 'import json,sys; p=sys.argv[1]; b=json.load(open(p))
if b.get("operator") != sys.argv[2]: b["operator"]=sys.argv[2]; json.dump(b, open(p, "w"))' "$out" ${OPERATOR} ;;
*) exit 97 ;;
esac`;
const STUBS: Record<string, string> = {
  aws: AWS_STUB,
  cargo: CARGO_OPERATOR,
  // The first deploy creates the stack (and its repository); bootstrap creates CDKToolkit.
  npx: `case "$*" in *"cdk deploy"*) touch $STATE/stack ;; *"cdk bootstrap"*) touch $STATE/bootstrapped ;; esac`,
  npm: "exit 0",
  docker: `case "$1" in
image) grep -qx "$3" $STATE/built 2>/dev/null || exit 1 ;;
build) while [ $# -gt 0 ]; do [ "$1" = -t ] && echo "$2" >>$STATE/built; shift; done ;;
push) echo "imageTag=\${2##*:}" >>$STATE/pushed ;;
esac`,
  curl: `echo '{"jsonrpc":"2.0","id":1,"result":"0xaa36a7"}'`, // 11155111
  python3: `exec ${spawnSync("sh", ["-c", "command -v python3"], { encoding: "utf8" }).stdout.trim()} "$@"`,
};

/** Prebuilt bundles and storefront (steps 2 and 3 skip), and a book for chain 11155111. */
function prebuilt(sb: Sandbox) {
  const lambda = path.join(sb.dir, "lambda");
  for (const bin of ["posthuman-api-lambda", "posthuman-job-done-lambda", "posthuman-publish-lambda"]) {
    fs.mkdirSync(path.join(lambda, bin), { recursive: true });
    fs.writeFileSync(path.join(lambda, bin, "bootstrap"), "#!/bin/sh\n");
  }
  const web = path.join(sb.dir, "web");
  fs.mkdirSync(web);
  fs.writeFileSync(path.join(web, "index.html"), "<!doctype html>\n");
  const book = path.join(sb.dir, "book.json");
  fs.writeFileSync(book, JSON.stringify({ chain_id: 11155111, lineage: "0x0000000000000000000000000000000000000001" }));
  return { env: { POSTHUMAN_LAMBDA_DIR: lambda, POSTHUMAN_STOREFRONT_DIR: web }, book };
}

/** The calls, one per line, without python3's (the script's JSON helpers). */
const callList = (called: string) => called.split("\n").filter((l) => l && !l.startsWith("python3 "));
function assertOrder(calls: string[], ...wanted: RegExp[]) {
  let at = -1;
  for (const w of wanted) {
    const i = calls.findIndex((c, j) => j > at && w.test(c));
    assert.ok(i > at, `no call matching ${w} after #${at} in:\n${calls.join("\n")}`);
    at = i;
  }
}

test("the first deploy: book to SSM, bootstrap, cdk deploy, then the image push (the repository is the stack's)", () => {
  const sb = sandbox(STUBS);
  const { env, book } = prebuilt(sb);
  const r = deployIn(sb, ["--image-tag", "abcdef1", "--address-book", book], env);
  assert.equal(r.status, 0, r.stdout + r.stderr);
  const calls = callList(r.called);
  assertOrder(
    calls,
    /^aws sts get-caller-identity/,
    /^docker build -f batch-worker\/Dockerfile .*-t posthuman-worker:abcdef1 \.$/,
    /^docker build -f batch-worker\/Dockerfile\.cuda .*-t posthuman-worker:abcdef1-cuda \.$/,
    /^curl /,
    /^aws ssm put-parameter --name \/posthuman\/address-book --type String --overwrite --value file:\/\//,
    /^aws cloudformation describe-stacks --stack-name CDKToolkit/,
    /^npx --no-install cdk bootstrap aws:\/\/123456789012\/eu-west-1$/,
    new RegExp(`^npx --no-install cdk deploy Posthuman .*-c workerImageTag=abcdef1 .*--parameters RpcUrl=https://rpc\\.example\\.org/v3/${RPC_SECRET}$`),
    /^docker push 123456789012\.dkr\.ecr\.eu-west-1\.amazonaws\.com\/posthuman-worker-repo:abcdef1$/,
    /^docker push 123456789012\.dkr\.ecr\.eu-west-1\.amazonaws\.com\/posthuman-worker-repo:abcdef1-cuda$/,
  );
  assert.ok(!calls.some((c) => c.startsWith("cargo lambda")), "built Lambda bundles although POSTHUMAN_LAMBDA_DIR had them");
  // Then the operator role goes to the stack's key, and SSM's book names it.
  assertOrder(
    calls,
    /^docker push /,
    /^aws cloudformation describe-stack-resources --stack-name Posthuman /,
    /^aws secretsmanager get-secret-value --secret-id arn:aws:secretsmanager:\S+:secret:OperatorKey/,
    /^cargo run --release -q -p posthuman-chain --bin posthuman-deploy-contracts -- --key-env POSTHUMAN_DEPLOYER_KEY --operator-env POSTHUMAN_OPERATOR_KEY --out \S+ --fund-operator 0\.05$/,
    /^aws ssm put-parameter --name \/posthuman\/address-book /,
  );
  assert.equal(fs.readFileSync(path.join(sb.state, "operator-key"), "utf8").trim(), OPERATOR_KEY, "the deployer got the secret's key in its environment");
  assert.equal(JSON.parse(fs.readFileSync(path.join(sb.state, "ssm"), "utf8")).operator, OPERATOR);
  assert.ok(!(r.stdout + r.stderr + r.called).includes(OPERATOR_KEY), "the operator key is printed or passed as an argument");
  assert.deepEqual(JSON.parse(fs.readFileSync(path.join(sb.state, "ssm"), "utf8")).chain_id, 11155111);
  assert.ok(!(r.stdout + r.stderr).includes(RPC_SECRET), "the RPC URL's key is printed");
  assert.ok(!(r.stdout + r.stderr).includes("not-a-password"), "the ECR password is printed");

  // The same deploy again converges: SSM already has this chain's book, the image is built and
  // pushed, the account is bootstrapped; only cdk deploy runs (CloudFormation's no-op).
  const again = deployIn(sb, ["--image-tag", "abcdef1"], env);
  assert.equal(again.status, 0, again.stdout + again.stderr);
  const rerun = callList(again.called);
  for (const not of [/^aws ssm put-parameter/, /^docker build/, /^docker push/, /cdk bootstrap/, /posthuman-deploy-contracts -- --key-env POSTHUMAN_DEPLOYER_KEY --out/]) {
    assert.ok(!rerun.some((c) => not.test(c)), `the rerun ran ${not}:\n${rerun.join("\n")}`);
  }
  assertOrder(rerun, /^aws ssm get-parameter/, /^npx --no-install cdk deploy Posthuman /);

  // A new commit on the existing stack: its image is pushed before the stack names its tag.
  const next = deployIn(sb, ["--image-tag", "0123abc"], env);
  assert.equal(next.status, 0, next.stdout + next.stderr);
  assertOrder(
    callList(next.called),
    /^docker build .*-t posthuman-worker:0123abc /,
    /^docker build .*-t posthuman-worker:0123abc-cuda /,
    /^docker push .*posthuman-worker-repo:0123abc$/,
    /^docker push .*posthuman-worker-repo:0123abc-cuda$/,
    /^npx --no-install cdk deploy Posthuman .*-c workerImageTag=0123abc /,
  );

  // A deploy that stopped between the two pushes: the rerun pushes only the missing CUDA image.
  fs.writeFileSync(path.join(sb.state, "pushed"), fs.readFileSync(path.join(sb.state, "pushed"), "utf8").replace("imageTag=0123abc-cuda\n", ""));
  const resumed = deployIn(sb, ["--image-tag", "0123abc"], env);
  assert.equal(resumed.status, 0, resumed.stdout + resumed.stderr);
  const pushes = callList(resumed.called).filter((c) => c.startsWith("docker push"));
  assert.deepEqual(pushes, ["docker push 123456789012.dkr.ecr.eu-west-1.amazonaws.com/posthuman-worker-repo:0123abc-cuda"]);
});

test("with no book for the chain anywhere, a real deploy runs the contract deployer, and stops there if it fails", () => {
  const sb = sandbox(STUBS); // cargo's stand-in fails
  const { env } = prebuilt(sb);
  const r = deployIn(sb, ["--image-tag", "abcdef1"], env);
  assert.equal(r.status, 2, r.stdout + r.stderr);
  assert.match(r.called, /^cargo run --release -q -p posthuman-chain --bin posthuman-deploy-contracts -- --key-env POSTHUMAN_DEPLOYER_KEY --out \S+$/m);
  assert.match(r.stderr, /the contract deployment failed/);
  assert.doesNotMatch(r.called, /ssm put-parameter|cdk deploy/);

  // Without a key to pay for them, it stops before the deployer, saying what is missing.
  const nokey = deployIn(sb, ["--image-tag", "abcdef1"], { ...env, POSTHUMAN_DEPLOYER_KEY: undefined });
  assert.equal(nokey.status, 2, nokey.stdout + nokey.stderr);
  assert.match(nokey.stderr, /no address book for chain 11155111 in SSM \/posthuman\/address-book and no --address-book; deploying the contracts needs POSTHUMAN_DEPLOYER_KEY/);
  assert.doesNotMatch(nokey.called, /^cargo /m);
});

test("with no book for the chain anywhere, a real deploy deploys the contracts, writes their book to SSM, then deploys the stack", () => {
  // The deployer's stand-in writes a book to its --out (the binary itself is tested on anvil in
  // crates/chain/tests/deploy_contracts.rs) and records the RPC URL it found in its environment.
  const cargo = `if echo "$*" | grep -q -- --operator-env; then
${CARGO_OPERATOR}
exit 0
fi
out=""; ocean=""
while [ $# -gt 0 ]; do case $1 in --out) out=$2 ;; --ocean-book) ocean=$2 ;; esac; shift; done
echo "$POSTHUMAN_RPC_URL" >$STATE/deployer-rpc
echo "$ocean" >$STATE/deployer-ocean
printf '{"chain_id": 11155111, "lineage": "0x00000000000000000000000000000000000000aa"}' >"$out"`;
  const sb = sandbox({ ...STUBS, cargo });
  const { env, book: ocean } = prebuilt(sb);
  // The URL as a flag this time: the script hands it on through the environment only.
  const rpc = `https://rpc.example.org/v3/${RPC_SECRET}`;
  const r = deployIn(sb, ["--image-tag", "abcdef1", "--rpc-url", rpc, "--ocean-book", ocean], { ...env, POSTHUMAN_RPC_URL: undefined });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assertOrder(
    callList(r.called),
    /^curl /,
    /^aws ssm get-parameter/,
    new RegExp(`^cargo run .*--bin posthuman-deploy-contracts -- --key-env POSTHUMAN_DEPLOYER_KEY --out \\S+ --ocean-book ${ocean.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}$`),
    /^aws ssm put-parameter --name \/posthuman\/address-book /,
    /^npx --no-install cdk deploy Posthuman /,
  );
  assert.equal(fs.readFileSync(path.join(sb.state, "deployer-rpc"), "utf8").trim(), rpc);
  assert.equal(JSON.parse(fs.readFileSync(path.join(sb.state, "ssm"), "utf8")).lineage, "0x00000000000000000000000000000000000000aa");
  const cargoCall = callList(r.called).find((c) => c.startsWith("cargo "))!;
  assert.ok(!cargoCall.includes(RPC_SECRET) && !cargoCall.includes("ac0974bec39a17e3"), cargoCall);
  assert.ok(!(r.stdout + r.stderr).includes(RPC_SECRET), "the RPC URL's key is printed");

  // A rerun finds the deployed book in SSM: the deployer does not run again.
  const again = deployIn(sb, ["--image-tag", "abcdef1"], env);
  assert.equal(again.status, 0, again.stdout + again.stderr);
  assert.doesNotMatch(again.called, /posthuman-deploy-contracts -- --key-env POSTHUMAN_DEPLOYER_KEY --out|ssm put-parameter/);
});

test("a real deploy first checks that the credentials are for --account, and stops if not", () => {
  const r = deploy(["--image-tag", "abcdef1"], {}, { aws: "echo 999999999999" });
  assert.equal(r.status, 2, r.stdout + r.stderr);
  assert.match(r.stderr, /the credentials are for account 999999999999, not 123456789012/);
  // Only the identity question was asked: nothing was built, written or deployed.
  assert.equal(r.called.trim(), "aws sts get-caller-identity --query Account --output text");
});

test("deploy.sh passes shellcheck", (t) => {
  const which = spawnSync("sh", ["-c", "command -v shellcheck"], { encoding: "utf8" });
  if (which.status !== 0) {
    t.skip("shellcheck is not installed");
    return;
  }
  const r = spawnSync("shellcheck", ["-x", "scripts/deploy.sh"], { cwd: root, encoding: "utf8" });
  assert.equal(r.status, 0, r.stdout + r.stderr);
});

test("the worker image runs the job definition's command, as a non-root user, with only the worker binary", () => {
  const text = fs.readFileSync(path.join(root, "batch-worker/Dockerfile"), "utf8");
  // Instructions, with continuation lines joined and comments dropped.
  const lines = text
    .replace(/\\\n/g, " ")
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith("#"));
  const froms = lines.map((l, i) => [l, i] as const).filter(([l]) => /^FROM /i.test(l));
  assert.ok(froms.length >= 2, "not a multi-stage build");
  const runtime = lines.slice(froms[froms.length - 1][1]);
  assert.match(runtime[0], /debian:.*-slim/, "the runtime stage is not Debian slim");
  // Batch gives the whole command (`posthuman-worker run --spec ...`): an ENTRYPOINT would be
  // prepended to it.
  assert.ok(!runtime.some((l) => /^ENTRYPOINT/i.test(l)), "the runtime stage has an ENTRYPOINT");
  const copies = runtime.filter((l) => /^COPY /i.test(l));
  assert.deepEqual(copies, ["COPY --from=build /usr/local/bin/posthuman-worker /usr/local/bin/posthuman-worker"]);
  const user = runtime.filter((l) => /^USER /i.test(l)).pop();
  assert.ok(user, "the runtime stage runs as root");
  assert.doesNotMatch(user!, /^USER\s+(root|0)(:|\s|$)/i, "the runtime stage runs as root");
  assert.ok(runtime.some((l) => /ca-certificates/.test(l)), "no CA certificates for S3 over TLS");
  // The build compiles only the worker, from the lock file.
  assert.ok(
    lines.some((l) => /cargo build --release --locked -p posthuman-worker --bin posthuman-worker/.test(l)),
    "the build stage does not build exactly the worker",
  );
  // The stack's job definition runs the same binary name.
  const stack = fs.readFileSync(path.join(root, "infra/lib/posthuman-stack.ts"), "utf8");
  assert.match(stack, /command: \["posthuman-worker", "run", "--spec", "Ref::spec_key"\]/);
});

test("the registry-free image (batch-worker/image) runs like the Dockerfile's: same user, workdir, command", () => {
  const instructions = (file: string) =>
    fs
      .readFileSync(path.join(root, file), "utf8")
      .replace(/\\\n/g, " ")
      .split("\n")
      .map((l) => l.trim().replace(/\s+/g, " "))
      .filter((l) => l && !l.startsWith("#"));
  const docker = instructions("batch-worker/Dockerfile");
  const runtime = docker.slice(docker.map((l) => /^FROM /i.test(l)).lastIndexOf(true));
  const podman = instructions("batch-worker/image/Containerfile");
  const pick = (lines: string[], re: RegExp) => lines.filter((l) => re.test(l));
  for (const re of [/^USER /i, /^WORKDIR /i, /^CMD /i, /^ENTRYPOINT /i, /^ENV /i]) {
    assert.deepEqual(pick(podman, re), pick(runtime, re), `${re} differs`);
  }
  // The same account: the Dockerfile creates it in its apt RUN, the Containerfile alone.
  const account = (lines: string[]) =>
    lines.join(" ").match(/groupadd [^&]*&& useradd [^&]*? worker/)?.[0];
  assert.ok(account(podman), "the Containerfile creates no worker account");
  assert.equal(account(podman), account(runtime));
  assert.deepEqual(pick(podman, /^COPY /i), ["COPY posthuman-worker /usr/local/bin/posthuman-worker"]);
});

test("the CUDA image: Dockerfile.cuda builds the cuda worker for compute 7.0 in CUDA 12 and runs like the registry-free Containerfile.cuda", () => {
  const instructions = (file: string) =>
    fs
      .readFileSync(path.join(root, file), "utf8")
      .replace(/\\\n/g, " ")
      .split("\n")
      .map((l) => l.trim().replace(/\s+/g, " "))
      .filter((l) => l && !l.startsWith("#"));
  const docker = instructions("batch-worker/Dockerfile.cuda");
  const froms = docker.map((l, i) => [l, i] as const).filter(([l]) => /^FROM /i.test(l));
  assert.equal(froms.length, 2, "not a two-stage build");
  // The build stage: NVIDIA's CUDA 12 devel image (CUDA 13 cannot target the V100), compute 7.0.
  const build = docker.slice(froms[0][1], froms[1][1]);
  assert.match(build[0], /^FROM docker\.io\/nvidia\/cuda:\$\{CUDA_VERSION\}-devel-\S+ AS build$/);
  assert.ok(docker.some((l) => /^ARG CUDA_VERSION=12\.\d+\.\d+$/.test(l)), "the devel image is not CUDA 12");
  assert.ok(build.some((l) => /CUDA_COMPUTE_CAP=70\b/.test(l)), "the kernels are not built for compute 7.0");
  assert.ok(build.some((l) => /NVCC_APPEND_FLAGS="-gencode=arch=compute_70,code=compute_70"/.test(l)), "no compute_70 PTX for the static kernels");
  assert.ok(
    build.some((l) => /cargo build --release --locked --features cuda -p posthuman-worker --bin posthuman-worker/.test(l)),
    "the build stage does not build exactly the cuda worker",
  );
  // The runtime stage and Containerfile.cuda: the same account, workdir, command, environment,
  // copies (the libraries, then the worker) and no ENTRYPOINT; the driver is never in the image.
  const runtime = docker.slice(froms[1][1]);
  assert.match(runtime[0], /debian:.*-slim/, "the runtime stage is not Debian slim");
  const podman = instructions("batch-worker/image/Containerfile.cuda");
  const pick = (lines: string[], re: RegExp) => lines.filter((l) => re.test(l));
  for (const re of [/^USER /i, /^WORKDIR /i, /^CMD /i, /^ENTRYPOINT /i, /^ENV /i]) {
    assert.deepEqual(pick(podman, re), pick(runtime, re), `${re} differs`);
  }
  assert.deepEqual(pick(runtime, /^ENTRYPOINT /i), []);
  assert.deepEqual(pick(runtime, /^USER /i), ["USER 10001:10001"]);
  assert.deepEqual(pick(runtime, /^ENV /i), ["ENV LD_LIBRARY_PATH=/opt/nvidia/lib NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility"]);
  const account = (lines: string[]) => lines.join(" ").match(/groupadd [^&]*&& useradd [^&]*? worker/)?.[0];
  assert.ok(account(podman), "Containerfile.cuda creates no worker account");
  assert.equal(account(podman), account(runtime));
  assert.deepEqual(pick(runtime, /^COPY /i), [
    "COPY --from=build /opt/nvidia/lib/ /opt/nvidia/lib/",
    "COPY --from=build /usr/local/bin/posthuman-worker /usr/local/bin/posthuman-worker",
  ]);
  assert.deepEqual(pick(podman, /^COPY /i), ["COPY cuda-lib/ /opt/nvidia/lib/", "COPY posthuman-worker /usr/local/bin/posthuman-worker"]);
  // The same CUDA libraries in both: the Dockerfile's list and build.sh's.
  const libs = (text: string) => text.match(/for so in (lib[^;]*);/)?.[1].trim().split(/\s+/);
  const fromDocker = libs(fs.readFileSync(path.join(root, "batch-worker/Dockerfile.cuda"), "utf8"));
  assert.ok(fromDocker && fromDocker.length >= 5, "no library list in Dockerfile.cuda");
  assert.ok(!fromDocker!.some((l) => l.startsWith("libcuda.")), "the driver's libcuda is copied into the image");
  assert.deepEqual(libs(fs.readFileSync(path.join(root, "batch-worker/image/build.sh"), "utf8")), fromDocker);
});
