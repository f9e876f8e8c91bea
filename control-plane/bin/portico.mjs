#!/usr/bin/env node
// The `portico` command: the compiled CLI. A development checkout that has not been built, or a
// process that asks for the packages' `source` condition (as the tests do), runs the TypeScript
// sources instead, through tsx: compiled code would otherwise import the other packages' sources.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import { fileURLToPath } from "node:url";

const compiled = new URL("../dist/cli/main.js", import.meta.url);
const args = process.argv.slice(2);
const nodeArgs = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? "").split(/\s+/)];
const fromSource = nodeArgs.some((a) => /^(--conditions|-C)=?source$/.test(a)) || nodeArgs.includes("source");
if (fs.existsSync(compiled) && !fromSource) {
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
