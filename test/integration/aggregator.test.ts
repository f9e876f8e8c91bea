import { Registry } from "prom-client";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "@portico/common";
import {
  fetchCaller,
  MemoryStaleStore,
  XdsConfigSource,
  AggregatorServer,
  AggregatorMetrics,
} from "@portico/aggregator";
import { sha256Hex, Authorizer, AuthzServer } from "@portico/ext-authz";
import { policyOf } from "../harness/ext-authz-fixtures.js";
import { COMPOSITE_ROUTE_TYPE_URL } from "@portico/contract";
import {
  freePort,
  httpRequest,
  startAdmin,
  startEnvoy,
  startHttpUpstream,
  waitFor,
  type AdminHandle,
  type EnvoyProcess,
  type HttpUpstream,
  type UpstreamReply,
} from "../harness/index.js";
import { useEnvoyLogs } from "../harness/logs.js";

const KEY = "pk_test_acme_0123456789";
const policy = policyOf({
  consumers: [{ name: "acme", plan: "gold" }],
  apiKeys: [{ name: "acme-live", consumer: "acme", sha256: sha256Hex(KEY) }],
});

const home = (extraParts: object[] = []) => ({
  name: "home",
  gateway: "edge",
  match: { path: "/users/{id}/home" },
  timeoutMs: 1500,
  authPolicy: "members",
  parts: [
    { key: "profile", upstream: "users", path: "/users/{id}", timeoutMs: 1000, required: true },
    {
      key: "orders",
      upstream: "orders",
      path: "/orders?user={id}&consumer={header.x-portico-consumer}",
      timeoutMs: 1000,
      staleFallback: { maxAgeSeconds: 300 },
    },
    { key: "recs", upstream: "recs", path: "/recs/{id}", timeoutMs: 1000 },
    ...extraParts,
  ],
});

/** An identity, and the aggregator's route marker, claimed by a caller no one authenticated. */
const FORGED = {
  "x-portico-consumer": "acme",
  "x-portico-plan": "gold",
  "x-portico-key-id": "acme-live",
  "x-portico-composite": "home",
};

/**
 * Composite routes end to end: a client's call goes through a real Envoy (authenticated by
 * ext-authz) to the aggregator, which calls each part back through Envoy's parts listener to three
 * echo upstreams and merges the answers. The aggregator gets its routes from the control plane
 * over xDS.
 */
