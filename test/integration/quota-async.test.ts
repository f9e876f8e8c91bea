import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { identityUri, silentLogger, xdsClientTls } from "@portico/common";
import { sha256Hex, Authorizer, AuthzServer } from "@portico/ext-authz";
import { policyOf } from "../harness/ext-authz-fixtures.js";
import {
  freePort,
  httpRequest,
  openLane,
  startRedis,
  makeIdentityCert,
  makeTestPki,
  removeTestPki,
  startAdmin,
  startEnvoy,
  startHttpUpstream,
  waitFor,
  type AdminHandle,
  type CertFiles,
  type EnvoyProcess,
  type HttpResponse,
  type HttpUpstream,
  type Lane,
  type RedisServer,
  type TestPki,
} from "../harness/index.js";
import { useEnvoyLogs } from "../harness/logs.js";

const QUOTA = 20;
const KEYS = { acme: "pk_quota_acme_0123456789", globex: "pk_quota_globex_0123456789" } as const;
const DAY_MS = 86_400_000;

/**
 * Calendar quotas counted off the request path, through a real Envoy under mTLS: Envoy streams an
 * access log entry per served request over its xDS connection, the control plane counts them and,
 * once a caller has used its daily quota, pushes a deny to the Envoy by ECDS; the deny lifts when
 * the day ends. The control plane's quota clock is the test's to move, so the day can end at once.
 *
 * Every wait below is for a state (a deny in the control plane, the deny filter's config in Envoy),
 * never for a time; no request is sent while waiting, so what is admitted is exactly what was sent.
 */
