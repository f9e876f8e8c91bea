// Schemathesis (PyPI) in the repo's tools venv, installed on first use. Test files run in
// parallel workers, so the install is serialised with a lock directory; a lock left by a dead
// process is taken over.
import { execFile } from "node:child_process";
import fs from "node:fs";
import { mkdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import { REPO_ROOT } from "@portico/envoy";

const run = promisify(execFile);

/** Pinned so a run's seed means the same generated cases from one day to the next. */
export const SCHEMATHESIS_PIN = "schemathesis==4.32.5";
const VENV = path.join(REPO_ROOT, ".portico", "tools-venv");
const ST = path.join(VENV, "bin", "st");
const LOCK = path.join(REPO_ROOT, ".portico", "locks", "schemathesis-install.lock");
const INSTALL_TIMEOUT_MS = 300_000;

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

async function installedVersion(): Promise<string | undefined> {
  if (!fs.existsSync(ST)) return undefined;
  const { stdout } = await run(path.join(VENV, "bin", "python3"), [
    "-c",
    "import importlib.metadata as m; print(m.version('schemathesis'))",
  ]).catch(() => ({ stdout: "" }));
  return stdout.trim() || undefined;
}

async function withLock<T>(fn: () => Promise<T>): Promise<T> {
  await mkdir(path.dirname(LOCK), { recursive: true });
  const ownerFile = path.join(LOCK, "owner");
  const deadline = Date.now() + INSTALL_TIMEOUT_MS;
  for (;;) {
    try {
      await mkdir(LOCK);
      await writeFile(ownerFile, String(process.pid));
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    const owner = Number((await readFile(ownerFile, "utf8").catch(() => "")).trim());
    const age = Date.now() - ((await stat(LOCK).catch(() => undefined))?.mtimeMs ?? Date.now());
    // No owner yet: the holder is between mkdir and writeFile, unless it died right there.
    if (age > INSTALL_TIMEOUT_MS || (owner > 0 ? !pidAlive(owner) : age > 30_000)) {
      await rm(LOCK, { recursive: true, force: true });
      continue;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${LOCK} (held by pid ${owner})`);
    await sleep(250);
  }
  try {
    return await fn();
  } finally {
    await rm(LOCK, { recursive: true, force: true });
  }
}

/** Path of the `st` CLI; installs the pinned version if missing. Throws, never skips, when it cannot. */
export async function schemathesis(): Promise<string> {
  const want = SCHEMATHESIS_PIN.split("==")[1];
  if ((await installedVersion()) === want) return ST;
  return withLock(async () => {
    // Another worker may have finished the install while this one waited.
    if ((await installedVersion()) === want) return ST;
    try {
      if (!fs.existsSync(path.join(VENV, "bin", "python3"))) await run("python3", ["-m", "venv", VENV]);
      await run(
        path.join(VENV, "bin", "pip"),
        ["install", "--quiet", "--disable-pip-version-check", SCHEMATHESIS_PIN],
        {
          timeout: INSTALL_TIMEOUT_MS,
        },
      );
    } catch (err) {
      const e = err as { stdout?: string; stderr?: string; message?: string };
      throw new Error(
        `could not install ${SCHEMATHESIS_PIN} into ${VENV} (pip needs to reach PyPI): ` +
          `${`${e.stderr ?? ""}${e.stdout ?? ""}`.trim() || e.message}`,
      );
    }
    return ST;
  });
}
