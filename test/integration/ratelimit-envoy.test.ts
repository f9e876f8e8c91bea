import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "@portico/common";
import { startRedis, type RedisServer } from "../harness/redis-server.js";
import { sha256Hex, Authorizer, AuthzServer } from "@portico/ext-authz";
import { policyOf } from "../harness/ext-authz-fixtures.js";
import {
  createLimiter,
  XdsConfigSource,
  MemoryLimiter,
  parseRedisSpec,
  startRateLimitService,
  type RateLimitServer,
  type RateLimitConfig,
  type RateLimiter,
  type StrictRedisLimiter,
} from "@portico/ratelimit-service";
import {
  freePort,
  httpRequest,
  startAdmin,
  startEnvoy,
  startHttpUpstream,
  waitFor,
  type AdminHandle,
  type EnvoyProcess,
  type HttpResponse,
  type HttpUpstream,
} from "../harness/index.js";
import { useEnvoyLogs } from "../harness/logs.js";

const KEY_A = "pk_test_acme_0123456789";
const KEY_B = "pk_test_globex_987654321";

/**
 * Rate limits through a real Envoy: policies written through the admin API reach Envoy (filters,
 * descriptors, local buckets) and the rate-limit service (its domain config) over xDS, and Envoy
 * asks the service on every request of a limited route. Callers are told apart by their address:
 * each client socket binds its own loopback address.
 */
