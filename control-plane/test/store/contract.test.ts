import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { randomUUID } from "node:crypto";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "@portico/common";
import { configRevision } from "../../src/config/publish.js";
import { FileStore } from "../../src/store/file-store.js";
import { RedisStore } from "../../src/store/redis-store.js";
import { StoreConflictError, type ConfigStore, type Revision } from "../../src/store/types.js";
import { recordWatch, sampleConfig, waitFor } from "./fixtures.js";
import { startRedisCluster, type RedisClusterHandle, startRedis, type RedisServer } from "@portico/testing";

let redis: RedisServer;
let cluster: RedisClusterHandle;
const dirs: string[] = [];
const opened: ConfigStore[] = [];

beforeAll(async () => {
  [redis, cluster] = await Promise.all([startRedis(), startRedisCluster()]);
});

afterEach(async () => {
  await Promise.all(opened.splice(0).map((s) => s.close()));
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

afterAll(async () => {
  await Promise.all([redis?.stop(), cluster?.stop()]);
});

type Factory = (opts?: { keep?: number }) => Promise<ConfigStore>;

const factories: [string, Factory][] = [
  [
    "file",
    async (opts = {}) => {
      const dir = mkdtempSync(path.join(os.tmpdir(), "portico-store-"));
      dirs.push(dir);
      const store = new FileStore({ dir, keep: opts.keep, log: silentLogger() });
      await store.open();
      opened.push(store);
      return store;
    },
  ],
  [
    "redis",
    async (opts = {}) => {
      const store = new RedisStore({
        url: redis.url,
        prefix: `contract-${randomUUID()}`,
        keep: opts.keep,
        log: silentLogger(),
      });
      await store.open();
      opened.push(store);
      return store;
    },
  ],
  [
    "redis cluster",
    async (opts = {}) => {
      const store = new RedisStore({
        cluster: { nodes: cluster.nodes },
        prefix: `contract-${randomUUID()}`,
        keep: opts.keep,
        log: silentLogger(),
      });
      await store.open();
      opened.push(store);
      return store;
    },
  ],
];

describe.each(factories)("%s store contract", (_kind, make) => {
  it("starts empty", async () => {
    const store = await make();
    expect(await store.head()).toBeUndefined();
    expect(await store.get(1)).toBeUndefined();
    expect(await store.list()).toEqual([]);
  });

  it("commits revisions and reads them back by head, number and list", async () => {
    const store = await make();
    const c1 = sampleConfig(1);
    const r1 = await store.commit(0, c1, { message: "first", author: "alice" });
    expect(r1).toMatchObject({
      number: 1,
      hash: configRevision(c1),
      config: c1,
      message: "first",
      author: "alice",
    });
    expect(Number.isNaN(Date.parse(r1.createdAt))).toBe(false);

    const c2 = sampleConfig(2);
    const r2 = await store.commit(1, c2);
    expect(r2.number).toBe(2);
    expect(r2.message).toBeUndefined();

    expect(await store.head()).toEqual(r2);
    expect(await store.get(1)).toEqual(r1);
    expect(await store.get(2)).toEqual(r2);
    expect(await store.get(3)).toBeUndefined();
    expect(await store.get(0)).toBeUndefined();
    expect(await store.get(1.5)).toBeUndefined();

    const list = await store.list();
    expect(list).toEqual([
      { number: 2, hash: r2.hash, createdAt: r2.createdAt },
      { number: 1, hash: r1.hash, createdAt: r1.createdAt, message: "first", author: "alice" },
    ]);
    expect(await store.list(1)).toEqual([list[0]]);
    expect(await store.list(0)).toEqual([]);
  });

  it("gives every reader its own copy of a revision", async () => {
    const store = await make();
    await store.commit(0, sampleConfig(1));
    const a = (await store.head())!;
    a.config.upstreams[0]!.name = "changed";
    expect((await store.head())!.config).toEqual(sampleConfig(1));
  });

  it("lets exactly one of two commits on the same head win", async () => {
    const store = await make();
    await store.commit(0, sampleConfig(1));
    const results = await Promise.allSettled([
      store.commit(1, sampleConfig(2)),
      store.commit(1, sampleConfig(3)),
    ]);
    const won = results.filter((r) => r.status === "fulfilled");
    const lost = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
    expect(won).toHaveLength(1);
    expect(lost).toHaveLength(1);
    expect(lost[0]!.reason).toBeInstanceOf(StoreConflictError);
    expect(lost[0]!.reason).toMatchObject({ code: "revision_conflict", expected: 1, actual: 2 });
    const winner = (won[0] as PromiseFulfilledResult<Revision>).value;
    expect(winner.number).toBe(2);
    expect((await store.head())!.config).toEqual(winner.config);
  });

  it("refuses a commit against a stale or future head", async () => {
    const store = await make();
    await expect(store.commit(3, sampleConfig(1))).rejects.toMatchObject({
      code: "revision_conflict",
      expected: 3,
      actual: 0,
    });
    await store.commit(0, sampleConfig(1));
    await store.commit(1, sampleConfig(2));
    await expect(store.commit(1, sampleConfig(3))).rejects.toMatchObject({ expected: 1, actual: 2 });
    expect((await store.head())!.number).toBe(2);
    await expect(store.commit(-1, sampleConfig(3))).rejects.toBeInstanceOf(TypeError);
  });

  it("keeps only the newest `keep` revisions", async () => {
    const store = await make({ keep: 3 });
    for (let n = 1; n <= 7; n++) await store.commit(n - 1, sampleConfig(n));
    expect((await store.list()).map((s) => s.number)).toEqual([7, 6, 5]);
    expect((await store.list(10)).map((s) => s.number)).toEqual([7, 6, 5]);
    for (const n of [1, 2, 3, 4]) expect(await store.get(n)).toBeUndefined();
    expect((await store.get(5))!.config).toEqual(sampleConfig(5));
    expect((await store.head())!.number).toBe(7);
  });

  it("tells watchers of each new head, after the commit resolved", async () => {
    const store = await make();
    const a = recordWatch(store);
    const b = recordWatch(store);
    const r1 = await store.commit(0, sampleConfig(1));
    // The committer acts on its own revision before any watcher does.
    expect(a.seen).toEqual([]);
    await waitFor(() => a.seen.length === 1 && b.seen.length === 1, 5_000, "watchers");
    expect(a.seen[0]).toEqual(r1);

    b.stop();
    await store.commit(1, sampleConfig(2));
    await waitFor(() => a.seen.length === 2, 5_000, "second revision");
    expect(a.seen.map((r) => r.number)).toEqual([1, 2]);
    expect(a.seen[1]!.config).toEqual(sampleConfig(2));
    // Nothing is delivered twice, and a removed watcher hears nothing more.
    await new Promise((r) => setTimeout(r, 100));
    expect(a.seen.map((r) => r.number)).toEqual([1, 2]);
    expect(b.seen.map((r) => r.number)).toEqual([1]);
  });

  it("keeps delivering when a watcher throws", async () => {
    const store = await make();
    store.watch(() => {
      throw new Error("watcher bug");
    });
    const ok = recordWatch(store);
    await store.commit(0, sampleConfig(1));
    await waitFor(() => ok.seen.length === 1, 5_000, "the healthy watcher");
    expect((await store.head())!.number).toBe(1);
  });

  it("refuses calls after close", async () => {
    const store = await make();
    await store.commit(0, sampleConfig(1));
    await store.close();
    await expect(store.head()).rejects.toMatchObject({ code: "store_unavailable" });
    await expect(store.commit(1, sampleConfig(2))).rejects.toMatchObject({ code: "store_unavailable" });
    await store.close();
  });
});
