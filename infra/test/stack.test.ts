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

function synth(): Template {
  // Stand-in Lambda bundles: the test checks the template, not the binaries.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "posthuman-lambda-"));
  for (const bin of ["posthuman-api-lambda", "posthuman-job-done-lambda"]) {
    fs.mkdirSync(path.join(dir, bin));
    fs.writeFileSync(path.join(dir, bin, "bootstrap"), "#!/bin/sh\n");
  }
  const app = new App({ context: { "@aws-cdk/aws-batch:defaultToAL2023": true } });
  const stack = new PosthumanStack(app, "Test", { lambdaDir: dir, workerImageTag: "v1" });
  return Template.fromStack(stack);
}

const t = synth();

test("the data bucket is private, encrypted, TLS-only and versioned", () => {
  t.resourceCountIs("AWS::S3::Bucket", 1);
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
      InstanceTypes: ["g5.xlarge", "g5.2xlarge"],
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

test("both Lambdas get the variables functions/src/aws.rs reads, never the key in clear", () => {
  const fns = t.findResources("AWS::Lambda::Function", { Properties: { Runtime: "provided.al2023" } });
  assert.equal(Object.keys(fns).length, 2);
  for (const fn of Object.values(fns)) {
    const vars = fn.Properties.Environment.Variables;
    for (const name of [
      "POSTHUMAN_BUCKET",
      "POSTHUMAN_BATCH_QUEUE",
      "POSTHUMAN_BATCH_JOB_DEFINITION",
      "POSTHUMAN_RPC_URL",
      "POSTHUMAN_ADDRESS_BOOK",
      "POSTHUMAN_OPERATOR_KEY",
    ]) {
      assert.ok(name in vars, `${name} missing`);
    }
    assert.match(JSON.stringify(vars.POSTHUMAN_OPERATOR_KEY), /resolve:secretsmanager/);
  }
  t.hasResourceProperties("AWS::SecretsManager::Secret", {
    GenerateSecretString: Match.objectLike({ PasswordLength: 64 }),
  });
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
