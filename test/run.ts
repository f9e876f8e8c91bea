// The whole test suite: makes sure Envoy is installed (once, before any worker starts), runs
// vitest with a JSON report, and ends with the line `N passed, N failed` taken from that report.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { findEnvoy, REPO_ROOT } from "../envoy/src/find-envoy.js";

const envoy = await findEnvoy({ install: true, log: (m) => console.log(m) });
console.log(`envoy ${envoy.version} at ${envoy.path} (${envoy.source})`);

const report = path.join(REPO_ROOT, "test-results", "vitest.json");
fs.mkdirSync(path.dirname(report), { recursive: true });
fs.rmSync(report, { force: true });

const vitest = path.join(REPO_ROOT, "node_modules", ".bin", "vitest");
const result = spawnSync(
  vitest,
  ["run", "--reporter=default", "--reporter=json", `--outputFile.json=${report}`, ...process.argv.slice(2)],
  { cwd: REPO_ROOT, stdio: "inherit", env: { ...process.env, ENVOY_BIN: envoy.path } },
);

if (!fs.existsSync(report)) {
  console.error("vitest wrote no JSON report");
  console.log("0 passed, 1 failed");
  process.exit(result.status || 1);
}
const json = JSON.parse(fs.readFileSync(report, "utf8")) as {
  numPassedTests: number;
  numFailedTests: number;
  numPendingTests: number;
  numTodoTests: number;
  numTotalTests: number;
  testResults: { status: string; message?: string; name: string }[];
};
// A file that failed to load has no test results but must still count as a failure.
const brokenFiles = json.testResults.filter((f) => f.status === "failed" && f.message).length;
const failed = json.numFailedTests + (json.numFailedTests === 0 ? brokenFiles : 0);
const skipped = json.numPendingTests + json.numTodoTests;
console.log(`${json.numPassedTests} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ""}`);
process.exit(result.status ?? (failed > 0 ? 1 : 0));
