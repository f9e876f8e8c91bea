import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "@portico/common";
import { Authorizer, AuthzServer } from "@portico/ext-authz";
import { policyOf } from "../harness/ext-authz-fixtures.js";
import {
  freePort,
  httpRequest,
  startAdmin,
  startEnvoy,
  startHttpUpstream,
  type AdminHandle,
  type EnvoyProcess,
  type HttpResponse,
  type HttpUpstream,
  type UpstreamReply,
} from "../harness/index.js";
import { useEnvoyLogs } from "../harness/logs.js";

/** A backend that answers every request with bytes that are no HTTP: Envoy's 502. */
async function garbageUpstream(): Promise<{ port: number; close: () => Promise<void> }> {
  const server = net.createServer((s) => {
    s.on("error", () => undefined);
    s.once("data", () => s.end("garbage\r\n\r\n"));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () => new Promise((r) => server.close(() => r())),
  };
}

const v2 = [{ name: "x-version", exact: "v2" }];

/**
 * What a client and an upstream see of the gateway, through a real Envoy: which route answers,
 * the request id on every answer and in every error body, Envoy's own errors as JSON, no Envoy
 * headers reaching upstreams, and preflights from other origins answered at the edge.
 */
describe("gateway edges through a real Envoy", () => {
  const track = useEnvoyLogs();
  let api: AdminHandle;
  let envoy: EnvoyProcess;
  let stable: HttpUpstream;
  let canary: HttpUpstream;
  let garbage: { port: number; close: () => Promise<void> };
  let authz: AuthzServer;
  let port: number;
  let partnersPort: number;
  const url = (p: string, at = port) => `http://127.0.0.1:${at}${p}`;
  const put = async (p: string, body: object) => {
    const res = await api.call("PUT", p, { body });
    expect(res.status, res.text).toBeLessThan(300);
    return res;
  };

  beforeAll(async () => {
    const authzPort = await freePort();
    [port, partnersPort] = [await freePort(), await freePort()];
    stable = await startHttpUpstream("stable");
    canary = await startHttpUpstream("canary");
    garbage = await garbageUpstream();
    authz = new AuthzServer({
      authorizer: new Authorizer({ policy: policyOf({}), logger: silentLogger() }),
      address: `127.0.0.1:${authzPort}`,
    });
    await authz.start();
    api = await startAdmin();
    await put("/api/v1/upstreams/ext-authz", {
      name: "ext-authz",
      protocol: "grpc",
      endpoints: [{ host: "127.0.0.1", port: authzPort }],
    });
    await put("/api/v1/gateways/edge", {
      name: "edge",
      listeners: [
        { name: "http", port, address: "127.0.0.1" },
        { name: "partners", port: partnersPort, address: "127.0.0.1", returnRequestId: "x-correlation-id" },
      ],
      extAuthz: { upstream: "ext-authz", timeoutMs: 1000 },
    });
    for (const u of [stable, canary])
      await put(`/api/v1/upstreams/${u.name}`, { endpoints: [{ host: "127.0.0.1", port: u.port }] });
    await put("/api/v1/upstreams/garbage", { endpoints: [{ host: "127.0.0.1", port: garbage.port }] });
    await put("/api/v1/authPolicies/members", { accept: ["apiKey"] });
    await put("/api/v1/rateLimitPolicies/trickle", { local: { requests: 1, per: "hour" } });
    const routes: Record<string, object> = {
      // The plain route first, the canary after it: the canary's condition still puts it first.
      hv: { match: { pathPrefix: "/hv" }, upstream: "stable" },
      "hv-v2": { match: { pathPrefix: "/hv", headers: v2 }, upstream: "canary" },
      private: { match: { pathPrefix: "/private" }, upstream: "stable", authPolicy: "members" },
      limited: { match: { pathPrefix: "/limited" }, upstream: "stable", rateLimitPolicy: "trickle" },
      small: { match: { pathPrefix: "/small" }, upstream: "stable", maxBodyBytes: 16 },
      broken: { match: { pathPrefix: "/broken" }, upstream: "garbage" },
      legacy: { match: { pathPrefix: "/legacy" }, upstream: "stable", rewrite: { prefix: "/v2" } },
      cors: {
        match: { pathPrefix: "/cors" },
        upstream: "stable",
        cors: { allowOrigins: ["https://app.example.com"], allowMethods: ["POST"] },
      },
    };
    for (const [name, r] of Object.entries(routes))
      await put(`/api/v1/routes/${name}`, { gateway: "edge", ...r });
    envoy = track(await startEnvoy({ nodeId: "edge-edges", group: "edge", xdsPort: api.cp.xdsPort }));
    await envoy.waitReady({ timeoutMs: 20_000 });
  });

  afterAll(async () => {
    await envoy?.stop();
    await api?.stop();
    await authz?.stop();
    await Promise.all([stable, canary, garbage].map((u) => u?.close()));
  });

  describe("route precedence", () => {
    it("sends the canary's requests to the canary route created after the plain one", async () => {
      const withHeader = await httpRequest(url("/hv/x"), { headers: { "x-version": "v2" } });
      expect(withHeader.json<UpstreamReply>().upstream).toBe("canary");
      const without = await httpRequest(url("/hv/x"));
      expect(without.json<UpstreamReply>().upstream).toBe("stable");
    });

    it("refuses a route another one leaves unreachable, naming both, and stores nothing", async () => {
      const before = await api.call("GET", "/api/v1/config", { headers: { accept: "application/json" } });
      const res = await api.call("PUT", "/api/v1/routes/hv-copy", {
        body: { gateway: "edge", match: { pathPrefix: "/hv" }, upstream: "canary" },
      });
      expect(res.status).toBe(422);
      expect(res.json.details).toEqual([
        {
          field: "match",
          reason:
            "route 'hv-copy' is never reached: route 'hv' (pathPrefix /hv) matches every request it matches and is tried first",
        },
      ]);
      expect((await api.call("GET", "/api/v1/routes/hv-copy")).status).toBe(404);
      const after = await api.call("GET", "/api/v1/config", { headers: { accept: "application/json" } });
      expect(after.headers.get("etag")).toBe(before.headers.get("etag"));
    });

    it("accepts a route another one takes only some requests from, with a warning naming both", async () => {
      const res = await api.call("PUT", "/api/v1/routes/hv-beta", {
        body: {
          gateway: "edge",
          match: { pathPrefix: "/hv", headers: [{ name: "x-beta", present: true }] },
          upstream: "canary",
        },
      });
      expect(res.status).toBe(201);
      expect(res.json.warnings).toEqual([
        {
          field: expect.stringMatching(/^routes\[\d+\]\.match$/),
          reason:
            "requests that match both route 'hv-v2' and route 'hv-beta' go to 'hv-v2', which was created first; give one of them a higher priority to choose",
        },
      ]);
      expect((await api.call("DELETE", "/api/v1/routes/hv-beta")).status).toBe(204);
    });
  });

  describe("request ids", () => {
    const idOf = (res: HttpResponse, header = "x-request-id") => {
      const id = res.headers[header];
      expect(id, `${res.status} carries ${header}`).toMatch(/^[0-9a-f-]{36}$/);
      return id!;
    };

    it("returns the id on a 200, and the client's own id when it sent one", async () => {
      const res = await httpRequest(url("/hv/x"));
      expect(res.status).toBe(200);
      expect(res.json<UpstreamReply>().headers["x-request-id"]).toBe(idOf(res));
      const own = await httpRequest(url("/hv/x"), { headers: { "x-request-id": "client-chosen-1" } });
      expect(own.headers["x-request-id"]).toBe("client-chosen-1");
    });

    it("returns the id on Envoy's own errors, in the header and in a JSON body", async () => {
      const answers: [string, number, string][] = [
        ["/nowhere", 404, "no_route"],
        ["/private/x", 401, "missing_credentials"],
        ["/broken/x", 502, "bad_gateway"],
      ];
      for (const [p, status, code] of answers) {
        const res = await httpRequest(url(p));
        expect(res.status, p).toBe(status);
        expect(res.headers["content-type"], p).toBe("application/json");
        const body = res.json<{ code: string; request_id?: string }>();
        expect(body.code, p).toBe(code);
        expect(body.request_id, p).toBe(idOf(res));
      }
      expect((await httpRequest(url("/limited/x"))).status).toBe(200);
      const limited = await httpRequest(url("/limited/x"));
      expect(limited.status).toBe(429);
      expect(limited.json()).toEqual({
        code: "rate_limited",
        message: "too many requests; try again later",
        detail: "local_rate_limited",
        request_id: idOf(limited),
      });
      const large = await httpRequest(url("/small"), { method: "POST", body: "x".repeat(64) });
      expect(large.status).toBe(413);
      expect(large.json()).toMatchObject({ code: "payload_too_large", request_id: idOf(large) });
      expect(JSON.parse((await httpRequest(url("/broken/x"))).body).detail).toMatch(/protocol error/);
    });

    it("returns it in the listener's own header where one is configured", async () => {
      const ok = await httpRequest(url("/hv/x", partnersPort));
      expect(ok.status).toBe(200);
      const id = idOf(ok, "x-correlation-id");
      expect(ok.json<UpstreamReply>().headers["x-request-id"]).toBe(id);
      expect(ok.headers["x-request-id"]).toBeUndefined();
      const missing = await httpRequest(url("/nowhere", partnersPort));
      expect(missing.status).toBe(404);
      expect(missing.json<{ request_id: string }>().request_id).toBe(idOf(missing, "x-correlation-id"));
    });
  });

  it("keeps Envoy's own headers from upstreams and clients", async () => {
    const res = await httpRequest(url("/hv/x"));
    const seen = res.json<UpstreamReply>().headers;
    for (const h of ["x-envoy-expected-rq-timeout-ms", "x-envoy-external-address", "x-envoy-internal"])
      expect(seen[h], h).toBeUndefined();
    expect(seen["x-request-id"]).toBeDefined();
    expect(res.headers["x-envoy-upstream-service-time"]).toBeUndefined();
    // A rewriting route still tells the upstream (and the access log) what the client asked for.
    const rewritten = (await httpRequest(url("/legacy/items?x=1"))).json<UpstreamReply>();
    expect(rewritten.path).toBe("/v2/items?x=1");
    expect(rewritten.headers["x-envoy-original-path"]).toBe("/legacy/items?x=1");
  });

  it("answers a preflight from an origin the route does not allow, without passing it on", async () => {
    const before = stable.requests;
    const refused = await httpRequest(url("/cors/x"), {
      method: "OPTIONS",
      headers: { origin: "https://evil.example", "access-control-request-method": "POST" },
    });
    expect(refused.status).toBe(403);
    expect(Object.keys(refused.headers).filter((h) => h.startsWith("access-control-"))).toEqual([]);
    expect(refused.json()).toMatchObject({ code: "cors_origin_refused" });
    const allowed = await httpRequest(url("/cors/x"), {
      method: "OPTIONS",
      headers: { origin: "https://app.example.com", "access-control-request-method": "POST" },
    });
    expect(allowed.status).toBe(200);
    expect(allowed.headers["access-control-allow-origin"]).toBe("https://app.example.com");
    expect(stable.requests).toBe(before);
  });
});
