import type { ZodError } from "zod";

/** A problem with one field of a document: what a NACK, a 4xx or a start-up error lists. */
export interface FieldProblem {
  /** Where, as a path into the document: `routes[2].match.pathPrefix`. */
  field: string;
  reason: string;
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

/** zod's issues as field problems; an unknown key is named by its own path. */
export function zodProblems(err: ZodError): FieldProblem[] {
  return err.issues.map((i) => {
    const keys = (i as { keys?: string[] }).keys;
    if (i.code === "unrecognized_keys" && keys) {
      return { field: fieldPath([...i.path, keys[0]!]), reason: `unknown field (${keys.join(", ")})` };
    }
    return { field: fieldPath(i.path), reason: i.message };
  });
}

/** Problems as one line each: what a NACK or a startup error says. */
export function formatProblems(problems: readonly FieldProblem[]): string {
  return problems.map((p) => `${p.field}: ${p.reason}`).join("; ");
}
