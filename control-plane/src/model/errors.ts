import type { ZodError } from "zod";

export interface FieldProblem {
  /** Where, as a path into the document: `routes[2].match.pathPrefix`. */
  field: string;
  reason: string;
}

/** An error a person can act on: a code, a sentence, and each field with its reason. */
export class ConfigError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly details: FieldProblem[] = [],
  ) {
    super(
      details.length ? `${message}: ${details.map((d) => `${d.field}: ${d.reason}`).join("; ")}` : message,
    );
    this.name = "ConfigError";
  }

  toJSON(): { code: string; message: string; details: FieldProblem[] } {
    return { code: this.code, message: this.message, details: this.details };
  }
}

export function fieldPath(path: readonly PropertyKey[]): string {
  let out = "";
  for (const p of path) {
    if (typeof p === "number") out += `[${p}]`;
    else out += out ? `.${String(p)}` : String(p);
  }
  return out || "(root)";
}

export function fromZod(err: ZodError, message = "the configuration is not valid"): ConfigError {
  return new ConfigError(
    "invalid_config",
    message,
    err.issues.map((i) => {
      const keys = (i as { keys?: string[] }).keys;
      if (i.code === "unrecognized_keys" && keys) {
        return { field: fieldPath([...i.path, keys[0]!]), reason: `unknown field (${keys.join(", ")})` };
      }
      return { field: fieldPath(i.path), reason: i.message };
    }),
  );
}
