// Synth test: the template says what DESIGN.md promises (private storage, isolated GPU
// workers, completion events, secrets kept out of the template) and wires the env var names
// the Rust code reads.
import { test } from "node:test";
import * as assert from "node:assert/strict";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { App } from "aws-cdk-lib";
import { Match, Template } from "aws-cdk-lib/assertions";
import { PosthumanStack } from "../lib/posthuman-stack";

/** Synthesizes the stack with the deploy-time choices in `context` (as `cdk -c key=value`). */
function synth(context: Record<string, string> = {}): Template {
  // Stand-in Lambda bundles: the test checks the template, not the binaries.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "posthuman-lambda-"));
  for (const bin of ["posthuman-api-lambda", "posthuman-job-done-lambda", "posthuman-publish-lambda"]) {
    fs.mkdirSync(path.join(dir, bin));
    fs.writeFileSync(path.join(dir, bin, "bootstrap"), "#!/bin/sh\n");
  }
  // A stand-in storefront build (web/dist): the test checks how it is deployed.
  const web = fs.mkdtempSync(path.join(os.tmpdir(), "posthuman-web-"));
  fs.writeFileSync(path.join(web, "index.html"), "<!doctype html><title>Posthuman</title>\n");
  const app = new App({ context: { "@aws-cdk/aws-batch:defaultToAL2023": true, ...context } });
  // The worker image's tag is a deploy-time choice (context or the WorkerImageTag parameter).
  const stack = new PosthumanStack(app, "Test", { lambdaDir: dir, storefrontDir: web });
  return Template.fromStack(stack);
}

const t = synth();

test("the data bucket is private, encrypted, TLS-only and versioned", () => {
  // The data bucket, the storefront's, and the access logs'.
  t.resourceCountIs("AWS::S3::Bucket", 3);
  t.hasResourceProperties("AWS::S3::Bucket", {
    PublicAccessBlockConfiguration: {
      BlockPublicAcls: true,
      BlockPublicPolicy: true,
      IgnorePublicAcls: true,
      RestrictPublicBuckets: true,
    },
    BucketEncryption: Match.objectLike({}),
    VersioningConfiguration: { Status: "Enabled" },
  });
  t.hasResourceProperties("AWS::S3::BucketPolicy", {
    PolicyDocument: {
      Statement: Match.arrayWith([
        Match.objectLike({ Effect: "Deny", Condition: { Bool: { "aws:SecureTransport": "false" } } }),
      ]),
    },
  });
});

test("workers run on GPUs in isolated subnets with no route to the internet", () => {
  t.resourceCountIs("AWS::EC2::NatGateway", 0);
  t.resourceCountIs("AWS::EC2::InternetGateway", 0);
  t.hasResourceProperties("AWS::EC2::VPCEndpoint", { VpcEndpointType: "Gateway" });
  t.hasResourceProperties("AWS::Batch::ComputeEnvironment", {
    Type: "MANAGED",
    ComputeResources: Match.objectLike({
      MinvCpus: 0,
      InstanceTypes: Match.anyValue(),
      Ec2Configuration: [{ ImageType: "ECS_AL2023_NVIDIA" }],
    }),
  });
  t.hasResourceProperties("AWS::Batch::JobDefinition", {
    Parameters: { job_id: "unset", spec_key: "unset" },
    ContainerProperties: Match.objectLike({
      Command: ["posthuman-worker", "run", "--spec", "Ref::spec_key"],
      ResourceRequirements: Match.arrayWith([{ Type: "GPU", Value: "1" }]),
      Environment: Match.arrayWith([
        Match.objectLike({ Name: "POSTHUMAN_S3_BUCKET" }),
        Match.objectLike({ Name: "POSTHUMAN_REQUIRE_GPU", Value: "1" }),
      ]),
    }),
  });
  t.resourceCountIs("AWS::Batch::JobQueue", 1);
});

test("the worker's memory budget is below its container's memory (a job too big is refused, not OOM-killed)", () => {
  const defs = Object.values(t.findResources("AWS::Batch::JobDefinition"));
  assert.equal(defs.length, 1);
  const c = defs[0].Properties.ContainerProperties;
  const memory = Number(
    c.ResourceRequirements.find((r: { Type: string }) => r.Type === "MEMORY")?.Value,
  );
  const budget = Number(
    c.Environment.find((e: { Name: string }) => e.Name === "POSTHUMAN_MEMORY_LIMIT_MIB")?.Value,
  );
  assert.ok(memory > 0, `container memory ${memory}`);
  assert.ok(budget > 0, `POSTHUMAN_MEMORY_LIMIT_MIB ${budget}`);
  // Below, with room for the process itself: batch-worker's CGROUP_HEADROOM_MIB is 512.
  assert.ok(budget <= memory - 512, `budget ${budget} MiB vs container ${memory} MiB`);
  // And above batch-worker's 16 GiB default being the thing that bounded jobs.
  assert.ok(budget < 16 * 1024);
});

test("the isolated worker subnets reach every AWS service a Batch container instance needs", () => {
  // Without ecs/ecs-agent/ecs-telemetry the instances never register with the cluster and
  // jobs stay RUNNABLE; ECR (api + dkr) and S3 pull the image, Logs ships the job's output.
  const services = Object.values(t.findResources("AWS::EC2::VPCEndpoint")).map((e: any) => {
    const name = JSON.stringify(e.Properties.ServiceName);
    const m = name.match(/com\.amazonaws\.[^"]*?\.([a-z0-9.-]+)"/) ?? name.match(/"\.([a-z0-9.-]+)"\]/);
    return m ? m[1] : name;
  });
  for (const want of ["s3", "ecr.api", "ecr.dkr", "logs", "ecs", "ecs-agent", "ecs-telemetry"]) {
    assert.ok(services.includes(want), `no ${want} endpoint in ${JSON.stringify(services)}`);
  }
  for (const e of Object.values(t.findResources("AWS::EC2::VPCEndpoint", { Properties: { VpcEndpointType: "Interface" } }))) {
    assert.equal((e as any).Properties.PrivateDnsEnabled, true);
  }
});

