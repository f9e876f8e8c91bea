import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { XdsClient } from "@portico/common";
import type { XdsServer } from "../src/xds/server.js";
import { TypeUrl } from "../src/xds/types.js";
import { Recorder, sleep, snapshot, startServer } from "./xds-helpers.js";

let server: XdsServer;
let target: string;
const recorders: Recorder[] = [];
const rec = (opts: ConstructorParameters<typeof Recorder>[1] = {}) => {
  const r = new Recorder(target, { protocol: "delta", ...opts });
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

const names = (u: { resources: { name: string }[] }) => u.resources.map((r) => r.name).sort();

describe("delta xDS", () => {
  it("sends only what changed, and removals in removed_resources", async () => {
    server.cache.set(snapshot("edge", { clusters: ["a", "b"] }));
    const r = rec();
    r.client.subscribe(TypeUrl.Cluster);
    const [first] = await r.waitCount(TypeUrl.Cluster, 1);
    expect(names(first!)).toEqual(["a", "b"]);

    // b changes (same name, new content) and c appears: a is not sent again.
    const { buildSnapshot } = await import("../src/xds/snapshot.js");
    const { resources } = await import("./xds-helpers.js");
    const inputs = resources({ clusters: ["a", "b", "c"] }).map((x) =>
      x.typeUrl === TypeUrl.Cluster && x.name === "b"
        ? { ...x, message: { ...x.message, connect_timeout: { seconds: 2 } } }
        : x,
    );
    server.cache.set(buildSnapshot("edge", inputs));
    const [, second] = await r.waitCount(TypeUrl.Cluster, 2);
    expect(names(second!)).toEqual(["b", "c"]);
    expect(second!.removed).toEqual([]);

    server.cache.set(
      buildSnapshot(
        "edge",
        inputs.filter((x) => x.name !== "a"),
      ),
    );
    const [, , third] = await r.waitCount(TypeUrl.Cluster, 3);
    expect(third!.resources).toEqual([]);
    expect(third!.removed).toEqual(["a"]);
    expect([...r.client.resources(TypeUrl.Cluster).keys()].sort()).toEqual(["b", "c"]);
  });

  it("answers a subscription to a missing name with removed_resources, then sends it when it appears", async () => {
    server.cache.set(snapshot("edge", { clusters: ["a"] }));
    const r = rec();
    r.client.subscribe(TypeUrl.Endpoint, ["a", "ghost"]);
    const [first] = await r.waitCount(TypeUrl.Endpoint, 1);
    expect(names(first!)).toEqual(["a"]);
    expect(first!.removed).toEqual(["ghost"]);
    server.cache.set(snapshot("edge", { clusters: ["a", "ghost"] }));
    const [, second] = await r.waitCount(TypeUrl.Endpoint, 2);
    expect(names(second!)).toEqual(["ghost"]);
  });

  it("re-sends a name subscribed again, and stops sending an unsubscribed one", async () => {
    server.cache.set(snapshot("edge", { clusters: ["a", "b"] }));
    const r = rec();
    r.client.subscribe(TypeUrl.Endpoint, ["a", "b"]);
    await r.waitCount(TypeUrl.Endpoint, 1);
    r.client.unsubscribe(TypeUrl.Endpoint, ["b"]);
    await sleep(50);
    r.client.subscribe(TypeUrl.Endpoint, ["a"]);
    const [, again] = await r.waitCount(TypeUrl.Endpoint, 2);
    expect(names(again!)).toEqual(["a"]);
    server.cache.set(snapshot("edge", { clusters: ["a", "b"], endpointPort: 9999 }));
    const [, , pushed] = await r.waitCount(TypeUrl.Endpoint, 3);
    expect(names(pushed!)).toEqual(["a"]);
  });

  it("answers the first wildcard subscription of an empty type, also when the first snapshot comes later", async () => {
    const r = rec();
    r.client.subscribe(TypeUrl.Secret);
    await sleep(50);
    expect(r.ofType(TypeUrl.Secret)).toEqual([]);
    server.cache.set(snapshot("edge", { clusters: ["a"] }));
    const [first] = await r.waitCount(TypeUrl.Secret, 1);
    expect(first!.resources).toEqual([]);
    expect(first!.removed).toEqual([]);
    // Only the first: a later push that leaves the type empty sends nothing more.
    server.cache.set(snapshot("edge", { clusters: ["a", "b"] }));
    await sleep(50);
    expect(r.ofType(TypeUrl.Secret)).toHaveLength(1);
  });

  it("uses initial_resource_versions after a reconnect to send only what the node lacks", async () => {
    const snap = snapshot("edge", { clusters: ["a", "b"] });
    server.cache.set(snap);
    const held = snap.get(TypeUrl.Cluster).resources.get("a")!;
    const client = new XdsClient({ target, node: { id: "n", cluster: "edge" }, protocol: "delta" });
    const got = new Promise<any>((resolve) => client.once("update", resolve));
    client.sendRaw({
      type_url: TypeUrl.Cluster,
      resource_names_subscribe: ["*"],
      initial_resource_versions: { a: held.version, gone: "old" },
    });
    // The client's bookkeeping needs the subscription too.
    (client as any).subs.set(TypeUrl.Cluster, {
      names: new Set(),
      wildcard: true,
      version: "",
      nonce: "",
      resources: new Map(),
    });
    const update = await got;
    client.close();
    expect(names(update)).toEqual(["b"]);
    expect(update.removed).toEqual(["gone"]);
  });

  it("applies subscription changes even with a stale nonce", async () => {
    server.cache.set(snapshot("edge", { clusters: ["a", "b"] }));
    const r = rec();
    r.client.subscribe(TypeUrl.Endpoint, ["a"]);
    await r.waitCount(TypeUrl.Endpoint, 1);
    (r.client as any).subs.get(TypeUrl.Endpoint).names.add("b");
    r.client.sendRaw({
      type_url: TypeUrl.Endpoint,
      response_nonce: "stale-nonce",
      resource_names_subscribe: ["b"],
    });
    const [, second] = await r.waitCount(TypeUrl.Endpoint, 2);
    expect(names(second!)).toEqual(["b"]);
  });

  it("records a NACK and does not re-send the refused resources", async () => {
    server.cache.set(snapshot("edge", { clusters: ["a"] }));
    let refuse = false;
    const r = rec({ refuse: () => (refuse ? "bad cluster" : undefined) });
    r.client.subscribe(TypeUrl.Cluster);
    await r.waitCount(TypeUrl.Cluster, 1);
    await sleep(30);
    const good = server.fleet.get("node-1")!.appliedRevision;
    refuse = true;
    const { buildSnapshot } = await import("../src/xds/snapshot.js");
    const { resources } = await import("./xds-helpers.js");
    server.cache.set(
      buildSnapshot(
        "edge",
        resources({ clusters: ["a"] }).map((x) =>
          x.typeUrl === TypeUrl.Cluster
            ? { ...x, message: { ...x.message, connect_timeout: { seconds: 9 } } }
            : x,
        ),
      ),
    );
    await sleep(300);
    expect(r.nacks).toHaveLength(1);
    const node = server.fleet.get("node-1")!;
    expect(node.types[TypeUrl.Cluster]!.lastNack!.message).toBe("bad cluster");
    expect(node.appliedRevision).toBe(good);
  });

  it("holds a listener removal back until the rest of a push was answered", async () => {
    server.cache.set(snapshot("edge", { clusters: ["a"], listeners: ["l1", "l2"] }));
    const r = rec();
    r.client.subscribe(TypeUrl.Cluster);
    r.client.subscribe(TypeUrl.Listener);
    r.client.subscribe(TypeUrl.Route, ["l1", "l2"]);
    await r.waitCount(TypeUrl.Route, 1);
    await sleep(50);
    const before = r.updates.length;
    server.cache.set(snapshot("edge", { clusters: ["a"], listeners: ["l1"], routeTag: "new" }));
    await r.waitCount(TypeUrl.Route, 3);
    const pushed = r.updates.slice(before).map((u) => `${u.typeUrl.split(".").pop()}:${u.removed.join(",")}`);
    // l1's routes change first; then the listener goes, then its route table.
    expect(pushed).toEqual(["RouteConfiguration:", "Listener:l2", "RouteConfiguration:l2"]);
  });
});
