import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  freePort,
  httpRequest,
  startAdmin,
  startEnvoy,
  startHttpUpstream,
  type AdminHandle,
  type EnvoyProcess,
  type HttpUpstream,
} from "../harness/index.js";
import { useEnvoyLogs } from "../harness/logs.js";

/** Request validation at the edge, configured through the admin API and enforced by a real Envoy. */
describe("request validation at the edge", () => {
  const track = useEnvoyLogs();
  let api: AdminHandle;
  let envoy: EnvoyProcess;
  let upstream: HttpUpstream;
  let port: number;
  const url = (p: string) => `http://127.0.0.1:${port}${p}`;

  beforeAll(async () => {
    port = await freePort();
    upstream = await startHttpUpstream("orders");
    api = await startAdmin();
    const gw = await api.call("PUT", "/api/v1/gateways/edge", {
      body: {
        name: "edge",
        listeners: [{ name: "http", port, address: "127.0.0.1", maxRequestHeadersKb: 8 }],
      },
    });
    expect(gw.status).toBe(201);
    await api.call("PUT", "/api/v1/upstreams/orders", {
      body: { name: "orders", endpoints: [{ host: "127.0.0.1", port: upstream.port }] },
    });
    const routes = [
      {
        name: "orders-create",
        gateway: "edge",
        match: { path: "/orders", methods: ["POST"] },
        upstream: "orders",
        requiredHeaders: ["idempotency-key"],
        maxBodyBytes: 1024,
        cors: {
          allowOrigins: ["https://app.example.com"],
          allowMethods: ["POST"],
          allowHeaders: ["idempotency-key"],
          maxAgeSeconds: 600,
        },
      },
      {
        name: "orders-list",
        gateway: "edge",
        match: { path: "/orders", methods: ["GET"] },
        upstream: "orders",
      },
      { name: "open", gateway: "edge", match: { pathPrefix: "/open" }, upstream: "orders" },
    ];
    for (const r of routes)
      expect((await api.call("PUT", `/api/v1/routes/${r.name}`, { body: r })).status).toBe(201);
    envoy = track(
      await startEnvoy({
        nodeId: "edge-v",
        group: "edge",
        xdsPort: api.cp.xdsPort,
        // Access log lines reach stdout within 100 ms, not Envoy's default 10 s.
        extraArgs: ["--file-flush-interval-msec", "100"],
      }),
    );
    await envoy.waitReady({ timeoutMs: 20_000 });
  });

  afterAll(async () => {
    await envoy?.stop();
    await api?.stop();
    await upstream?.close();
  });

  it("serves a valid request", async () => {
    const res = await httpRequest(url("/orders"), {
      method: "POST",
      headers: { "idempotency-key": "k1" },
      body: "{}",
    });
    expect(res.status).toBe(200);
    expect(res.headers["x-upstream"]).toBe("orders");
  });

  it("answers a missing required header with 400 and a JSON body naming it", async () => {
    const before = upstream.requests;
    const res = await httpRequest(url("/orders"), { method: "POST", body: "{}" });
    expect(res.status).toBe(400);
    expect(res.headers["content-type"]).toBe("application/json");
    expect(JSON.parse(res.body)).toEqual({
      code: "missing_header",
      message: "the idempotency-key header is required",
      header: "idempotency-key",
    });
    expect(upstream.requests).toBe(before);
  });

  it("answers a body over the route's limit with 413", async () => {
    const before = upstream.requests;
    const res = await httpRequest(url("/orders"), {
      method: "POST",
      headers: { "idempotency-key": "k2" },
      body: "x".repeat(4096),
    });
    expect(res.status).toBe(413);
    expect(upstream.requests).toBe(before);
    // The limit is per route: another route takes the same body.
    expect((await httpRequest(url("/open/x"), { method: "POST", body: "x".repeat(4096) })).status).toBe(200);
  });

  it("answers oversized headers with 431", async () => {
    const res = await httpRequest(url("/open/x"), { headers: { "x-big": "y".repeat(10 * 1024) } });
    expect(res.status).toBe(431);
  });

  it("answers a method the path does not serve with 405 and Allow", async () => {
    expect((await httpRequest(url("/orders"))).status).toBe(200);
    const res = await httpRequest(url("/orders"), { method: "DELETE" });
    expect(res.status).toBe(405);
    expect(res.headers["allow"]).toBe("POST, GET");
    expect(JSON.parse(res.body).code).toBe("method_not_allowed");
  });

  it("keeps a client's x-request-id, generates one when missing, and logs it", async () => {
    const kept = JSON.parse(
      (
        await httpRequest(url("/open/x"), {
          headers: { "x-request-id": "0f5d3c3e-1111-4a2b-8c3d-123456789abc" },
        })
      ).body,
    );
    expect(kept.headers["x-request-id"]).toBe("0f5d3c3e-1111-4a2b-8c3d-123456789abc");
    const made = JSON.parse((await httpRequest(url("/open/y"))).body);
    expect(made.headers["x-request-id"]).toMatch(/^[0-9a-f-]{36}$/);
    const line = await envoy.waitForLog(
      /"request_id":"0f5d3c3e-1111-4a2b-8c3d-123456789abc"/,
      "the access log line",
    );
    expect(JSON.parse(line.slice(line.indexOf("{")))).toMatchObject({
      gateway: "edge",
      route: "open",
      status: 200,
      upstream: "orders",
    });
  });

  it("answers CORS preflights per route, for allowed origins only", async () => {
    const preflight = (origin: string) =>
      httpRequest(url("/orders"), {
        method: "OPTIONS",
        headers: {
          origin,
          "access-control-request-method": "POST",
          "access-control-request-headers": "idempotency-key",
        },
      });
    const ok = await preflight("https://app.example.com");
    expect(ok.headers["access-control-allow-origin"]).toBe("https://app.example.com");
    expect(ok.headers["access-control-allow-methods"]).toBe("POST");
    expect(ok.headers["access-control-max-age"]).toBe("600");
    const other = await preflight("https://evil.example.net");
    expect(other.headers["access-control-allow-origin"]).toBeUndefined();
    const actual = await httpRequest(url("/orders"), {
      method: "POST",
      headers: { origin: "https://app.example.com", "idempotency-key": "k3" },
      body: "{}",
    });
    expect(actual.status).toBe(200);
    expect(actual.headers["access-control-allow-origin"]).toBe("https://app.example.com");
  });
});