test("the interface endpoints answer only the workers' security group, on HTTPS", () => {
  const endpoints = Object.values(t.findResources("AWS::EC2::VPCEndpoint", { Properties: { VpcEndpointType: "Interface" } })) as any[];
  const groups = new Set(endpoints.map((e) => JSON.stringify(e.Properties.SecurityGroupIds)));
  assert.equal(groups.size, 1, `endpoints in several groups: ${[...groups]}`);
  const sgId = JSON.parse([...groups][0])[0]["Fn::GetAtt"][0];
  const sg = t.toJSON().Resources[sgId];
  assert.equal(sg.Properties.SecurityGroupIngress, undefined, "inline ingress (a CIDR) on the endpoints' group");
  const ingress = Object.values(t.findResources("AWS::EC2::SecurityGroupIngress")).filter(
    (r: any) => JSON.stringify(r.Properties.GroupId).includes(sgId),
  ) as any[];
  assert.equal(ingress.length, 1);
  const rule = ingress[0].Properties;
  assert.equal(rule.FromPort, 443);
  assert.equal(rule.ToPort, 443);
  assert.equal(rule.CidrIp, undefined);
  assert.match(JSON.stringify(rule.SourceSecurityGroupId), /WorkerSg/);
});

test("access is logged and logs expire: S3 server access logs, VPC flow logs, CloudFront and API access logs, a month of function logs", () => {
  const resources = t.toJSON().Resources;
  const bucketId = (prefix: string) => Object.keys(t.findResources("AWS::S3::Bucket")).find((id) => id.startsWith(prefix))!;
  const logsId = bucketId("AccessLogs");
  for (const b of ["DataBucket", "StorefrontBucket"]) {
    const cfg = resources[bucketId(b)].Properties.LoggingConfiguration;
    assert.deepEqual(cfg?.DestinationBucketName, { Ref: logsId }, `${b} logs nowhere`);
  }
  assert.ok(
    resources[logsId].Properties.LifecycleConfiguration.Rules.some((r: any) => r.ExpirationInDays > 0),
    "access logs are kept forever",
  );
  assert.ok(
    resources[bucketId("DataBucket")].Properties.LifecycleConfiguration.Rules.some(
      (r: any) => r.Prefix === "uploads/" && r.ExpirationInDays === 1,
    ),
    "unused direct uploads are kept forever",
  );
  t.hasResourceProperties("AWS::EC2::FlowLog", { ResourceType: "VPC", TrafficType: "ALL", LogDestinationType: "s3" });
  // The flow logs' delivery grant is the stack's own (one AWS added would not survive an update).
  const policy = Object.values(t.findResources("AWS::S3::BucketPolicy")).find(
    (p: any) => JSON.stringify(p.Properties.Bucket) === JSON.stringify({ Ref: logsId }),
  ) as any;
  assert.ok(
    policy.Properties.PolicyDocument.Statement.some(
      (st: any) => st.Principal?.Service === "delivery.logs.amazonaws.com" && st.Action === "s3:PutObject",
    ),
    "no delivery.logs.amazonaws.com grant on the access-log bucket",
  );
  t.hasResourceProperties("AWS::CloudFront::Distribution", {
    DistributionConfig: Match.objectLike({ Logging: Match.objectLike({ Bucket: Match.anyValue() }) }),
  });
  t.hasResourceProperties("AWS::ApiGatewayV2::Stage", {
    StageName: "$default",
    AccessLogSettings: { DestinationArn: Match.anyValue(), Format: Match.stringLikeRegexp("requestId") },
  });
  // No header, body or query string in the API's access log (signatures, datasets).
  const [stage] = Object.values(t.findResources("AWS::ApiGatewayV2::Stage")) as any[];
  assert.doesNotMatch(stage.Properties.AccessLogSettings.Format, /header|body|querystring|authorizer/i);
  for (const g of Object.values(t.findResources("AWS::Logs::LogGroup")) as any[]) {
    assert.ok(g.Properties.RetentionInDays > 0, "a log group that keeps logs forever");
  }
  // Each function writes its own log group only: no AWSLambdaBasicExecutionRole (every group).
  for (const fn of ["ApiFn", "ApiPublishFn", "JobDoneFn"]) {
    const f = lambdaFn(fn).props;
    assert.ok(f.LoggingConfig?.LogGroup, `${fn} has no log group of its own`);
    const role = resources[f.Role["Fn::GetAtt"][0]];
    assert.equal(role.Properties.ManagedPolicyArns, undefined, `${fn}'s role has managed policies`);
  }
});

test("the worker image is the CUDA variant of the tag the deploy names (a git commit), never a moving `latest`, in an IMMUTABLE repository", () => {
  t.hasResourceProperties("AWS::ECR::Repository", { ImageTagMutability: "IMMUTABLE" });
  const param = t.toJSON().Parameters.WorkerImageTag;
  assert.ok(param, "no WorkerImageTag parameter");
  assert.equal(param.Type, "String");
  // Without a tag in the context, the deploy must name one: no default to fall back on.
  assert.equal(param.Default, undefined);
  const pattern = new RegExp(param.AllowedPattern);
  assert.ok(pattern.test("9d23272"), "a short commit is a tag");
  assert.ok(pattern.test("9d232726f0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5"), "a full commit is a tag");
  for (const bad of ["latest", "", "v1 ", "main"]) assert.ok(!pattern.test(bad), `${JSON.stringify(bad)} is accepted`);
  const [def] = Object.values(t.findResources("AWS::Batch::JobDefinition")) as any[];
  const image = JSON.stringify(def.Properties.ContainerProperties.Image);
  assert.match(image, /\{"Ref":"WorkerImageTag"\}/);
  assert.doesNotMatch(image, /latest/);
  // The GPU queue's job definition runs the commit's CUDA image (<tag>-cuda, which deploy.sh
  // pushes beside the CPU one): the CPU worker would exit 19 (NO_GPU) on every job there.
  assert.match(image, /\{"Ref":"WorkerImageTag"\},"-cuda"\]/);
  assert.equal(def.Properties.ContainerProperties.Environment.find((e: any) => e.Name === "POSTHUMAN_REQUIRE_GPU")?.Value, "1");
  // `cdk deploy -c workerImageTag=$(git rev-parse HEAD)` makes it the default.
  const sha = "9d232726f0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5";
  assert.equal(synth({ workerImageTag: sha }).toJSON().Parameters.WorkerImageTag.Default, sha);
  assert.throws(() => synth({ workerImageTag: "latest" }), /workerImageTag/);
});

