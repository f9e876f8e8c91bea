/**
 * Who counts each limit of a rate-limit policy: every Envoy of the gateway group for itself, with
 * its share of the limit (`local_ratelimit`, no call out), or Portico's rate-limit service for the
 * whole group. A limit says so with `enforce`; without it, Envoy counts what it counts closely
 * enough: short windows per consumer or per address.
 */
import type { FieldProblem } from "./errors.js";
import { CALENDAR_PERIODS, counterIdentity, windowSeconds } from "./ratelimit.js";
import type { RateLimit, RateLimitPolicy } from "./schema.js";

export type Enforcer = "envoy" | "service";

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

/** Who counts the limit: its `enforce`, else Envoy for short windows per consumer or address. */
export function enforcedBy(l: RateLimit, p: RateLimitPolicy): Enforcer {
  // Validation refuses `enforce: envoy` here; a config let through unchecked is still counted right.
  if (envoyUnfit(l, p) !== undefined) return "service";
  if (l.enforce !== undefined) return l.enforce;
  // A route's limit is one count for every caller: the service keeps it exactly across the group.
  if (l.by === "route") return "service";
  return windowSeconds(l) <= ENVOY_DEFAULT_MAX_WINDOW_S ? "envoy" : "service";
}

/** The policy's limits each Envoy counts, with their places in the policy. */
export function envoyLimits(p: RateLimitPolicy): { limit: RateLimit; index: number }[] {
  return p.limits.flatMap((limit, index) => (enforcedBy(limit, p) === "envoy" ? [{ limit, index }] : []));
}

/** Whether the rate-limit service counts any of the policy's limits (so Envoy must call it). */
export function hasServiceLimits(p: RateLimitPolicy): boolean {
  return p.limits.some((l) => enforcedBy(l, p) === "service");
}

/** Limits that say `enforce: envoy` where Envoy cannot count them as the model means. */
export function enforcementProblems(config: {
  rateLimitPolicies: readonly RateLimitPolicy[];
}): FieldProblem[] {
  const problems: FieldProblem[] = [];
  config.rateLimitPolicies.forEach((p, pi) => {
    p.limits.forEach((l, li) => {
      if (l.enforce !== "envoy") return;
      const unfit = envoyUnfit(l, p);
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
