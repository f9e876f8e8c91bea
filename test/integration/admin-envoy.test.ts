import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TypeUrl } from "@portico/control-plane";
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

/**
 * The admin API driving a real Envoy: writes that wait until the fleet applied them, refused
 * writes that leave Envoy untouched, NACKs shown in /status, manual and automatic rollback.
 */
describe("admin API with a real Envoy", () => {
  const track = useEnvoyLogs();
  let users: HttpUpstream;
  let orders: HttpUpstream;
  let port: number;
  let api: AdminHandle;
  let envoy: EnvoyProcess;

  const route = (name: string, prefix: string, upstream: string, extra: object = {}) => ({
    name,
    gateway: "edge",
    match: { pathPrefix: prefix },
    upstream,
    ...extra,
  });
  const get = (p: string) => httpGet(`http://127.0.0.1:${port}${p}`);
  const versions = async () => {
    const dump = await envoy.configDump();
    const routes = dump.configs.find((c: any) => c["@type"].endsWith(".RoutesConfigDump"));
    return routes.dynamic_route_configs.map((r: any) => r.version_info);
  };

  beforeAll(async () => {
    users = await startHttpUpstream("users");
    orders = await startHttpUpstream("orders");
    port = await freePort();
    // Semantic checks off, so that a config only Envoy refuses can reach it for the NACK tests.
    api = await startAdmin({ skipSemanticChecks: true });
    await api.call("PUT", "/api/v1/gateways/edge", {
      body: { name: "edge", listeners: [{ name: "http", port, address: "127.0.0.1" }] },
    });
    await api.call("PUT", "/api/v1/upstreams/users", {
      body: { name: "users", endpoints: [{ host: "127.0.0.1", port: users.port }] },
    });
    await api.call("PUT", "/api/v1/upstreams/orders", {
      body: { name: "orders", endpoints: [{ host: "127.0.0.1", port: orders.port }] },
    });
    await api.call("PUT", "/api/v1/routes/users", { body: route("users", "/users", "users") });
    envoy = track(await startEnvoy({ nodeId: "edge-1", group: "edge", xdsPort: api.cp.xdsPort }));
    await envoy.waitReady({ timeoutMs: 20_000 });
    await waitFor(async () => (await get("/users/1").catch(() => undefined))?.status === 200 || undefined, {
      what: "users route",
    });
  });

  afterAll(async () => {
    await envoy?.stop();
    await api?.stop();
    await users?.close();
    await orders?.close();
  });

  it("PUT with ?wait=applied answers once Envoy serves the route: the very next request is routed", async () => {
    for (let i = 0; i < 5; i++) {
      const res = await api.call("PUT", `/api/v1/routes/orders-${i}?wait=applied&timeout=10s`, {
        body: route(`orders-${i}`, `/orders-${i}`, "orders"),
      });
      expect(res.status).toBe(201);
      expect(res.headers.get("portico-applied")).toBe("true");
      expect(res.json.rollout).toMatchObject({ applied: true, nodes: [{ id: "edge-1", state: "applied" }] });
      const through = await get(`/orders-${i}/x`);
      expect(through.status).toBe(200);
      expect(through.headers["x-upstream"]).toBe("orders");
    }
  });

  it("a refused write (validation) changes nothing in Envoy", async () => {
    const strict = await startAdmin();
    try {
      const res = await strict.call("PUT", "/api/v1/config", {
        raw: JSON.stringify({
          routes: [{ name: "x", gateway: "edge", match: { pathRegex: "/(?<=a)b" }, upstream: "users" }],
        }),
      });
      expect(res.status).toBe(422);
    } finally {
      await strict.stop();
    }
    const before = await versions();
    const bad = await api.call("PUT", "/api/v1/routes/broken", { body: route("broken", "/broken", "nope") });
    expect(bad.status).toBe(422);
    expect(bad.json.details).toEqual([{ field: "upstream", reason: "no upstream named 'nope'" }]);
    await new Promise((r) => setTimeout(r, 300));
    expect(await versions()).toEqual(before);
    expect((await get("/users/1")).status).toBe(200);
  });

  it("a config Envoy refuses shows as a NACK in /status and in the write's answer; rollback restores it", async () => {
    const good = (await api.call("GET", "/api/v1/revisions")).json.items[0].number;
    const res = await api.call("PUT", "/api/v1/routes/lookbehind?wait=applied&timeout=10s", {
      body: { name: "lookbehind", gateway: "edge", match: { pathRegex: "/(?<=x)y" }, upstream: "orders" },
    });
    expect(res.status).toBe(201);
    expect(res.headers.get("portico-applied")).toBe("false");
    expect(res.json.rollout.nodes[0]).toMatchObject({ id: "edge-1", state: "nacked", type: TypeUrl.Route });
    expect(res.json.rollout.nodes[0].error).toMatch(/regex|RE2|invalid/i);

    const status = (await api.call("GET", "/api/v1/status")).json;
    const node = status.nodes.find((n: any) => n.id === "edge-1");
    expect(node.types[TypeUrl.Route].lastNack.message).toMatch(/regex|RE2|invalid/i);
    expect(status.config.lastGoodRevision).toBe(good);
    // Envoy kept its last good config.
    expect((await get("/users/1")).status).toBe(200);

    const rolled = await api.call("POST", `/api/v1/revisions/${good}/rollback?wait=applied`);
    expect(rolled.status).toBe(200);
    expect(rolled.json.rollout.applied).toBe(true);
    expect((await api.call("GET", "/api/v1/routes/lookbehind")).status).toBe(404);
    expect((await get("/orders-0/x")).status).toBe(200);
  });

  it("with automatic rollback on, a refused config is rolled back without an operator", async () => {
    api.cp.service.autoRollback = true;
    try {
      const good = (await api.call("GET", "/api/v1/revisions")).json.items[0].number;
      const res = await api.call("PUT", "/api/v1/routes/bad-again", {
        body: { name: "bad-again", gateway: "edge", match: { pathRegex: "/(a)\\1" }, upstream: "orders" },
      });
      expect(res.status).toBe(201);
      const bad = res.json.revision ?? Number(res.headers.get("portico-revision"));
      const latest = await waitFor(
        async () => {
          const items = (await api.call("GET", "/api/v1/revisions")).json.items;
          return items[0].author === "auto-rollback" ? items[0] : undefined;
        },
        { what: "an automatic rollback revision", timeoutMs: 10_000 },
      );
      expect(latest.number).toBe(bad + 1);
      expect(latest.message).toMatch(
        new RegExp(`automatic rollback from revision ${bad}: node edge-1 refused it`),
      );
      const current = (await api.call("GET", "/api/v1/config", { headers: { accept: "application/json" } }))
        .json;
      const goodConfig = (await api.call("GET", `/api/v1/revisions/${good}`)).json.config;
      expect(current).toEqual(goodConfig);
      await waitFor(
        async () => {
          const s = (await api.call("GET", "/api/v1/status")).json;
          return s.config.lastGoodRevision === latest.number || undefined;
        },
        { what: "the fleet to accept the rolled-back revision" },
      );
      expect((await get("/users/1")).status).toBe(200);
    } finally {
      api.cp.service.autoRollback = false;
    }
  });
});
