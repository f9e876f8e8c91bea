/**
 * Who counts each limit of a rate-limit policy: every Envoy of the gateway group for itself, with
 * its share of the limit (`local_ratelimit`, no call out), Portico's rate-limit service for the
 * whole group (a call per request, exact), or the control plane from the access logs Envoy streams
 * to it (`usage`: calendar quotas, no call out, a deny pushed to the group when one runs out; see
 * quota/). A limit says so with `enforce`; without it, Envoy counts what it counts closely enough
 * (short windows per consumer or per address) and the control plane counts calendar quotas.
 */
import type { FieldProblem } from "./errors.js";
import { CALENDAR_PERIODS, counterIdentity, windowSeconds } from "./ratelimit.js";
import type { RateLimit, RateLimitPolicy } from "./schema.js";

export type Enforcer = "envoy" | "service" | "usage";

/** The longest window Envoy counts by default: beyond it, an Envoy's restart or a push costs too much. */
const ENVOY_DEFAULT_MAX_WINDOW_S = 60;

function isCalendar(l: RateLimit): boolean {
  return l.per !== undefined && l.algorithm === "fixed_window" && CALENDAR_PERIODS.has(l.per);
}

/**
 * Why Envoy cannot count this limit as the model means it, or undefined when it can. Each reason
 * names what only the rate-limit service does.
 */
export function envoyUnfit(l: RateLimit, p: RateLimitPolicy): string | undefined {
  if (l.shadow || p.shadow) return "a shadow limit is counted and reported by the rate-limit service only";
  if (l.algorithm === "sliding_window")
    return "Envoy has no sliding window (use fixed_window or token_bucket)";
  if (isCalendar(l))
    return `a calendar quota (per ${l.per}) resets on the calendar, which Envoy's buckets cannot`;
  if (l.plan !== undefined)
    return "a plan's limit replaces another for some consumers, which only the service does";
  if (l.by === "consumer" && l.callers !== "anonymous") {
    const id = counterIdentity(l, p.timeZone);
    const replacing = p.limits.findIndex(
      (o) => o.plan !== undefined && o.by === "consumer" && counterIdentity(o, p.timeZone) === id,
    );
    if (replacing >= 0) {
      return `limits[${replacing}] (plan '${p.limits[replacing]!.plan}') replaces it for that plan's consumers, which only the service does`;
    }
  }
  if (l.by !== "consumer" && l.callers === "identified") {
    return `the identified callers of one ${l.by === "ip" ? "address" : "route"} share one count, which only the service keeps`;
  }
  return undefined;
}

/**
 * Why the control plane cannot count this limit from Envoy's access logs as the model means it, or
 * undefined when it can. Each reason names what only the rate-limit service does.
 */
export function usageUnfit(l: RateLimit, p: RateLimitPolicy): string | undefined {
  if (!isCalendar(l))
    return "usage counting is for calendar quotas (per day, week, month or year, fixed_window)";
  if (l.shadow || p.shadow) return "a shadow limit is counted and reported by the rate-limit service only";
  if (l.by === "route")
    return "a route-wide quota (every caller on one count) is kept by the rate-limit service";
  if (l.by === "ip" && l.callers === "identified") {
    return "the identified callers of one address share one count, which only the service keeps";
  }
  if (l.by === "consumer") {
    // A plan's quota replaces the plan-less one of its period: both must be counted in one place.
    const id = counterIdentity(l, p.timeZone);
    const forced = p.limits.findIndex(
      (o) =>
        o !== l && o.by === "consumer" && o.enforce === "service" && counterIdentity(o, p.timeZone) === id,
    );
    if (forced >= 0) {
      return `limits[${forced}] counts the same consumers over the same period with enforce: service, and a plan's quota and the one it replaces are counted in one place`;
    }
  }
  return undefined;
}

/**
 * Who counts the limit: its `enforce`, else Envoy for short windows per consumer or address and
 * the control plane for calendar quotas.
 */
export function enforcedBy(l: RateLimit, p: RateLimitPolicy): Enforcer {
  if (l.enforce === "service") return "service";
  // Validation refuses an `enforce` that does not fit; a config let through unchecked is still counted right.
  if (l.enforce === "usage") return usageUnfit(l, p) === undefined ? "usage" : "service";
  if (envoyUnfit(l, p) === undefined) {
    if (l.enforce === "envoy") return "envoy";
    // A route's limit is one count for every caller: the service keeps it exactly across the group.
    if (l.by === "route") return "service";
    return windowSeconds(l) <= ENVOY_DEFAULT_MAX_WINDOW_S ? "envoy" : "service";
  }
  if (l.enforce === undefined && usageUnfit(l, p) === undefined) return "usage";
  return "service";
}

/** The policy's limits each Envoy counts, with their places in the policy. */
export function envoyLimits(p: RateLimitPolicy): { limit: RateLimit; index: number }[] {
  return p.limits.flatMap((limit, index) => (enforcedBy(limit, p) === "envoy" ? [{ limit, index }] : []));
}

/** The policy's calendar quotas the control plane counts from access logs, with their places in the policy. */
export function usageLimits(p: RateLimitPolicy): { limit: RateLimit; index: number }[] {
  return p.limits.flatMap((limit, index) => (enforcedBy(limit, p) === "usage" ? [{ limit, index }] : []));
}

/** Whether the rate-limit service counts any of the policy's limits (so Envoy must call it). */
export function hasServiceLimits(p: RateLimitPolicy): boolean {
  return p.limits.some((l) => enforcedBy(l, p) === "service");
}

/** Limits that say `enforce: envoy` or `enforce: usage` where that cannot count them as the model means. */
export function enforcementProblems(config: {
  rateLimitPolicies: readonly RateLimitPolicy[];
}): FieldProblem[] {
  const problems: FieldProblem[] = [];
  config.rateLimitPolicies.forEach((p, pi) => {
    p.limits.forEach((l, li) => {
      if (l.enforce !== "envoy" && l.enforce !== "usage") return;
      const unfit = l.enforce === "envoy" ? envoyUnfit(l, p) : usageUnfit(l, p);
      if (unfit !== undefined) {
        problems.push({
          field: `rateLimitPolicies[${pi}].limits[${li}].enforce`,
          reason: `${unfit}: use enforce: service`,
        });
      }
    });
  });
  return problems;
}
