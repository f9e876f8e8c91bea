/**
 * Redis killed and restarted under load: decisions keep coming without waiting on it, the service
 * does not crash, and it goes back to shared decisions by itself, with one log line and one metric
 * per change of state.
 */
import { Writable } from "node:stream";
import { Redis } from "ioredis";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { startRedis, type RedisServer } from "@portico/testing";
import { matchDescriptor } from "../src/config/match.js";
import { ManualClock } from "../src/limiter/clock.js";
import type { FailureMode, LimitCheck } from "../src/limiter/types.js";
import type { RedisBackend } from "../src/redis/backend.js";
import { parseRedisSpec } from "../src/redis/connect.js";
import { LocalFirstRedisLimiter } from "../src/redis/local-first.js";
import { StrictRedisLimiter } from "../src/redis/strict.js";
import { createRateLimitClient } from "../src/service/codec.js";
import { startRateLimitService } from "../src/service/server.js";
import { d, req, yamlConfig } from "./helpers.js";

const config = yamlConfig(`
domain: outage
descriptors:
  - key: busy
    rate_limit: { unit: hour, requests_per_unit: 1000000 }
  - key: small
    rate_limit: { unit: hour, requests_per_unit: 10 }
`);

async function waitFor(cond: () => boolean, what: string, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function logCapture() {
  const lines: { msg: string; level: number }[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split("\n").filter(Boolean)) lines.push(JSON.parse(l));
      cb();
    },
  });
  return { log: pino({ level: "info" }, stream), lines };
}

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

describe.each(["strict", "local-first"] as const)("Redis outage, %s mode", (mode) => {
  it("killed and restarted under load: no errors, no waiting, recovery without a restart", async () => {
    let redis: RedisServer = await startRedis();
    cleanups.push(() => redis.stop());
    const { log, lines } = logCapture();
    // A long command timeout, so that a decision that waited on the dead Redis would take seconds
    // and stand out from scheduling noise on a loaded machine.
    const opts = {
      connection: parseRedisSpec(redis.url),
      log,
      prefix: `out-${mode}:`,
      probeIntervalMs: 50,
      timeoutMs: 5_000,
    };
    const limiter: RedisBackend =
      mode === "strict" ? new StrictRedisLimiter(opts) : new LocalFirstRedisLimiter(opts);
    cleanups.push(() => limiter.close());
    await limiter.waitUntilUp();
    const server = await startRateLimitService({ config, limiter, port: 0 });
    cleanups.push(() => server.stop());
    const client = createRateLimitClient(server.address);
    cleanups.push(async () => client.close());

    let phase: "before" | "outage" | "after" = "before";
    const answered = { before: 0, outage: 0, after: 0 };
    const errors: unknown[] = [];
    let slowest = { before: 0, outage: 0, after: 0 };
    let running = true;
    const worker = async (w: number) => {
      for (let i = 0; running; i++) {
        const p = phase;
        const started = performance.now();
        try {
          const r = await client.shouldRateLimit(req("outage", d(`busy=w${w}-${i % 5}`)));
          expect(r.overall_code).toBe("OK");
          answered[p]++;
          slowest = { ...slowest, [p]: Math.max(slowest[p], performance.now() - started) };
        } catch (err) {
          errors.push(err);
        }
      }
    };
    const workers = Array.from({ length: 8 }, (_, w) => worker(w));
    await waitFor(() => answered.before > 200, "load before the outage");

    const port = redis.port;
    await redis.stop({ signal: "SIGKILL" });
    await waitFor(() => !limiter.isUp(), "the outage to be noticed");
    phase = "outage";
    const outageStart = answered.outage;
    await waitFor(() => answered.outage > outageStart + 300, "decisions during the outage");
    await new Promise((r) => setTimeout(r, 300));

    redis = await startRedis({ port });
    await waitFor(() => limiter.isUp(), "recovery");
    phase = "after";
    await waitFor(() => answered.after > 200, "load after recovery");
    const degradedBefore = await degradedCount(server.metrics.registry);
    const afterStart = answered.after;
    await waitFor(() => answered.after > afterStart + 200, "more load after recovery");
    running = false;
    await Promise.all(workers);

    expect(errors).toEqual([]);
    // No decision waited on the dead Redis: one that did would have taken the 5 s command timeout.
    expect(slowest.outage).toBeLessThan(2_500);
    // Shared again: nothing decided locally since recovery.
    expect(await degradedCount(server.metrics.registry)).toBe(degradedBefore);
    // What was counted during the outage reached the new Redis.
    const probe = new Redis(redis.url);
    cleanups.push(async () => probe.disconnect());
    if (mode === "local-first") await (limiter as LocalFirstRedisLimiter).flush();
    const keys = await probe.keys(`out-${mode}:*busy*`);
    expect(keys.length).toBeGreaterThan(0);
    // One line and one metric per change of state, not per request.
    expect(lines.filter((l) => l.msg.startsWith("Redis unreachable")).length).toBe(1);
    expect(lines.filter((l) => l.msg.startsWith("Redis reachable")).length).toBe(2);
    const changes = await limiter.metrics.stateChanges.get();
    expect(Object.fromEntries(changes.values.map((v) => [v.labels.state, v.value]))).toEqual({
      down: 1,
      up: 2,
    });
  }, 60_000);
});

async function degradedCount(registry: import("prom-client").Registry): Promise<number> {
  const m = registry.getSingleMetric("portico_ratelimit_degraded_decisions_total");
  const values = (await m!.get()).values;
  return values.reduce((s, v) => s + v.value, 0);
}

describe("failure modes while Redis is unreachable", () => {
  const small = (): LimitCheck => {
    const m = matchDescriptor(config, "outage", [{ key: "small", value: "x" }])!;
    return { key: m.counterKey, limits: m.set.limits, hits: 1, countRefused: true };
  };

  it.each([
    ["strict", "fail_open", 20],
    ["strict", "fail_closed", 0],
    ["strict", "local", 5],
    ["local-first", "fail_open", 20],
    ["local-first", "fail_closed", 0],
    ["local-first", "local", 5],
  ] as const)(
    "%s, %s: %i of 20 admitted against a limit of 10 shared by 2 instances",
    async (mode, failureMode, expected) => {
      const redis = await startRedis();
      const clock = new ManualClock(Date.parse("2030-01-01T00:00:00Z"));
      const opts = {
        connection: parseRedisSpec(redis.url),
        clock,
        failureMode: failureMode as FailureMode,
        instances: 2,
        prefix: `fm-${mode}-${failureMode}:`,
      };
      const limiter: RedisBackend =
        mode === "strict" ? new StrictRedisLimiter(opts) : new LocalFirstRedisLimiter(opts);
      cleanups.push(() => limiter.close());
      await limiter.waitUntilUp();
      await redis.stop({ signal: "SIGKILL" });
      await waitFor(() => !limiter.isUp(), "the outage to be noticed");
      let admitted = 0;
      for (let i = 0; i < 20; i++) {
        const [r] = await limiter.check([small()]);
        expect(r!.degraded).toBe(failureMode);
        if (r!.admitted) admitted++;
      }
      expect(admitted).toBe(expected);
    },
  );
});
