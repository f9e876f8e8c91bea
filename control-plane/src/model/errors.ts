import type { ZodError } from "zod";
import { zodProblems, type FieldProblem } from "@portico/contract";

export type { FieldProblem };

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

export function fromZod(err: ZodError, message = "the configuration is not valid"): ConfigError {
  return new ConfigError("invalid_config", message, zodProblems(err));
}
