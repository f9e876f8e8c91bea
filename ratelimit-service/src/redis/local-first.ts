/**
 * Local-first mode: each instance decides from its own memory and hands its counts to Redis in
 * batches (every `syncPeriodMs` T, or sooner once `syncHits` K hits wait), reading the global
 * counts back in the same script call. No decision waits on Redis except when an instance has
 * used up its share while the global count still leaves room, and then for at most `timeoutMs`.
 *
 * The share rule. After each read of a counter's global count G, an instance admits at most
 * ⌈(L − G) / N⌉ hits before its next read (N = live instances). Its first basis is the window's
 * start, when every counter is 0. N instances together then admit at most, per window,
 *
 *     L + Σ over the other N−1 instances of min(⌈L/N⌉, K + c + r·d, r·(T + d))
 *
 * where r is what one instance admits per millisecond, d one sync's round trip and c the hits of
 * one call: whatever an instance admits that another has not seen yet is bounded by its share,
 * by what it lets wait before a sync, and by what it admits between two syncs. The proof is in
 * the README. Sliding windows and token buckets use the same rule on their own estimates.
 */
import { roundTat, type Before, decide, outcome, type LimitPlan, BUCKET_EPS } from "../limiter/algorithms.js";
import type { CheckResult, LimitCheck, LimitOutcome } from "../limiter/types.js";
import { counterItem, RedisBackend, type RedisLimiterOptions, type SyncItem } from "./backend.js";
import { withDeadline } from "./deadline.js";
import { loadScripts, SYNC } from "./scripts.js";
import { BoundedMap, DEFAULT_MAX_KEYS } from "@portico/common";

export interface LocalFirstOptions extends RedisLimiterOptions {
  /** T: how often waiting counts go to Redis (default 100 ms). */
  syncPeriodMs?: number;
  /** K: sync sooner once this many hits wait (default 100). */
  syncHits?: number;
}

interface KeyState {
  plan: LimitPlan;
  /** A real read has happened (before it, the window's start: a count of 0). */
  known: boolean;
  /** Global value at the last read: count, current window's count, or TAT. */
  g: number;
  /** Sliding: the previous window's global count at the last read. */
  gPrev: number;
  readAt: number;
  unsent: number;
  inflight: number;
  sending: boolean;
  /** Hits admitted against the current read (the share's use). */
  used: number;
  admittedSinceSend: number;
  /** Bucket: this instance's estimate of the global TAT, own hits included. */
  lt: number;
  sentLt: number;
  sentAt: number;
  /** Hits this instance admitted in this window (for the local-only fallback). */
  own: number;
  /** Bucket: this instance's own bucket at its share (for the local-only fallback). */
  shareTat: number;
  dirty: boolean;
  /** When a decision last read it: only a state nobody uses is swept. */
  usedAt: number;
}

interface Evaluation {
  readonly befores: Before[];
  readonly admitted: boolean;
  readonly over: boolean[];
  /** Limits whose share is used up although the global estimate has room. */
  readonly blocked: number[];
}

export class LocalFirstRedisLimiter extends RedisBackend {
  readonly kind = "redis-local-first";
  readonly syncPeriodMs: number;
  readonly syncHits: number;
  /** Evicting a key loses its unsent hits: the metric says how often, so maxKeys can be sized. */
  private readonly states: BoundedMap<string, KeyState>;
  private readonly dirty = new Set<KeyState>();
  private pendingHits = 0;
  private current?: Promise<void>;
  private next?: Promise<void>;
  private soon?: Promise<void>;
  private resyncing = false;
  private readonly syncTimer: NodeJS.Timeout;
  private readonly sweepTimer: NodeJS.Timeout;
  private readonly sweepEveryMs: number;

  constructor(opts: LocalFirstOptions) {
    super(opts);
    this.syncPeriodMs = opts.syncPeriodMs ?? 100;
    this.syncHits = opts.syncHits ?? 100;
    this.states = new BoundedMap(opts.maxKeys ?? DEFAULT_MAX_KEYS, (_key, s) => {
      this.dirty.delete(s);
      this.metrics.evictedKeys.inc({ store: "local_first" });
    });
    this.syncTimer = setInterval(() => {
      if (this.isUp() && this.dirty.size > 0) this.requestFlush().catch(() => undefined);
    }, this.syncPeriodMs);
    this.syncTimer.unref();
    this.sweepEveryMs = Math.max(1_000, this.syncPeriodMs * 10);
    this.sweepTimer = setInterval(() => this.sweep(), this.sweepEveryMs);
    this.sweepTimer.unref();
    this.start();
  }

