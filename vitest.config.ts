import { defineConfig } from "vitest/config";
import { ensureNode, NODE_MAJOR, runOn } from "./scripts/node-runtime.mjs";

// Tests run on the Node that Portico runs on. `npx vitest` started by an older `node` on PATH
// runs again, the same command, on Node 24 (found or installed as `npm test` does).
if (Number(process.versions.node.split(".")[0]) < NODE_MAJOR) {
  await runOn(ensureNode(), [...process.execArgv, ...process.argv.slice(1)]);
}

// The workspace packages export their TypeScript sources under the `source` condition and their
// compiled JavaScript otherwise. Tests run the sources, and so do the processes they spawn
// (`node --import tsx …`), which inherit NODE_OPTIONS.
const SOURCE = "--conditions=source";
if (!(process.env.NODE_OPTIONS ?? "").includes(SOURCE)) {
  process.env.NODE_OPTIONS = `${process.env.NODE_OPTIONS ?? ""} ${SOURCE}`.trim();
}

export default defineConfig({
  resolve: { conditions: ["source"] },
  ssr: { resolve: { conditions: ["source"] } },
  test: {
    include: ["**/*.test.ts"],
    exclude: ["**/node_modules/**", "**/dist/**", ".venv/**"],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Integration suites start real Envoy processes; two cores do not like many at once.
    fileParallelism: true,
    maxWorkers: 2,
  },
});
