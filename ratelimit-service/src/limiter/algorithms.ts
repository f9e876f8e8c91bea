/**
 * The algorithms as pure functions of a state read before the request. The memory backend, the
 * Redis Lua scripts and the local-first backend all decide with these rules (the Lua script is a
 * line-by-line copy of `isOver` and `decide`), so every backend gives the same answers.
 *
 * - Fixed window (upstream-compatible): counts per window of `unit × multiplier` counted from the
 *   Unix epoch; over when the count after this request is strictly above the limit.
 * - Calendar: the same exact counter over calendar periods in a time zone.
 * - Sliding-window counter: the current window's count plus the previous window's, weighted by how
 *   much of it the sliding window still covers.
 * - Token bucket as GCRA: one "theoretical arrival time" per key; a request of n hits passes when
 *   the bucket (capacity `burst`, refilled at requests_per_unit per window) holds n tokens.
 */
import type { LimitRule } from "../config/types.js";
import { calendarPeriod, type Period } from "./calendar.js";
import type { LimitOutcome } from "./types.js";

export interface CounterPlan {
  readonly kind: "counter";
  readonly rule: LimitRule;
  /** The descriptor's counter key: every key of one check shares it (and one Cluster slot). */
  readonly base: string;
  readonly key: string;
  readonly limit: number;
  readonly windowStart: number;
  readonly windowEnd: number;
  /** When the counter can go (the window's end plus slack for clock skew between instances). */
  readonly expireAt: number;
}

export interface SlidingPlan {
  readonly kind: "sliding";
  readonly rule: LimitRule;
  readonly base: string;
  readonly key: string;
  readonly prevKey: string;
  readonly limit: number;
  readonly windowStart: number;
  readonly windowEnd: number;
  readonly windowMs: number;
  /** Share of the previous window the sliding window still covers, in [0, 1]. */
  readonly prevWeight: number;
  readonly expireAt: number;
}

export interface BucketPlan {
  readonly kind: "bucket";
  readonly rule: LimitRule;
  readonly base: string;
  readonly key: string;
  readonly limit: number;
  /** Milliseconds per token. */
  readonly emissionMs: number;
  readonly capacity: number;
}

export type LimitPlan = CounterPlan | SlidingPlan | BucketPlan;

/** The state read before a request: a count (counter), the current and previous counts (sliding), or the TAT (bucket). */
export interface Before {
  value: number;
  prev: number;
}

const EXPIRE_SLACK_MS = 5_000;
/** Tolerance for the bucket's floating-point arithmetic (the TAT is kept to the microsecond). */
export const BUCKET_EPS = 1e-6;

export type KeyBuilder = (base: string, suffix: string) => string;

/** Plans every limit of a check for `now`, caching calendar periods until they end. */
export class Planner {
  private readonly periods = new WeakMap<LimitRule, Period>();

  /** `keyOf` lets Redis wrap the descriptor part in a hash tag. */
  constructor(private readonly keyOf: KeyBuilder = (base, suffix) => `${base}|${suffix}`) {}

  plan(rule: LimitRule, base: string, now: number): LimitPlan {
    const key = (suffix: string) => this.keyOf(base, `${rule.counterId}${suffix}`);
    if (rule.calendar) {
      const p = this.period(rule, now);
      return {
        kind: "counter",
        rule,
        base,
        key: key(`:${p.index}`),
        limit: rule.requestsPerUnit,
        windowStart: p.start,
        windowEnd: p.end,
        expireAt: p.end + EXPIRE_SLACK_MS,
      };
    }
    const w = rule.windowMs;
    switch (rule.algorithm) {
      case "fixed_window": {
        const index = Math.floor(now / w);
        return {
          kind: "counter",
          rule,
          base,
          key: key(`:${index}`),
          limit: rule.requestsPerUnit,
          windowStart: index * w,
          windowEnd: (index + 1) * w,
          expireAt: (index + 1) * w + EXPIRE_SLACK_MS,
        };
      }
      case "sliding_window": {
        const index = Math.floor(now / w);
        const start = index * w;
        return {
          kind: "sliding",
          rule,
          base,
          key: key(`:${index}`),
          prevKey: key(`:${index - 1}`),
          limit: rule.requestsPerUnit,
          windowStart: start,
          windowEnd: start + w,
          windowMs: w,
          prevWeight: (w - (now - start)) / w,
          // It serves as the previous window for one more window.
          expireAt: start + 2 * w + EXPIRE_SLACK_MS,
        };
      }
      case "token_bucket":
        return {
          kind: "bucket",
          rule,
          base,
          key: key(""),
          limit: rule.requestsPerUnit,
          emissionMs: w / rule.requestsPerUnit,
          capacity: rule.burst,
        };
    }
  }

  private period(rule: LimitRule, now: number): Period {
    const cached = this.periods.get(rule);
    if (cached && now >= cached.start && now < cached.end) return cached;
    const p = calendarPeriod(rule.unit, rule.unitMultiplier, rule.calendar!.timeZone, now);
    this.periods.set(rule, p);
    return p;
  }
}

