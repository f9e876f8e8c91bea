import type { ZodError } from "zod";

export interface FieldProblem {
  /** Where, as a path into the document: `jwtProviders[0].algorithms`. */
  field: string;
  reason: string;
}

/** A policy that cannot be used, with each field and what is wrong with it. */
export interface PolicyError {
  code: "invalid_policy" | "unreadable_policy";
  message: string;
  details: FieldProblem[];
}

export type Result<T, E> = { ok: true; value: T } | { ok: false; error: E };

export function fieldPath(path: readonly PropertyKey[]): string {
  let out = "";
  for (const p of path) {
    if (typeof p === "number") out += `[${p}]`;
    else out += out ? `.${String(p)}` : String(p);
  }
  return out || "(root)";
}

export function fromZod(err: ZodError): FieldProblem[] {
  return err.issues.map((i) => {
    const keys = (i as { keys?: string[] }).keys;
    if (i.code === "unrecognized_keys" && keys) {
      return { field: fieldPath([...i.path, keys[0]!]), reason: `unknown field (${keys.join(", ")})` };
    }
    return { field: fieldPath(i.path), reason: i.message };
  });
}

/** One line a person can act on. */
export function formatPolicyError(e: PolicyError): string {
  return e.details.length
    ? `${e.message}: ${e.details.map((d) => `${d.field}: ${d.reason}`).join("; ")}`
    : e.message;
}
