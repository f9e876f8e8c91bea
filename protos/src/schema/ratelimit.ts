import { z } from "zod";
import { Name } from "./name.js";

/**
 * A limit, counted by each Envoy of the gateway group for its share (`enforce: envoy`), by
 * Portico's rate-limit service for the whole group (`enforce: service`; see ratelimit-policy.ts
 * for the keys), or, for calendar quotas, by the control plane from Envoy's access logs
 * (`enforce: usage`; see control-plane/src/quota).
 */
export const RateLimitSchema = z
  .object({
    requests: z.number().int().min(1).max(4_294_967_295),
    /**
     * The period. `second`, `minute` and `hour` are windows; `day`, `week` (ISO, from Monday),
     * `month` and `year` are calendar quotas in the policy's `timeZone` (with a fixed window).
     */
    per: z.enum(["second", "minute", "hour", "day", "week", "month", "year"]).optional(),
    /** Any window instead of `per`: a whole number and s, m, h, d or w (`30s`, `5m`, `2h`). */
    window: z
      .string()
      .regex(/^[1-9][0-9]{0,5}[smhdw]$/, "a whole number followed by s, m, h, d or w, e.g. 30s or 5m")
      .optional(),
    /** What is counted: each consumer (anonymous callers: each address), each IP, or the route. */
    by: z.enum(["consumer", "ip", "route"]).default("consumer"),
    /** Which callers the limit applies to. Every caller is one or the other, so none escapes. */
    callers: z.enum(["all", "anonymous", "identified"]).default("all"),
    /** Only consumers on this plan (with `by: consumer`); it replaces a limit of the same window. */
    plan: z.string().min(1).max(64).optional(),
    algorithm: z.enum(["fixed_window", "sliding_window", "token_bucket"]).default("fixed_window"),
    /** Token bucket capacity (default `requests`). */
    burst: z.number().int().min(1).max(4_294_967_295).optional(),
    /** Count and report, never refuse. */
    shadow: z.boolean().default(false),
    /**
     * Who counts. `envoy`: each Envoy of the gateway group counts on its own (`local_ratelimit`,
     * a token bucket per consumer or address, per route) with the limit divided among the group's
     * connected Envoys, and no call out; a config push to the group (an Envoy joining or leaving,
     * a route change) starts the route's buckets afresh. `service`: Portico's rate-limit service
     * counts for the whole group, one count per policy across its routes, in the windows it says:
     * exact, at the cost of a call per request. `usage`: the control plane counts a calendar quota
     * from the access logs Envoy streams to it, off the request path, and pushes a deny for a
     * consumer (or an anonymous caller's address) to every Envoy of the group once the quota is
     * used up, until the period resets; it admits a little beyond the quota (the requests served
     * while the logs are in flight: about a second's worth at the caller's rate).
     * Default: `envoy` for what Envoy counts closely enough (per second or minute, or a window up
     * to 1m; by consumer or ip; fixed_window or token_bucket; not shadow, not a plan's), `usage`
     * for calendar quotas (per day, week, month or year; by consumer or ip; not shadow), else
     * `service`.
     */
    enforce: z
      .enum(["envoy", "service", "usage"])
      .optional()
      .meta({
        description:
          "Who counts: each Envoy with its share of the limit, per route, in a token bucket (`envoy`, no " +
          "call out), the rate-limit service for the whole group (`service`: exact, a call per request), " +
          "or the control plane from Envoy's access logs, denying a caller in every Envoy once a calendar " +
          "quota is used up (`usage`: no call out; admits about a second's worth of requests beyond the " +
          "quota). Default: `envoy` for per-second and per-minute limits by consumer or ip (fixed_window " +
          "or token_bucket, not shadow, not a plan's), `usage` for calendar quotas (per day, week, month " +
          "or year) by consumer or ip that are not shadow, else `service`.",
        examples: ["envoy", "service", "usage"],
      }),
  })
  .strict()
  .refine((l) => (l.per === undefined) !== (l.window === undefined), {
    message: "give exactly one of per or window",
  });

export const RateLimitPolicySchema = z
  .object({
    name: Name,
    /** Global limits: every one must admit a request. */
    limits: z.array(RateLimitSchema).default([]),
    /**
     * A token bucket in each Envoy for the route as a whole (all callers together), checked
     * without calling out: the first line of defence against floods.
     */
    local: z
      .object({
        requests: z.number().int().min(1).max(4_294_967_295),
        per: z.enum(["second", "minute", "hour"]),
        /** Bucket capacity (default `requests`). */
        burst: z.number().int().min(1).max(4_294_967_295).optional(),
      })
      .strict()
      .optional(),
    /** IANA time zone in which calendar quotas (per day, week, month, year) reset; UTC by default. */
    timeZone: z.string().min(1).default("UTC"),
    /** Every limit of the policy counts and reports but never refuses: to try a policy on live traffic. */
    shadow: z.boolean().default(false),
  })
  .strict()
  .refine((p) => p.limits.length > 0 || p.local !== undefined, {
    message: "give limits, local, or both",
  });

/**
 * A limit's period as Envoy's rate-limit API names it (`RateLimitResponse.RateLimit.Unit`), for
 * the units a config may use: what the control plane writes into the rate limiter's domains and
 * what the rate limiter reports back to Envoy.
 */
export const RATE_LIMIT_UNIT = {
  second: "SECOND",
  minute: "MINUTE",
  hour: "HOUR",
  day: "DAY",
  week: "WEEK",
  month: "MONTH",
  year: "YEAR",
} as const;
