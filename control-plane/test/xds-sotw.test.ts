import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { XdsClient } from "@portico/common";
import { TypeUrl } from "../src/xds/types.js";
import type { XdsServer } from "../src/xds/server.js";
import { buildSnapshot } from "../src/xds/snapshot.js";
import { Recorder, resources, sleep, snapshot, startServer } from "./xds-helpers.js";

let server: XdsServer;
let target: string;
const recorders: Recorder[] = [];
const rec = (...args: ConstructorParameters<typeof Recorder>) => {
  const r = new Recorder(...args);
  recorders.push(r);
  return r;
};

beforeEach(async () => {
  ({ server, target } = await startServer());
});
afterEach(async () => {
  for (const r of recorders.splice(0)) r.close();
  await server.close(500);
});

function subscribeAll(r: Recorder, clusters: string[] = ["a"], listeners: string[] = ["l1"]): void {
  r.client.subscribe(TypeUrl.Cluster);
  r.client.subscribe(TypeUrl.Endpoint, clusters);
  r.client.subscribe(TypeUrl.Listener);
  r.client.subscribe(TypeUrl.Route, listeners);
}

describe("SotW xDS", () => {
  it("answers with the full LDS/CDS set and named EDS/RDS, and records the ACKs", async () => {
    server.cache.set(snapshot("edge", { clusters: ["a", "b"] }));
    const r = rec(target);
    subscribeAll(r, ["a"]);
    const [cds] = await r.waitCount(TypeUrl.Cluster, 1);
    expect(cds!.resources.map((x) => x.name).sort()).toEqual(["a", "b"]);
    const [eds] = await r.waitCount(TypeUrl.Endpoint, 1);
    expect(eds!.resources.map((x) => x.name)).toEqual(["a"]);
    await r.waitCount(TypeUrl.Route, 1);
    await sleep(50);
    const node = server.fleet.get("node-1")!;
    expect(node.group).toBe("edge");
    expect(node.types[TypeUrl.Cluster]!.ackedVersion).toBe(cds!.version);
    expect(node.appliedRevision).toBe(server.cache.get("edge")!.revision);
  });

  it("pushes a change in make-before-break order: CDS, EDS, LDS, RDS", async () => {
    server.cache.set(snapshot("edge", { clusters: ["a"] }));
    const r = rec(target);
    r.followLikeEnvoy();
    await r.waitCount(TypeUrl.Route, 1);
    await sleep(50);
    const before = r.updates.length;
    server.cache.set(snapshot("edge", { clusters: ["a"], endpointPort: 9090, routeTag: "changed" }));
    // Only what changed is pushed: endpoints and routes, in that order.
    await r.waitCount(TypeUrl.Route, 2);
    const pushed = r.updates.slice(before).map((u) => u.typeUrl);
    expect(pushed).toEqual([TypeUrl.Endpoint, TypeUrl.Route]);

    const before2 = r.updates.length;
    server.cache.set(
      snapshot("edge", {
        clusters: ["a", "c"],
        listeners: ["l1", "l2"],
        endpointPort: 9090,
        routeTag: "changed",
      }),
    );
    await r.waitCount(TypeUrl.Listener, 2);
    await sleep(100);
    const order = r.updates.slice(before2).map((u) => u.typeUrl);
    expect(order.indexOf(TypeUrl.Cluster)).toBeLessThan(order.indexOf(TypeUrl.Listener));
    expect(order[0]).toBe(TypeUrl.Cluster);
  });

  it("keeps a removed cluster until the rest of the push was answered, then removes it", async () => {
    server.cache.set(snapshot("edge", { clusters: ["a", "old"] }));
    const r = rec(target);
    subscribeAll(r, ["a", "old"]);
    await r.waitCount(TypeUrl.Route, 1);
    await sleep(50);
    const before = r.updates.length;
    server.cache.set(snapshot("edge", { clusters: ["a"], routeTag: "moved-off-old" }));
    await r.waitCount(TypeUrl.Cluster, 3);
    const pushed = r.updates.slice(before);
    const cdsUpdates = pushed.filter((u) => u.typeUrl === TypeUrl.Cluster);
    expect(cdsUpdates[0]!.resources.map((x) => x.name).sort()).toEqual(["a", "old"]);
    expect(cdsUpdates[1]!.resources.map((x) => x.name)).toEqual(["a"]);
    const routeIdx = pushed.findIndex((u) => u.typeUrl === TypeUrl.Route);
    const removalIdx = pushed.indexOf(cdsUpdates[1]!);
    expect(routeIdx).toBeGreaterThanOrEqual(0);
    expect(removalIdx).toBeGreaterThan(routeIdx);
    await sleep(50);
    expect(server.fleet.get("node-1")!.appliedRevision).toBe(server.cache.get("edge")!.revision);
  });

  it("records a NACK with its error text and never re-sends the refused version", async () => {
    server.cache.set(snapshot("edge", { clusters: ["a"] }));
    let refuse = false;
    const r = rec(target, {
      refuse: (u) => (refuse && u.typeUrl === TypeUrl.Route ? "route: invalid regex" : undefined),
    });
    subscribeAll(r);
    await r.waitCount(TypeUrl.Route, 1);
    await sleep(50);
    const good = server.fleet.get("node-1")!.appliedRevision;
    refuse = true;
    server.cache.set(snapshot("edge", { clusters: ["a"], routeTag: "bad" }));
    await sleep(300);
    expect(r.nacks).toHaveLength(1);
    const node = server.fleet.get("node-1")!;
    expect(node.types[TypeUrl.Route]!.lastNack!.message).toBe("route: invalid regex");
    expect(node.types[TypeUrl.Route]!.ackedVersion).toBe(r.ofType(TypeUrl.Route)[0]!.version);
    expect(node.appliedRevision).toBe(good);
    // A fixed config goes out as usual.
    refuse = false;
    server.cache.set(snapshot("edge", { clusters: ["a"], routeTag: "fixed" }));
    await r.waitCount(TypeUrl.Route, 3);
    await sleep(50);
    expect(r.nacks).toHaveLength(1);
    expect(server.fleet.get("node-1")!.appliedRevision).toBe(server.cache.get("edge")!.revision);
  });

  it("ignores a request whose nonce is not the latest", async () => {
    server.cache.set(snapshot("edge", { clusters: ["a"] }));
    const r = rec(target);
    r.client.subscribe(TypeUrl.Cluster);
    await r.waitCount(TypeUrl.Cluster, 1);
    await sleep(30);
    const sent = server.metrics.responses;
    const before = (await sent.get()).values.reduce((n, v) => n + v.value, 0);
    r.client.sendRaw({ type_url: TypeUrl.Cluster, response_nonce: "not-a-nonce-we-sent", version_info: "" });
    await sleep(100);
    const after = (await sent.get()).values.reduce((n, v) => n + v.value, 0);
    expect(after).toBe(before);
    const stale = (await server.metrics.staleNonces.get()).values[0]?.value;
    expect(stale).toBe(1);
  });

  it("answers an EDS request again after a cluster change even when endpoints are unchanged (warming)", async () => {
    server.cache.set(snapshot("edge", { clusters: ["a"] }));
    const r = rec(target);
    r.client.subscribe(TypeUrl.Cluster);
    r.client.subscribe(TypeUrl.Endpoint, ["a"]);
    await r.waitCount(TypeUrl.Endpoint, 1);
    await sleep(30);
    // A cluster change that leaves endpoints alone.
    const res = resources({ clusters: ["a"] }).map((x) =>
      x.typeUrl === TypeUrl.Cluster
        ? { ...x, message: { ...x.message, connect_timeout: { seconds: 3 } } }
        : x,
    );
    server.cache.set(buildSnapshot("edge", res));
    await r.waitCount(TypeUrl.Cluster, 2);
    // Envoy re-requests EDS for the re-warming cluster with the same names and nonce.
    r.client.subscribe(TypeUrl.Endpoint, ["a"]);
    await r.waitCount(TypeUrl.Endpoint, 2);
  });

  it("keeps the stream open on an unknown type and rejects a first request without a node", async () => {
    server.cache.set(snapshot("edge", { clusters: ["a"] }));
    const r = rec(target);
    r.client.sendRaw({
      type_url: "type.googleapis.com/some.Unknown",
      node: { id: "node-1", cluster: "edge" },
    });
    r.client.subscribe(TypeUrl.Cluster);
    await r.waitCount(TypeUrl.Cluster, 1);

    const noNode = new XdsClient({ target, node: { id: "", cluster: "" }, protocol: "sotw" });
    const err = await new Promise<Error>((resolve) => {
      noNode.on("error", resolve);
      noNode.subscribe(TypeUrl.Cluster);
    });
    noNode.close();
    expect(err.message).toMatch(/node.id and node.cluster/);
  });

  it("serves each group its own snapshot and forgets nodes that leave", async () => {
    server.cache.set(snapshot("edge", { clusters: ["edge-only"] }));
    server.cache.set(snapshot("bff-web", { clusters: ["web-only"] }));
    const edge = rec(target, { id: "e1", group: "edge" });
    const web = rec(target, { id: "w1", group: "bff-web" });
    edge.client.subscribe(TypeUrl.Cluster);
    web.client.subscribe(TypeUrl.Cluster);
    const [e] = await edge.waitCount(TypeUrl.Cluster, 1);
    const [w] = await web.waitCount(TypeUrl.Cluster, 1);
    expect(e!.resources.map((x) => x.name)).toEqual(["edge-only"]);
    expect(w!.resources.map((x) => x.name)).toEqual(["web-only"]);
    expect(server.fleet.size()).toBe(2);
    web.close();
    await sleep(100);
    expect(server.fleet.list().map((n) => n.id)).toEqual(["e1"]);
  });

  it("serves the per-type services as well as ADS", async () => {
    server.cache.set(snapshot("edge", { clusters: ["a"] }));
    const grpc = await import("@grpc/grpc-js");
    const { encodeDiscoveryRequest, decodeDiscoveryResponse } = await import("@portico/common");
    const client = new grpc.Client(target, grpc.credentials.createInsecure());
    const call = client.makeBidiStreamRequest<any, Buffer>(
      "/envoy.service.cluster.v3.ClusterDiscoveryService/StreamClusters",
      encodeDiscoveryRequest,
      (b: Buffer) => b,
    );
    const got = new Promise<ReturnType<typeof decodeDiscoveryResponse>>((resolve) =>
      call.once("data", (b: Buffer) => resolve(decodeDiscoveryResponse(b))),
    );
    call.on("error", () => {});
    call.write({ node: { id: "cds-only", cluster: "edge" } });
    const res = await got;
    expect(res.type_url).toBe(TypeUrl.Cluster);
    expect(res.resources).toHaveLength(1);
    call.cancel();
    client.close();
  });
});
