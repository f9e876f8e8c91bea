/** Strict mode's over-limit cache on a real redis-server: refusals from memory, exactly as Redis would refuse. */
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startRedis, type RedisServer } from "@portico/testing";
import { matchDescriptor } from "../src/config/match.js";
import { ManualClock } from "../src/limiter/clock.js";
import type { LimitCheck } from "../src/limiter/types.js";
import { parseRedisSpec } from "../src/redis/connect.js";
import { StrictRedisLimiter } from "../src/redis/strict.js";
import { RateLimitHandler } from "../src/service/rls.js";
import { yamlConfig } from "./helpers.js";

const config = yamlConfig(`
domain: c
descriptors:
  - key: fixed
    rate_limit: { unit: minute, requests_per_unit: 3 }
  - key: sliding
    rate_limit: { unit: minute, requests_per_unit: 3, algorithm: sliding_window }
  - key: pair
    rate_limits:
      - { unit: second, requests_per_unit: 2, algorithm: token_bucket }
      - { unit: day, requests_per_unit: 1000 }
`);

function checkFor(key: string, value = "v", hits = 1): LimitCheck {
  const m = matchDescriptor(config, "c", [{ key, value }])!;
  return { key: m.counterKey, limits: m.set.limits, hits, countRefused: m.node.countRefused };
}

describe("the over-limit cache (strict mode)", () => {
  let redis: RedisServer;
  let raw: Redis;
  beforeAll(async () => {
    redis = await startRedis();
    raw = new Redis(redis.url);
  });
  afterAll(async () => {
    raw?.disconnect();
    await redis?.stop();
  });

  /** The decision script's calls so far, from Redis's own statistics. */
  const scriptCalls = async () => {
    const stats = await raw.info("commandstats");
    return Number(/cmdstat_evalsha:calls=(\d+)/.exec(stats)?.[1] ?? 0);
  };

  async function limiter(prefix: string, clock: ManualClock, overLimitCacheKeys?: number) {
    const l = new StrictRedisLimiter({
      connection: parseRedisSpec(redis.url),
      clock,
      prefix,
      timeoutMs: 1_000,
      overLimitCacheKeys,
    });
    await l.waitUntilUp();
    return l;
  }

  it("refuses a key over its limit from memory until its window ends, then asks Redis again", async () => {
    const clock = new ManualClock(Date.parse("2030-05-05T15:00:10Z"));
    const l = await limiter("fixed:", clock);
    try {
      const c = checkFor("fixed");
      const first = await Promise.all([1, 2, 3, 4].map(() => l.check([c])));
      expect(first.map(([r]) => r!.admitted)).toEqual([true, true, true, false]);
      const before = await scriptCalls();
      for (let i = 0; i < 20; i++) {
        clock.advance(1_000);
        const [r] = await l.check([c]);
        expect(r).toMatchObject({ admitted: false, cached: true });
        // The reset counts down to the end of the minute, as Redis's answer would.
        expect(Math.round(r!.outcomes[0]!.resetMs)).toBe(50_000 - 1_000 * (i + 1));
      }
      expect(await scriptCalls()).toBe(before);
      // Redis's count stopped at the first refusal: refused hits from memory add nothing there.
      const keys = (await raw.keys("fixed:*")).filter((k) => !k.includes("{members}"));
      expect(keys).toHaveLength(1);
      expect(await raw.get(keys[0]!)).toBe("4");
      clock.set(Date.parse("2030-05-05T15:01:00Z"));
      const [next] = await l.check([c]);
      expect(next).toMatchObject({ admitted: true });
      expect(next!.cached).toBeUndefined();
      expect(await scriptCalls()).toBe(before + 1);
    } finally {
      await l.close();
    }
  });

  it("never answers a sliding window, a bucket with room beside it, or a request of another size from memory", async () => {
    const clock = new ManualClock(Date.parse("2030-05-05T16:00:10Z"));
    const l = await limiter("kinds:", clock);
    try {
      const sliding = checkFor("sliding");
      for (let i = 0; i < 3; i++) await l.check([sliding]);
      const [refused] = await l.check([sliding]);
      expect(refused!.admitted).toBe(false);
      const [again] = await l.check([sliding]);
      expect(again!.cached).toBeUndefined();

      // The bucket refuses; the day's count has room and would count the refused hit.
      const pair = checkFor("pair");
      for (let i = 0; i < 2; i++) await l.check([pair]);
      const [over] = await l.check([pair]);
      expect(over!.admitted).toBe(false);
      const [pairAgain] = await l.check([pair]);
      expect(pairAgain!.cached).toBeUndefined();

      const fixed = checkFor("fixed", "w");
      for (let i = 0; i < 4; i++) await l.check([fixed]);
      const [one] = await l.check([fixed]);
      expect(one!.cached).toBe(true);
      const [two] = await l.check([checkFor("fixed", "w", 2)]);
      expect(two!.admitted).toBe(false);
      expect(two!.cached).toBeUndefined();
    } finally {
      await l.close();
    }
  });

  it("is off with overLimitCacheKeys 0: every refusal goes to Redis", async () => {
    const clock = new ManualClock(Date.parse("2030-05-05T17:00:10Z"));
    const l = await limiter("off:", clock, 0);
    try {
      const c = checkFor("fixed");
      for (let i = 0; i < 4; i++) await l.check([c]);
      const before = await scriptCalls();
      const [r] = await l.check([c]);
      expect(r!.admitted).toBe(false);
      expect(r!.cached).toBeUndefined();
      expect(await scriptCalls()).toBe(before + 1);
    } finally {
      await l.close();
    }
  });

  it("counts refusals from memory in over_limit_with_local_cache, beside over_limit", async () => {
    const clock = new ManualClock(Date.parse("2030-05-05T18:00:10Z"));
    const l = await limiter("metric:", clock);
    const handler = new RateLimitHandler(config, { limiter: l });
    try {
      const request = { domain: "c", descriptors: [{ entries: [{ key: "fixed", value: "m" }] }] };
      for (let i = 0; i < 6; i++) await handler.shouldRateLimit(request);
      const value = async (name: "overLimit" | "overLimitWithLocalCache") =>
        (await handler.metrics[name].get()).values.reduce((n, v) => n + v.value, 0);
      expect(await value("overLimit")).toBe(3);
      expect(await value("overLimitWithLocalCache")).toBe(2);
    } finally {
      await l.close();
    }
  });
});
