import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../../common/src/log.js";
import { createStore } from "../../src/store/index.js";
import { StoreConflictError, type ConfigStore } from "../../src/store/types.js";
import { recordWatch, sampleConfig, waitFor } from "./fixtures.js";
import { startRedisCluster, type RedisClusterHandle } from "./redis-cluster.js";
import { startAdmin } from "../../../test/harness/admin.js";

/** The Redis store on a real three-node Redis Cluster: every key in one slot, pub/sub across nodes. */
describe("Redis store on Redis Cluster", () => {
  let cluster: RedisClusterHandle;
  const stores: ConfigStore[] = [];
  const open = async () => {
    const s = createStore(cluster.spec, silentLogger());
    await s.open();
    stores.push(s);
    return s;
  };

  beforeAll(async () => {
    cluster = await startRedisCluster();
  }, 60_000);

  afterAll(async () => {
    for (const s of stores) await s.close();
    await cluster?.stop();
  });

  it("commits, reads back, lists and refuses a stale compare-and-set", async () => {
    const a = await open();
    expect(a.kind).toBe("redis");
    expect(await a.head()).toBeUndefined();
    const r1 = await a.commit(0, sampleConfig(1), { message: "one" });
    const r2 = await a.commit(1, sampleConfig(2), { message: "two" });
    expect((await a.head())!.number).toBe(2);
    expect((await a.get(1))!.hash).toBe(r1.hash);
    expect((await a.list()).map((r) => r.number)).toEqual([2, 1]);
    await expect(a.commit(1, sampleConfig(3))).rejects.toBeInstanceOf(StoreConflictError);
    expect((await a.head())!.hash).toBe(r2.hash);
  });

  it("tells a second instance of each commit, through the cluster's pub/sub", async () => {
    const a = stores[0]!;
    const b = await open();
    const seen = recordWatch(b);
    const head = (await a.head())!.number;
    const rev = await a.commit(head, sampleConfig(7), { message: "from a" });
    await waitFor(() => seen.seen.some((r) => r.number === rev.number), 5_000, "b to see a's commit");
    expect(seen.seen.find((r) => r.number === rev.number)!.config).toEqual(rev.config);
    seen.stop();
  });

  it("lets only one of two instances win the same revision", async () => {
    const a = stores[0]!;
    const b = stores[1]!;
    const head = (await a.head())!.number;
    const results = await Promise.allSettled([
      a.commit(head, sampleConfig(8)),
      b.commit(head, sampleConfig(9)),
    ]);
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
    const lost = results.find((r) => r.status === "rejected") as PromiseRejectedResult;
    expect(lost.reason).toBeInstanceOf(StoreConflictError);
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
