import { duration } from "../../../protos/src/envoy.js";
import type { Route } from "../model/schema.js";

/** A route's (or a composite part's) retries as Envoy's `retry_policy`. */
export function retryPolicy(r: NonNullable<Route["retries"]>): object {
  return {
    retry_on: r.on.join(","),
    num_retries: { value: r.attempts },
    ...(r.perTryTimeoutMs !== undefined ? { per_try_timeout: duration(r.perTryTimeoutMs) } : {}),
    ...(r.statusCodes ? { retriable_status_codes: r.statusCodes } : {}),
    ...(r.backoff
      ? {
          retry_back_off: {
            base_interval: duration(r.backoff.baseMs),
            ...(r.backoff.maxMs !== undefined ? { max_interval: duration(r.backoff.maxMs) } : {}),
          },
        }
      : {}),
  };
}
