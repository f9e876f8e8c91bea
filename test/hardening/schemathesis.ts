// Schemathesis (PyPI) in the repo's tools venv, installed on first use, under the same install
// lock as Envoy's wheel (test files run in parallel workers).
import { execFile } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { REPO_ROOT, withInstallLock } from "@portico/envoy";

const run = promisify(execFile);

/** Pinned so a run's seed means the same generated cases from one day to the next. */
export const SCHEMATHESIS_PIN = "schemathesis==4.32.5";
const VENV = path.join(REPO_ROOT, ".portico", "tools-venv");
const ST = path.join(VENV, "bin", "st");
const INSTALL_TIMEOUT_MS = 300_000;

async function installedVersion(): Promise<string | undefined> {
  if (!fs.existsSync(ST)) return undefined;
  const { stdout } = await run(path.join(VENV, "bin", "python3"), [
    "-c",
    "import importlib.metadata as m; print(m.version('schemathesis'))",
  ]).catch(() => ({ stdout: "" }));
  return stdout.trim() || undefined;
}

/** Path of the `st` CLI; installs the pinned version if missing. Throws, never skips, when it cannot. */
export async function schemathesis(): Promise<string> {
  const want = SCHEMATHESIS_PIN.split("==")[1];
  if ((await installedVersion()) === want) return ST;
  return withInstallLock(
    "schemathesis-install",
    () => {},
    async () => {
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
    },
  );
}