test("the GPU compute environment runs p3 (V100) by default, g5 or g6 when the deploy picks them", () => {
  const types = (tpl: Template) => {
    const [ce] = Object.values(tpl.findResources("AWS::Batch::ComputeEnvironment")) as any[];
    return ce.Properties.ComputeResources.InstanceTypes as string[];
  };
  for (const [tpl, family] of [
    [t, "p3"],
    [synth({ gpuFamily: "g5" }), "g5"],
    [synth({ gpuFamily: "g6" }), "g6"],
  ] as const) {
    const got = types(tpl);
    assert.ok(got.length > 0, `${family}: no instance types`);
    for (const it of got) assert.match(it, new RegExp(`^${family}\\.`), `${family}: ${it}`);
  }
  assert.deepEqual(types(t), ["p3.2xlarge"]);
  assert.throws(() => synth({ gpuFamily: "p2" }), /gpuFamily/);
});

// --- Retries: Batch retries exactly what crates/types/src/exit.rs classes as retryable. ---

/** exit.rs's constants and code lists, parsed from the Rust source so the two cannot drift. */
function exitCodes(): { codes: Map<string, number>; lists: Map<string, number[]> } {
  const src = fs.readFileSync(path.resolve(__dirname, "../../../crates/types/src/exit.rs"), "utf8");
  const codes = new Map<string, number>();
  for (const m of src.matchAll(/pub const ([A-Z_]+): i32 = (\d+);/g)) codes.set(m[1], Number(m[2]));
  const lists = new Map<string, number[]>();
  for (const m of src.matchAll(/pub const ([A-Z_]+): &\[i32\] = &\[([^\]]*)\];/g)) {
    const names = m[2].split(",").map((n) => n.trim()).filter((n) => n !== "");
    lists.set(m[1], names.map((n) => {
      const c = codes.get(n);
      assert.ok(c !== undefined, `exit.rs: ${m[1]} names unknown constant ${n}`);
      return c;
    }));
  }
  assert.ok(codes.size >= 10 && lists.has("BUYER_INPUT") && lists.has("FINAL") && lists.has("ALL"), "exit.rs parsed");
  return { codes, lists };
}

/** exit.rs's BUYER_INPUT_RANGE (`start..=end`): every code in it is the buyer's input. */
function buyerInputRange(): [number, number] {
  const src = fs.readFileSync(path.resolve(__dirname, "../../../crates/types/src/exit.rs"), "utf8");
  const m = src.match(/pub const BUYER_INPUT_RANGE: RangeInclusive<i32> = (\d+)..=(\d+);/);
  assert.ok(m, "exit.rs has no BUYER_INPUT_RANGE");
  return [Number(m[1]), Number(m[2])];
}

type Rule = { Action: string; OnExitCode?: string; OnStatusReason?: string; OnReason?: string };

/** Batch's glob: the pattern's text, where a trailing `*` matches any rest. */
function globMatch(pattern: string | undefined, value: string | undefined): boolean {
  if (pattern === undefined) return true;
  if (value === undefined) return false;
  return pattern.endsWith("*") ? value.startsWith(pattern.slice(0, -1)) : value === pattern;
}

/** What Batch does with a failed attempt: the first rule whose every condition matches; none: RETRY. */
function batchAction(rules: Rule[], attempt: { exitCode?: number; statusReason?: string; reason?: string }): string {
  for (const r of rules) {
    if (
      globMatch(r.OnExitCode, attempt.exitCode === undefined ? undefined : String(attempt.exitCode)) &&
      globMatch(r.OnStatusReason, attempt.statusReason) &&
      globMatch(r.OnReason, attempt.reason)
    ) {
      return r.Action.toUpperCase();
    }
  }
  return "RETRY";
}

