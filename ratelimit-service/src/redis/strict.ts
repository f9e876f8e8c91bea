/**
 * Strict mode: every decision is made in Redis by one Lua call per descriptor, so all instances
 * see one exact count. Calls issued in the same turn of the event loop (concurrent requests, the
 * descriptors of one request) share one pipelined write. While Redis is unreachable, decisions
 * follow the failure mode without waiting on it; what was counted locally meanwhile is added to
 * Redis when it answers again.
 */
import { isOver, outcome, type Before, type LimitPlan } from "../limiter/algorithms.js";
import { MemoryLimiter } from "../limiter/memory.js";
import { OverLimitCache } from "../limiter/over-limit-cache.js";
import type { CheckResult, LimitCheck } from "../limiter/types.js";
import { RedisBackend, counterItem, type RedisLimiterOptions, type SyncItem } from "./backend.js";
import { createRedisClient, type RedisClient } from "./connect.js";
import { withDeadline } from "./deadline.js";
import { DECIDE, loadScripts, runScript } from "./scripts.js";
import { BoundedMap, DEFAULT_MAX_KEYS } from "@portico/common";

interface Delta {
  plan: LimitPlan;
  hits: number;
  /** For a bucket: its TAT at the instance's share after the last hit. */
  after: number;
}

export interface StrictLimiterOptions extends RedisLimiterOptions {
  /**
   * Descriptors remembered as over their limit, answered from memory until the refusal can no
   * longer hold (`OverLimitCache`); 0 turns the cache off. Default `DEFAULT_MAX_KEYS`.
   */
  overLimitCacheKeys?: number;
}

export class StrictRedisLimiter extends RedisBackend {
  readonly kind = "redis-strict";
  private readonly decideClient: RedisClient;
  /** Refusals that will hold, answered without a round trip; undefined when turned off. */
  readonly overLimit: OverLimitCache | undefined;
  private readonly fallback: MemoryLimiter;
  /** What the fallback counted while Redis was down, to hand over; bounded like every per-key store. */
  private readonly deltas: BoundedMap<string, Delta>;

  constructor(opts: StrictLimiterOptions) {
    super(opts);
    const cacheKeys = opts.overLimitCacheKeys ?? DEFAULT_MAX_KEYS;
    this.overLimit = cacheKeys > 0 ? new OverLimitCache(Math.max(2, cacheKeys)) : undefined;
    this.decideClient = createRedisClient(opts.connection, {
      // A backstop for a Redis that stops answering; a decision waits `timeoutMs` at most
      // (`withDeadline`), and a reply that comes later is dropped.
      commandTimeoutMs: Math.max(this.timeoutMs, opts.syncTimeoutMs ?? 1_000),
      connectTimeoutMs: opts.connectTimeoutMs,
      connectionName: "portico-ratelimit-decide",
    });
    this.decideClient.on("close", () => {
      if (this.isUp()) this.reportFailure(new Error("connection closed"));
    });
    this.decideClient.on("ready", () => {
      if (!this.isUp()) void this.heartbeat();
    });
    const maxKeys = opts.maxKeys ?? DEFAULT_MAX_KEYS;
    this.deltas = new BoundedMap(maxKeys, () => this.metrics.evictedKeys.inc({ store: "strict_pending" }));
    this.fallback = new MemoryLimiter({
      clock: this.clock,
      maxKeys,
      onEvict: () => this.metrics.evictedKeys.inc({ store: "fallback" }),
      instances: () => this.instances(),
      keyOf: this.keyOf,
      onCommit: (plan, hits, _now, after) => {
        const d = this.deltas.get(plan.key);
        if (d) {
          d.plan = plan;
          d.hits += hits;
          d.after = after;
        } else this.deltas.set(plan.key, { plan, hits, after });
      },
    });
    this.start();
  }

  async check(checks: readonly LimitCheck[]): Promise<CheckResult[]> {
    const now = this.clock.now();
    if (!this.isUp()) return checks.map((c) => this.degraded(c, now));
    const cache = this.overLimit;
    const settled = await Promise.allSettled(checks.map((c) => cache?.recall(c, now) ?? this.decide(c, now)));
    return settled.map((s, i) => {
      if (s.status === "fulfilled") {
        cache?.remember(checks[i]!, s.value, now);
        return s.value;
      }
      this.reportFailure(s.reason);
      return this.degraded(checks[i]!, now);
    });
  }

