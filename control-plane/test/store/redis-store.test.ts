import { randomUUID } from "node:crypto";
import { rmSync } from "node:fs";
import { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { silentLogger, type Logger } from "@portico/common";
import { RedisStore, type RedisStoreOptions } from "../../src/store/redis-store.js";
import { StoreConflictError, StoreUnavailableError, type Revision } from "../../src/store/types.js";
import { captureLogger, recordWatch, sampleConfig, waitFor } from "./fixtures.js";
import { freePort, startRedis, type RedisServer } from "@portico/testing";

let shared: RedisServer;
const servers: RedisServer[] = [];
const stores: RedisStore[] = [];
const clients: Redis[] = [];
const dirs: string[] = [];

beforeAll(async () => {
  shared = await startRedis();
});

afterEach(async () => {
  await Promise.all(stores.splice(0).map((s) => s.close()));
  await Promise.all(clients.splice(0).map((c) => c.quit().catch(() => c.disconnect())));
  await Promise.all(servers.splice(0).map((s) => s.stop({ signal: "SIGKILL" })));
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

afterAll(async () => {
  await shared?.stop();
});

async function open(
  url: string,
  opts: Partial<RedisStoreOptions> & { log?: Logger } = {},
): Promise<RedisStore> {
  const store = new RedisStore({ url, log: silentLogger(), ...opts });
  stores.push(store);
  await store.open();
  return store;
}

function client(url: string): Redis {
  const c = new Redis(url);
  clients.push(c);
  return c;
}

/** Retries while the store reports Redis unavailable, as a caller would after an outage. */
async function eventually<T>(fn: () => Promise<T>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (!(err instanceof StoreUnavailableError) || Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

/** The part of a key Redis Cluster hashes (the rule from the cluster specification). */
function hashTag(key: string): string {
  const start = key.indexOf("{");
  const end = start >= 0 ? key.indexOf("}", start + 1) : -1;
  return end > start + 1 ? key.slice(start + 1, end) : key;
}

function numbers(revs: Revision[]): number[] {
  return revs.map((r) => r.number);
}

describe("Redis store", () => {
  it("keeps its keys in one hash slot and trims old revisions from Redis", async () => {
    const prefix = `keys-${randomUUID()}`;
    const store = await open(shared.url, { prefix, keep: 2 });
    const raw = client(shared.url);
    const sub = client(shared.url);
    const published: string[] = [];
    await sub.subscribe(`{${prefix}}:changes`);
    sub.on("message", (_channel: string, message: string) => published.push(message));

    for (let n = 1; n <= 4; n++) await store.commit(n - 1, sampleConfig(n), { message: `m${n}` });
    expect((await raw.keys(`*${prefix}*`)).sort()).toEqual(
      [`{${prefix}}:head`, `{${prefix}}:rev:3`, `{${prefix}}:rev:4`, `{${prefix}}:revs`].sort(),
    );
    expect(await raw.get(`{${prefix}}:head`)).toBe("4");
    expect(await raw.zcard(`{${prefix}}:revs`)).toBe(2);
    const stored = JSON.parse((await raw.get(`{${prefix}}:rev:4`))!);
    expect(stored).toMatchObject({ number: 4, config: sampleConfig(4), message: "m4" });
    // Redis Cluster hashes only the first {...} of a key: all keys must share it to share a slot.
    for (const key of await raw.keys(`*${prefix}*`)) expect(hashTag(key)).toBe(prefix);
    await waitFor(() => published.length === 4, 5_000, "the change notifications");
    expect(published).toEqual(["1", "2", "3", "4"]);
  });

  it("tells another instance's watchers of a commit, with the same config", async () => {
    const prefix = `watch-${randomUUID()}`;
    const a = await open(shared.url, { prefix });
    const b = await open(shared.url, { prefix });
    const seenA = recordWatch(a);
    const seenB = recordWatch(b);
    const rev = await a.commit(0, sampleConfig(1), { message: "from a", author: "alice" });
    await waitFor(() => seenB.seen.length === 1 && seenA.seen.length === 1, 5_000, "both watchers");
    expect(seenB.seen[0]).toEqual(rev);
    expect(await b.head()).toEqual(rev);

    await b.commit(1, sampleConfig(2));
    await waitFor(() => seenA.seen.length === 2, 5_000, "a to hear of b's commit");
    expect(seenA.seen[1]!.config).toEqual(sampleConfig(2));
    await new Promise((r) => setTimeout(r, 100));
    expect(numbers(seenA.seen)).toEqual([1, 2]);
    expect(numbers(seenB.seen)).toEqual([1, 2]);
  });

  it("lets exactly one of two instances win a commit on the same head", async () => {
    const prefix = `cas-${randomUUID()}`;
    const a = await open(shared.url, { prefix });
    const b = await open(shared.url, { prefix });
    const watchA = recordWatch(a);
    const watchB = recordWatch(b);
    for (let round = 0; round < 20; round++) {
      const results = await Promise.allSettled([
        a.commit(round, sampleConfig(100 + round)),
        b.commit(round, sampleConfig(200 + round)),
      ]);
      const won = results.filter((r): r is PromiseFulfilledResult<Revision> => r.status === "fulfilled");
      const lost = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
      expect(won).toHaveLength(1);
      expect(lost[0]!.reason).toBeInstanceOf(StoreConflictError);
      expect(lost[0]!.reason).toMatchObject({ expected: round, actual: round + 1 });
      expect((await a.head())!.config).toEqual(won[0]!.value.config);
    }
    // Both instances end on the last head, each number at most once and in order.
    await waitFor(
      () => watchA.seen.at(-1)?.number === 20 && watchB.seen.at(-1)?.number === 20,
      5_000,
      "both at 20",
    );
    for (const w of [watchA, watchB]) {
      const ns = numbers(w.seen);
      expect(ns).toEqual([...ns].sort((x, y) => x - y));
      expect(new Set(ns).size).toBe(ns.length);
    }
  });

  it("commits again after Redis forgot its scripts", async () => {
    const store = await open(shared.url, { prefix: `script-${randomUUID()}` });
    await store.commit(0, sampleConfig(1));
    await client(shared.url).script("FLUSH");
    expect((await store.commit(1, sampleConfig(2))).number).toBe(2);
    expect((await store.head())!.config).toEqual(sampleConfig(2));
  });

  it("fails to open quickly when nothing listens", async () => {
    const port = await freePort();
    const store = new RedisStore({ url: `redis://127.0.0.1:${port}`, log: silentLogger() });
    const started = Date.now();
    await expect(store.open()).rejects.toBeInstanceOf(StoreUnavailableError);
    expect(Date.now() - started).toBeLessThan(3_000);
    await expect(store.head()).rejects.toMatchObject({ code: "store_unavailable" });
  });

  it("fails fast while Redis is down, recovers on its own, and catches up on what it missed", async () => {
    const persistent = ["--appendonly", "yes", "--appendfsync", "always"];
    const first = await startRedis({ args: persistent });
    servers.push(first);
    dirs.push(first.dir);
    const prefix = `outage-${randomUUID()}`;
    const a = await open(first.url, { prefix });
    // b comes back late, so a commit made right after the restart reaches it only by catching up.
    const b = await open(first.url, { prefix, redis: { retryStrategy: () => 3_000 } });
    const watchA = recordWatch(a);
    const watchB = recordWatch(b);
    await a.commit(0, sampleConfig(1));
    await waitFor(() => watchB.seen.length === 1, 5_000, "b to see revision 1");

    await first.stop({ signal: "SIGKILL", keepDir: true });
    let started = Date.now();
    await expect(a.commit(1, sampleConfig(2))).rejects.toBeInstanceOf(StoreUnavailableError);
    expect(Date.now() - started).toBeLessThan(2_500);
    started = Date.now();
    await expect(a.head()).rejects.toMatchObject({ code: "store_unavailable" });
    await expect(b.list()).rejects.toMatchObject({ code: "store_unavailable" });
    expect(Date.now() - started).toBeLessThan(4_000);

    const second = await startRedis({ port: first.port, dir: first.dir, args: persistent });
    servers.push(second);
    const c = await open(second.url, { prefix });
    expect((await c.head())!.number).toBe(1);
    const r2 = await c.commit(1, sampleConfig(2), { message: "while b was away" });

    await waitFor(() => watchB.seen.length === 2, 10_000, "b to catch up on revision 2");
    expect(watchB.seen[1]).toEqual(r2);

    // The same store objects work again: no reopening.
    const r3 = await eventually(() => a.commit(2, sampleConfig(3)));
    expect(r3.number).toBe(3);
    await waitFor(
      () => watchB.seen.at(-1)?.number === 3 && watchA.seen.at(-1)?.number === 3,
      10_000,
      "both at 3",
    );
    expect(watchB.seen.at(-1)!.config).toEqual(sampleConfig(3));
    expect(numbers(watchB.seen)).toEqual([1, 2, 3]);
    expect(numbers(watchA.seen)).toEqual([1, 2, 3]);
    expect((await b.head())!.number).toBe(3);
  }, 30_000);

  it("follows a Redis that came back without its data, and says so", async () => {
    const first = await startRedis();
    servers.push(first);
    const prefix = `lost-${randomUUID()}`;
    const a = await open(first.url, { prefix });
    const capB = captureLogger();
    const b = await open(first.url, { prefix, log: capB.log });
    const watchB = recordWatch(b);
    await a.commit(0, sampleConfig(1));
    await a.commit(1, sampleConfig(2));
    await waitFor(() => watchB.seen.at(-1)?.number === 2, 5_000, "b at 2");

    await first.stop({ signal: "SIGKILL" });
    const second = await startRedis({ port: first.port });
    servers.push(second);
    expect(await eventually(() => a.head())).toBeUndefined();
    await waitFor(
      () => capB.lines().some((l) => l.msg.includes("went back to an older revision")),
      10_000,
      "b to notice",
    );

    await a.commit(0, sampleConfig(21));
    await a.commit(1, sampleConfig(22));
    await waitFor(
      () => watchB.seen.at(-1)?.config.upstreams[0]?.name === "svc-22",
      10_000,
      "b to follow the new history",
    );
    expect(watchB.seen.at(-1)!.number).toBe(2);
  }, 30_000);

  it("waits for replicas when asked to, and reports a commit they did not acknowledge", async () => {
    // Without a delay the primary starts the replica's initial sync at once (the default waits 5s).
    const primary = await startRedis({ args: ["--repl-diskless-sync-delay", "0"] });
    servers.push(primary);
    const replica = await startRedis({ args: ["--replicaof", "127.0.0.1", String(primary.port)] });
    servers.push(replica);
    const raw = client(replica.url);
    const primaryClient = client(primary.url);
    // Just after its initial sync a replica can take a second to acknowledge writes: wait until it does.
    await waitFor(
      async () => {
        await primaryClient.set("probe", "1");
        return (await primaryClient.wait(1, 200)) === 1;
      },
      10_000,
      "the replica to acknowledge writes",
    );

    // A loaded machine can keep a healthy replica's acknowledgement past the default half second:
    // give it as long as the commands themselves may take.
    const replicated = await open(primary.url, {
      prefix: `wait-${randomUUID()}`,
      waitReplicas: 1,
      waitTimeoutMs: 4_000,
      commandTimeoutMs: 5_000,
    });
    const rev = await replicated.commit(0, sampleConfig(1));
    // WAIT returned, so the replica has it: read it there directly.
    expect(JSON.parse((await raw.get(`{${replicated.prefix}}:rev:1`))!).config).toEqual(sampleConfig(1));
    expect(rev.number).toBe(1);

    const lonely = await open(shared.url, { prefix: `nowait-${randomUUID()}`, waitReplicas: 1 });
    const watch = recordWatch(lonely);
    await expect(lonely.commit(0, sampleConfig(1))).rejects.toThrow(/only 0 of 1 replicas acknowledged/);
    // It was written all the same, and watchers hear of it like of any head.
    expect((await lonely.head())!.number).toBe(1);
    await waitFor(() => watch.seen.length === 1, 5_000, "the watcher");
  }, 30_000);
});
