#!/usr/bin/env node
// The `portico` command: the compiled CLI. A development checkout that has not been built runs
// the TypeScript sources instead, through tsx and the packages' `source` condition.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import { fileURLToPath } from "node:url";

const compiled = new URL("../dist/cli/main.js", import.meta.url);
const args = process.argv.slice(2);
if (fs.existsSync(compiled)) {
  const { runCli } = await import(compiled.href);
  process.exitCode = await runCli(args);
} else {
  const source = fileURLToPath(new URL("../src/cli/main.ts", import.meta.url));
  const run = spawnSync(
    process.execPath,
    ["--conditions=source", "--import", import.meta.resolve("tsx"), source, ...args],
    { stdio: "inherit" },
  );
  process.exitCode = run.status ?? 1;
}