  check(checks: readonly LimitCheck[]): Promise<CheckResult[]> {
    const now = this.clock.now();
    let waiting = false;
    const results = checks.map((c) => {
      const r = this.decideCheck(c, now);
      if (r instanceof Promise) waiting = true;
      return r;
    });
    if (this.pendingHits >= this.syncHits) void this.flushSoon().catch(() => undefined);
    return waiting ? Promise.all(results) : Promise.resolve(results as CheckResult[]);
  }

  /** Sends what waits now and reads the global counts back (tests, shutdown). */
  flush(): Promise<void> {
    return this.requestFlush();
  }

  override async close(): Promise<void> {
    clearInterval(this.syncTimer);
    clearInterval(this.sweepTimer);
    if (this.isUp()) await this.requestFlush().catch(() => undefined);
    await super.close();
  }

  private decideCheck(c: LimitCheck, now: number): CheckResult | Promise<CheckResult> {
    const up = this.isUp();
    if (!up && this.failureMode !== "local") return this.failMode(c, now);
    const plans = c.limits.map((r) => this.planner.plan(r, c.key, now));
    const e = this.evaluate(c, plans, now, !up);
    if (e.blocked.length === 0 || !up) return this.commit(c, plans, e, now, !up);
    return this.refreshed(this.flushSoon(), this.timeoutMs).then((ok) => {
      this.metrics.shareWaits.inc({ result: ok ? "refreshed" : "timeout" });
      const at = this.clock.now();
      const replanned = c.limits.map((r) => this.planner.plan(r, c.key, at));
      const degraded = !this.isUp();
      return this.commit(c, replanned, this.evaluate(c, replanned, at, degraded), at, degraded);
    });
  }

  private evaluate(c: LimitCheck, plans: readonly LimitPlan[], now: number, degraded: boolean): Evaluation {
    const states = plans.map((p) => this.state(p, now));
    const befores = states.map((s, i) => this.estimate(s, plans[i]!));
    const d = decide(plans, befores, c.hits, c.countRefused, now);
    const blocked: number[] = [];
    if (d.admitted && c.hits > 0) {
      plans.forEach((p, i) => {
        if (!p.rule.shadowMode && !this.shareAllows(states[i]!, p, c.hits, now, degraded)) blocked.push(i);
      });
    }
    return { befores, admitted: d.admitted && blocked.length === 0, over: [...d.over], blocked };
  }

  private commit(
    c: LimitCheck,
    plans: readonly LimitPlan[],
    e: Evaluation,
    now: number,
    degraded: boolean,
  ): CheckResult {
    const n = c.hits;
    const N = this.instances();
    for (const i of e.blocked) e.over[i] = true;
    const outcomes: LimitOutcome[] = plans.map((p, i) => {
      const s = this.state(p, now);
      // A refusal only because this instance's share is used up is not "over the limit": it does
      // not count, or it would eat into what the other instances may still admit.
      const countsRefusal = c.countRefused && e.blocked.length === 0;
      const committed = n > 0 && (p.kind === "bucket" ? e.admitted : e.admitted || countsRefusal);
      if (committed) {
        s.unsent += n;
        this.pendingHits += n;
        if (p.kind === "bucket") s.lt = roundTat(Math.max(s.lt, now) + n * p.emissionMs);
        this.markDirty(s);
      }
      if (e.admitted && n > 0) {
        s.used += n;
        s.admittedSinceSend += n;
        s.own += n;
        if (p.kind === "bucket") s.shareTat = Math.max(s.shareTat, now) + n * p.emissionMs * N;
      }
      return outcome(p, e.befores[i]!, n, e.over[i]!, committed, now);
    });
    return degraded
      ? { admitted: e.admitted, outcomes, degraded: "local" }
      : { admitted: e.admitted, outcomes };
  }

