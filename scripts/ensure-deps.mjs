// What `npm test`, `npm run demo` and the image build need before they start, on a fresh clone
// as on a working one: Node 24 (scripts/node-runtime.mjs), the npm dependencies (`npm ci`, when
// node_modules is missing or older than the lock file) and the compiled packages (`npm run
// build`, an incremental `tsc -b` that costs little when nothing changed). Plain JavaScript with no
// dependencies, because it runs on whatever older Node is on PATH.
//
// Under a lock, so that two runs started together on a fresh clone do not both run `npm ci`
// into one node_modules; a lock left by a process that died is taken over.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { ensureNode, REPO_ROOT, withNodeOnPath } from "./node-runtime.mjs";

const LOCK_FILE = path.join(REPO_ROOT, ".portico", "locks", "ensure-deps.lock");
/** A lock file with no owner written yet is given this long before it counts as abandoned. */
const UNOWNED_GRACE_MS = 10_000;

const log = (line) => console.error(`ensure-deps: ${line}`);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function isRunning(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return err.code === "EPERM";
  }
}

/** The pid written in the lock file, 0 while none is, or undefined when there is no lock file. */
function lockOwner() {
  try {
    return Number(fs.readFileSync(LOCK_FILE, "utf8").trim()) || 0;
  } catch {
    return undefined;
  }
}

function lockAbandoned(owner) {
  if (owner > 0) return !isRunning(owner);
  const age = Date.now() - (fs.statSync(LOCK_FILE, { throwIfNoEntry: false })?.mtimeMs ?? Date.now());
  return age > UNOWNED_GRACE_MS;
}

async function withLock(fn) {
  fs.mkdirSync(path.dirname(LOCK_FILE), { recursive: true });
  let announced = false;
  for (;;) {
    try {
      fs.writeFileSync(LOCK_FILE, String(process.pid), { flag: "wx" });
      break;
    } catch (err) {
      if (err.code !== "EEXIST") throw err;
    }
    const owner = lockOwner();
    if (owner === undefined) continue;
    // Taken over only if it still names the same owner, so a lock just re-taken by another waiter stays.
    if (lockAbandoned(owner) && lockOwner() === owner) {
      log(`taking over the lock of pid ${owner || "?"}, which is gone`);
      fs.rmSync(LOCK_FILE, { force: true });
      continue;
    }
    if (!announced) log(`waiting for pid ${owner || "?"}, which is installing or building`);
    announced = true;
    await sleep(250);
  }
  try {
    return await fn();
  } finally {
    fs.rmSync(LOCK_FILE, { force: true });
  }
}

function dependenciesStale() {
  const installed = fs.statSync(path.join(REPO_ROOT, "node_modules", ".package-lock.json"), {
    throwIfNoEntry: false,
  });
  return !installed || installed.mtimeMs < fs.statSync(path.join(REPO_ROOT, "package-lock.json")).mtimeMs;
}

try {
  await withLock(async () => {
    const node = ensureNode(log);
    // npm itself, and the build's `tsc`, then run on that Node too.
    const run = (args) =>
      execFileSync("npm", args, { cwd: REPO_ROOT, stdio: "inherit", env: withNodeOnPath(node) });
    if (dependenciesStale()) {
      log(`installing npm dependencies (npm ci) with Node ${node.version}`);
      run(["ci", "--no-audit", "--no-fund"]);
    }
    run(["run", "--silent", "build"]);
  });
} catch (err) {
  log(err.message);
  process.exit(1);
}
