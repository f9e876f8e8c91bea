/**
 * Local-first mode on a real redis-server: two instances share one limit. What they admit together
 * beyond L is what one admitted that the other had not yet seen: at most its share, ⌈L/N⌉ (the
 * worst case the README states, L + (N−1)·⌈L/N⌉), and at most what it admits between two syncs,
 * which for traffic at the limit's own rate L, synced every T, is L·T: L + (N−1)·L·T.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startRedis, type RedisServer } from "@portico/testing";
import { matchDescriptor } from "../src/config/match.js";
import { ManualClock } from "../src/limiter/clock.js";
import type { LimitCheck } from "../src/limiter/types.js";
import { parseRedisSpec } from "../src/redis/connect.js";
import { LocalFirstRedisLimiter, type LocalFirstOptions } from "../src/redis/local-first.js";
import { yamlConfig } from "./helpers.js";

const config = yamlConfig(`
domain: shared
descriptors:
  - key: counter
    rate_limit: { unit: hour, requests_per_unit: 1000 }
  - key: bucket
    rate_limit: { unit: hour, requests_per_unit: 3600, algorithm: token_bucket, burst: 200 }
  - key: small
    rate_limit: { unit: hour, requests_per_unit: 100 }
  - key: persecond
    rate_limit: { unit: second, requests_per_unit: 1000 }
`);

function check(key: string, value = "tenant"): LimitCheck {
  const m = matchDescriptor(config, "shared", [{ key, value }])!;
  return { key: m.counterKey, limits: m.set.limits, hits: 1, countRefused: true };
}

async function waitFor(cond: () => boolean | Promise<boolean>, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** `rounds` bursts of `concurrency` independent decisions, as concurrent gRPC calls would make them. */
async function hammer(
  l: LocalFirstRedisLimiter,
  c: LimitCheck,
  rounds: number,
  concurrency: number,
): Promise<number> {
  let admitted = 0;
  for (let r = 0; r < rounds; r++) {
    const results = await Promise.all(Array.from({ length: concurrency }, () => l.check([c])));
    for (const [x] of results) if (x!.admitted) admitted++;
    // Let timers and sync replies in between bursts, as real traffic would.
    await new Promise((res) => setImmediate(res));
  }
  return admitted;
}

/** Keeps asking both instances, with fresh global counts, until both refuse: what is left is then used. */
async function drain(ls: LocalFirstRedisLimiter[], c: LimitCheck): Promise<number> {
  let admitted = 0;
  for (let i = 0; i < 500; i++) {
    await Promise.all(ls.map((l) => l.flush()));
    const results = await Promise.all(ls.map((l) => l.check([c])));
    const ok = results.filter(([r]) => r!.admitted).length;
    admitted += ok;
    if (ok === 0) return admitted;
  }
  throw new Error("the instances kept admitting");
}