describe("calendar quotas counted from access logs (enforce: usage)", () => {
  const track = useEnvoyLogs();
  let pki: TestPki;
  let gateway: CertFiles;
  let policyCert: CertFiles;
  let api: AdminHandle;
  let envoy: EnvoyProcess;
  let app: HttpUpstream;
  let authz: AuthzServer;
  let port: number;
  /** What the control plane's quota clock is ahead of the real one. */
  let skew = 0;

  const url = (p: string) => `http://127.0.0.1:${port}${p}`;
  /** Requests the upstream answered on the metered route: what the control plane should count. */
  let served = 0;
  const get = async (
    p: string,
    o: { key?: keyof typeof KEYS; from?: string } = {},
  ): Promise<HttpResponse> => {
    const res = await httpRequest(url(p), {
      headers: o.key ? { "x-api-key": KEYS[o.key] } : {},
      localAddress: o.from,
      timeoutMs: 5_000,
    });
    if (p.startsWith("/metered") && res.status === 200) served++;
    return res;
  };
  const put = async (p: string, body: object) => {
    const res = await api.call("PUT", `${p}?wait=applied&timeout=20s`, { body });
    expect(res.status, res.text).toBeLessThan(300);
  };
  /** Sends n requests one after the other; the statuses, in order. */
  const send = async (n: number, p: string, o: { key?: keyof typeof KEYS; from?: string } = {}) => {
    const out: number[] = [];
    for (let i = 0; i < n; i++) out.push((await get(p, o)).status);
    return out;
  };
  /** Access log entries the control plane counted. */
  const counted = async () => {
    const text = await (await fetch(`${api.url}/metrics`)).text();
    return Number(/^portico_quota_log_entries_total\{outcome="counted"\} (\d+)$/m.exec(text)?.[1] ?? 0);
  };
  const denied = (subject: string) => api.cp.usage.denies().find((d) => d.subject === subject);
  /** The deny filter's config as Envoy holds it (ECDS), as text. */
  const ecds = async () => JSON.stringify((await envoy.configDump()).configs);
  /** Waits for the control plane to deny `subject`, then for Envoy to hold that deny. */
  async function deniedInEnvoy(subject: string) {
    const d = await waitFor(() => denied(subject), {
      what: `the control plane to deny ${subject}`,
      timeoutMs: 20_000,
    });
    await waitFor(async () => (await ecds()).includes(JSON.stringify(subject).slice(1, -1)), {
      what: `Envoy's deny filter to hold ${subject}`,
      timeoutMs: 20_000,
    });
    return d;
  }

  beforeAll(async () => {
    pki = makeTestPki();
    gateway = makeIdentityCert(pki, "gw-edge", identityUri({ kind: "gateway", group: "edge" }));
    policyCert = makeIdentityCert(pki, "policy-rl", identityUri({ kind: "policy", role: "ratelimit" }));
    // Keeps the quota's day clear of a real midnight for the whole run.
    const sinceMidnight = Date.now() % DAY_MS;
    if (sinceMidnight < 3_600_000 || sinceMidnight > DAY_MS - 3_600_000) skew = 12 * 3_600_000;
    port = await freePort();
    app = await startHttpUpstream("app");
    const authzPort = await freePort();
    authz = new AuthzServer({
      authorizer: new Authorizer({
        policy: policyOf({
          consumers: Object.keys(KEYS).map((name) => ({ name })),
          apiKeys: Object.entries(KEYS).map(([name, key]) => ({
            name: `${name}-live`,
            consumer: name,
            sha256: sha256Hex(key),
          })),
        }),
        logger: silentLogger(),
      }),
      address: `127.0.0.1:${authzPort}`,
    });
    await authz.start();
    api = await startAdmin({
      xdsTls: { cert: pki.server.cert, key: pki.server.key, clientCa: pki.ca.cert },
      quotaClock: () => Date.now() + skew,
    });
    await put("/api/v1/upstreams/app", { name: "app", endpoints: [{ host: "127.0.0.1", port: app.port }] });
    await put("/api/v1/upstreams/ext-authz", {
      name: "ext-authz",
      protocol: "grpc",
      endpoints: [{ host: "127.0.0.1", port: authzPort }],
    });
    // No rate-limit service: the gateway needs none for quotas the control plane counts.
    await put("/api/v1/gateways/edge", {
      name: "edge",
      listeners: [{ name: "http", port, address: "127.0.0.1" }],
      extAuthz: { upstream: "ext-authz", timeoutMs: 2_000 },
    });
    await put("/api/v1/authPolicies/keys", { name: "keys", accept: ["apiKey"], allowAnonymous: true });
    // Per consumer; anonymous callers per address. Counted from access logs: the default for a day.
    await put("/api/v1/rateLimitPolicies/daily", {
      name: "daily",
      limits: [{ requests: QUOTA, per: "day" }],
    });
    await put("/api/v1/routes/metered", {
      name: "metered",
      gateway: "edge",
      match: { pathPrefix: "/metered" },
      upstream: "app",
      authPolicy: "keys",
      rateLimitPolicy: "daily",
    });
    await put("/api/v1/routes/open", {
      name: "open",
      gateway: "edge",
      match: { pathPrefix: "/open" },
      upstream: "app",
    });
    envoy = track(
      await startEnvoy({
        nodeId: "edge-1",
        group: "edge",
        xdsPort: api.cp.xdsPort,
        xdsTls: { caFile: pki.ca.cert, certFile: gateway.cert, keyFile: gateway.key },
      }),
    );
    await envoy.waitReady({ timeoutMs: 20_000 });
  }, 90_000);

  afterAll(async () => {
    await envoy?.stop();
    await api?.stop();
    await authz?.stop();
    await app?.close();
    removeTestPki(pki);
  });

  it("calls no rate limiter: the route has the deny filter (by ECDS) and an access log to the control plane", async () => {
    const dump = await envoy.configDump();
    const listeners = dump.configs.find((c: any) => c["@type"].endsWith(".ListenersConfigDump"));
    const hcm = listeners.dynamic_listeners[0].active_state.listener.filter_chains[0].filters[0].typed_config;
    const filters = hcm.http_filters.map((f: { name: string }) => f.name);
    expect(filters).toContain("portico.quota");
    expect(filters).not.toContain("envoy.filters.http.ratelimit");
    expect(hcm.access_log.map((l: { name: string }) => l.name)).toContain("envoy.access_loggers.http_grpc");
    expect(await ecds()).toContain("No caller of this gateway has used up a quota");
  });

  it("denies a consumer in Envoy once its daily quota is used up, with the rate limiter's answer shape", async () => {
    const lds = await envoy.stat("listener_manager.lds.update_success");
    const rds = await envoy.stat("http.edge_http.rds.edge/http.update_success");
    const ecdsUpdates = await envoy.stat(
      "extension_config_discovery.http_filter.portico.quota.config_reload",
    );
    expect(lds).toBeGreaterThan(0);
    expect(rds).toBeGreaterThan(0);
    const served = app.requests;
    expect(await send(QUOTA, "/metered/orders", { key: "acme" })).toEqual(Array(QUOTA).fill(200));
    expect(app.requests - served).toBe(QUOTA);
    const deny = await deniedInEnvoy("c:acme");
    expect(deny).toMatchObject({ policy: "daily", limit: QUOTA, unit: "day" });
    // The day's end in the quota's time zone (UTC) by the control plane's clock.
    expect(deny.until).toBe(Math.floor((Date.now() + skew) / DAY_MS + 1) * DAY_MS);

    const refused = await get("/metered/orders", { key: "acme" });
    expect(refused.status).toBe(429);
    expect(refused.json()).toEqual({
      code: "rate_limited",
      message: "too many requests; try again later",
      detail: "quota_exhausted",
      request_id: refused.headers["x-request-id"],
    });
    expect(refused.headers["x-ratelimit-limit"]).toBe(`${QUOTA}, ${QUOTA};w=86400`);
    expect(refused.headers["x-ratelimit-remaining"]).toBe("0");
    // Until the period ends (the deny carries its end; Envoy counts down on its own clock).
    const untilEnd = (deny.until - Date.now()) / 1000;
    expect(Math.abs(Number(refused.headers["retry-after"]) - untilEnd)).toBeLessThan(5);
    expect(app.requests - served).toBe(QUOTA);
    // The deny came as the filter's config alone: no listener drained, no route table pushed
    // (which would have refilled the buckets Envoy counts per caller).
    expect(await envoy.stat("listener_manager.lds.update_success")).toBe(lds);
    expect(await envoy.stat("http.edge_http.rds.edge/http.update_success")).toBe(rds);
    expect(
      await envoy.stat("extension_config_discovery.http_filter.portico.quota.config_reload"),
    ).toBeGreaterThan(ecdsUpdates!);
  });

  it("tells a denied gRPC caller RESOURCE_EXHAUSTED, with the quota's words", async () => {
    await deniedInEnvoy("c:acme");
    const served = app.requests;
    const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
    try {
      const metadata = new grpc.Metadata();
      metadata.set("x-api-key", KEYS.acme);
      const status = await new Promise<grpc.StatusObject>((resolve) => {
        const call = client.makeUnaryRequest(
          "/metered.Orders/List",
          (b: Buffer) => b,
          (b: Buffer) => b,
          Buffer.alloc(0),
          metadata,
          { deadline: Date.now() + 5_000 },
          () => undefined,
        );
        call.on("status", resolve);
      });
      expect(status.code, status.details).toBe(grpc.status.RESOURCE_EXHAUSTED);
      expect(status.details).toBe("quota_exhausted");
    } finally {
      client.close();
    }
    expect(app.requests).toBe(served);
  });

  it("leaves another consumer, and routes without the quota, alone", async () => {
    expect(await send(3, "/metered/orders", { key: "globex" })).toEqual([200, 200, 200]);
    expect((await get("/open/x", { key: "acme" })).status).toBe(200);
    expect(denied("c:globex")).toBeUndefined();
  });

  it("counts anonymous callers per address, each address on its own count", async () => {
    expect(await send(QUOTA, "/metered/x", { from: "127.0.0.5" })).toEqual(Array(QUOTA).fill(200));
    await deniedInEnvoy("a:127.0.0.5");
    expect((await get("/metered/x", { from: "127.0.0.5" })).status).toBe(429);
    expect((await get("/metered/x", { from: "127.0.0.6" })).status).toBe(200);
    // An identified caller from the denied address is counted as itself.
    expect((await get("/metered/x", { key: "globex", from: "127.0.0.5" })).status).toBe(200);
  });

  it("counts only what the upstream answered, not what the gateway refused", async () => {
    const allCounted = () =>
      waitFor(
        async () => {
          const n = await counted();
          return n >= served ? n : undefined;
        },
        { what: `${served} served requests counted`, timeoutMs: 20_000 },
      );
    expect(await allCounted()).toBe(served);
    expect(await send(3, "/metered/orders", { key: "acme" })).toEqual([429, 429, 429]);
    const unknownKey = await httpRequest(url("/metered/orders"), {
      headers: { "x-api-key": "pk_nobody_000000000" },
    });
    expect(unknownKey.status).toBe(401);
    // Then one served request: the harness's Envoy has one worker, whose access log buffer goes
    // out in order, so once it is counted, so would the refused ones be, had they been logged.
    expect((await get("/metered/orders", { key: "globex" })).status).toBe(200);
    expect(await allCounted()).toBe(served);
  });

  it("refuses access logs from anything but a gateway identity", async () => {
    const client = new grpc.Client(
      `127.0.0.1:${api.cp.xdsPort}`,
      xdsClientTls({ ca: pki.ca.cert, cert: policyCert.cert, key: policyCert.key }).credentials!,
    );
    try {
      const status = await new Promise<grpc.StatusObject>((resolve) => {
        const call = client.makeClientStreamRequest<Buffer, Buffer>(
          "/envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs",
          (b) => b,
          (b) => b,
          () => undefined,
        );
        call.on("status", resolve);
        call.write(Buffer.alloc(0));
      });
      expect(status.code).toBe(grpc.status.PERMISSION_DENIED);
      expect(status.details).toMatch(/gateway identities .* only, not from policy service ratelimit/);
    } finally {
      client.close();
    }
    const text = await (await fetch(`${api.url}/metrics`)).text();
    expect(text).toMatch(/^portico_quota_log_streams_refused_total 1$/m);
  });

  it("lifts the deny when the day ends, and counts the new day from zero", async () => {
    const deny = denied("c:acme")!;
    skew = deny.until - Date.now() + 1_000;
    await waitFor(() => denied("c:acme") === undefined && denied("a:127.0.0.5") === undefined, {
      what: "the control plane to lift the denies at the day's end",
      timeoutMs: 20_000,
    });
    await waitFor(async () => (await ecds()).includes("No caller of this gateway has used up a quota"), {
      what: "Envoy's deny filter to deny nobody",
      timeoutMs: 20_000,
    });
    expect(await send(QUOTA, "/metered/orders", { key: "acme" })).toEqual(Array(QUOTA).fill(200));
    expect((await get("/metered/x", { from: "127.0.0.5" })).status).toBe(200);
    await deniedInEnvoy("c:acme");
    expect((await get("/metered/orders", { key: "acme" })).status).toBe(429);
  });
});