/** Whether n more hits do not fit. "Over" is strictly above the limit, as upstream. */
export function isOver(plan: LimitPlan, before: Before, n: number, now: number): boolean {
  switch (plan.kind) {
    case "counter":
      return before.value + n > plan.limit;
    case "sliding":
      return before.prev * plan.prevWeight + before.value + n > plan.limit;
    case "bucket": {
      if (n <= 0) return false;
      if (plan.limit <= 0) return true;
      const base = Math.max(before.value, now);
      return base + n * plan.emissionMs - plan.capacity * plan.emissionMs > now + BUCKET_EPS;
    }
  }
}

export interface Decision {
  readonly admitted: boolean;
  readonly over: readonly boolean[];
  /** Whether each limit's state takes the hits. */
  readonly commit: readonly boolean[];
}

/**
 * One decision over all limits of a descriptor: admitted only if every non-shadow limit admits.
 * Counters take the hits when admitted or when refused calls count; a bucket gives tokens only
 * to an admitted request (a refused request has no token to take).
 */
export function decide(
  plans: readonly LimitPlan[],
  befores: readonly Before[],
  n: number,
  countRefused: boolean,
  now: number,
): Decision {
  const over = plans.map((p, i) => isOver(p, befores[i]!, n, now));
  const admitted = plans.every((p, i) => p.rule.shadowMode || !over[i]);
  const commit = plans.map((p) => n > 0 && (p.kind === "bucket" ? admitted : admitted || countRefused));
  return { admitted, over, commit };
}

/** The state after committing n hits. */
export function applyHits(plan: LimitPlan, before: Before, n: number, now: number): number {
  if (plan.kind !== "bucket") return before.value + n;
  return roundTat(Math.max(before.value, now) + n * plan.emissionMs);
}

/** TATs are kept to the microsecond, in memory as in Redis, so both decide alike. */
export function roundTat(t: number): number {
  return Math.round(t * 1000) / 1000;
}

export function outcome(
  plan: LimitPlan,
  before: Before,
  n: number,
  over: boolean,
  committed: boolean,
  now: number,
): LimitOutcome {
  const rule = plan.rule;
  const add = committed ? n : 0;
  switch (plan.kind) {
    case "counter": {
      const used = before.value + add;
      return {
        rule,
        over,
        remaining: over ? 0 : Math.max(0, plan.limit - used),
        resetMs: plan.windowEnd - now,
        used,
        limit: plan.limit,
      };
    }
    case "sliding": {
      const cur = before.value + add;
      const estimate = before.prev * plan.prevWeight + cur;
      return {
        rule,
        over,
        remaining: over ? 0 : Math.max(0, Math.floor(plan.limit - estimate + 1e-9)),
        resetMs: over ? slidingRetryAfter(plan, before.prev, cur, Math.max(n, 1), now) : plan.windowEnd - now,
        used: estimate,
        limit: plan.limit,
      };
    }
    case "bucket": {
      const T = plan.emissionMs;
      const base = Math.max(before.value, now);
      if (over) {
        const canPassAt = plan.limit <= 0 ? Infinity : base + Math.max(n, 1) * T - plan.capacity * T;
        return {
          rule,
          over,
          remaining: 0,
          resetMs: Number.isFinite(canPassAt) ? Math.max(0, canPassAt - now) : plan.rule.windowMs,
          used: plan.capacity,
          limit: plan.capacity,
        };
      }
      const tat = committed ? roundTat(base + n * T) : base;
      const remaining = Math.max(0, Math.floor((now + plan.capacity * T - tat) / T + BUCKET_EPS));
      return {
        rule,
        over,
        remaining,
        resetMs: Math.max(0, tat - now),
        used: plan.capacity - remaining,
        limit: plan.capacity,
      };
    }
  }
}

/** When n hits would fit again, with no further traffic: later in this window, or in the next. */
function slidingRetryAfter(plan: SlidingPlan, prev: number, cur: number, n: number, now: number): number {
  const W = plan.windowMs;
  const room = plan.limit - cur - n;
  if (room >= 0 && prev > 0) {
    // prev × (1 − e/W) ≤ room  ⇔  e ≥ W × (1 − room/prev)
    const at = plan.windowStart + W * (1 - room / prev);
    return Math.max(0, Math.ceil(at - now));
  }
  if (plan.limit < n) return plan.windowEnd + W - now;
  const nextRoom = plan.limit - n;
  const at = cur > 0 ? plan.windowEnd + Math.max(0, W * (1 - nextRoom / cur)) : plan.windowEnd;
  return Math.max(0, Math.ceil(at - now));
}

/**
 * The same limit at one instance's share of it: what each of N instances enforces on its own when
 * Redis is unreachable, so that together they stay near the limit.
 */
export function sharePlan(plan: LimitPlan, instances: number): LimitPlan {
  if (instances <= 1) return plan;
  switch (plan.kind) {
    case "counter":
    case "sliding":
      return { ...plan, limit: Math.ceil(plan.limit / instances) };
    case "bucket":
      return {
        ...plan,
        limit: plan.limit / instances,
        emissionMs: plan.emissionMs * instances,
        capacity: Math.ceil(plan.capacity / instances),
      };
  }
}
