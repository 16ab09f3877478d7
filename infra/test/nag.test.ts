// cdk-nag's AwsSolutions pack over the stack: no finding is left unacknowledged, and each
// acknowledgement names a rule that still fires (a stale one would hide the next real finding
// of that rule under an outdated reason).
import { test } from "node:test";
import * as assert from "node:assert/strict";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { Acknowledgment, App, Stack, Validations } from "aws-cdk-lib";
import { IConstruct } from "constructs";
import * as s3 from "aws-cdk-lib/aws-s3";
import { PosthumanStack } from "../lib/posthuman-stack";
import { addNagChecks, synthFindings } from "../lib/nag";

function tmp(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/** A fresh app writing to a temporary cloud assembly, with the pack applied. */
function nagApp(context: Record<string, string> = {}): App {
  const app = new App({ outdir: tmp("posthuman-nag-"), context: { "@aws-cdk/aws-batch:defaultToAL2023": true, ...context } });
  addNagChecks(app);
  return app;
}

function posthuman(app: App): PosthumanStack {
  // Stand-in Lambda bundles and storefront: the pack checks the template, not the binaries.
  const lambdaDir = tmp("posthuman-lambda-");
  for (const bin of ["posthuman-api-lambda", "posthuman-job-done-lambda", "posthuman-publish-lambda"]) {
    fs.mkdirSync(path.join(lambdaDir, bin));
    fs.writeFileSync(path.join(lambdaDir, bin, "bootstrap"), "#!/bin/sh\n");
  }
  const storefrontDir = tmp("posthuman-web-");
  fs.writeFileSync(path.join(storefrontDir, "index.html"), "<!doctype html><title>Posthuman</title>\n");
  return new PosthumanStack(app, "Posthuman", { lambdaDir, storefrontDir });
}

const show = (fs: { rule: string; path: string; description: string }[]) =>
  fs.map((f) => `  ${f.rule} at ${f.path}: ${f.description}`).join("\n");

for (const gpuFamily of ["p3", "g5"]) {
  test(`the stack has no unacknowledged AwsSolutions finding (gpuFamily=${gpuFamily})`, () => {
    const app = nagApp({ gpuFamily });
    posthuman(app);
    const findings = synthFindings(app);
    assert.deepEqual(findings, [], `unacknowledged cdk-nag findings:\n${show(findings)}`);
  });
}

test("the check sees a finding nobody acknowledged (it can fail)", () => {
  const app = nagApp();
  const stack = new Stack(app, "Bare");
  new s3.Bucket(stack, "NoLogs", { enforceSSL: true });
  const findings = synthFindings(app);
  assert.ok(
    findings.some((f) => f.rule === "AwsSolutions-S1" && f.severity === "error" && f.path === "Bare/NoLogs/Resource"),
    `expected AwsSolutions-S1 on Bare/NoLogs, got:\n${show(findings)}`,
  );
});

test("every acknowledgement in the stack names a finding that the pack reports without it", () => {
  // Synthesize with Validations.acknowledge recording each call instead of applying it: each
  // acknowledgement the stack makes must match a finding there (on its scope or below), or it
  // is stale and would hide the next real finding of that rule under an outdated reason.
  const acks: { scope: string; id: string; reason: string }[] = [];
  const apply = Validations.prototype.acknowledge;
  let raw;
  Validations.prototype.acknowledge = function (this: Validations, ...rules: Acknowledgment[]) {
    const scope = (this as unknown as { scope: IConstruct }).scope;
    for (const r of rules) acks.push({ scope: scope.node.path, id: r.id, reason: r.reason });
  };
  try {
    const app = nagApp();
    posthuman(app);
    raw = synthFindings(app);
  } finally {
    Validations.prototype.acknowledge = apply;
  }
  const ours = acks.filter((a) => a.id.startsWith("AwsSolutions-"));
  assert.ok(ours.length > 0, "the stack acknowledged nothing");
  for (const a of ours) assert.ok(a.reason.length > 20, `acknowledgement ${a.id} at ${a.scope} gives no reason`);
  const stale = ours.filter((a) => !raw.some((f) => f.rule === a.id && (f.path === a.scope || f.path.startsWith(a.scope + "/"))));
  assert.deepEqual(stale, [], `acknowledgements that match no finding:\n${stale.map((a) => `  ${a.id} at ${a.scope}`).join("\n")}`);
});
