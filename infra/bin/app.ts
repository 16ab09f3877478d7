// Synthesizes the Posthuman stack offline into cdk.out/ (no AWS account or network needed).
// The Lambda bundles come from `cargo lambda build --release` (target/lambda/<bin>/bootstrap);
// pass another directory with POSTHUMAN_LAMBDA_DIR (or `-c lambdaDir=...` under the cdk CLI).
import * as path from "path";
import * as fs from "fs";
import { App } from "aws-cdk-lib";
import { PosthumanStack } from "../lib/posthuman-stack";
import { addNagChecks } from "../lib/nag";

// Under the cdk CLI, CDK_OUTDIR is set; run directly with node, write to ./cdk.out.
const app = new App({ outdir: process.env.CDK_OUTDIR ?? path.join(__dirname, "../../cdk.out") });
const lambdaDir =
  app.node.tryGetContext("lambdaDir") ??
  process.env.POSTHUMAN_LAMBDA_DIR ??
  path.join(process.env.CARGO_TARGET_DIR ?? path.join(__dirname, "../../../target"), "lambda");
for (const bin of ["posthuman-api-lambda", "posthuman-job-done-lambda"]) {
  if (!fs.existsSync(path.join(lambdaDir, bin, "bootstrap"))) {
    throw new Error(
      `missing ${lambdaDir}/${bin}/bootstrap: run \`cargo lambda build --release -p posthuman-functions\` ` +
        `or set POSTHUMAN_LAMBDA_DIR=DIR`,
    );
  }
}
// The storefront's build: web/build.sh writes web/dist (or POSTHUMAN_STOREFRONT_DIR / -c storefrontDir=...).
const storefrontDir =
  app.node.tryGetContext("storefrontDir") ??
  process.env.POSTHUMAN_STOREFRONT_DIR ??
  path.join(__dirname, "../../../web/dist");
if (!fs.existsSync(path.join(storefrontDir, "index.html"))) {
  throw new Error(`missing ${storefrontDir}/index.html: run web/build.sh or set POSTHUMAN_STOREFRONT_DIR=DIR`);
}
// Deploy-time choices are context the stack reads (`-c key=value`): workerImageTag (the git
// commit of the pushed worker image), gpuFamily, addressBookParam; see infra/README.md.
new PosthumanStack(app, "Posthuman", { lambdaDir, storefrontDir });
// cdk-nag's AwsSolutions pack: an unacknowledged error fails the synth (and so infra/check.sh
// and `cdk deploy`), printing each finding with the construct and how to acknowledge it.
addNagChecks(app);
try {
  app.synth();
} catch (e) {
  // The findings are printed above; the stack trace would only point into aws-cdk-lib.
  console.error(`infra: synth failed: ${e instanceof Error ? e.message : String(e)}`);
  process.exit(1);
}