test("Batch retries the worker's retryable failures and a reclaimed host, never the buyer's input or a final code", () => {
  const { codes, lists } = exitCodes();
  const [def] = Object.values(t.findResources("AWS::Batch::JobDefinition")) as any[];
  const strategy = def.Properties.RetryStrategy;
  const rules: Rule[] = strategy.EvaluateOnExit;
  assert.ok(strategy.Attempts >= 2, "retryable failures get another attempt");
  assert.ok(rules.length >= 1 && rules.length <= 5, "Batch takes at most 5 rules");
  for (const r of rules) {
    // Batch's grammar: exit codes are digits with an optional trailing `*`.
    if (r.OnExitCode !== undefined) assert.match(r.OnExitCode, /^[0-9]+\*?$|^\*$/);
  }
  for (const list of ["BUYER_INPUT", "FINAL"]) {
    for (const c of lists.get(list)!) {
      assert.equal(batchAction(rules, { exitCode: c, reason: "Essential container in task exited" }), "EXIT", `${list} code ${c} is retried`);
    }
  }
  // Transient, or curable by another attempt (a store hiccup, a host without a working GPU,
  // a worker bug that may not recur, a requested stop that resumes from its checkpoint).
  for (const name of ["STORE", "NO_GPU", "INTERNAL", "INTERRUPTED"]) {
    const c = codes.get(name)!;
    assert.equal(batchAction(rules, { exitCode: c }), "RETRY", `${name} (${c}) is not retried`);
  }
  // A Spot reclaim or a host that went away: no exit code, Batch's status reason names the host.
  assert.equal(batchAction(rules, { statusReason: "Host EC2 (instance i-0123456789abcdef0) terminated." }), "RETRY");
  // Exact, for every exit status a process can have: Batch stops on a code iff exit.rs's
  // classify() says it is the buyer's input (the BUYER_INPUT_RANGE) or final, and retries
  // every other one — the worker's own retryable codes, a panic's 101, a signal's 128+n.
  const range = buyerInputRange();
  const stopping = new Set([...lists.get("FINAL")!]);
  for (const c of lists.get("BUYER_INPUT")!) {
    assert.ok(c >= range[0] && c <= range[1], `BUYER_INPUT code ${c} outside BUYER_INPUT_RANGE`);
  }
  for (let c = 1; c <= 255; c++) {
    const want = stopping.has(c) || (c >= range[0] && c <= range[1]) ? "EXIT" : "RETRY";
    assert.equal(batchAction(rules, { exitCode: c }), want, `exit code ${c}`);
  }
});

test("every Lambda gets the variables functions/src/aws.rs reads, and only the key's secret ARN", () => {
  const fns = t.findResources("AWS::Lambda::Function", { Properties: { Runtime: "provided.al2023" } });
  // The api bundle twice (publishing apart, see the concurrency test), the publish work and
  // job-done.
  assert.equal(Object.keys(fns).length, 4);
  for (const fn of Object.values(fns)) {
    const vars = fn.Properties.Environment.Variables;
    for (const name of [
      "POSTHUMAN_BUCKET",
      "POSTHUMAN_BATCH_QUEUE",
      "POSTHUMAN_BATCH_JOB_DEFINITION",
      "POSTHUMAN_RPC_URL",
      "POSTHUMAN_ADDRESS_BOOK_PARAM",
      "POSTHUMAN_OPERATOR_KEY_SECRET",
    ]) {
      assert.ok(name in vars, `${name} missing`);
    }
    // The key itself is resolved into no environment (not even as a dynamic reference).
    assert.ok(!("POSTHUMAN_OPERATOR_KEY" in vars), "the operator key is in the environment");
    assert.doesNotMatch(JSON.stringify(vars), /resolve:secretsmanager/);
    assert.match(JSON.stringify(vars.POSTHUMAN_OPERATOR_KEY_SECRET), /OperatorKey/);
    // Every model's DDO names the Ocean Provider at this URL (set by publish and by job-done):
    // the HTTP API's own endpoint, not the functions' local default, which nobody can reach.
    const url = JSON.stringify(vars.POSTHUMAN_PUBLIC_API_URL);
    assert.match(url ?? "", /"HttpApi[0-9A-F]*","ApiEndpoint"/, `POSTHUMAN_PUBLIC_API_URL ${url}`);
  }
  // Each function's role may read that secret (GetSecretValue), scoped to it.
  const policies = t.findResources("AWS::IAM::Policy");
  const readers = Object.values(policies).filter((p: any) =>
    JSON.stringify(p.Properties.PolicyDocument.Statement).includes("secretsmanager:GetSecretValue"),
  );
  assert.equal(readers.length, 4, "every Lambda role reads the operator key secret");
  for (const p of readers as any[]) {
    const st = p.Properties.PolicyDocument.Statement.find((s: any) =>
      JSON.stringify(s.Action).includes("secretsmanager:GetSecretValue"),
    );
    assert.match(JSON.stringify(st.Resource), /OperatorKey/);
  }
  t.hasResourceProperties("AWS::SecretsManager::Secret", {
    GenerateSecretString: Match.objectLike({ PasswordLength: 64 }),
  });
});

