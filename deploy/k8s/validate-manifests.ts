// Schema validation of the Kubernetes manifests, offline: the kubernetes-validate package from
// PyPI carries the API schemas of every Kubernetes release, so no cluster and no network at
// validation time are needed. Installed once into a tools venv.
import { execFile } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { REPO_ROOT } from "@portico/envoy";

const run = promisify(execFile);
export const KUBERNETES_VALIDATE_PIN = "kubernetes-validate==1.37.0";
export const KUBERNETES_VERSION = "1.33.0";
const venv = path.join(REPO_ROOT, ".portico", "tools-venv");
const bin = path.join(venv, "bin", "kubernetes-validate");

export async function kubernetesValidate(): Promise<string> {
  if (fs.existsSync(bin)) return bin;
  if (!fs.existsSync(path.join(venv, "bin", "python3"))) await run("python3", ["-m", "venv", venv]);
  await run(path.join(venv, "bin", "pip"), ["install", "--quiet", KUBERNETES_VALIDATE_PIN], {
    timeout: 600_000,
  });
  return bin;
}

/** Validates files strictly (unknown fields are errors); resolves with the tool's output, rejects with it. */
export async function validateManifests(files: string[]): Promise<string> {
  const tool = await kubernetesValidate();
  try {
    const { stdout, stderr } = await run(tool, ["--strict", "-k", KUBERNETES_VERSION, ...files]);
    return `${stdout}${stderr}`;
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string };
    throw new Error(`${e.stdout ?? ""}${e.stderr ?? ""}`.trim() || String(err));
  }
}
