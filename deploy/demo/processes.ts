import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";
import { REPO_ROOT } from "@portico/envoy";

/** Whether this module runs as TypeScript (tests, `tsx`): its services then run from source too. */
const FROM_SOURCE = import.meta.url.endsWith(".ts");

/**
 * The entry point of a Portico package's service: its compiled `dist/main.js`, as in production,
 * or `src/main.ts` when the demo itself runs from source (with this process's `--import tsx`).
 */
export function serviceEntry(pkg: string): string {
  return path.join(REPO_ROOT, pkg, FROM_SOURCE ? "src/main.ts" : "dist/main.js");
}

/**
 * Starts `node NODE_ARGS… <entry> ARGS…` on this process's Node, with its loader flags, output to
 * this terminal. `nodeArgs`: what the service is shipped with (e.g. RATELIMIT_NODE_ARGS).
 */
export function startNodeService(
  entry: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv,
  nodeArgs: readonly string[] = [],
): ChildProcess {
  return spawn(process.execPath, [...process.execArgv, ...nodeArgs, entry, ...args], {
    stdio: ["ignore", "inherit", "inherit"],
    env: { ...process.env, ...env },
  });
}

/** Whether a child has exited (or could not start). */
export function hasExited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

/**
 * Stops a child and resolves once it has exited: SIGTERM, then SIGKILL after `graceMs` for one
 * that does not stop, so nothing it held (a port, a file lock) outlives the caller.
 */
export function stopProcess(child: ChildProcess, graceMs = 5_000): Promise<void> {
  if (hasExited(child) || child.pid === undefined) return Promise.resolve();
  return new Promise((resolve) => {
    const kill = setTimeout(() => child.kill("SIGKILL"), graceMs);
    child.once("exit", () => {
      clearTimeout(kill);
      resolve();
    });
    child.kill("SIGTERM");
  });
}