test("the Lambdas get the address book's SSM parameter name and may read that parameter only", () => {
  // The stack must not own a parameter holding "{}": a deploy-time copy of it is what the
  // functions would load at cold start, and an update to SSM would never reach them.
  for (const p of Object.values(t.findResources("AWS::SSM::Parameter"))) {
    assert.notEqual(p.Properties.Value, "{}", "the stack bakes an empty address book");
  }
  const fns = t.findResources("AWS::Lambda::Function", { Properties: { Runtime: "provided.al2023" } });
  for (const fn of Object.values(fns)) {
    const vars = fn.Properties.Environment.Variables;
    assert.equal(vars.POSTHUMAN_ADDRESS_BOOK_PARAM, "/posthuman/address-book");
    // functions/src/aws.rs reads the parameter at cold start: no deploy-time copy of the
    // value, which a later SSM update would never reach.
    assert.ok(!("POSTHUMAN_ADDRESS_BOOK" in vars), "a deploy-time copy of the address book");
  }
  const readers = Object.values(t.findResources("AWS::IAM::Policy")).flatMap((p: any) =>
    p.Properties.PolicyDocument.Statement.filter((s: any) => JSON.stringify(s.Action).includes("ssm:GetParameter")),
  );
  assert.equal(readers.length, 4, "each Lambda role reads the address book");
  for (const s of readers) {
    const text = JSON.stringify(s.Resource);
    assert.match(text, /:parameter\/posthuman\/address-book"/);
    assert.doesNotMatch(text, /\*/);
  }
});

test("Batch state changes of our queue reach the job-done Lambda with retries and a DLQ", () => {
  t.hasResourceProperties("AWS::Events::Rule", {
    EventPattern: {
      source: ["aws.batch"],
      "detail-type": ["Batch Job State Change"],
      detail: { status: ["SUCCEEDED", "FAILED"], jobQueue: [Match.anyValue()] },
    },
    Targets: [Match.objectLike({ RetryPolicy: Match.objectLike({ MaximumRetryAttempts: 20 }), DeadLetterConfig: Match.anyValue() })],
  });
});

test("the HTTP API proxies everything to the api Lambda (payload v2)", () => {
  t.resourceCountIs("AWS::ApiGatewayV2::Api", 1);
  t.hasResourceProperties("AWS::ApiGatewayV2::Route", { RouteKey: "$default" });
  t.hasResourceProperties("AWS::ApiGatewayV2::Integration", { PayloadFormatVersion: "2.0" });
});

// --- Least privilege: each principal reaches only the object-store prefixes it needs. ---

type Stmt = { Action: string | string[]; Resource: unknown; Effect: string };

/** The policy statements attached to the role with logical id `roleId`. */
function statementsOf(roleId: string): Stmt[] {
  const out: Stmt[] = [];
  for (const p of Object.values(t.findResources("AWS::IAM::Policy"))) {
    const roles: unknown[] = p.Properties.Roles ?? [];
    if (roles.some((r) => JSON.stringify(r) === JSON.stringify({ Ref: roleId }))) {
      out.push(...p.Properties.PolicyDocument.Statement);
    }
  }
  return out;
}

/** The data bucket's resources a statement names: "" for the bucket itself, else the key pattern. */
function bucketKeys(s: Stmt): string[] {
  const bucketId = Object.keys(t.findResources("AWS::S3::Bucket")).find((id) => id.startsWith("DataBucket"))!;
  const resources = Array.isArray(s.Resource) ? s.Resource : [s.Resource];
  const keys: string[] = [];
  for (const r of resources) {
    const text = JSON.stringify(r);
    if (!text.includes(bucketId)) continue;
    const join = (r as { "Fn::Join"?: [string, unknown[]] })["Fn::Join"];
    if (join) {
      const last = join[1][join[1].length - 1];
      keys.push(typeof last === "string" ? last.replace(/^\//, "") : "?");
    } else {
      keys.push("");
    }
  }
  return keys;
}

const actionsOf = (s: Stmt) => (Array.isArray(s.Action) ? s.Action : [s.Action]);
const writes = (a: string) => /^s3:(Put|Delete|Abort|Restore|Replicate)/.test(a);
const reads = (a: string) => /^s3:(Get|List)/.test(a);

/** Every key pattern a role may write, and every one it may read, on the data bucket. */
function s3Access(roleId: string): { write: Set<string>; read: Set<string> } {
  const write = new Set<string>();
  const read = new Set<string>();
  for (const s of statementsOf(roleId)) {
    if (s.Effect !== "Allow") continue;
    const keys = bucketKeys(s);
    for (const a of actionsOf(s)) {
      for (const k of keys) {
        if (writes(a) || a === "s3:*") write.add(k);
        if ((reads(a) || a === "s3:*") && !a.startsWith("s3:List")) read.add(k);
      }
    }
  }
  return { write, read };
}

function assertWithin(what: string, got: Set<string>, allowed: string[]) {
  for (const k of got) {
    assert.ok(allowed.includes(k), `${what}: "${k}" is not one of ${JSON.stringify(allowed)}`);
  }
}

/** The Lambda function whose logical id is `id` followed by CDK's hash suffix. */
function lambdaFn(id: string): { logicalId: string; props: any } {
  for (const [logicalId, fn] of Object.entries(t.findResources("AWS::Lambda::Function"))) {
    if (new RegExp(`^${id}[0-9A-F]{8}$`).test(logicalId)) return { logicalId, props: fn.Properties };
  }
  throw new Error(`no Lambda ${id}`);
}

function lambdaRole(bin: string): string {
  const id = {
    "posthuman-api-lambda": "ApiFn",
    "posthuman-job-done-lambda": "JobDoneFn",
    "posthuman-publish-lambda": "PublishFn",
    publish: "ApiPublishFn",
  }[bin];
  if (!id) throw new Error(`no Lambda for ${bin}`);
  return lambdaFn(id).props.Role["Fn::GetAtt"][0];
}

test("the worker's Batch role reads models and its job's inputs, writes only its job's outputs, never the catalogue", () => {
  const roles = t.findResources("AWS::IAM::Role", {
    Properties: {
      AssumeRolePolicyDocument: Match.objectLike({
        Statement: Match.arrayWith([
          Match.objectLike({ Principal: { Service: "ecs-tasks.amazonaws.com" } }),
        ]),
      }),
    },
  });
  const jobRole = Object.keys(roles).find((id) => id.startsWith("WorkerJobRole"));
  assert.ok(jobRole, "no WorkerJobRole");
  const { write, read } = s3Access(jobRole);
  assert.ok(write.size > 0 && read.size > 0, "the worker must reach the store");
  assertWithin("worker writes", write, ["jobs/*/private/*", "jobs/*/public/*"]);
  assertWithin("worker reads", read, [
    "models/*",
    "jobs/*/dataset.txt",
    "jobs/*/spec.json",
    "jobs/*/private/*",
    "jobs/*/public/*",
  ]);
});

test("each Lambda reaches only the prefixes its handlers use", () => {
  const api = s3Access(lambdaRole("posthuman-api-lambda"));
  // uploads/*: direct uploads' manifests, staged files and the PUTs the api role presigns.
  assertWithin("api writes", api.write, ["state/*", "models/*", "jobs/*/dataset.txt", "jobs/*/spec.json", "uploads/*"]);
  assert.ok(api.write.has("uploads/*") && api.read.has("uploads/*"), "the api stages and checks direct uploads");
  assertWithin("api reads", api.read, [
    "state/*",
    "uploads/*",
    "models/*",
    "jobs/*/spec.json",
    "jobs/*/public/*",
    "jobs/*/private/config.json",
  ]);
  const publish = s3Access(lambdaRole("publish"));
  assert.ok(publish.write.size > 0, "publishing stores the model");
  assertWithin("publish writes", publish.write, ["state/*", "models/*", "uploads/*"]);
  assertWithin("publish reads", publish.read, ["state/*", "models/*", "uploads/*"]);
  assert.ok(publish.read.has("uploads/*"), "publishing reads the direct upload's files");
  const work = s3Access(lambdaRole("posthuman-publish-lambda"));
  assertWithin("publish work writes", work.write, ["state/*", "models/*", "uploads/*"]);
  assertWithin("publish work reads", work.read, ["state/*", "models/*", "uploads/*"]);
  assert.ok(work.write.has("models/*") && work.read.has("uploads/*"), "the publish work stores the upload's model");
  const done = s3Access(lambdaRole("posthuman-job-done-lambda"));
  assertWithin("job-done writes", done.write, ["state/*", "jobs/*/public/*"]);
  assertWithin("job-done reads", done.read, ["state/*", "jobs/*/spec.json", "jobs/*/public/*"]);
});

test("a publish runs in its own function: 15 minutes, never retried, invoked only by the API's functions", () => {
  const work = lambdaFn("PublishFn");
  assert.equal(work.props.Timeout, 900);
  assert.ok(work.props.EphemeralStorage.Size >= 3072, "room in /tmp for 1 GiB of weights and an adapter");
  const configs = Object.values(t.findResources("AWS::Lambda::EventInvokeConfig")).map((c: any) => c.Properties);
  const own = configs.filter((c) => JSON.stringify(c.FunctionName) === JSON.stringify({ Ref: work.logicalId }));
  assert.equal(own.length, 1, "one async-invoke config of the publish function");
  assert.equal(own[0].MaximumRetryAttempts, 0, "Lambda never delivers a publish twice on its own");
  // Who may invoke it: the two functions behind the API, and no other role.
  const invokers: string[] = [];
  for (const [roleId] of Object.entries(t.findResources("AWS::IAM::Role"))) {
    for (const s of statementsOf(roleId)) {
      const actions = ([] as string[]).concat(s.Action as any);
      if (s.Effect === "Allow" && actions.some((a) => a.startsWith("lambda:Invoke"))) {
        const res = JSON.stringify(s.Resource);
        assert.ok(res.includes(work.logicalId), `${roleId} may invoke only the publish function: ${res}`);
        invokers.push(roleId);
      }
    }
  }
  const apiRoles = [lambdaRole("posthuman-api-lambda"), lambdaRole("publish")];
  assert.deepEqual([...new Set(invokers)].sort(), apiRoles.sort());
  for (const id of ["ApiFn", "ApiPublishFn"]) {
    const v = lambdaFn(id).props.Environment.Variables.POSTHUMAN_PUBLISH_FUNCTION;
    assert.deepEqual(v, { Ref: work.logicalId }, `${id} names the publish function`);
  }
});

// --- One operator account sends every transaction, with simple nonce management. ---

test("the functions that send the operator's transactions run one at a time (reserved concurrency, a parameter)", () => {
  const param = t.toJSON().Parameters.TxSenderConcurrency;
  assert.ok(param, "no TxSenderConcurrency parameter");
  assert.equal(param.Type, "Number");
  assert.equal(param.Default, 1);
  assert.equal(param.MinValue, 1);
  const reserved = { Ref: "TxSenderConcurrency" };
  // job-done sends createChild + recordDerivation; EventBridge invokes it asynchronously, so
  // a throttled event waits in Lambda's queue instead of racing another on the nonce.
  assert.deepEqual(lambdaFn("JobDoneFn").props.ReservedConcurrentExecutions, reserved);
  // Publishing (POST /api/models) sends the asset's transactions: its own function, from the
  // api bundle, so the rest of the API (reads, quotes that only sign, submits) stays parallel.
  const publish = lambdaFn("ApiPublishFn");
  const api = lambdaFn("ApiFn");
  assert.deepEqual(publish.props.ReservedConcurrentExecutions, reserved);
  assert.equal(api.props.ReservedConcurrentExecutions, undefined);
  assert.deepEqual(publish.props.Code, api.props.Code, "the publish function runs the api bundle");
  // It spools a direct upload's weights (up to 1 GiB, plus an adapter) in /tmp.
  assert.ok(publish.props.EphemeralStorage?.Size >= 2 * 1024 + 512, "no room in /tmp for 1 GiB of weights and an adapter");
  // The route: POST /api/models goes to the publish function, everything else to the api one.
  const routes = Object.values(t.findResources("AWS::ApiGatewayV2::Route")) as any[];
  const integrations = t.findResources("AWS::ApiGatewayV2::Integration");
  const target = (key: string) => {
    const r = routes.find((x) => x.Properties.RouteKey === key);
    assert.ok(r, `no route ${key}`);
    const integrationId = JSON.stringify(r.Properties.Target).match(/"Ref":"([A-Za-z0-9]+)"/)![1];
    return JSON.stringify(integrations[integrationId].Properties.IntegrationUri);
  };
  assert.match(target("POST /api/models"), new RegExp(publish.logicalId));
  // A card edit re-sets the model's DDO with the operator's key (setMetaData /
  // setChildMetaData): a transaction, so it queues with publishing rather than racing it for
  // the operator's nonce from the unreserved api function.
  assert.match(target("POST /api/models/{nft}/card"), new RegExp(publish.logicalId));
  assert.match(target("$default"), new RegExp(api.logicalId));
  // Publishing submits no Batch job.
  assert.ok(
    !statementsOf(lambdaRole("publish")).some((st) => JSON.stringify(st.Action).includes("batch:")),
    "the publish function may use Batch",
  );
});

// --- The storefront: a private bucket behind CloudFront, and CORS for another origin. ---

test("the storefront is a private bucket that CloudFront reads with origin access control; /api/* goes to the HTTP API", () => {
  const buckets = t.findResources("AWS::S3::Bucket");
  const siteId = Object.keys(buckets).find((id) => id.startsWith("StorefrontBucket"));
  assert.ok(siteId, "no StorefrontBucket");
  assert.deepEqual(buckets[siteId].Properties.PublicAccessBlockConfiguration, {
    BlockPublicAcls: true,
    BlockPublicPolicy: true,
    IgnorePublicAcls: true,
    RestrictPublicBuckets: true,
  });
  // Only this distribution may read it (OAC: CloudFront's service principal, its ARN).
  const [dist] = Object.entries(t.findResources("AWS::CloudFront::Distribution"));
  assert.ok(dist, "no distribution");
  const [distId, distRes] = dist as [string, any];
  const policy = Object.values(t.findResources("AWS::S3::BucketPolicy")).find(
    (p: any) => JSON.stringify(p.Properties.Bucket) === JSON.stringify({ Ref: siteId }),
  ) as any;
  assert.ok(policy, "no storefront bucket policy");
  const read = policy.Properties.PolicyDocument.Statement.find((s: any) => s.Effect === "Allow");
  assert.deepEqual(read.Principal, { Service: "cloudfront.amazonaws.com" });
  assert.match(JSON.stringify(read.Condition), new RegExp(`AWS:SourceArn.*${distId}`));
  t.hasResourceProperties("AWS::CloudFront::OriginAccessControl", {
    OriginAccessControlConfig: Match.objectLike({ OriginAccessControlOriginType: "s3", SigningBehavior: "always" }),
  });
  const cfg = distRes.Properties.DistributionConfig;
  assert.equal(cfg.DefaultRootObject, "index.html");
  assert.equal(cfg.DefaultCacheBehavior.ViewerProtocolPolicy, "redirect-to-https");
  // The storefront calls /api/... on its own origin: CloudFront forwards it to the HTTP API,
  // uncached, every method, every header but Host.
  const api = cfg.CacheBehaviors.find((b: any) => b.PathPattern === "/api/*");
  assert.ok(api, "no /api/* behavior");
  assert.ok(api.AllowedMethods.includes("POST"));
  const origin = cfg.Origins.find((o: any) => o.Id === api.TargetOriginId);
  assert.match(JSON.stringify(origin.DomainName), /execute-api/);
  assert.deepEqual(api.FunctionAssociations, undefined, "API paths are not rewritten");
  // The build is deployed into the bucket, and the distribution invalidated.
  const [deploy] = Object.values(t.findResources("Custom::CDKBucketDeployment")) as any[];
  assert.ok(deploy, "the storefront build is not deployed");
  assert.deepEqual(deploy.Properties.DestinationBucketName, { Ref: siteId });
  assert.deepEqual(deploy.Properties.DistributionId, { Ref: distId });
  assert.ok(t.toJSON().Outputs.StorefrontUrl, "no StorefrontUrl output");
});

test("client-side routes get index.html; files and the root are served as they are", () => {
  const [dist] = Object.values(t.findResources("AWS::CloudFront::Distribution")) as any[];
  const assoc = dist.Properties.DistributionConfig.DefaultCacheBehavior.FunctionAssociations;
  assert.equal(assoc.length, 1);
  assert.equal(assoc[0].EventType, "viewer-request");
  const fnId = assoc[0].FunctionARN["Fn::GetAtt"][0];
  const code: string = t.toJSON().Resources[fnId].Properties.FunctionCode;
  // Run the CloudFront Function's code as CloudFront would, on the storefront's routes.
  const handler = new Function(`${code}; return handler;`)() as (e: unknown) => { uri: string };
  const uri = (u: string) => handler({ request: { uri: u, headers: {} } }).uri;
  for (const route of ["/models/0xabc", "/jobs", "/jobs/7f3a/receipt", "/jobs/7f3a/"]) {
    assert.equal(uri(route), "/index.html", route);
  }
  for (const file of ["/", "/index.html", "/style.css", "/posthuman_web_bg.wasm", "/posthuman_web.js"]) {
    assert.equal(uri(file), file, file);
  }
});

test("CORS on the HTTP API admits the storefront origin the deploy names, with the API's headers", () => {
  const param = t.toJSON().Parameters.StorefrontOrigin;
  assert.ok(param, "no StorefrontOrigin parameter");
  // Empty by default: the storefront on CloudFront is the API's own origin (no CORS needed).
  assert.equal(param.Default, "");
  const [api] = Object.values(t.findResources("AWS::ApiGatewayV2::Api")) as any[];
  const cors = JSON.stringify(api.Properties.CorsConfiguration);
  assert.match(cors, /"Fn::If"/);
  const ifArgs = api.Properties.CorsConfiguration["Fn::If"];
  assert.deepEqual(ifArgs[2], { Ref: "AWS::NoValue" });
  const c = ifArgs[1];
  assert.deepEqual(c.AllowOrigins, [{ Ref: "StorefrontOrigin" }]);
  for (const h of ["content-type", "x-posthuman-signature", "x-posthuman-expires", "x-posthuman-reader"]) {
    assert.ok(c.AllowHeaders.includes(h), `${h} not allowed`);
  }
  assert.ok(c.ExposeHeaders.includes("x-posthuman-next-cursor"));
  assert.deepEqual([...c.AllowMethods].sort(), ["GET", "OPTIONS", "POST"]);
  const cond = t.toJSON().Conditions[ifArgs[0]];
  assert.match(JSON.stringify(cond), /StorefrontOrigin/);
  // An origin is scheme://host[:port], no path or trailing slash.
  const pattern = new RegExp(param.AllowedPattern);
  for (const ok of ["", "https://shop.example.com", "http://localhost:8080"]) assert.ok(pattern.test(ok), ok);
  for (const bad of ["*", "https://shop.example.com/", "shop.example.com"]) assert.ok(!pattern.test(bad), bad);
});

test("the data bucket's CORS lets the storefront PUT direct uploads (CloudFront's origin, and the deploy's)", () => {
  const buckets = Object.values(t.findResources("AWS::S3::Bucket")) as any[];
  const withCors = buckets.filter((b) => b.Properties.CorsConfiguration);
  // Only the data bucket (where uploads/ lives): not the storefront's, not the logs'.
  assert.equal(withCors.length, 1);
  const data = withCors[0];
  assert.deepEqual(data.Properties.VersioningConfiguration, { Status: "Enabled" }, "the data bucket");
  const rules = data.Properties.CorsConfiguration.CorsRules;
  assert.equal(rules.length, 2);
  const [cloudfront, conditional] = rules;
  // The CloudFront storefront's own origin, always.
  const distId = Object.keys(t.findResources("AWS::CloudFront::Distribution"))[0];
  assert.deepEqual(cloudfront.AllowedOrigins, [
    { "Fn::Join": ["", ["https://", { "Fn::GetAtt": [distId, "DomainName"] }]] },
  ]);
  // The deploy's StorefrontOrigin, under the same condition as the HTTP API's CORS.
  const [cond, rule, none] = conditional["Fn::If"];
  assert.equal(cond, "HasStorefrontOrigin");
  assert.deepEqual(none, { Ref: "AWS::NoValue" });
  assert.deepEqual(rule.AllowedOrigins, [{ Ref: "StorefrontOrigin" }]);
  for (const r of [cloudfront, rule]) {
    assert.deepEqual(r.AllowedMethods, ["PUT"], "uploads only PUT");
    for (const h of ["content-length", "x-amz-checksum-sha256", "content-type"]) {
      assert.ok(r.AllowedHeaders.includes(h), `${h} not allowed`);
    }
    assert.ok(!r.AllowedHeaders.includes("*"), "no wildcard header");
    assert.deepEqual(r.ExposedHeaders, ["ETag"]);
  }
});

// --- A completion is never lost (issue 13 §5). ---

test("job-done sends an event it failed on, after Lambda's retries, to a dead-letter queue, and a schedule sweeps stuck jobs through it", () => {
  const fn = lambdaFn("JobDoneFn");
  // EventBridge hands each event to Lambda asynchronously and is done with it: a handler
  // error is retried by Lambda, then dropped unless the function has an on-failure destination.
  const configs = (Object.values(t.findResources("AWS::Lambda::EventInvokeConfig")) as any[]).filter((c) =>
    JSON.stringify(c.Properties.FunctionName).includes(fn.logicalId),
  );
  assert.equal(configs.length, 1, "job-done has no asynchronous invocation config");
  const cfg = configs[0].Properties;
  assert.equal(cfg.MaximumRetryAttempts, 2);
  assert.ok(cfg.MaximumEventAgeInSeconds >= 3600, `events expire after ${cfg.MaximumEventAgeInSeconds} s`);
  const dest = JSON.stringify(cfg.DestinationConfig?.OnFailure?.Destination);
  const queueId = Object.keys(t.findResources("AWS::SQS::Queue")).find((q) => dest.includes(q));
  assert.ok(queueId, `the on-failure destination ${dest} is not one of the stack's SQS queues`);
  const role = statementsOf(lambdaRole("posthuman-job-done-lambda"));
  const sqsStatements = role.filter((s) => actionsOf(s).some((a) => a.startsWith("sqs:")));
  assert.ok(sqsStatements.length > 0, "job-done may not send to its dead-letter queue");
  for (const s of sqsStatements) {
    assert.ok(actionsOf(s).every((a) => /^sqs:(SendMessage|GetQueueAttributes|GetQueueUrl)$/.test(a)), JSON.stringify(s));
    assert.match(JSON.stringify(s.Resource), new RegExp(queueId));
  }

  // The Batch rule keeps EventBridge's own retry policy and DLQ (for events Lambda never took).
  const rules = Object.values(t.findResources("AWS::Events::Rule")) as any[];
  const batchRule = rules.find((r) => JSON.stringify(r.Properties.EventPattern ?? {}).includes("aws.batch"));
  assert.ok(batchRule, "no Batch state-change rule");
  const target = batchRule.Properties.Targets[0];
  assert.ok(target.RetryPolicy.MaximumRetryAttempts >= 1 && target.DeadLetterConfig, JSON.stringify(target));

  // A schedule invokes job-done for the sweep (functions/src/sweep.rs): a paid job a crash left
  // unqueued waits minutes, not for ever.
  const sweep = rules.find((r) => r.Properties.ScheduleExpression);
  assert.ok(sweep, "no sweep schedule");
  const m = String(sweep.Properties.ScheduleExpression).match(/^rate\((\d+) minutes?\)$/);
  assert.ok(m && Number(m[1]) <= 15, sweep.Properties.ScheduleExpression);
  assert.match(JSON.stringify(sweep.Properties.Targets), new RegExp(fn.logicalId));
  // What the sweep asks: the queue by job name (ListJobs, no resource-level permissions), and
  // whether a spec is stored by listing that one key (S3 answers a HEAD of a missing key with
  // 403 to a role that may not list it, which would look like an outage for ever).
  assert.ok(role.some((s) => actionsOf(s).includes("batch:ListJobs")), "job-done may not ListJobs");
  const listed = role
    .filter((s) => actionsOf(s).includes("s3:ListBucket"))
    .map((s: any) => JSON.stringify(s.Condition ?? {}));
  assert.ok(listed.some((c) => c.includes("jobs/*/spec.json")), `job-done lists only ${listed}`);
});