/**
 * Two control-plane replicas on one Redis store, an Envoy of the group on each: a caller who uses
 * its quota up through one Envoy is denied by the other too, whose control plane counted none of
 * its requests (the count is in Redis, the deny announced to every replica).
 */
describe("calendar quotas counted from access logs, across control-plane replicas", () => {
  const track = useEnvoyLogs();
  let redis: RedisServer;
  let replicas: AdminHandle[] = [];
  let envoys: EnvoyProcess[] = [];
  let lanes: Lane[] = [];
  let app: HttpUpstream;
  let port: number;

  beforeAll(async () => {
    redis = await startRedis();
    app = await startHttpUpstream("app");
    port = await freePort();
    const store = `${redis.url}?prefix=quota-replicas`;
    // Keeps the quota's day clear of a real midnight for the whole run.
    const sinceMidnight = Date.now() % DAY_MS;
    const skew = sinceMidnight < 3_600_000 || sinceMidnight > DAY_MS - 3_600_000 ? 12 * 3_600_000 : 0;
    const quotaClock = () => Date.now() + skew;
    replicas = [await startAdmin({ store, quotaClock }), await startAdmin({ store, quotaClock })];
    const put = async (p: string, body: object) => {
      const res = await replicas[0]!.call("PUT", `${p}?wait=applied&timeout=20s`, { body });
      expect(res.status, res.text).toBeLessThan(300);
    };
    await put("/api/v1/upstreams/app", { name: "app", endpoints: [{ host: "127.0.0.1", port: app.port }] });
    await put("/api/v1/gateways/edge", {
      name: "edge",
      listeners: [{ name: "http", port, address: "127.0.0.1" }],
    });
    await put("/api/v1/rateLimitPolicies/daily", {
      name: "daily",
      limits: [{ requests: QUOTA, per: "day" }],
    });
    await put("/api/v1/routes/metered", {
      name: "metered",
      gateway: "edge",
      match: { pathPrefix: "/metered" },
      upstream: "app",
      rateLimitPolicy: "daily",
    });
    await put("/api/v1/routes/probe", {
      name: "probe",
      gateway: "edge",
      match: { path: "/probe" },
      upstream: "app",
    });
    for (const [i, r] of replicas.entries()) {
      const e = track(await startEnvoy({ nodeId: `edge-${i + 1}`, group: "edge", xdsPort: r.cp.xdsPort }));
      await e.waitReady({ timeoutMs: 20_000 });
      envoys.push(e);
    }
    for (const target of [0, 1]) {
      lanes.push(
        await openLane({
          envoys,
          target,
          port,
          localAddress: "127.0.0.7",
          probePath: "/probe",
          counter: "http.edge_http.downstream_cx_total",
        }),
      );
    }
  }, 90_000);

  afterAll(async () => {
    for (const l of lanes) l.close();
    await Promise.all(envoys.map((e) => e.stop()));
    for (const r of replicas) await r.stop();
    await app?.close();
    await redis?.stop();
    lanes = [];
    envoys = [];
    replicas = [];
  });

  it("denies in every Envoy of the group a caller whose requests all went through one", async () => {
    const [one, other] = lanes as [Lane, Lane];
    for (let i = 0; i < QUOTA; i++) expect((await one.get("/metered")).status).toBe(200);
    const subject = "a:127.0.0.7";
    // The replica whose Envoy saw no request of the caller learns of the deny from Redis.
    await waitFor(() => replicas[1]!.cp.usage.denies().some((d) => d.subject === subject), {
      what: "the other replica to hold the deny",
      timeoutMs: 20_000,
    });
    await waitFor(async () => JSON.stringify((await envoys[1]!.configDump()).configs).includes(subject), {
      what: "the other replica's Envoy to hold the deny",
      timeoutMs: 20_000,
    });
    const refused = await other.get("/metered");
    expect(refused.status).toBe(429);
    expect(refused.headers["x-ratelimit-limit"]).toBe(`${QUOTA}, ${QUOTA};w=86400`);
  });
});
