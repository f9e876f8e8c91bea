import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["**/*.test.ts"],
    exclude: ["node_modules/**", "dist/**", ".venv/**"],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Integration suites start real Envoy processes; two cores do not like many at once.
    fileParallelism: true,
    maxWorkers: 2,
    minWorkers: 1,
  },
});
