// cdk-nag's AwsSolutions pack over the app: every finding is fixed in the stack or
// acknowledged next to the resource with why (Validations.of(x).acknowledge), so a new
// unacknowledged error fails the synth (bin/app.ts, infra/check.sh) and the nag test.
import * as fs from "fs";
import * as path from "path";
import { App, Validations } from "aws-cdk-lib";
import { AwsSolutionsChecks } from "cdk-nag";

/** Runs the AwsSolutions pack at synth; the acknowledgements go into the template's Metadata too. */
export function addNagChecks(app: App): void {
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app, { writeSuppressionsToCloudFormation: true }));
}

/** One finding of a validation report: its rule (with the finding, e.g. `AwsSolutions-IAM5[Resource::*]`) and where. */
export interface NagFinding {
  rule: string;
  severity: string;
  path: string;
  description: string;
}

/**
 * Synthesizes `app` (with addNagChecks applied) and returns the findings nobody acknowledged,
 * warnings included. A failing validation throws from synth; its report in the cloud
 * assembly (validation-report.json) is what this reads, so the caller sees every finding.
 */
export function synthFindings(app: App): NagFinding[] {
  let thrown: unknown;
  try {
    app.synth();
  } catch (e) {
    thrown = e;
  }
  const report = path.join(app.outdir, "validation-report.json");
  if (!fs.existsSync(report)) {
    if (thrown) throw thrown;
    throw new Error(`no ${report}: was addNagChecks applied to this app?`);
  }
  const findings: NagFinding[] = [];
  for (const plugin of JSON.parse(fs.readFileSync(report, "utf8")).pluginReports ?? []) {
    for (const v of plugin.violations ?? []) {
      for (const c of v.violatingConstructs ?? []) {
        findings.push({ rule: v.ruleName, severity: v.severity, path: c.constructPath, description: v.description });
      }
    }
  }
  if (thrown && !findings.some((f) => f.severity === "error")) throw thrown; // failed for another reason
  return findings;
}
