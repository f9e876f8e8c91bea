import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startRedis, type RedisServer } from "../harness/redis-server.js";
import {
  freePort,
  httpGet,
  startAdmin,
  startEnvoy,
  startHttpUpstream,
  waitFor,
  type AdminHandle,
  type EnvoyProcess,
  type HttpUpstream,
} from "../harness/index.js";
import { useEnvoyLogs } from "../harness/logs.js";
import { startDelayingProxy } from "./delaying-proxy.js";

/** Two control-plane replicas sharing a real Redis: a write on one is served by an Envoy on the other. */
describe("control-plane replicas on the Redis store", () => {
  const track = useEnvoyLogs();
  let redis: RedisServer;
  let a: AdminHandle;
  let b: AdminHandle;
  let envoy: EnvoyProcess;
  let upstream: HttpUpstream;
  let port: number;

  beforeAll(async () => {
    redis = await startRedis();
    upstream = await startHttpUpstream("svc");
    port = await freePort();
    a = await startAdmin({ store: redis.url });
    b = await startAdmin({ store: redis.url });
    const gw = await a.call("PUT", "/api/v1/gateways/edge", {
      body: { name: "edge", listeners: [{ name: "http", port, address: "127.0.0.1" }] },
    });
    expect(gw.status).toBe(201);
    await a.call("PUT", "/api/v1/upstreams/svc", {
      body: { name: "svc", endpoints: [{ host: "127.0.0.1", port: upstream.port }] },
    });
    envoy = track(await startEnvoy({ nodeId: "edge-on-b", group: "edge", xdsPort: b.cp.xdsPort }));
    await envoy.waitReady({ timeoutMs: 20_000 });
  });

  afterAll(async () => {
    await envoy?.stop();
    await a?.stop();
    await b?.stop();
    await upstream?.close();
    await redis?.stop();
  });

  it("serves through replica B a route written on replica A", async () => {
    const res = await a.call("PUT", "/api/v1/routes/svc", {
      body: { name: "svc", gateway: "edge", match: { pathPrefix: "/svc" }, upstream: "svc" },
    });
    expect(res.status).toBe(201);
    const through = await waitFor(
      async () => {
        const r = await httpGet(`http://127.0.0.1:${port}/svc/x`).catch(() => undefined);
        return r?.status === 200 ? r : undefined;
      },
      {
        what: "the route written on A to be served by the Envoy connected to B",
        timeoutMs: 10_000,
        intervalMs: 20,
      },
    );
    expect(through.headers["x-upstream"]).toBe("svc");
    // Both replicas agree on the head, and B's fleet status shows the node applied it.
    const headA = (await a.call("GET", "/api/v1/revisions")).json.items[0];
    const headB = (await b.call("GET", "/api/v1/revisions")).json.items[0];
    expect(headB).toEqual(headA);
    await waitFor(
      async () =>
        (await b.call("GET", "/api/v1/status")).json.nodes[0]?.appliedConfigRevision === headA.hash ||
        undefined,
      { what: "B to report the node on A's revision" },
    );
  });

  it("B's ?wait=applied covers its own fleet, and concurrent writes on both replicas all land", async () => {
    const writes = await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        (i % 2 ? a : b).call("PUT", `/api/v1/routes/r${i}`, {
          body: { name: `r${i}`, gateway: "edge", match: { path: `/r${i}` }, upstream: "svc" },
        }),
      ),
    );
    expect(writes.map((w) => w.status)).toEqual(Array(10).fill(201));
    const last = await b.call("PUT", "/api/v1/routes/last?wait=applied", {
      body: { name: "last", gateway: "edge", match: { path: "/last" }, upstream: "svc" },
    });
    expect(last.json.rollout).toMatchObject({
      applied: true,
      nodes: [{ id: "edge-on-b", state: "applied" }],
    });
    for (const p of ["/last", "/r0", "/r9"])
      expect((await httpGet(`http://127.0.0.1:${port}${p}`)).status).toBe(200);
    const names = (await a.call("GET", "/api/v1/routes?limit=100")).json.items.map(
      (r: { name: string }) => r.name,
    );
    expect(names).toEqual(
      expect.arrayContaining(["svc", "last", ...Array.from({ length: 10 }, (_, i) => `r${i}`)]),
    );
  });

  it("?wait=applied on A answers only once the Envoy on B, behind a slow link, applied too", async () => {
    // An Envoy on each replica; B's receives its config 300 ms late.
    const proxy = await startDelayingProxy(b.cp.xdsPort, 300);
    const onA = track(await startEnvoy({ nodeId: "edge-on-a", group: "edge", xdsPort: a.cp.xdsPort }));
    const slowOnB = track(await startEnvoy({ nodeId: "edge-slow-on-b", group: "edge", xdsPort: proxy.port }));
    try {
      await onA.waitReady({ timeoutMs: 20_000 });
      await slowOnB.waitReady({ timeoutMs: 20_000 });
      // Every replica lists every node, whichever it is connected to.
      for (const replica of [a, b]) {
        await waitFor(
          async () => {
            const ids = (await replica.call("GET", "/api/v1/fleet")).json.nodes.map(
              (n: { id: string }) => n.id,
            );
            return ["edge-on-a", "edge-on-b", "edge-slow-on-b"].every((id) => ids.includes(id)) || undefined;
          },
          { what: "both replicas to list all three nodes" },
        );
      }
      const res = await a.call("PUT", "/api/v1/routes/fleet-wide?wait=applied&timeout=20s", {
        body: { name: "fleet-wide", gateway: "edge", match: { path: "/fleet-wide" }, upstream: "svc" },
      });
      expect(res.status).toBe(201);
      expect(res.json.rollout.applied).toBe(true);
      expect(res.json.rollout.nodes.map((n: { id: string }) => n.id).sort()).toEqual([
        "edge-on-a",
        "edge-on-b",
        "edge-slow-on-b",
      ]);
      // Answered only once every Envoy held the route, the slow one on B included.
      for (const each of [onA, slowOnB, envoy]) {
        const dump = JSON.stringify(await each.routeConfigs());
        expect(dump).toContain("/fleet-wide");
      }
      const status = (await a.call("GET", "/api/v1/status")).json;
      expect(status.nodes.find((n: { id: string }) => n.id === "edge-slow-on-b").replica).toBe(
        (await b.call("GET", "/api/v1/fleet")).json.replica,
      );
      expect((await b.call("GET", "/api/v1/fleet/edge-on-a")).json.replica).toBe(status.replica);
    } finally {
      await slowOnB.stop();
      await onA.stop();
      await proxy.close();
    }
    // Nodes that left are gone from both replicas' views.
    for (const replica of [a, b]) {
      await waitFor(
        async () =>
          (await replica.call("GET", "/api/v1/fleet/edge-on-a")).status === 404 ? true : undefined,
        { what: "the node that left to drop out of the fleet view" },
      );
    }
  });
});
