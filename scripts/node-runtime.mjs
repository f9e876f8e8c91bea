// The Node that Portico runs on: 24 or newer. Plain JavaScript with no dependencies, because it
// runs first, on whatever older Node is on PATH, before anything is installed.
//
// Found, in order: the binary PORTICO_NODE names; this process or the `node` on PATH, when new
// enough; the project's own copy in .portico/node/. That copy is installed when none is found,
// from the npm registry's package of the official binaries (node-<platform>-<arch>).
import { execFileSync, spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
export const NODE_MAJOR = 24;
/** The newest 24.x LTS, installed into the project when no Node 24 is at hand. */
export const NODE_VERSION = "24.22.3";
const NODE_PACKAGE = `node-${process.platform}-${process.arch}@${NODE_VERSION}`;
const PROJECT_NODE_DIR = path.join(REPO_ROOT, ".portico", "node", NODE_VERSION);
const PROJECT_NODE = path.join(PROJECT_NODE_DIR, "bin", "node");

const majorOf = (version) => Number(/^v?(\d+)\./.exec(version)?.[1] ?? 0);

function isExecutableFile(file) {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

/** The version a binary reports, or undefined when it does not run as a Node. */
function versionOf(bin) {
  const r = spawnSync(bin, ["-p", "process.versions.node"], { encoding: "utf8", timeout: 30_000 });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

function firstNodeOnPath(env) {
  return (env.PATH ?? "")
    .split(path.delimiter)
    .filter(Boolean)
    .map((dir) => path.join(dir, "node"))
    .find(isExecutableFile);
}

/**
 * A Node ≥ 24 already at hand, or undefined. A PORTICO_NODE that does not run, or is older, is an
 * error rather than something to step over: whoever set it meant that binary.
 */
export function findNode(env = process.env) {
  if (env.PORTICO_NODE) {
    const bin = path.resolve(env.PORTICO_NODE);
    const version = versionOf(bin);
    if (!version) throw new Error(`PORTICO_NODE=${env.PORTICO_NODE} is not a Node binary that runs`);
    if (majorOf(version) < NODE_MAJOR)
      throw new Error(
        `PORTICO_NODE=${env.PORTICO_NODE} is Node ${version}; Portico needs ${NODE_MAJOR} or newer`,
      );
    return { path: bin, version, source: "PORTICO_NODE" };
  }
  if (majorOf(process.versions.node) >= NODE_MAJOR)
    return { path: process.execPath, version: process.versions.node, source: "this process" };
  const onPath = firstNodeOnPath(env);
  if (onPath && fs.realpathSync(onPath) !== fs.realpathSync(process.execPath)) {
    const version = versionOf(onPath);
    if (version && majorOf(version) >= NODE_MAJOR) return { path: onPath, version, source: "PATH" };
  }
  if (isExecutableFile(PROJECT_NODE)) return { path: PROJECT_NODE, version: NODE_VERSION, source: "project" };
  return undefined;
}

/**
 * Installs Node into .portico/node/<version>/ from the npm registry (through `npm pack`, so the
 * registry, proxy and cache settings are npm's own). Unpacked beside the target and renamed into
 * place, so a process that looks meanwhile sees a whole install or none, and of two concurrent
 * installs the second to finish keeps the first one's.
 */
export function installNode(log = console.error) {
  fs.mkdirSync(path.dirname(PROJECT_NODE_DIR), { recursive: true });
  const work = fs.mkdtempSync(`${PROJECT_NODE_DIR}.partial-`);
  try {
    log(
      `installing Node ${NODE_VERSION} into ${path.relative(REPO_ROOT, PROJECT_NODE_DIR)} (npm package ${NODE_PACKAGE})`,
    );
    const packed = execFileSync(
      "npm",
      ["pack", NODE_PACKAGE, "--json", "--ignore-scripts", "--pack-destination", work],
      { cwd: work, encoding: "utf8", stdio: ["ignore", "pipe", "inherit"], timeout: 15 * 60_000 },
    );
    const tarball = path.join(work, JSON.parse(packed)[0].filename);
    // The binary and its licence; the headers and docs of the package are of no use here.
    execFileSync("tar", ["-xzf", tarball, "-C", work, "package/bin/node", "package/LICENSE"]);
    const version = versionOf(path.join(work, "package", "bin", "node"));
    if (version !== NODE_VERSION)
      throw new Error(
        `${NODE_PACKAGE} holds a bin/node that reports ${version ?? "nothing"}, not ${NODE_VERSION}`,
      );
    try {
      fs.renameSync(path.join(work, "package"), PROJECT_NODE_DIR);
    } catch (err) {
      if (!isExecutableFile(PROJECT_NODE)) throw err;
    }
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
  return { path: PROJECT_NODE, version: NODE_VERSION, source: "project" };
}

/** A Node ≥ 24: one at hand, or else the project's own, installed now. */
export function ensureNode(log = console.error) {
  return findNode() ?? installNode(log);
}

/** `env` with the directory of `node` first on PATH, so that `node` and `#!/usr/bin/env node` find it. */
export function withNodeOnPath(node, env = process.env) {
  return { ...env, PATH: [path.dirname(node.path), env.PATH].filter(Boolean).join(path.delimiter) };
}

/**
 * npm passes only SIGINT and SIGTERM on to the script it runs: a SIGHUP (or a SIGKILL) ends npm
 * alone, and the script would run on with no one to stop it. So under `npm run`, a launcher whose
 * parent is gone stops its child as SIGTERM would. Polled, since no event says a parent died.
 */
function stopWhenNpmIsGone(child, intervalMs = 500) {
  const parent = process.ppid;
  const timer = setInterval(() => {
    if (process.ppid === parent) return;
    clearInterval(timer);
    child.kill("SIGTERM");
  }, intervalMs);
  timer.unref();
  child.once("exit", () => clearInterval(timer));
}

/**
 * Runs `node ARGS…` on `node` in place of this process: the terminal's or a supervisor's signals
 * are passed on, and this process exits with the child's code. Never resolves.
 */
export function runOn(node, args) {
  const child = spawn(node.path, args, { stdio: "inherit", env: withNodeOnPath(node) });
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"]) process.on(signal, () => child.kill(signal));
  if (process.env.npm_lifecycle_event) stopWhenNpmIsGone(child);
  child.on("error", (err) => {
    console.error(`cannot start ${node.path}: ${err.message}`);
    process.exit(1);
  });
  child.on("exit", (code, signal) => process.exit(code ?? 128 + (os.constants.signals[signal] ?? 0)));
  return new Promise(() => {});
}