  override async close(): Promise<void> {
    await super.close();
    this.decideClient.disconnect();
    await this.fallback.close();
  }

  private async decide(c: LimitCheck, now: number): Promise<CheckResult> {
    const plans = c.limits.map((r) => this.planner.plan(r, c.key, now));
    const keys: string[] = [];
    const args: (string | number)[] = [now, c.hits, c.countRefused ? 1 : 0, plans.length];
    for (const p of plans) {
      const shadow = p.rule.shadowMode ? 1 : 0;
      switch (p.kind) {
        case "counter":
          keys.push(p.key);
          args.push("c", p.limit, p.expireAt, 0, shadow);
          break;
        case "sliding":
          keys.push(p.key, p.prevKey);
          args.push("s", p.limit, p.expireAt, p.prevWeight, shadow);
          break;
        case "bucket":
          keys.push(p.key);
          args.push("b", p.limit, p.emissionMs, p.capacity, shadow);
          break;
      }
    }
    const reply = (await withDeadline(runScript(this.decideClient, DECIDE, keys, args), this.timeoutMs)) as (
      string | number
    )[];
    this.reportSuccess();
    const admitted = Number(reply[0]) === 1;
    let r = 1;
    const outcomes = plans.map((p) => {
      const before: Before = {
        value: Number(reply[r++]),
        prev: p.kind === "sliding" ? Number(reply[r++]) : 0,
      };
      const over = isOver(p, before, c.hits, now);
      const committed = c.hits > 0 && (p.kind === "bucket" ? admitted : admitted || c.countRefused);
      return outcome(p, before, c.hits, over, committed, now);
    });
    return { admitted, outcomes };
  }

  private degraded(c: LimitCheck, now: number): CheckResult {
    switch (this.failureMode) {
      case "local":
        return { ...this.fallback.checkNow([c], now)[0]!, degraded: "local" };
      case "fail_open": {
        // Counted locally all the same, so that Redis learns of this traffic when it is back.
        this.fallback.checkNow([c], now);
        const plans = c.limits.map((r) => this.planner.plan(r, c.key, now));
        const zero: Before = { value: 0, prev: 0 };
        return {
          admitted: true,
          outcomes: plans.map((p) => outcome(p, zero, 0, false, false, now)),
          degraded: "fail_open",
        };
      }
      case "fail_closed": {
        const plans = c.limits.map((r) => this.planner.plan(r, c.key, now));
        const zero: Before = { value: 0, prev: 0 };
        return {
          admitted: false,
          outcomes: plans.map((p) => outcome(p, zero, Math.max(1, c.hits), true, false, now)),
          degraded: "fail_closed",
        };
      }
    }
  }

  protected async resync(): Promise<void> {
    // Going up while the decision connection is still reconnecting would only fail again.
    if (this.decideClient.status !== "ready")
      throw new Error(`decision connection is ${this.decideClient.status}`);
    await loadScripts(this.decideClient, [DECIDE]);
    if (this.deltas.size === 0) return;
    const now = this.clock.now();
    const n = this.instances();
    const taken = [...this.deltas.values()];
    this.deltas.clear();
    const items: SyncItem[] = [];
    for (const d of taken) {
      const p = d.plan;
      if (p.kind === "bucket") {
        // The fallback's debt at the instance's share, in the global bucket's time.
        if (d.after <= now) continue;
        const T = p.emissionMs;
        items.push({
          kind: "b",
          keys: [p.key],
          tag: p.base,
          hits: d.hits,
          p1: T,
          p2: now + (d.after - now) / n,
          p3: -1,
        });
      } else if (p.expireAt > now) {
        items.push(counterItem(p, d.hits));
      }
    }
    if (items.length === 0) return;
    try {
      await this.sync(items, now);
      this.metrics.syncs.inc({ result: "ok" });
    } catch (err) {
      // Keep them for the next attempt, merged with whatever was counted meanwhile.
      for (const d of taken) {
        const cur = this.deltas.get(d.plan.key);
        if (cur) cur.hits += d.hits;
        else this.deltas.set(d.plan.key, d);
      }
      this.metrics.syncs.inc({ result: "error" });
      throw err;
    }
  }
}
