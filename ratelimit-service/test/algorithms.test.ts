/** The algorithms on the memory backend with a clock the test moves: exact counts at the edges. */
import { describe, expect, it } from "vitest";
import { matchDescriptor } from "../src/config/match.js";
import { ManualClock } from "../src/limiter/clock.js";
import { MemoryLimiter } from "../src/limiter/memory.js";
import type { LimitCheck } from "../src/limiter/types.js";
import { toStatus } from "../src/service/rls.js";
import { yamlConfig } from "./helpers.js";

const config = yamlConfig(`
domain: algo
descriptors:
  - key: fixed
    rate_limit: { unit: minute, requests_per_unit: 10 }
  - key: thirty
    rate_limit: { window: 30s, requests_per_unit: 3 }
  - key: bucket
    rate_limit: { unit: second, requests_per_unit: 10, algorithm: token_bucket, burst: 20 }
  - key: sliding
    rate_limit: { unit: minute, requests_per_unit: 10, algorithm: sliding_window }
  - key: month
    rate_limit: { unit: month, requests_per_unit: 3, calendar: true }
  - key: month30
    rate_limit: { unit: month, requests_per_unit: 3 }
  - key: year_paris
    rate_limit: { unit: year, requests_per_unit: 2, calendar: true, time_zone: Europe/Paris }
  - key: year_utc
    rate_limit: { unit: year, requests_per_unit: 2, calendar: true }
  - key: two
    rate_limits:
      - { unit: second, requests_per_unit: 5 }
      - { unit: minute, requests_per_unit: 12 }
  - key: two_strict
    count_refused: false
    rate_limits:
      - { unit: second, requests_per_unit: 5 }
      - { unit: minute, requests_per_unit: 12 }
  - key: rate_and_quota
    rate_limits:
      - { unit: second, requests_per_unit: 2, algorithm: token_bucket }
      - { unit: day, requests_per_unit: 3, calendar: true }
  - key: shadowed
    rate_limits:
      - { unit: second, requests_per_unit: 1, shadow_mode: true }
      - { unit: second, requests_per_unit: 3, algorithm: token_bucket }
`);

function setup(start: string) {
  const clock = new ManualClock(Date.parse(start));
  const limiter = new MemoryLimiter({ clock });
  const check = (key: string, hits = 1): LimitCheck => {
    const m = matchDescriptor(config, "algo", [{ key, value: "v" }])!;
    return { key: m.counterKey, limits: m.set.limits, hits, countRefused: m.node.countRefused };
  };
  const one = async (key: string, hits = 1) => (await limiter.check([check(key, hits)]))[0]!;
  const admitted = async (key: string, times: number) => {
    let n = 0;
    for (let i = 0; i < times; i++) if ((await one(key)).admitted) n++;
    return n;
  };
  return { clock, limiter, one, admitted };
}

describe("fixed window (upstream)", () => {
  it("counts exactly up to the limit; over means strictly above it; windows start on the epoch's minutes", async () => {
    const { clock, one, admitted } = setup("2030-01-01T00:00:59.000Z");
    for (let i = 1; i <= 10; i++) {
      const r = await one("fixed");
      expect(r.admitted).toBe(true);
      expect(r.outcomes[0]!.remaining).toBe(10 - i);
    }
    const refused = await one("fixed");
    expect(refused.admitted).toBe(false);
    expect(toStatus(refused)).toMatchObject({
      code: "OVER_LIMIT",
      limit_remaining: 0,
      duration_until_reset: { seconds: 1 },
    });
    clock.advance(999);
    expect((await one("fixed")).admitted).toBe(false);
    // One millisecond later a new minute: the documented 2x at the edge (10 + 10 within 2 ms).
    clock.advance(1);
    expect(await admitted("fixed", 11)).toBe(10);
    expect(toStatus(await one("fixed")).duration_until_reset).toEqual({ seconds: 60 });
  });

  it("any window length, aligned on the epoch", async () => {
    const { clock, admitted } = setup("2030-01-01T00:00:29.999Z");
    expect(await admitted("thirty", 4)).toBe(3);
    clock.advance(1);
    expect(await admitted("thirty", 4)).toBe(3);
    clock.advance(29_999);
    expect(await admitted("thirty", 1)).toBe(0);
  });

  it("hits_addend: a request can take several hits; 0 asks without counting", async () => {
    const { one } = setup("2030-01-01T00:00:00Z");
    expect((await one("fixed", 7)).outcomes[0]!.remaining).toBe(3);
    expect((await one("fixed", 0)).outcomes[0]!.remaining).toBe(3);
    const over = await one("fixed", 4);
    expect(over.admitted).toBe(false);
    expect(over.outcomes[0]!.used).toBe(11);
  });
});

describe("token bucket (GCRA)", () => {
  it("allows the burst at once, then exactly the rate", async () => {
    const { clock, one, admitted } = setup("2030-01-01T00:00:00Z");
    expect(await admitted("bucket", 21)).toBe(20);
    const refused = await one("bucket");
    expect(refused.outcomes[0]).toMatchObject({ over: true, remaining: 0, resetMs: 100 });
    let total = 0;
    for (let k = 1; k <= 10; k++) {
      clock.advance(100);
      total += await admitted("bucket", 2);
    }
    expect(total).toBe(10);
    // Two seconds idle fill the bucket again, and no further.
    clock.advance(5_000);
    const first = await one("bucket");
    expect(first.outcomes[0]).toMatchObject({ remaining: 19, resetMs: 100 });
    expect(await admitted("bucket", 20)).toBe(19);
  });

  it("a refused request takes no token", async () => {
    const { clock, admitted } = setup("2030-01-01T00:00:00Z");
    expect(await admitted("bucket", 20)).toBe(20);
    expect(await admitted("bucket", 1_000)).toBe(0);
    clock.advance(100);
    expect(await admitted("bucket", 5)).toBe(1);
  });
});