  private failMode(c: LimitCheck, now: number): CheckResult {
    const plans = c.limits.map((r) => this.planner.plan(r, c.key, now));
    const zero: Before = { value: 0, prev: 0 };
    if (this.failureMode === "fail_closed") {
      return {
        admitted: false,
        outcomes: plans.map((p) => outcome(p, zero, Math.max(1, c.hits), true, false, now)),
        degraded: "fail_closed",
      };
    }
    // Open, but counted, so Redis learns of this traffic when it is back.
    for (const p of plans) {
      const s = this.state(p, now);
      if (c.hits > 0) {
        s.unsent += c.hits;
        s.own += c.hits;
        if (p.kind === "bucket") s.lt = roundTat(Math.max(s.lt, now) + c.hits * p.emissionMs);
        this.markDirty(s);
      }
    }
    return {
      admitted: true,
      outcomes: plans.map((p) => outcome(p, zero, 0, false, false, now)),
      degraded: "fail_open",
    };
  }

  private state(plan: LimitPlan, now: number): KeyState {
    let s = this.states.get(plan.key);
    if (s) {
      // Same key, same rule: the same plan in all that a sync reads. Keeping the first one spares a
      // long-lived state a pointer to every decision's plan, which would keep each alive past the
      // next scavenge; a new config's rule still replaces it.
      if (s.plan.rule !== plan.rule) s.plan = plan;
      s.usedAt = now;
      return s;
    }
    s = {
      plan,
      known: false,
      g: 0,
      gPrev: 0,
      readAt: now,
      unsent: 0,
      inflight: 0,
      sending: false,
      used: 0,
      admittedSinceSend: 0,
      lt: plan.kind === "bucket" ? now : 0,
      sentLt: 0,
      sentAt: now,
      own: 0,
      shareTat: 0,
      dirty: false,
      usedAt: now,
    };
    if (plan.kind === "sliding") {
      const prev = this.states.peek(plan.prevKey);
      if (prev) s.gPrev = prev.g + prev.inflight + prev.unsent;
    }
    this.states.set(plan.key, s);
    // Learn the real count soon: the window-start basis is safe, but can be stale.
    this.markDirty(s);
    if (this.isUp()) void this.flushSoon().catch(() => undefined);
    return s;
  }

  private estimate(s: KeyState, p: LimitPlan): Before {
    switch (p.kind) {
      case "counter":
        return { value: s.g + s.inflight + s.unsent, prev: 0 };
      case "sliding": {
        const prev = this.states.peek(p.prevKey);
        const prevEstimate = prev ? prev.g + prev.inflight + prev.unsent : 0;
        return { value: s.g + s.inflight + s.unsent, prev: Math.max(s.gPrev, prevEstimate) };
      }
      case "bucket":
        return { value: s.lt, prev: 0 };
    }
  }

  private shareAllows(s: KeyState, p: LimitPlan, n: number, now: number, degraded: boolean): boolean {
    const N = this.instances();
    switch (p.kind) {
      case "counter":
        if (degraded) return s.own + n <= Math.ceil(p.limit / N);
        return s.used + n <= Math.ceil((p.limit - s.g) / N);
      case "sliding": {
        if (degraded) {
          const prevOwn = this.states.peek(p.prevKey)?.own ?? 0;
          return prevOwn * p.prevWeight + s.own + n <= Math.ceil(p.limit / N);
        }
        return s.used + n <= Math.ceil((p.limit - (s.gPrev * p.prevWeight + s.g)) / N);
      }
      case "bucket": {
        const T = p.emissionMs;
        if (degraded) {
          const TN = T * N;
          return Math.max(s.shareTat, now) + n * TN - Math.ceil(p.capacity / N) * TN <= now + BUCKET_EPS;
        }
        const atRead = Math.floor((s.readAt + p.capacity * T - Math.max(s.g, s.readAt)) / T + BUCKET_EPS);
        const refill = Math.floor((now - s.readAt) / T + BUCKET_EPS);
        return s.used + n <= Math.ceil(Math.min(p.capacity, Math.max(0, atRead) + refill) / N);
      }
    }
  }

  private markDirty(s: KeyState): void {
    if (!s.dirty) {
      s.dirty = true;
      this.dirty.add(s);
    }
  }

