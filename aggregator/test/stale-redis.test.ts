import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startRedis, type RedisServer } from "@portico/testing";
import { RedisStaleStore } from "../src/compose/stale.js";

/** Last good answers in a real redis-server, shared by replicas; an outage is a miss, never a wait. */
describe("stale answers in Redis", () => {
  let redis: RedisServer;
  const clients: Redis[] = [];
  const client = (url: string) => {
    const c = new Redis(url, { maxRetriesPerRequest: 1, enableOfflineQueue: false, lazyConnect: false });
    c.on("error", () => {});
    clients.push(c);
    return c;
  };
  const ready = (c: Redis) =>
    new Promise<void>((resolve) => (c.status === "ready" ? resolve() : c.once("ready", () => resolve())));

  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(async () => {
    for (const c of clients) c.disconnect();
    await redis?.stop();
  });

  it("one replica reads what another stored, until it is older than the part allows", async () => {
    let now = 1_000_000;
    const a = new RedisStaleStore({ redis: client(redis.url), now: () => now });
    const b = new RedisStaleStore({ redis: client(redis.url), now: () => now });
    await Promise.all(clients.map(ready));
    a.put("home/orders/x", { orders: [1, 2] }, 60_000);
    const got = await (async () => {
      for (let i = 0; i < 50; i++) {
        const e = await b.get("home/orders/x", 60_000);
        if (e) return e;
        await new Promise((r) => setTimeout(r, 10));
      }
      return undefined;
    })();
    expect(got).toEqual({ value: { orders: [1, 2] }, storedAtMs: 1_000_000 });
    now += 61_000;
    expect(await b.get("home/orders/x", 60_000)).toBeUndefined();
    // Redis expires the key itself as well.
    expect(await clients[0]!.pttl("portico-agg:home/orders/x")).toBeGreaterThan(59_000);
  });

  it("answers a miss, and reports the error, when Redis cannot answer in time", async () => {
    const errors: string[] = [];
    const dead = client("redis://127.0.0.1:1");
    const store = new RedisStaleStore({
      redis: dead,
      timeoutMs: 30,
      onError: (op, err) => errors.push(`${op}: ${err.message}`),
    });
    const started = performance.now();
    expect(await store.get("k", 60_000)).toBeUndefined();
    expect(performance.now() - started).toBeLessThan(500);
    store.put("k", 1, 60_000);
    await new Promise((r) => setTimeout(r, 50));
    expect(errors[0]).toMatch(/^get: /);
    expect(errors.some((e) => e.startsWith("put: "))).toBe(true);
  });
});
