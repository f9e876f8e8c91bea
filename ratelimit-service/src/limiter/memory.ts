import {
  applyHits,
  decide,
  outcome,
  Planner,
  sharePlan,
  type Before,
  type KeyBuilder,
  type LimitPlan,
} from "./algorithms.js";
import { BoundedMap, DEFAULT_MAX_KEYS } from "@portico/common";
import { systemClock, type Clock } from "./clock.js";
import type { CheckResult, LimitCheck, RateLimiter } from "./types.js";

export interface MemoryLimiterOptions {
  clock?: Clock;
  /** How often expired counters are dropped. */
  sweepIntervalMs?: number;
  /**
   * Enforce 1/N of every limit (Redis fallback at the instance's share); read on every decision
   * so that it follows the number of live instances.
   */
  instances?: () => number;
  /** Told of every committed hit, so that a fallback can hand its counts to Redis later. */
  onCommit?: (plan: LimitPlan, hits: number, now: number, after: number) => void;
  /** How counter keys are named (a fallback names them as Redis does, to hand them over). */
  keyOf?: KeyBuilder;
  /** Counters kept at most; past it the least recently used is forgotten (`DEFAULT_MAX_KEYS`). */
  maxKeys?: number;
  /** Told of each counter forgotten for room, for a metric. */
  onEvict?: () => void;
}

interface Entry {
  value: number;
  expireAt: number;
}

/**
 * The embedded backend: exact, in-process, no I/O. It is the default and what one instance needs;
 * it is also the Redis backends' local fallback.
 */
export class MemoryLimiter implements RateLimiter {
  readonly kind = "memory";
  readonly clock: Clock;
  private readonly entries: BoundedMap<string, Entry>;
  private readonly planner: Planner;
  /** Counters forgotten for room since the start. */
  evictions = 0;
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly opts: MemoryLimiterOptions = {}) {
    this.clock = opts.clock ?? systemClock;
    this.planner = new Planner(opts.keyOf);
    this.entries = new BoundedMap(opts.maxKeys ?? DEFAULT_MAX_KEYS, () => {
      this.evictions++;
      opts.onEvict?.();
    });
    this.timer = setInterval(() => this.sweep(), opts.sweepIntervalMs ?? 10_000);
    this.timer.unref();
  }

  check(checks: readonly LimitCheck[]): Promise<CheckResult[]> {
    return Promise.resolve(this.checkNow(checks, this.clock.now()));
  }

  /** Decides synchronously, for callers that already hold the time. */
  checkNow(checks: readonly LimitCheck[], now: number): CheckResult[] {
    const n = this.opts.instances?.() ?? 1;
    return checks.map((c) => {
      const plans = c.limits.map((r) => {
        const p = this.planner.plan(r, c.key, now);
        return n > 1 ? sharePlan(p, n) : p;
      });
      const befores = plans.map((p) => this.read(p, now));
      const d = decide(plans, befores, c.hits, c.countRefused, now);
      const outcomes = plans.map((p, i) => {
        const o = outcome(p, befores[i]!, c.hits, d.over[i]!, d.commit[i]!, now);
        if (d.commit[i]) this.write(p, befores[i]!, c.hits, now);
        return o;
      });
      return { admitted: d.admitted, outcomes };
    });
  }

  /** Live keys (for tests and metrics). */
  size(): number {
    return this.entries.size;
  }

  close(): Promise<void> {
    clearInterval(this.timer);
    this.entries.clear();
    return Promise.resolve();
  }

  private get(key: string, now: number): number {
    const e = this.entries.get(key);
    return e && e.expireAt > now ? e.value : 0;
  }

  private read(plan: LimitPlan, now: number): Before {
    return {
      value: this.get(plan.key, now),
      prev: plan.kind === "sliding" ? this.get(plan.prevKey, now) : 0,
    };
  }

  private write(plan: LimitPlan, before: Before, hits: number, now: number): void {
    const after = applyHits(plan, before, hits, now);
    // A bucket whose TAT has passed is full, which is the same as having no entry.
    const expireAt = plan.kind === "bucket" ? after : plan.expireAt;
    this.entries.set(plan.key, { value: after, expireAt });
    this.opts.onCommit?.(plan, hits, now, after);
  }

  private sweep(): void {
    const now = this.clock.now();
    for (const [k, e] of this.entries) if (e.expireAt <= now) this.entries.delete(k);
  }
}