describe("aggregator through Envoy", () => {
  const track = useEnvoyLogs();
  let api: AdminHandle;
  let envoy: EnvoyProcess;
  let users: HttpUpstream;
  let orders: HttpUpstream;
  let recs: HttpUpstream;
  let authz: AuthzServer;
  let aggregator: AggregatorServer;
  let source: XdsConfigSource;
  let registry: Registry;
  let aggregatorPort: number;
  let partsPort: number;
  let port: number;
  const url = (p: string) => `http://127.0.0.1:${port}${p}`;
  const call = (p: string, headers: Record<string, string> = {}) =>
    httpRequest(url(p), { headers: { "x-api-key": KEY, ...headers }, timeoutMs: 5000 });
  const upstreamCalls = () => users.requests + orders.requests + recs.requests;
  const node = async () =>
    (await api.call("GET", "/api/v1/status")).json.nodes.find((n: any) => n.id === "aggregator-1");

  beforeAll(async () => {
    const authzPort = await freePort();
    partsPort = await freePort();
    port = await freePort();
    [users, orders, recs] = await Promise.all([
      startHttpUpstream("users"),
      startHttpUpstream("orders"),
      startHttpUpstream("recs"),
    ]);
    authz = new AuthzServer({
      authorizer: new Authorizer({ policy, logger: silentLogger() }),
      address: `127.0.0.1:${authzPort}`,
    });
    await authz.start();
    registry = new Registry();
    aggregator = new AggregatorServer({
      port: 0,
      log: silentLogger(),
      registry,
      metrics: new AggregatorMetrics(registry),
      caller: fetchCaller(),
      stale: new MemoryStaleStore(),
    });
    aggregatorPort = await aggregator.start();

    api = await startAdmin();
    const put = async (p: string, body: object) => {
      const res = await api.call("PUT", p, { body });
      expect(res.status, res.text).toBeLessThan(300);
    };
    for (const u of [users, orders, recs])
      await put(`/api/v1/upstreams/${u.name}`, {
        name: u.name,
        endpoints: [{ host: "127.0.0.1", port: u.port }],
      });
    await put("/api/v1/upstreams/aggregator", {
      name: "aggregator",
      endpoints: [{ host: "127.0.0.1", port: aggregatorPort }],
    });
    await put("/api/v1/upstreams/ext-authz", {
      name: "ext-authz",
      protocol: "grpc",
      endpoints: [{ host: "127.0.0.1", port: authzPort }],
    });
    await put("/api/v1/gateways/edge", {
      name: "edge",
      listeners: [{ name: "http", port, address: "127.0.0.1" }],
      extAuthz: { upstream: "ext-authz", timeoutMs: 1000 },
      aggregator: { upstream: "aggregator", partsListener: { port: partsPort } },
    });
    await put("/api/v1/authPolicies/members", { name: "members", accept: ["apiKey"] });
    await put("/api/v1/authPolicies/anyone", { name: "anyone", accept: ["apiKey"], allowAnonymous: true });
    // Orders are for key holders: a composite route must not hand them to anyone else.
    await put("/api/v1/routes/orders", {
      name: "orders",
      gateway: "edge",
      match: { pathPrefix: "/orders" },
      upstream: "orders",
      authPolicy: "members",
    });
    // A prefix route over the same paths: the composite route must still win its own.
    await put("/api/v1/routes/users", {
      name: "users",
      gateway: "edge",
      match: { pathPrefix: "/users" },
      upstream: "users",
    });
    await put("/api/v1/compositeRoutes/home", home());

    source = new XdsConfigSource({
      target: `127.0.0.1:${api.cp.xdsPort}`,
      nodeId: "aggregator-1",
      onConfig: (c) => aggregator.setConfig(c),
    });
    envoy = track(await startEnvoy({ nodeId: "edge-agg", group: "edge", xdsPort: api.cp.xdsPort }));
    await envoy.waitReady({ timeoutMs: 20_000 });
    await waitFor(() => aggregator.ready, { what: "the aggregator's first config" });
  });

  afterEach(() => {
    for (const u of [users, orders, recs]) {
      u.setStatus(200);
      u.setDelay(0);
    }
  });

  afterAll(async () => {
    source?.close();
    await envoy?.stop();
    await api?.stop();
    await aggregator?.stop();
    await authz?.stop();
    await Promise.all([users, orders, recs].map((u) => u?.close()));
  });

  it("answers one call with every part, each called through Envoy with the caller's identity and request id", async () => {
    const res = await call("/users/42/home", {
      "x-request-id": "req-full-1",
      "x-portico-consumer": "forged",
    });
    expect(res.status, res.body).toBe(200);
    expect(res.headers["x-portico-partial"]).toBeUndefined();
    const body = res.json<Record<string, UpstreamReply>>();
    expect(Object.keys(body).sort()).toEqual(["orders", "profile", "recs"]);
    expect(body.profile!.path).toBe("/users/42");
    expect(body.orders!.path).toBe("/orders?user=42&consumer=acme");
    expect(body.recs!.path).toBe("/recs/42");
    for (const part of Object.values(body)) {
      expect(part.headers["x-portico-consumer"]).toBe("acme");
      expect(part.headers["x-portico-plan"]).toBe("gold");
      expect(part.headers["x-request-id"]).toBe("req-full-1");
      // Through Envoy's parts listener (it adds x-forwarded-proto), which drops the part marker and
      // keeps its own headers to itself.
      expect(part.headers["x-forwarded-proto"]).toBe("http");
      expect(part.headers["x-envoy-expected-rq-timeout-ms"]).toBeUndefined();
      expect(part.headers["x-portico-part"]).toBeUndefined();
      expect(part.headers["x-api-key"]).toBeUndefined();
      // The parts token stays between Envoy, the aggregator and the parts listener.
      expect(part.headers["x-portico-parts-token"]).toBeUndefined();
    }
  });

  it("is protected like any route: no credentials, no call to the aggregator or the parts", async () => {
    const before = upstreamCalls();
    for (const headers of [{}, FORGED, { ...FORGED, "x-portico-parts-token": "guess" }]) {
      const res = await httpRequest(url("/users/42/home"), { headers });
      expect(res.status).toBe(401);
    }
    expect(upstreamCalls()).toBe(before);
    // Other paths under the prefix still go to the prefix route.
    const plain = await httpRequest(url("/users/42"));
    expect(plain.json<UpstreamReply>().upstream).toBe("users");
  });

  it("refuses a composite route that would hand anonymous callers a part whose own route needs a key", async () => {
    expect((await httpRequest(url("/orders/1"))).status).toBe(401);
    const open = {
      name: "open",
      gateway: "edge",
      match: { path: "/open" },
      timeoutMs: 1500,
      authPolicy: "anyone",
      parts: [{ key: "orders", upstream: "orders", path: "/orders?user=1", timeoutMs: 1000 }],
    };
    const res = await api.call("PUT", "/api/v1/compositeRoutes/open", { body: open });
    expect(res.status).toBe(422);
    expect(res.json.details).toEqual([
      {
        field: "authPolicy",
        reason:
          "part 'orders' calls orders at /orders?user=1, which route 'orders' serves with authPolicy " +
          "'members', and 'anyone' lets anonymous callers in; use 'members' or a stricter policy",
      },
    ]);
    expect((await httpRequest(url("/open"))).status).toBe(404);
  });

  it("lets no identity sent straight to the aggregator reach an upstream", async () => {
    const before = upstreamCalls();
    const res = await httpRequest(`http://127.0.0.1:${aggregatorPort}/users/42/home`, {
      headers: { ...FORGED, "x-portico-parts-token": "guess" },
      timeoutMs: 5000,
    });
    // The parts listener refused every part: the required one fails the call.
    expect(res.status).toBe(502);
    expect(upstreamCalls()).toBe(before);
  });

  it("lets no identity sent straight to the parts listener reach an upstream", async () => {
    const before = upstreamCalls();
    const guesses: Record<string, string>[] = [{}, { "x-portico-parts-token": "guess" }];
    for (const extra of guesses) {
      const res = await httpRequest(`http://127.0.0.1:${partsPort}/orders?user=1`, {
        headers: { ...FORGED, "x-portico-part": "home/orders", ...extra },
      });
      expect(res.status).toBe(403);
      expect(res.json()).toEqual({ code: "forbidden", message: "only the aggregator calls the parts" });
    }
    expect(upstreamCalls()).toBe(before);
  });

  it("leaves out an optional part that is down, naming it in a header and in the body", async () => {
    recs.setStatus(503);
    const res = await call("/users/7/home");
    expect(res.status).toBe(200);
    expect(res.headers["x-portico-partial"]).toBe("recs");
    // The same marker as every other degraded answer of the gateway's.
    expect(res.headers["x-portico-degraded"]).toBe("partial");
    const body = res.json<Record<string, unknown>>();
    expect(body._missing).toEqual(["recs"]);
    expect(body.recs).toBeUndefined();
    expect((body.profile as UpstreamReply).path).toBe("/users/7");
  });

  it("runs the parts in parallel: a slow part costs its deadline, not the sum of the parts", async () => {
    users.setDelay(600);
    orders.setDelay(600);
    recs.setDelay(4000);
    const started = performance.now();
    const res = await call("/users/8/home");
    const took = performance.now() - started;
    expect(res.status).toBe(200);
    expect(res.headers["x-portico-partial"]).toBe("recs");
    // recs is cut at its 1000 ms deadline; in sequence the parts would take at least 2200 ms.
    expect(took).toBeGreaterThanOrEqual(950);
    expect(took).toBeLessThan(1900);
  });

  it("fails the call when a required part fails: 502 when it errs, 504 when it is too slow", async () => {
    users.setStatus(500);
    const failed = await call("/users/9/home", { "x-request-id": "req-502" });
    expect(failed.status).toBe(502);
    expect(failed.headers["content-type"]).toContain("application/json");
    expect(failed.json()).toMatchObject({ code: "part_failed", part: "profile", request_id: "req-502" });
    users.setStatus(200);
    users.setDelay(3000);
    const slow = await call("/users/9/home");
    expect(slow.status).toBe(504);
    expect(slow.json()).toMatchObject({ code: "part_timeout", part: "profile" });
  });

  it("serves a part's last good answer, marked stale, after it goes down", async () => {
    const fresh = await call("/users/11/home");
    expect(fresh.status).toBe(200);
    const before = fresh.json<Record<string, UpstreamReply>>().orders!;
    orders.setStatus(503);
    const res = await call("/users/11/home");
    expect(res.status).toBe(200);
    expect(res.headers["x-portico-stale"]).toBe("orders");
    expect(res.headers["x-portico-partial"]).toBeUndefined();
    const body = res.json<Record<string, unknown>>();
    expect(body._stale).toEqual(["orders"]);
    expect(body.orders).toEqual(before);
    // Only for this user: another path has no last good answer to stand in.
    const other = await call("/users/12/home");
    expect(other.json<Record<string, unknown>>()._missing).toEqual(["orders"]);
  });

  it("counts every part in its metrics", async () => {
    const text = await (await fetch(`http://127.0.0.1:${aggregatorPort}/metrics`)).text();
    expect(text).toMatch(
      /portico_aggregator_part_requests_total\{route="home",part="recs",result="failed"\} [1-9]/,
    );
    expect(text).toMatch(
      /portico_aggregator_part_failures_total\{route="home",part="profile",reason="timeout"\} 1/,
    );
    expect(text).toMatch(
      /portico_aggregator_part_duration_seconds_count\{route="home",part="orders"\} [1-9]/,
    );
    expect(text).toMatch(/portico_aggregator_requests_total\{route="home",status="502"\} [1-9]/);
    expect((await fetch(`http://127.0.0.1:${aggregatorPort}/readyz`)).status).toBe(200);
  });

  it("answers as soon as a required part fails, without waiting for a slow optional part", async () => {
    users.setStatus(500);
    recs.setDelay(4000);
    const started = performance.now();
    const res = await call("/users/10/home", { "x-request-id": "req-early" });
    const took = performance.now() - started;
    expect(res.status).toBe(502);
    expect(res.json()).toMatchObject({ code: "part_failed", part: "profile", request_id: "req-early" });
    expect(res.headers["x-request-id"]).toBe("req-early");
    // recs' deadline is 1000 ms: the answer did not wait for it.
    expect(took).toBeLessThan(500);
  });

  it("takes a change made through the admin API over xDS, and the fleet status shows its ACK", async () => {
    const first = await waitFor(async () => (await node())?.types[COMPOSITE_ROUTE_TYPE_URL]?.ackedVersion, {
      what: "the aggregator's ACK in /status",
    });
    const extra = { key: "extra", upstream: "users", path: "/users/{id}/extra", timeoutMs: 500 };
    const res = await api.call("PUT", "/api/v1/compositeRoutes/home?wait=applied&timeout=10s", {
      body: home([extra]),
    });
    expect(res.status, res.text).toBe(200);
    expect(res.json.rollout.nodes).toContainEqual(
      expect.objectContaining({ id: "aggregator-1", state: "applied" }),
    );
    const n = await node();
    expect(n).toMatchObject({ group: "portico:policy" });
    expect(n.types[COMPOSITE_ROUTE_TYPE_URL].ackedVersion).not.toBe(first);
    expect(n.types[COMPOSITE_ROUTE_TYPE_URL].lastNack).toBeUndefined();
    // Envoy's parts listener has the new part's route too (the write waited for the edge group).
    const answer = await waitFor(
      async () => {
        const r = await call("/users/13/home");
        return r.status === 200 && "extra" in r.json<object>() ? r : undefined;
      },
      { what: "the new part in the answer" },
    );
    expect(answer.json<Record<string, UpstreamReply>>().extra!.path).toBe("/users/13/extra");
    expect(answer.headers["x-portico-partial"]).toBeUndefined();
  });
});
