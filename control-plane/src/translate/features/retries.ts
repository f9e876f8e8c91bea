import { duration } from "@portico/contract";
import type { Route } from "../../model/schema.js";
import type { HttpFeature } from "../feature.js";

/** A route's (or a composite part's) retries as Envoy's `retry_policy`. */
export function retryPolicy(r: NonNullable<Route["retries"]>): object {
  return {
    retry_on: r.on.join(","),
    num_retries: { value: r.maxRetries },
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

/** Envoy retries a route's failed calls as the route says; no filter, only the route action. */
export const retries: HttpFeature = {
  name: "retries",
  listener: () => ({
    route: (r) => (r.retries ? { action: { retry_policy: retryPolicy(r.retries) } } : undefined),
  }),
};
