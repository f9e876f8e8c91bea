import { z } from "zod";
import { Millis } from "./name.js";

/** Retries by Envoy (a route's `retry_policy`); a composite part's call takes the same. */
export const RetrySchema = z
  .object({
    attempts: z.number().int().min(1).max(10),
    on: z
      .array(
        z.enum([
          "5xx",
          "gateway-error",
          "reset",
          "connect-failure",
          "retriable-4xx",
          "refused-stream",
          "retriable-status-codes",
        ]),
      )
      .default(["5xx", "reset", "connect-failure"]),
    perTryTimeoutMs: Millis(600_000).optional(),
    statusCodes: z.array(z.number().int().min(100).max(599)).optional(),
    backoff: z
      .object({ baseMs: Millis(60_000), maxMs: Millis(600_000).optional() })
      .strict()
      .optional(),
  })
  .strict();
