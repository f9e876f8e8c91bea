// The whole test suite: makes sure Envoy is installed (once, before any worker starts), runs
// vitest with a JSON report on this process's Node (the Node 24 that `npm test` starts it on),
// and ends with the line `N passed, N failed` taken from that report.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { findEnvoy, REPO_ROOT } from "@portico/envoy";

const require = createRequire(import.meta.url);

const envoy = await findEnvoy({ install: true, log: (m) => console.log(m) });
console.log(`envoy ${envoy.version} at ${envoy.path} (${envoy.source}); node ${process.version}`);

const report = path.join(REPO_ROOT, "test-results", "vitest.json");
fs.mkdirSync(path.dirname(report), { recursive: true });
fs.rmSync(report, { force: true });

const vitestPackage = require.resolve("vitest/package.json");
const vitest = path.join(
  path.dirname(vitestPackage),
  (JSON.parse(fs.readFileSync(vitestPackage, "utf8")) as { bin: { vitest: string } }).bin.vitest,
);
const result = spawnSync(
  process.execPath,
  [
    vitest,
    "run",
    "--reporter=default",
    "--reporter=json",
    `--outputFile.json=${report}`,
    ...process.argv.slice(2),
  ],
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
  testResults: { name: string; status: string; assertionResults: { status: string }[] }[];
};
// A file that failed without a failing test of its own (it did not load, or a hook failed) is
// one failure more.
const failedFiles = json.testResults.filter(
  (f) => f.status === "failed" && !f.assertionResults.some((t) => t.status === "failed"),
).length;
// vitest also fails a run for an error no test caught (an unhandled rejection, a socket error
// event nobody listened to), which the report does not count: one failure more, so the line
// never reads "0 failed" for a run that failed.
const unhandled = result.status !== 0 && json.numFailedTests + failedFiles === 0 ? 1 : 0;
if (unhandled) console.error("the run failed outside any test (see vitest's 'Unhandled Errors' above)");
const failed = json.numFailedTests + failedFiles + unhandled;
const skipped = json.numPendingTests + json.numTodoTests;
console.log(`${json.numPassedTests} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ""}`);
process.exit(result.status ?? (failed > 0 ? 1 : 0));