  /** A flush a turn of the event loop from now, so that decisions made in this turn ride along. */
  private flushSoon(): Promise<void> {
    this.soon ??= new Promise<void>((resolve) => setImmediate(resolve)).then(() => {
      this.soon = undefined;
      return this.requestFlush();
    });
    return this.soon;
  }

  /** One flush at a time; a request during one is served by the next, which includes it. */
  private requestFlush(): Promise<void> {
    if (!this.current) {
      this.current = this.runFlush().finally(() => (this.current = undefined));
      return this.current;
    }
    this.next ??= this.current
      .catch(() => undefined)
      .then(() => {
        this.next = undefined;
        return this.requestFlush();
      });
    return this.next;
  }

  /** Whether the refresh `p` lands within `ms` (a stall of this process does not count against it). */
  private refreshed(p: Promise<void>, ms: number): Promise<boolean> {
    return withDeadline(p, ms).then(
      () => true,
      () => false,
    );
  }

  private async runFlush(): Promise<void> {
    if (!this.isUp() && !this.resyncing) return;
    const now = this.clock.now();
    const owners: KeyState[] = [];
    const items: SyncItem[] = [];
    for (const s of this.dirty) {
      s.dirty = false;
      const p = s.plan;
      if (p.kind !== "bucket" && p.expireAt <= now) continue;
      if (p.kind === "bucket") {
        items.push({
          kind: "b",
          keys: [p.key],
          tag: p.base,
          hits: s.unsent,
          p1: p.emissionMs,
          p2: s.lt,
          p3: s.known ? s.g : -1,
        });
        s.sentLt = s.lt;
      } else {
        items.push(counterItem(p, s.unsent));
      }
      s.inflight = s.unsent;
      s.unsent = 0;
      s.admittedSinceSend = 0;
      s.sending = true;
      s.sentAt = now;
      owners.push(s);
    }
    this.dirty.clear();
    this.pendingHits = 0;
    if (items.length === 0) return;
    const end = this.metrics.syncSeconds.startTimer();
    let values: number[][];
    try {
      values = await this.sync(items, now);
    } catch (err) {
      end();
      for (const s of owners) {
        s.unsent += s.inflight;
        this.pendingHits += s.inflight;
        s.inflight = 0;
        s.sending = false;
        this.markDirty(s);
      }
      this.metrics.syncs.inc({ result: "error" });
      this.reportFailure(err);
      throw err;
    }
    end();
    this.reportSuccess();
    this.metrics.syncs.inc({ result: "ok" });
    const at = this.clock.now();
    owners.forEach((s, i) => {
      const v = values[i]!;
      s.sending = false;
      s.inflight = 0;
      s.known = true;
      s.readAt = at;
      // Hits admitted while the batch was in flight belong to the new read's share.
      s.used = s.admittedSinceSend;
      if (s.plan.kind === "bucket") {
        const tat = v[0]!;
        const others = Math.max(0, tat - Math.max(s.sentLt, s.sentAt));
        s.lt = roundTat(Math.max(s.lt + others, tat));
        s.g = tat;
      } else {
        s.g = v[0]!;
        if (s.plan.kind === "sliding") s.gPrev = v[1]!;
      }
    });
  }

  protected async resync(): Promise<void> {
    await loadScripts(this.syncClient, [SYNC]);
    this.resyncing = true;
    try {
      await this.requestFlush();
    } finally {
      this.resyncing = false;
    }
  }

  /**
   * Drops the state of windows that are over, and of buckets that are full again and unused
   * since the last sweep. A bucket in use keeps its state even when it refills between two
   * requests (a high rate): forgetting it would make each of its requests a new key, and each new
   * key a sync of its own.
   */
  private sweep(): void {
    const now = this.clock.now();
    const idleSince = now - this.sweepEveryMs;
    for (const [key, s] of this.states) {
      if (s.dirty || s.sending) continue;
      const p = s.plan;
      const done =
        p.kind === "bucket"
          ? s.lt + this.syncPeriodMs < now && s.g < now && s.usedAt <= idleSince
          : p.expireAt <= now;
      if (done) this.states.delete(key);
    }
  }

  /** Counters held locally (tests). */
  localKeys(): number {
    return this.states.size;
  }
}