describe("rate limits through Envoy", () => {
  const track = useEnvoyLogs();
  let api: AdminHandle;
  let envoy: EnvoyProcess;
  let app: HttpUpstream;
  let authz: AuthzServer;
  let port: number;
  let rlsPort: number;
  let rls: RateLimitServer | undefined;
  let limiter: RateLimiter;
  let source: XdsConfigSource;
  let config: RateLimitConfig | undefined;
  let redis: RedisServer | undefined;
  let nextIp = 2;

  /** A loopback address no earlier request used: a caller the limits have not seen yet. */
  const freshIp = () => `127.0.0.${nextIp++}`;
  const get = (path: string, from: string, headers: Record<string, string> = {}): Promise<HttpResponse> =>
    httpRequest(`http://127.0.0.1:${port}${path}`, { localAddress: from, headers, timeoutMs: 5_000 });
  const statuses = async (path: string, from: string, n: number, headers: Record<string, string> = {}) => {
    const out: number[] = [];
    for (let i = 0; i < n; i++) out.push((await get(path, from, headers)).status);
    return out;
  };
  const put = async (p: string, body: object) => {
    const res = await api.call("PUT", `${p}?wait=applied&timeout=15s`, { body });
    expect(res.status, res.text).toBeLessThan(300);
    return res;
  };
  const decisions = () => rls!.metrics.responses.get();

  /** A daily quota's count starts again at midnight (UTC): do not let a test straddle it. */
  async function clearOfMidnight(): Promise<void> {
    const left = 86_400_000 - (Date.now() % 86_400_000);
    if (left < 30_000) await new Promise((r) => setTimeout(r, left + 100));
  }

  async function startRls(l: RateLimiter): Promise<void> {
    limiter = l;
    rls = await startRateLimitService({ config, limiter: l, port: rlsPort });
  }

  beforeAll(async () => {
    [port, rlsPort] = [await freePort(), await freePort()];
    app = await startHttpUpstream("app");
    const authzPort = await freePort();
    authz = new AuthzServer({
      authorizer: new Authorizer({
        policy: policyOf({
          consumers: [
            { name: "acme", plan: "gold" },
            { name: "globex", plan: "gold" },
          ],
          apiKeys: [
            { name: "acme-live", consumer: "acme", sha256: sha256Hex(KEY_A) },
            { name: "globex-live", consumer: "globex", sha256: sha256Hex(KEY_B) },
          ],
        }),
        logger: silentLogger(),
      }),
      address: `127.0.0.1:${authzPort}`,
    });
    await authz.start();
    api = await startAdmin();
    // The service waits for its config from the control plane, like `--xds`.
    await startRls(new MemoryLimiter());
    source = new XdsConfigSource({
      target: `127.0.0.1:${api.cp.xdsPort}`,
      nodeId: "ratelimit-1",
      onConfig: (c) => {
        config = c;
        rls?.setConfig(c);
      },
    });

    await put("/api/v1/upstreams/app", { name: "app", endpoints: [{ host: "127.0.0.1", port: app.port }] });
    for (const [name, p] of [
      ["rls", rlsPort],
      ["ext-authz", authzPort],
    ] as const) {
      await put(`/api/v1/upstreams/${name}`, {
        name,
        protocol: "grpc",
        endpoints: [{ host: "127.0.0.1", port: p }],
      });
    }
    await put("/api/v1/gateways/edge", {
      name: "edge",
      listeners: [{ name: "http", port, address: "127.0.0.1" }],
      extAuthz: { upstream: "ext-authz", timeoutMs: 2_000 },
      // Generous, so that a loaded test machine never fails open by accident.
      rateLimit: { upstream: "rls", timeoutMs: 2_000 },
    });
    // Token buckets refill at their rate, with no window edge a test could straddle.
    const bucket = (requests: number, extra: object = {}) => ({
      requests,
      per: "hour",
      algorithm: "token_bucket",
      ...extra,
    });
    const policies = [
      {
        name: "classic",
        limits: [
          // Counted by the service, like the rest of this suite's limits (Envoy would count it by default).
          { requests: 1000, per: "second", callers: "identified", enforce: "service" },
          bucket(3, { by: "ip", callers: "anonymous" }),
        ],
      },
      { name: "capped", limits: [bucket(4, { by: "route" })] },
      { name: "flood", limits: [bucket(1000, { by: "ip" })], local: { requests: 2, per: "hour" } },
      // Exact, per request (the control plane would count it from access logs by default).
      { name: "daily", limits: [{ requests: 3, per: "day", by: "ip", enforce: "service" }] },
      { name: "trial", shadow: true, limits: [bucket(1, { by: "ip" })] },
      { name: "keys", limits: [bucket(2, { callers: "identified" })] },
    ];
    for (const p of policies) await put(`/api/v1/rateLimitPolicies/${p.name}`, p);
    await put("/api/v1/authPolicies/api-keys", { name: "api-keys", accept: ["apiKey"] });
    for (const p of policies) {
      await put(`/api/v1/routes/${p.name}`, {
        name: p.name,
        gateway: "edge",
        match: { pathPrefix: `/${p.name}` },
        upstream: "app",
        rateLimitPolicy: p.name,
        ...(p.name === "keys" ? { authPolicy: "api-keys" } : {}),
      });
    }
    envoy = track(await startEnvoy({ nodeId: "edge-rl", group: "edge", xdsPort: api.cp.xdsPort }));
    await envoy.waitReady({ timeoutMs: 20_000 });
    await waitFor(() => config?.domains.get("edge")?.root.exact.size === policies.length || undefined, {
      what: "the rate-limit service to receive every policy",
      timeoutMs: 10_000,
    });
  });

  afterAll(async () => {
    source?.close();
    await envoy?.stop();
    await rls?.stop();
    await limiter?.close();
    await api?.stop();
    await authz?.stop();
    await app?.close();
    await redis?.stop();
  });

  it("limits anonymous callers per address: 429 with RateLimit headers and Retry-After, other addresses pass", async () => {
    const [a, b] = [freshIp(), freshIp()];
    expect(await statuses("/classic", a, 3)).toEqual([200, 200, 200]);
    const before = app.requests;
    const refused = await get("/classic", a);
    expect(refused.status).toBe(429);
    expect(app.requests).toBe(before);
    expect(refused.headers["x-envoy-ratelimited"]).toBe("true");
    expect(refused.headers["x-ratelimit-limit"]).toMatch(/^3, 3;w=3600/);
    expect(refused.headers["x-ratelimit-remaining"]).toBe("0");
    // One token comes back every 20 minutes.
    expect(Number(refused.headers["x-ratelimit-reset"])).toBeGreaterThan(1_100);
    expect(Number(refused.headers["retry-after"])).toBeGreaterThan(1_100);
    expect(Number(refused.headers["retry-after"])).toBeLessThanOrEqual(1_200);
    const other = await get("/classic", b);
    expect(other.status).toBe(200);
    expect(other.headers["x-ratelimit-remaining"]).toBe("2");
  });

  it("limits a route for all its callers together", async () => {
    for (let i = 0; i < 4; i++) expect((await get("/capped", freshIp())).status).toBe(200);
    expect((await get("/capped", freshIp())).status).toBe(429);
  });

  it("refuses a flood with Envoy's local bucket before calling the service", async () => {
    const ip = freshIp();
    expect(await statuses("/flood", ip, 2)).toEqual([200, 200]);
    const asked = await decisions();
    const refused = await get("/flood", freshIp());
    expect(refused.status).toBe(429);
    expect(refused.headers["retry-after"]).toBe("3600");
    expect(refused.headers["x-ratelimit-limit"]).toMatch(/^2/);
    expect(await decisions()).toEqual(asked);
  });

  it("runs a daily quota out, until the next midnight (UTC)", async () => {
    await clearOfMidnight();
    const ip = freshIp();
    expect(await statuses("/daily", ip, 3)).toEqual([200, 200, 200]);
    const refused = await get("/daily", ip);
    expect(refused.status).toBe(429);
    const midnight = new Date();
    midnight.setUTCHours(24, 0, 0, 0);
    const untilMidnight = (midnight.getTime() - Date.now()) / 1000;
    expect(Math.abs(Number(refused.headers["retry-after"]) - untilMidnight)).toBeLessThan(5);
  }, 60_000);

  it("in shadow mode counts over-limit requests but lets them through", async () => {
    const shadowed = () =>
      rls!.metrics.shadowMode.get().then((m) => m.values.reduce((n, v) => n + v.value, 0));
    const before = await shadowed();
    expect(await statuses("/trial", freshIp(), 4)).toEqual([200, 200, 200, 200]);
    expect(await shadowed()).toBe(before + 3);
  });

  it("limits per API key: key A gets 429 while key B passes", async () => {
    const ip = freshIp();
    const a = { "x-api-key": KEY_A };
    expect(await statuses("/keys", ip, 2, a)).toEqual([200, 200]);
    expect((await get("/keys", ip, a)).status).toBe(429);
    // Same address, another consumer: its own counter.
    expect(await statuses("/keys", ip, 2, { "x-api-key": KEY_B })).toEqual([200, 200]);
  });

  it("fails open when the service is down, and closed when the gateway says failClosed", async () => {
    await rls!.stop(100);
    rls = undefined;
    expect((await get("/classic", freshIp())).status).toBe(200);
    const res = await put("/api/v1/gateways/edge", {
      name: "edge",
      listeners: [{ name: "http", port, address: "127.0.0.1" }],
      extAuthz: { upstream: "ext-authz", timeoutMs: 2_000 },
      rateLimit: { upstream: "rls", timeoutMs: 2_000, failClosed: true },
    });
    expect(res.json.rollout).toMatchObject({ applied: true });
    const refused = await get("/classic", freshIp());
    expect(refused.status).toBe(503);
    // Routes without a policy do not depend on the service.
    expect((await get("/nowhere", freshIp())).status).toBe(404);
  });

  it("on Redis, counts survive a restart of the service", async () => {
    await limiter.close();
    redis = await startRedis();
    const onRedis = () =>
      createLimiter({ kind: "redis", connection: parseRedisSpec(redis!.url), mode: "strict" });
    await startRls(onRedis());
    await (limiter as StrictRedisLimiter).waitUntilUp();
    await clearOfMidnight();
    const ip = freshIp();
    expect(await statuses("/daily", ip, 2)).toEqual([200, 200]);
    await rls!.stop(100);
    await limiter.close();
    await startRls(onRedis());
    await (limiter as StrictRedisLimiter).waitUntilUp();
    expect(await statuses("/daily", ip, 2)).toEqual([200, 429]);
  }, 60_000);
});
