import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";
import { REPO_ROOT } from "@portico/envoy";
import { RUN_FROM_SOURCE } from "./node-args.js";
import { waitFor } from "./wait.js";

/**
 * The control plane as its own process (`control-plane/src/main.ts`), for what an in-process one
 * cannot show: SIGKILL, its own memory. Resolves once `/healthz` answers.
 */
export async function spawnControlPlane(o: {
  store: string;
  tokensFile: string;
  adminPort: number;
  xdsPort: number;
  args?: string[];
}): Promise<ChildProcess> {
  const child = spawn(
    process.execPath,
    [
      ...RUN_FROM_SOURCE,
      path.join(REPO_ROOT, "control-plane/src/main.ts"),
      "--store",
      o.store,
      "--tokens-file",
      o.tokensFile,
      "--admin-port",
      String(o.adminPort),
      "--xds-port",
      String(o.xdsPort),
      ...(o.args ?? []),
    ],
    { cwd: REPO_ROOT, env: { ...process.env, LOG_LEVEL: "error" }, stdio: ["ignore", "ignore", "inherit"] },
  );
  try {
    await waitFor(
      async () =>
        (await fetch(`http://127.0.0.1:${o.adminPort}/healthz`).catch(() => undefined))?.ok || undefined,
      { what: "the control plane to start", timeoutMs: 20_000, intervalMs: 50 },
    );
  } catch (err) {
    child.kill("SIGKILL");
    throw err;
  }
  return child;
}

/** What `runControlPlaneUntil` saw: the process's output, and its exit code if it ended by itself. */
export interface ControlPlaneOutput {
  stdout: string;
  stderr: string;
  code: number | null;
}

/**
 * Runs `control-plane/src/main.ts` with `args` until `done` says its output is enough, or it exits,
 * then stops it (SIGTERM) and waits for it to end.
 */
export async function runControlPlaneUntil(
  args: string[],
  env: Record<string, string>,
  done: (out: ControlPlaneOutput) => boolean,
  timeoutMs = 20_000,
): Promise<ControlPlaneOutput> {
  const child = spawn(
    process.execPath,
    [...RUN_FROM_SOURCE, path.join(REPO_ROOT, "control-plane/src/main.ts"), ...args],
    {
      env: { ...process.env, LOG_LEVEL: "info", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  const out: ControlPlaneOutput = { stdout: "", stderr: "", code: null };
  child.stdout.on("data", (b: Buffer) => (out.stdout += b.toString()));
  child.stderr.on("data", (b: Buffer) => (out.stderr += b.toString()));
  const exited = new Promise<void>((resolve) =>
    child.once("exit", (code) => {
      out.code = code;
      resolve();
    }),
  );
  try {
    await waitFor(() => out.code !== null || done(out) || undefined, {
      what: "the control plane's output",
      timeoutMs,
    });
  } finally {
    if (out.code === null) child.kill("SIGTERM");
    await exited;
  }
  return out;
}