describe("sliding-window counter", () => {
  it("weights the previous window by how much of it is still covered", async () => {
    const { clock, admitted } = setup("2030-01-01T00:00:00Z");
    expect(await admitted("sliding", 10)).toBe(10);
    // Half-way into the next minute: 10 × 0.5 + current ≤ 10.
    clock.set(Date.parse("2030-01-01T00:01:30Z"));
    expect(await admitted("sliding", 10)).toBe(5);
    // Three quarters in: 10 × 0.25 + 7 ≤ 10, so two more (refused calls counted too: 5 + 5 + 2 = 12 → over).
    clock.set(Date.parse("2030-01-01T00:01:45Z"));
    expect(await admitted("sliding", 3)).toBe(0);
  });

  it("tells a refused caller when one request would fit again", async () => {
    const { clock, one, admitted } = setup("2030-01-01T00:00:00Z");
    expect(await admitted("sliding", 10)).toBe(10);
    clock.set(Date.parse("2030-01-01T00:01:00Z"));
    const r = await one("sliding");
    // prev 10 × (1 − e/60 s) + 1 (the refused call, counted) + 1 ≤ 10  ⇔  e ≥ 12 s.
    expect(r.outcomes[0]).toMatchObject({ over: true, resetMs: 12_000 });
    clock.advance(12_000);
    expect((await one("sliding")).admitted).toBe(true);
  });
});

describe("calendar quotas", () => {
  it("a calendar month ends at midnight UTC on the last day, where upstream's 30-day block does not", async () => {
    const { clock, one, admitted } = setup("2030-01-31T23:59:59.999Z");
    expect(await admitted("month", 4)).toBe(3);
    expect(await admitted("month30", 4)).toBe(3);
    expect(toStatus(await one("month")).duration_until_reset).toEqual({ seconds: 1 });
    clock.advance(1);
    expect(await admitted("month", 4)).toBe(3);
    // 2030-02-01 is inside the same 30-day block from the epoch as 2030-01-31.
    expect(await admitted("month30", 1)).toBe(0);
    // March 1st: February had 28 days.
    clock.set(Date.parse("2030-02-28T23:59:59.999Z"));
    expect(await admitted("month", 1)).toBe(0);
    clock.advance(1);
    expect(await admitted("month", 1)).toBe(1);
  });

  it("a year in a time zone turns over at local midnight", async () => {
    const { clock, admitted } = setup("2030-12-31T22:59:59.999Z");
    expect(await admitted("year_paris", 3)).toBe(2);
    expect(await admitted("year_utc", 3)).toBe(2);
    // 23:00 UTC is 2031-01-01 00:00 in Paris: a new year there, not yet in UTC.
    clock.advance(1);
    expect(await admitted("year_paris", 3)).toBe(2);
    expect(await admitted("year_utc", 1)).toBe(0);
    clock.set(Date.parse("2031-01-01T00:00:00Z"));
    expect(await admitted("year_utc", 3)).toBe(2);
    expect(await admitted("year_paris", 1)).toBe(0);
  });
});

describe("several limits on one descriptor", () => {
  it("per second and per minute: refused calls count on both by default", async () => {
    const { clock, admitted, one } = setup("2030-01-01T00:00:00Z");
    expect(await admitted("two", 6)).toBe(5);
    clock.advance(1_000);
    expect(await admitted("two", 6)).toBe(5);
    clock.advance(1_000);
    // 12 counted on the minute already (two refused calls among them).
    const r = await one("two");
    expect(r.admitted).toBe(false);
    expect(r.outcomes.map((o) => o.over)).toEqual([false, true]);
    // The answer shows the limit that refused, with its reset.
    expect(toStatus(r)).toMatchObject({
      current_limit: { requests_per_unit: 12, unit: "MINUTE" },
      duration_until_reset: { seconds: 58 },
    });
  });

  it("with count_refused: false, a refused request counts on none of them", async () => {
    const { clock, admitted } = setup("2030-01-01T00:00:00Z");
    expect(await admitted("two_strict", 6)).toBe(5);
    clock.advance(1_000);
    expect(await admitted("two_strict", 6)).toBe(5);
    clock.advance(1_000);
    expect(await admitted("two_strict", 6)).toBe(2);
  });

  it("a rate and a daily quota: the quota runs out, the rate refills; the status shows the tighter one", async () => {
    const { clock, one, admitted } = setup("2030-01-01T00:00:00Z");
    const first = await one("rate_and_quota");
    // Remaining: 1 token, 2 of the quota; the bucket is tighter.
    expect(toStatus(first)).toMatchObject({
      code: "OK",
      limit_remaining: 1,
      current_limit: { unit: "SECOND" },
    });
    clock.advance(1_000);
    expect(await admitted("rate_and_quota", 3)).toBe(2);
    clock.advance(1_000);
    const r = await one("rate_and_quota");
    expect(r.admitted).toBe(false);
    expect(toStatus(r)).toMatchObject({
      current_limit: { unit: "DAY", requests_per_unit: 3 },
      duration_until_reset: { seconds: 86_398 },
    });
  });

  it("a shadow-mode limit reports but does not refuse; the other still does", async () => {
    const { one } = setup("2030-01-01T00:00:00Z");
    const results = [
      await one("shadowed"),
      await one("shadowed"),
      await one("shadowed"),
      await one("shadowed"),
    ];
    expect(results.map((r) => r.admitted)).toEqual([true, true, true, false]);
    expect(results[1]!.outcomes[0]!.over).toBe(true);
  });
});
