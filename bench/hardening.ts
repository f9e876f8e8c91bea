// The hardening suites, longer than in CI: the control plane killed with SIGKILL more often under
// write load and traffic through Envoy, ext-authz fuzzed with more cases, the admin API fuzzed
// with more examples. Loopback only, bounded in time; prints the counts each suite reports.
//   npx tsx bench/hardening.ts [--scale 5]
import { spawnSync } from "node:child_process";
import path from "node:path";
import { parseArgs } from "node:util";
import { REPO_ROOT } from "@portico/envoy";

const { values } = parseArgs({ options: { scale: { type: "string", default: "5" } } });
const scale = Number(values.scale);
if (!Number.isInteger(scale) || scale < 1 || scale > 50) {
  console.error("--scale must be a whole number from 1 to 50");
  process.exit(2);
}
const suites = ["test/integration/durability.test.ts", "test/hardening/"];
console.log(`hardening suites at ${scale}x the CI size: ${suites.join(", ")}`);
const run = spawnSync(
  path.join(REPO_ROOT, "node_modules", ".bin", "vitest"),
  [
    "run",
    "--reporter=default",
    `--testTimeout=${120_000 * scale}`,
    `--hookTimeout=${120_000 * scale}`,
    ...suites,
  ],
  { cwd: REPO_ROOT, stdio: "inherit", env: { ...process.env, PORTICO_HARDENING_SCALE: String(scale) } },
);
process.exit(run.status ?? 1);
