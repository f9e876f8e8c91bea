/**
 * The calendar quotas the control plane counts from access logs (`enforce: usage`), as counters:
 * what a policy's served requests count on, and whose. Pure: the translator (the deny filter,
 * translate/features/quota.ts) and the counting (quota/) read the same counters, so a subject the
 * counting denies is the subject the filter looks for.
 *
 * Subjects, as the rate-limit service keys the same limits:
 *
 * | limit                               | subject of a request              |
 * | ----------------------------------- | --------------------------------- |
 * | by consumer (identified callers)    | `c:<consumer>`, with its plan     |
 * | by consumer, all callers            | also `a:<address>` when anonymous |
 * | by ip, anonymous callers            | `a:<address>` when anonymous      |
 * | by ip, all callers                  | `i:<address>`                     |
 *
 * A caller is anonymous when authentication left no consumer (no credentials, or no auth on the
 * route): the identity metadata's default, `anonymous`, as for the rate limiter's descriptors.
 * Limits of one policy on the same subjects and period share one counter (the smallest quota
 * decides); a plan's quota replaces the plan-less one of its period for consumers on that plan.
 */
import { ANONYMOUS, counterIdentity } from "./ratelimit.js";
import { usageLimits } from "./ratelimit-enforcement.js";
import type { RateLimit, RateLimitPolicy } from "./schema.js";

/** The calendar periods a quota resets on, in its policy's time zone. */
export type CalendarUnit = "day" | "week" | "month" | "year";

export type SubjectKind = "consumer" | "anonymous" | "ip";

/** One count a policy keeps per subject and period. */
export interface UsageCounter {
  readonly policy: string;
  /** Names the counter within its policy: the kind of subject, the period and its time zone. */
  readonly id: string;
  readonly kind: SubjectKind;
  readonly unit: CalendarUnit;
  readonly timeZone: string;
  /** The quota of subjects whose plan has none of its own here; undefined: they have none. */
  readonly requests?: number;
  /** The quota of consumers on each plan that has its own here. */
  readonly plans: ReadonlyMap<string, number>;
}

/** A subject denied until its period ends, because it used up a quota. */
export interface QuotaDeny {
  readonly policy: string;
  readonly subject: string;
  /** When the period ends, ms since the epoch: the deny lifts then. */
  readonly until: number;
  /** The quota that ran out, and its period, for the answer's headers. */
  readonly limit: number;
  readonly unit: CalendarUnit;
}

/** Seconds of each period, as the RateLimit headers' window (`w=`) names it. */
export const UNIT_SECONDS: Record<CalendarUnit, number> = {
  day: 86_400,
  week: 604_800,
  month: 2_592_000,
  year: 31_536_000,
};

/** The kinds of subject a limit counts. */
function kindsOf(l: RateLimit): SubjectKind[] {
  if (l.by === "ip") return [l.callers === "anonymous" ? "anonymous" : "ip"];
  // An anonymous caller has no consumer: its address stands for it (not for a plan's quota).
  return l.callers === "all" && l.plan === undefined ? ["consumer", "anonymous"] : ["consumer"];
}

function smaller(a: number | undefined, b: number): number {
  return a === undefined ? b : Math.min(a, b);
}

/** A policy's usage-counted quotas as counters, in a stable order. */
export function policyCounters(p: RateLimitPolicy): UsageCounter[] {
  const byId = new Map<
    string,
    { kind: SubjectKind; unit: CalendarUnit; requests?: number; plans: Map<string, number> }
  >();
  for (const { limit } of usageLimits(p)) {
    for (const kind of kindsOf(limit)) {
      const id = `${kind}|${counterIdentity(limit, p.timeZone)}`;
      let c = byId.get(id);
      if (!c) {
        c = { kind, unit: limit.per as CalendarUnit, plans: new Map() };
        byId.set(id, c);
      }
      if (kind === "consumer" && limit.plan !== undefined) {
        c.plans.set(limit.plan, smaller(c.plans.get(limit.plan), limit.requests));
      } else {
        c.requests = smaller(c.requests, limit.requests);
      }
    }
  }
  return [...byId.entries()]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([id, c]) => ({
      policy: p.name,
      id,
      kind: c.kind,
      unit: c.unit,
      timeZone: p.timeZone,
      ...(c.requests !== undefined ? { requests: c.requests } : {}),
      plans: c.plans,
    }));
}

/** The subject a request counts as on a counter, or undefined when the counter does not count it. */
export function subjectOf(kind: SubjectKind, consumer: string, address: string): string | undefined {
  switch (kind) {
    case "consumer":
      return consumer === ANONYMOUS ? undefined : `c:${consumer}`;
    case "anonymous":
      return consumer === ANONYMOUS ? `a:${address}` : undefined;
    case "ip":
      return `i:${address}`;
  }
}

/** The subject's quota on the counter (its plan's, else the general one); undefined: none. */
export function quotaOf(c: UsageCounter, plan: string | undefined): number | undefined {
  if (c.kind === "consumer" && plan !== undefined) {
    const own = c.plans.get(plan);
    if (own !== undefined) return own;
  }
  return c.requests;
}
