import { randomUUID } from "node:crypto";
import { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { silentLogger, type Logger } from "@portico/common";
import { createStore } from "../../src/store/index.js";
import { RedisStore, type RedisStoreOptions } from "../../src/store/redis-store.js";
import { clusterSlot } from "../../src/store/redis/keys.js";
import { StoreConflictError, StoreUnavailableError, type ConfigStore } from "../../src/store/types.js";
import { captureLogger, recordWatch, sampleConfig, waitFor, type CapturedLog } from "./fixtures.js";
import { startRedisCluster, type RedisClusterHandle, freePort, startAdmin } from "@portico/testing";

/** The Redis store on a real three-node Redis Cluster: every key in one slot, pub/sub across nodes. */
describe("Redis store on Redis Cluster", () => {
  let cluster: RedisClusterHandle;
  /** One plain connection per node, to look at each node on its own. */
  let raws: Redis[] = [];
  const stores: ConfigStore[] = [];

  const track = async <S extends ConfigStore>(store: S): Promise<S> => {
    stores.push(store);
    await store.open();
    return store;
  };
  const fromSpec = (query: string, auth = "", log: Logger = silentLogger()) =>
    track(createStore(cluster.spec.replace("//", `//${auth}`) + query, log));
  const direct = (prefix: string, extra: Partial<RedisStoreOptions> = {}) =>
    track(new RedisStore({ cluster: { nodes: cluster.nodes }, prefix, log: silentLogger(), ...extra }));

  /** Retries while the store reports Redis unavailable, as a caller would after an outage. */
  const eventually = async <T>(fn: () => Promise<T>, timeoutMs = 10_000): Promise<T> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        return await fn();
      } catch (err) {
        if (!(err instanceof StoreUnavailableError) || Date.now() > deadline) throw err;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  };

  /** The watch connection's loss and return were each logged. */
  const expectWatchOutageLogged = (cap: CapturedLog) => {
    const msgs = cap.lines().map((l) => `${l.msg} ${String(l.connection)}`);
    expect(msgs).toContain("lost the connection to the Redis store watch");
    expect(msgs).toContain("reconnected to the Redis store watch");
  };

  /** Index of the node that serves a key: the others answer MOVED. */
  const ownerOf = async (key: string): Promise<number> => {
    const serves = await Promise.all(
      raws.map((r) =>
        r.exists(key).then(
          () => true,
          () => false,
        ),
      ),
    );
    const owners = serves.flatMap((yes, i) => (yes ? [i] : []));
    expect(owners).toHaveLength(1);
    return owners[0]!;
  };

  beforeAll(async () => {
    cluster = await startRedisCluster();
    raws = cluster.nodes.map((n) => new Redis(n.port, n.host));
    // A crashed node's connection reports its reconnection attempts; the tests read no errors from it.
    for (const r of raws) r.on("error", () => {});
  }, 60_000);

  afterEach(async () => {
    await Promise.all(stores.splice(0).map((s) => s.close()));
  });

  afterAll(async () => {
    for (const r of raws) r.disconnect();
    await cluster?.stop();
  });

  it("keeps every key of a store on the one node serving its slot, with prefix and keep from the URL", async () => {
    const prefix = `slot-${randomUUID()}`;
    const store = await fromSpec(`?prefix=${prefix}&keep=2`);
    expect(store.kind).toBe("redis");
    for (let n = 1; n <= 4; n++) await store.commit(n - 1, sampleConfig(n));
    expect((await store.list()).map((r) => r.number)).toEqual([4, 3]);

    const keysPerNode = await Promise.all(raws.map((r) => r.keys(`*${prefix}*`)));
    const home = await ownerOf(`{${prefix}}:head`);
    keysPerNode.forEach((keys, i) => {
      if (i === home) {
        expect(keys.sort()).toEqual(
          [`{${prefix}}:head`, `{${prefix}}:rev:3`, `{${prefix}}:rev:4`, `{${prefix}}:revs`].sort(),
        );
      } else {
        expect(keys).toEqual([]);
      }
    });
  });

  it("computes the slot of a key as Redis Cluster does", async () => {
    const keys = [
      "{portico}:head",
      "{a}b",
      "x{}{y}",
      "{}",
      "a{b",
      "no-tag",
      "héllo ✓",
      `{${randomUUID()}}:revs`,
    ];
    for (const key of keys) expect(clusterSlot(key)).toBe(await raws[0]!.cluster("KEYSLOT", key));
  });

  it("tells a second RedisStore of each commit through the cluster's pub/sub, both ways", async () => {
    const prefix = `watch-${randomUUID()}`;
    const a = await direct(prefix);
    const b = await direct(prefix);
    const seenA = recordWatch(a);
    const seenB = recordWatch(b);

    const r1 = await a.commit(0, sampleConfig(1), { message: "from a" });
    await waitFor(() => seenB.seen.length === 1, 5_000, "b to see a's commit");
    expect(seenB.seen[0]).toEqual(r1);

    const r2 = await b.commit(1, sampleConfig(2), { message: "from b" });
    await waitFor(() => seenA.seen.length === 2, 5_000, "a to see b's commit");
    expect(seenA.seen[1]).toEqual(r2);
    expect((await a.head())!.config).toEqual(sampleConfig(2));
  });

  it("lets only one of two instances win the same revision", async () => {
    const prefix = `cas-${randomUUID()}`;
    const a = await direct(prefix);
    const b = await direct(prefix);
    for (let round = 0; round < 5; round++) {
      const results = await Promise.allSettled([
        a.commit(round, sampleConfig(100 + round)),
        b.commit(round, sampleConfig(200 + round)),
      ]);
      expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
      const lost = results.find((r) => r.status === "rejected") as PromiseRejectedResult;
      expect(lost.reason).toBeInstanceOf(StoreConflictError);
    }
  });

  it("sends WAIT and CONFIG to the node holding the store, not to any node", async () => {
    const prefix = `home-${randomUUID()}`;
    await Promise.all(raws.map((r) => r.config("RESETSTAT")));
    // The nodes have no replicas, so every WAIT comes back with 0 wherever it runs: only the
    // command counts of each node tell where it ran.
    const store = await direct(prefix, { waitReplicas: 1, waitTimeoutMs: 20 });
    for (let n = 0; n < 4; n++) {
      await expect(store.commit(n, sampleConfig(n + 1))).rejects.toThrow(/only 0 of 1 replicas acknowledged/);
    }
    expect((await store.head())!.number).toBe(4);

    const home = await ownerOf(`{${prefix}}:head`);
    const stats = await Promise.all(raws.map((r) => r.info("commandstats")));
    stats.forEach((info, i) => {
      expect(/cmdstat_wait:calls=(\d+)/.exec(info)?.[1]).toBe(i === home ? "4" : undefined);
      expect(info.includes("cmdstat_config|get:")).toBe(i === home);
    });
  });

  it("catches up on a commit made while its watch connection was away", async () => {
    const prefix = `away-${randomUUID()}`;
    // A user of its own lets the test cut off b's connections, and keep them off, on every node.
    await Promise.all(raws.map((r) => r.acl("SETUSER", "watcher", "on", ">s3cret", "~*", "&*", "+@all")));
    const a = await direct(prefix);
    const capB = captureLogger();
    const b = await fromSpec(`?prefix=${prefix}`, "watcher:s3cret@", capB.log);
    const seenB = recordWatch(b);
    await a.commit(0, sampleConfig(1));
    await waitFor(() => seenB.seen.length === 1, 5_000, "b to see revision 1");

    try {
      for (const r of raws) {
        await r.acl("SETUSER", "watcher", "off");
        await r.call("CLIENT", "KILL", "USER", "watcher", "TYPE", "pubsub");
      }
      const r2 = await a.commit(1, sampleConfig(2), { message: "while b was not listening" });
      await new Promise((r) => setTimeout(r, 300));
      expect(seenB.seen).toHaveLength(1);

      await Promise.all(raws.map((r) => r.acl("SETUSER", "watcher", "on")));
      await waitFor(() => seenB.seen.length === 2, 10_000, "b to catch up on revision 2");
      expect(seenB.seen[1]).toEqual(r2);
      expectWatchOutageLogged(capB);
    } finally {
      await Promise.all(raws.map((r) => r.acl("DELUSER", "watcher")));
    }
  }, 20_000);

  it("fails fast while the node holding the store is down, and recovers on its own", async () => {
    const prefix = `outage-${randomUUID()}`;
    // Shorter than the default timeout, to keep the test short; the limits below scale with it.
    const commandTimeoutMs = 500;
    const a = await direct(prefix, { commandTimeoutMs });
    const capB = captureLogger();
    const b = await direct(prefix, { commandTimeoutMs, log: capB.log });
    const seenB = recordWatch(b);
    await a.commit(0, sampleConfig(1));
    await waitFor(() => seenB.seen.length === 1, 5_000, "b to see revision 1");

    const home = await ownerOf(`{${prefix}}:head`);
    await cluster.crash(home);
    try {
      // The Cluster client stays 'ready' with one node away: the store must not wait on it or retry.
      let started = Date.now();
      await expect(a.commit(1, sampleConfig(2))).rejects.toBeInstanceOf(StoreUnavailableError);
      expect(Date.now() - started).toBeLessThan(commandTimeoutMs * 2.5);
      started = Date.now();
      await expect(b.head()).rejects.toMatchObject({ code: "store_unavailable" });
      expect(Date.now() - started).toBeLessThan(commandTimeoutMs * 2.5);
    } finally {
      await cluster.restart(home);
    }

    // It came back empty (no persistence): both instances follow it without being reopened.
    expect(await eventually(() => a.head())).toBeUndefined();
    await waitFor(
      () => capB.lines().some((l) => l.msg.includes("went back to an older revision")),
      10_000,
      "b to notice the lost revisions",
    );
    const again = await eventually(() => a.commit(0, sampleConfig(3)));
    await waitFor(() => seenB.seen.at(-1)?.config.upstreams[0]?.name === "svc-3", 10_000, "b to follow");
    expect(seenB.seen.at(-1)).toEqual(again);
  }, 30_000);

  it("moves its watch connection to another node when its node is lost", async () => {
    const watchers = async (prefix: string, i: number) =>
      String(await raws[i]!.call("CLIENT", "LIST", "TYPE", "pubsub"))
        .split("\n")
        .filter((line) => line.includes(`name=portico-store-${prefix}-watch `)).length;
    // The node to lose must not be the one holding the store, which has to stay up for the commit.
    const watchingAway = async () => {
      for (;;) {
        const prefix = `roam-${randomUUID()}`;
        const cap = captureLogger();
        const store = await direct(prefix, { log: cap.log });
        const counts = await Promise.all(raws.map((_, i) => watchers(prefix, i)));
        const watched = counts.indexOf(1);
        if (watched !== (await ownerOf(`{${prefix}}:head`))) return { prefix, cap, store, watched };
        await store.close();
      }
    };
    const { prefix, cap: capB, store: b, watched } = await watchingAway();
    const seenB = recordWatch(b);
    const a = await direct(prefix);
    const others = [0, 1, 2].filter((i) => i !== watched);

    await cluster.crash(watched);
    try {
      // a's watch connection may have been there too.
      await waitFor(
        async () => (await Promise.all(others.map((i) => watchers(prefix, i)))).reduce((x, y) => x + y) === 2,
        5_000,
        "both to watch from the other nodes",
      );
      const r1 = await a.commit(0, sampleConfig(1));
      await waitFor(() => seenB.seen.length === 1, 5_000, "b to see revision 1");
      expect(seenB.seen[0]).toEqual(r1);
      expectWatchOutageLogged(capB);
    } finally {
      await cluster.restart(watched);
    }
  }, 20_000);

  it("opens through a seed that is down, and fails quickly when none answers", async () => {
    const dead = { host: "127.0.0.1", port: await freePort() };
    const prefix = `seeds-${randomUUID()}`;
    const a = await track(
      new RedisStore({ cluster: { nodes: [dead, ...cluster.nodes] }, prefix, log: silentLogger() }),
    );
    const b = await direct(prefix);
    const seenA = recordWatch(a);
    await b.commit(0, sampleConfig(1));
    await waitFor(() => seenA.seen.length === 1, 5_000, "a to see b's commit");

    const lonely = new RedisStore({ cluster: { nodes: [dead] }, prefix, log: silentLogger() });
    const started = Date.now();
    await expect(lonely.open()).rejects.toBeInstanceOf(StoreUnavailableError);
    expect(Date.now() - started).toBeLessThan(3_000);
  });

  it("serves two control-plane replicas: a write on one is published by the other", async () => {
    const one = await startAdmin({ store: cluster.spec });
    const two = await startAdmin({ store: cluster.spec });
    try {
      const gw = await one.call("PUT", "/api/v1/gateways/cluster-edge", {
        body: { name: "cluster-edge", listeners: [{ name: "http", port: 10999 }] },
      });
      expect(gw.status).toBe(201);
      await waitFor(
        () => two.cp.xds.cache.get("cluster-edge") !== undefined,
        5_000,
        "replica two to publish the gateway",
      );
      expect((await two.call("GET", "/api/v1/gateways/cluster-edge")).status).toBe(200);
      expect((await two.call("GET", "/api/v1/status")).json.config.store).toBe("redis");
    } finally {
      await one.stop();
      await two.stop();
    }
  });
});