describe("local-first Redis backend", () => {
  let redis: RedisServer;
  const open: LocalFirstRedisLimiter[] = [];
  let prefixes = 0;

  beforeAll(async () => {
    redis = await startRedis();
  });
  afterEach(async () => {
    await Promise.all(open.splice(0).map((l) => l.close()));
  });
  afterAll(async () => {
    await redis?.stop();
  });

  async function instances(
    n: number,
    opts: Partial<LocalFirstOptions> = {},
  ): Promise<LocalFirstRedisLimiter[]> {
    const clock = opts.clock ?? new ManualClock(Date.parse("2030-07-01T10:15:00Z"));
    const prefix = `lf${++prefixes}:`;
    const ls = Array.from(
      { length: n },
      () =>
        new LocalFirstRedisLimiter({
          connection: parseRedisSpec(redis.url),
          clock,
          prefix,
          heartbeatMs: 100,
          timeoutMs: 50,
          ...opts,
        }),
    );
    open.push(...ls);
    await Promise.all(ls.map((l) => l.waitUntilUp()));
    await waitFor(async () => {
      await Promise.all(ls.map((l) => l.heartbeat()));
      return ls.every((l) => l.instances() === n);
    }, `${n} instances to see each other`);
    return ls;
  }

  it("admits at most L + (N−1)·L·T with traffic at the limit's rate and a sync every T", async () => {
    // The README's setting: L = 1000 a second, a sync every T = 100 ms, N = 2 instances, each
    // offered the limit's own rate (one hit a millisecond, 2L a second together). Between two
    // syncs an instance admits at most what it is offered, L·T = 100 hits, and only those can be
    // unseen by the other when it decides; so together they admit at most
    //   L + (N − 1)·L·T = 1000 + 1 · 1000/s · 0.1 s = 1100, i.e. +10 %.
    const L = 1000;
    const T = 100;
    const N = 2;
    const bound = L + (N - 1) * ((L * T) / 1000);
    // Window time is simulated, and the syncs are the test's, every T of it (the timers never
    // fire): the bound then holds exactly, however loaded the machine is.
    const clock = new ManualClock(Date.parse("2030-07-01T10:15:00Z"));
    const ls = await instances(N, { clock, syncPeriodMs: 3_600_000, syncHits: 1_000_000 });
    const c = check("persecond");
    const each = [0, 0];
    for (let ms = 0; ms < 1000; ms++) {
      if (ms % T === 0) await Promise.all(ls.map((l) => l.flush()));
      const results = await Promise.all(ls.map((l) => l.check([c])));
      results.forEach(([r], i) => {
        if (r!.admitted) each[i]!++;
      });
      // The window is the second that starts at the clock's start: stay in it for the drain.
      if (ms < 999) clock.advance(1);
    }
    const admitted = each[0]! + each[1]! + (await drain(ls, c));
    console.log(`local-first, L=${L}/s, T=${T} ms, N=${N}: admitted ${admitted} (bound ${bound})`);
    expect(admitted, `admitted ${admitted} of ${L}`).toBeGreaterThanOrEqual(L);
    expect(admitted, `admitted ${admitted} of ${L}, bound ${bound}`).toBeLessThanOrEqual(bound);
    // Both instances took part: neither was starved by the other.
    expect(Math.min(...each)).toBeGreaterThan(L / 10);
  });

  it("holds L + (N−1)·⌈L/N⌉ when the instances hardly sync: each admits its share, then refreshes it", async () => {
    // Bursts with no sync between them: what one admits unseen is bounded by its share alone.
    const L = 1000;
    const ls = await instances(2, { syncPeriodMs: 5_000, syncHits: 1_000_000 });
    const c = check("counter");
    const hammered = await Promise.all(ls.map((l) => hammer(l, c, 40, 50)));
    const admitted = hammered[0]! + hammered[1]! + (await drain(ls, c));
    expect(admitted, `admitted ${admitted} of ${L}`).toBeGreaterThanOrEqual(L);
    expect(admitted, `admitted ${admitted} of ${L}`).toBeLessThanOrEqual(L + Math.ceil(L / 2));
    const waits = await ls[0]!.metrics.shareWaits.get();
    expect(waits.values.reduce((s, v) => s + v.value, 0)).toBeGreaterThan(0);
  });

  it("shares a token bucket's burst the same way", async () => {
    const C = 200;
    const ls = await instances(2, { syncPeriodMs: 20 });
    const c = check("bucket");
    // The clock stands still: no refill, only the burst.
    const hammered = await Promise.all(ls.map((l) => hammer(l, c, 20, 50)));
    const admitted = hammered[0]! + hammered[1]! + (await drain(ls, c));
    expect(admitted, `admitted ${admitted} of ${C}`).toBeLessThanOrEqual(C + Math.ceil(C / 2));
    expect(admitted, `admitted ${admitted} of ${C}`).toBeGreaterThanOrEqual(C * 0.9);
  });

  it("one instance alone is exact", async () => {
    const [l] = await instances(1);
    const c = check("small");
    expect((await hammer(l!, c, 10, 50)) + (await drain([l!], c))).toBe(100);
  });

  it("reads the global count back: one instance sees what the other admitted after a sync", async () => {
    const [a, b] = await instances(2);
    const c = check("small", "readback");
    const firstB = (await b!.check([c]))[0]!;
    expect(firstB.outcomes[0]!.remaining).toBe(99);
    for (let i = 0; i < 30; i++) await a!.check([c]);
    await a!.flush();
    await b!.flush();
    const next = (await b!.check([c]))[0]!;
    expect(next.outcomes[0]!.remaining).toBe(100 - 32);
  });

  it("decides without waiting on Redis in the common case", async () => {
    const [a] = await instances(1);
    const c = check("counter", "fast");
    let pending = 0;
    for (let i = 0; i < 200; i++) {
      const p = a!.check([c]);
      // The answer is ready in the same turn: no Redis round trip.
      let settled = false;
      void p.then(() => (settled = true));
      await Promise.resolve();
      if (!settled) pending++;
    }
    expect(pending).toBe(0);
  });
});
