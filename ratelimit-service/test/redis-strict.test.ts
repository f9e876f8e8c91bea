/** Strict mode on a real redis-server: the same decisions as the memory backend, atomically. */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startRedis, type RedisServer, startRedisCluster, type RedisClusterHandle } from "@portico/testing";
import { matchDescriptor } from "../src/config/match.js";
import { ManualClock } from "../src/limiter/clock.js";
import { MemoryLimiter } from "../src/limiter/memory.js";
import type { CheckResult, LimitCheck } from "../src/limiter/types.js";
import { parseRedisSpec } from "../src/redis/connect.js";
import { LocalFirstRedisLimiter } from "../src/redis/local-first.js";
import { StrictRedisLimiter } from "../src/redis/strict.js";
import { yamlConfig } from "./helpers.js";

const config = yamlConfig(`
domain: eq
descriptors:
  - key: fixed
    rate_limit: { unit: second, requests_per_unit: 4 }
  - key: thirds
    rate_limit: { unit: second, requests_per_unit: 3, algorithm: token_bucket, burst: 5 }
  - key: sliding
    rate_limit: { unit: second, requests_per_unit: 6, algorithm: sliding_window }
  - key: calendar
    rate_limit: { unit: day, requests_per_unit: 40, calendar: true, time_zone: Asia/Tokyo }
  - key: multi
    rate_limits:
      - { unit: second, requests_per_unit: 2, algorithm: token_bucket }
      - { unit: minute, requests_per_unit: 15 }
      - { unit: second, requests_per_unit: 1, shadow_mode: true }
  - key: multi_strict
    count_refused: false
    rate_limits:
      - { unit: second, requests_per_unit: 3 }
      - { unit: second, requests_per_unit: 5, algorithm: sliding_window }
      - { unit: minute, requests_per_unit: 20 }
`);
const KEYS = ["fixed", "thirds", "sliding", "calendar", "multi", "multi_strict"];

function checkFor(key: string, value: string, hits: number): LimitCheck {
  const m = matchDescriptor(config, "eq", [{ key, value }])!;
  return { key: m.counterKey, limits: m.set.limits, hits, countRefused: m.node.countRefused };
}

/** A small seeded generator, so a failure can be replayed. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

const summary = (r: CheckResult) => ({
  admitted: r.admitted,
  outcomes: r.outcomes.map((o) => ({ over: o.over, remaining: o.remaining, resetMs: Math.round(o.resetMs) })),
});

describe("strict Redis backend", () => {
  let redis: RedisServer;
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(async () => {
    await redis?.stop();
  });

  it("decides exactly as the memory backend over a random sequence of every algorithm", async () => {
    const clock = new ManualClock(Date.parse("2030-05-05T14:59:58.500Z"));
    const memory = new MemoryLimiter({ clock });
    const strict = new StrictRedisLimiter({
      connection: parseRedisSpec(redis.url),
      clock,
      prefix: "eq:",
      timeoutMs: 500,
    });
    try {
      await strict.waitUntilUp();
      const rand = rng(42);
      let steps = 0;
      for (let i = 0; i < 1_500; i++) {
        clock.advance(Math.floor(rand() * 180));
        const batch = Array.from({ length: 1 + Math.floor(rand() * 3) }, () =>
          checkFor(
            KEYS[Math.floor(rand() * KEYS.length)]!,
            `v${Math.floor(rand() * 2)}`,
            Math.floor(rand() * 3),
          ),
        );
        const expected = (await memory.check(batch)).map(summary);
        const actual = await strict.check(batch);
        expect(actual.every((r) => r.degraded === undefined)).toBe(true);
        expect(actual.map(summary), `step ${i}`).toEqual(expected);
        steps += batch.length;
      }
      expect(steps).toBeGreaterThan(2_000);
    } finally {
      await strict.close();
      await memory.close();
    }
  });

  it("stays exact under concurrency: 400 concurrent decisions, one pipelined batch, exactly the limit admitted", async () => {
    const clock = new ManualClock(Date.parse("2030-05-05T15:00:00Z"));
    const limiters = [0, 1].map(
      () =>
        new StrictRedisLimiter({
          connection: parseRedisSpec(redis.url),
          clock,
          prefix: "conc:",
          timeoutMs: 1_000,
        }),
    );
    try {
      await Promise.all(limiters.map((l) => l.waitUntilUp()));
      const m = matchDescriptor(
        yamlConfig("domain: c\ndescriptors: [{key: k, rate_limit: {unit: hour, requests_per_unit: 150}}]"),
        "c",
        [{ key: "k", value: "x" }],
      )!;
      const check: LimitCheck = { key: m.counterKey, limits: m.set.limits, hits: 1, countRefused: true };
      const results = await Promise.all(
        limiters.flatMap((l) => Array.from({ length: 200 }, () => l.check([check]))),
      );
      expect(results.flat().filter((r) => r.admitted).length).toBe(150);
      expect(results.flat().some((r) => r.degraded)).toBe(false);
    } finally {
      await Promise.all(limiters.map((l) => l.close()));
    }
  });
});

describe("Redis Cluster", () => {
  let cluster: RedisClusterHandle;
  beforeAll(async () => {
    cluster = await startRedisCluster();
  }, 60_000);
  afterAll(async () => {
    await cluster?.stop();
  });

  it("runs each decision's keys in one slot (several limits, sliding windows) and syncs across slots", async () => {
    const clock = new ManualClock(Date.parse("2030-05-05T15:00:00Z"));
    const connection = { cluster: cluster.nodes };
    const strict = new StrictRedisLimiter({ connection, clock, timeoutMs: 1_000 });
    const local = new LocalFirstRedisLimiter({
      connection,
      clock,
      prefix: "lf:",
      timeoutMs: 1_000,
      instances: 1,
    });
    const memory = new MemoryLimiter({ clock });
    try {
      await strict.waitUntilUp(15_000);
      await local.waitUntilUp(15_000);
      // Many descriptor values spread their keys over the three nodes.
      const batch = Array.from({ length: 60 }, (_, i) => checkFor(KEYS[i % KEYS.length]!, `c${i % 20}`, 1));
      for (let round = 0; round < 4; round++) {
        const expected = (await memory.check(batch)).map(summary);
        expect((await strict.check(batch)).map(summary)).toEqual(expected);
        const viaLocal = await local.check(batch);
        expect(viaLocal.some((r) => r.degraded)).toBe(false);
        clock.advance(150);
      }
      await local.flush();
      expect(local.isUp()).toBe(true);
      expect(
        (await local.metrics.syncs.get()).values.find((v) => v.labels.result === "ok")?.value,
      ).toBeGreaterThan(0);
      expect(
        (await local.metrics.syncs.get()).values.find((v) => v.labels.result === "error"),
      ).toBeUndefined();
    } finally {
      await strict.close();
      await local.close();
      await memory.close();
    }
  }, 60_000);
});
