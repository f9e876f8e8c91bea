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
