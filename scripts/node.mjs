#!/usr/bin/env node
// `node scripts/node.mjs ARGS…` is `node ARGS…` on the Node that Portico runs on
// (scripts/node-runtime.mjs), whichever Node started it: how every npm script runs on Node 24 when
// the `node` on PATH is older. A first argument that names a command of node_modules/.bin (tsc,
// eslint, vitest…) runs that command's script.
//
// The child finds the same Node first on its PATH, so what it starts in turn runs on it too. The
// signals a terminal or a supervisor sends are passed on, and the exit code is the child's.
import fs from "node:fs";
import path from "node:path";
import { ensureNode, REPO_ROOT, runOn } from "./node-runtime.mjs";

/** A `node_modules/.bin` command's script, for a first argument that is a command rather than a file. */
function commandScript(arg) {
  if (!arg || arg.startsWith("-") || fs.existsSync(arg)) return undefined;
  const bin = path.join(REPO_ROOT, "node_modules", ".bin", arg);
  return fs.existsSync(bin) ? fs.realpathSync(bin) : undefined;
}

let node;
try {
  node = ensureNode();
} catch (err) {
  console.error(`scripts/node.mjs: ${err.message}`);
  process.exit(1);
}
const args = process.argv.slice(2);
if (args.length > 0) args[0] = commandScript(args[0]) ?? args[0];
await runOn(node, args);
