import type { ErrorRequestHandler } from "express";
import type { Logger } from "@portico/common";
import { ConfigError, type FieldProblem } from "../model/errors.js";

/** An error with the HTTP status it maps to; the body is always `{code, message, details}`. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details: FieldProblem[] = [],
  ) {
    super(message);
  }
}

export const notFound = (what: string) => new HttpError(404, "not_found", `${what} does not exist`);

/** Maps every error to JSON; nothing internal (stack, library text of a crash) reaches the caller. */
export function errorHandler(log: Logger): ErrorRequestHandler {
  return (err, req, res, _next) => {
    let e: HttpError;
    if (err instanceof HttpError) e = err;
    else if (err instanceof ConfigError) {
      e = new HttpError(
        err.code === "invalid_yaml" ? 400 : 422,
        err.code,
        err.message.split(":")[0]!,
        err.details,
      );
    } else if (err?.type === "entity.too.large") {
      e = new HttpError(413, "payload_too_large", `request bodies are limited to ${err.limit} bytes`);
    } else if (err?.type === "entity.parse.failed") {
      e = new HttpError(400, "malformed_json", "the request body is not valid JSON", [
        { field: "(body)", reason: String(err.message).slice(0, 200) },
      ]);
    } else if (err?.code === "revision_conflict") {
      e = new HttpError(409, "revision_conflict", "another write changed the config first; retry");
    } else if (err?.code === "store_unavailable") {
      // A commit cut off mid-flight may or may not have landed, so the caller is told to look.
      e = new HttpError(
        503,
        "store_unavailable",
        "the config store did not answer; the write may not have been stored: read the config back before retrying",
      );
    } else {
      log.error({ err, method: req.method, path: req.path }, "admin request failed");
      e = new HttpError(500, "internal", "internal error; nothing was changed");
    }
    if (e.status === 401) res.setHeader("WWW-Authenticate", 'Bearer realm="portico-admin"');
    res.status(e.status).json({ code: e.code, message: e.message, details: e.details });
  };
}
