import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { ClientUpdate } from "@portico/common";
import type { XdsServer } from "../src/xds/server.js";
import { TypeUrl } from "../src/xds/types.js";
import { Recorder, sleep, snapshot, startServer } from "./xds-helpers.js";

let server: XdsServer;
let target: string;
const recorders: Recorder[] = [];

beforeEach(async () => {
  ({ server, target } = await startServer());
});
afterEach(async () => {
  for (const r of recorders.splice(0)) r.close();
  await server.close(500);
});

/** What the node holds of a type after an update: the names it carried (SotW) or added (delta). */
const names = (u: ClientUpdate) => u.resources.map((r) => r.name);

async function until(what: string, check: () => boolean, timeoutMs = 3_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

describe.each(["sotw", "delta"] as const)("make-before-break on ADS (%s)", (protocol) => {
  const envoy = () => {
    const r = new Recorder(target, { protocol });
    recorders.push(r);
    r.followLikeEnvoy();
    return r;
  };

  it("sends a new cluster, then its endpoints once asked for, and only then the route to it", async () => {
    server.cache.set(snapshot("edge", { clusters: ["a"] }));
    const r = envoy();
    await until("the first route table", () => r.ofType(TypeUrl.Route).length === 1);
    await sleep(50);
    const before = r.updates.length;

    // One change adds cluster b and changes the route table (which now routes to b).
    server.cache.set(snapshot("edge", { clusters: ["a", "b"], routeTag: "to-b" }));
    await until("the new route table", () => r.ofType(TypeUrl.Route).length === 2);
    await sleep(100);
    const pushed = r.updates.slice(before);
    const cds = pushed.findIndex((u) => u.typeUrl === TypeUrl.Cluster && names(u).includes("b"));
    const eds = pushed.findIndex((u) => u.typeUrl === TypeUrl.Endpoint && names(u).includes("b"));
    const rds = pushed.findIndex((u) => u.typeUrl === TypeUrl.Route);
    expect(cds).toBe(0);
    expect(eds).toBeGreaterThan(cds);
    // The route goes only after the client asked for b's endpoints and received them.
    expect(rds).toBeGreaterThan(eds);
    expect(pushed.map((u) => u.typeUrl)).toEqual([TypeUrl.Cluster, TypeUrl.Endpoint, TypeUrl.Route]);
    await until("the node to count as applied", () => {
      const n = server.fleet.get("node-1");
      return n?.appliedRevision === server.cache.get("edge")!.revision;
    });
  });

  it("removes the route before the cluster it routed to", async () => {
    server.cache.set(snapshot("edge", { clusters: ["a", "b"], routeTag: "to-b" }));
    const r = envoy();
    await until("the first route table", () => r.ofType(TypeUrl.Route).length === 1);
    await sleep(50);
    const before = r.updates.length;

    server.cache.set(snapshot("edge", { clusters: ["a"] }));
    const gone = (u: ClientUpdate) =>
      u.typeUrl === TypeUrl.Cluster &&
      (protocol === "delta" ? u.removed.includes("b") : !names(u).includes("b"));
    await until("cluster b to be removed", () => r.updates.slice(before).some(gone));
    const pushed = r.updates.slice(before);
    const rds = pushed.findIndex((u) => u.typeUrl === TypeUrl.Route);
    expect(rds).toBeGreaterThanOrEqual(0);
    expect(pushed.findIndex(gone)).toBeGreaterThan(rds);
  });

  it("sends a filter config before the route table that names what it holds", async () => {
    server.cache.set(snapshot("edge", { clusters: ["a"], filterTag: "one" }));
    const r = envoy();
    r.client.subscribe(TypeUrl.ExtensionConfig, ["filter"]);
    await until("the first route table", () => r.ofType(TypeUrl.Route).length === 1);
    await until("the first filter config", () => r.ofType(TypeUrl.ExtensionConfig).length === 1);
    await sleep(50);
    const before = r.updates.length;
    // One change: a route naming a new limit, and the filter config holding its buckets.
    server.cache.set(snapshot("edge", { clusters: ["a"], filterTag: "two", routeTag: "limited" }));
    await until("the new route table", () => r.ofType(TypeUrl.Route).length === 2);
    await sleep(50);
    expect(r.updates.slice(before).map((u) => u.typeUrl)).toEqual([TypeUrl.ExtensionConfig, TypeUrl.Route]);
  });

  it("does not hold routes for a cluster whose endpoints are unchanged", async () => {
    server.cache.set(snapshot("edge", { clusters: ["a"] }));
    const r = envoy();
    await until("the first route table", () => r.ofType(TypeUrl.Route).length === 1);
    await sleep(50);
    const before = r.updates.length;
    server.cache.set(snapshot("edge", { clusters: ["a"], routeTag: "changed" }));
    await until("the new route table", () => r.ofType(TypeUrl.Route).length === 2);
    expect(r.updates.slice(before).map((u) => u.typeUrl)).toEqual([TypeUrl.Route]);
  });
});
