import { readFile } from "node:fs/promises";
import { parse as parseYaml } from "yaml";
import { compilePolicy, type CompiledPolicy } from "./compile.js";
import type { PolicyError, Result } from "@portico/contract";

/** Parses and compiles a policy written as YAML (JSON is YAML too). */
export function parsePolicy(text: string): Result<CompiledPolicy, PolicyError> {
  let doc: unknown;
  try {
    doc = parseYaml(text, { maxAliasCount: 100 });
  } catch (err) {
    return {
      ok: false,
      error: {
        code: "invalid_policy",
        message: `the policy is not valid YAML: ${(err as Error).message}`,
        details: [],
      },
    };
  }
  // An empty file is an empty policy: no providers, every protected route refuses.
  return compilePolicy(doc ?? {});
}

/** Reads a static policy file, for running without a control plane. */
export async function loadPolicyFile(path: string): Promise<Result<CompiledPolicy, PolicyError>> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    return {
      ok: false,
      error: {
        code: "unreadable_policy",
        message: `cannot read ${path}: ${(err as Error).message}`,
        details: [],
      },
    };
  }
  return parsePolicy(text);
}
