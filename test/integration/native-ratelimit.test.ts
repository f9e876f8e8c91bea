import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "@portico/common";
import { sha256Hex, Authorizer, AuthzServer } from "@portico/ext-authz";
import { policyOf } from "../harness/ext-authz-fixtures.js";
import {
  freePort,
  openLane,
  startAdmin,
  startEnvoy,
  startHttpUpstream,
  waitFor,
  type AdminHandle,
  type EnvoyProcess,
  type HttpUpstream,
  type Lane,
} from "../harness/index.js";
import { useEnvoyLogs } from "../harness/logs.js";

/** The group's limit: per consumer, and per address for anonymous callers (`by: consumer`, all callers). */
const LIMIT = 20;
const WINDOW_S = 60;
const KEYS = {
  acme: "pk_native_acme_0123456789",
  globex: "pk_native_globex_0123456789",
  initech: "pk_native_initech_0123456789",
  hooli: "pk_native_hooli_0123456789",
  umbrella: "pk_native_umbrella_0123456789",
  wayne: "pk_native_wayne_0123456789",
} as const;
type Consumer = keyof typeof KEYS;

/**
 * Limits each Envoy counts, through real Envoys: two Envoys of one gateway group, no rate-limit
 * service at all, a per-consumer limit of 20 a minute. Each Envoy holds a bucket of 20 / 2 for each
 * consumer (and each anonymous address); when one Envoy leaves, the other's bucket becomes the
 * whole limit. The Envoys share the listening port (SO_REUSEPORT, as on one host); each request is
 * sent on a kept-alive connection known to reach a chosen Envoy (`openLane`).
 *
 * Envoy's buckets refill continuously (20 a minute for the group: one token per 6 s per Envoy of
 * two), so a count may exceed the bucket by the tokens refilled while the test sent: each check
 * allows floor(seconds it took × the Envoy's rate), measured, which is 0 whenever the requests take
 * less than 6 s, as they do on loopback. Nothing is asserted on time itself.
 */
describe("limits each Envoy counts, divided among the Envoys of the group", () => {
  const track = useEnvoyLogs();
  let api: AdminHandle;
  let app: HttpUpstream;
  let authz: AuthzServer;
  let port: number;
  const envoys: EnvoyProcess[] = [];
  const lanes: Lane[] = [];

  const put = async (p: string, body: object) => {
    const res = await api.call("PUT", `${p}?wait=applied&timeout=20s`, { body });
    expect(res.status, res.text).toBeLessThan(300);
  };

  /** The gateway group, with no rateLimit service: it needs none for limits its Envoys count. */
  const putGateway = (settings: object = {}) =>
    put("/api/v1/gateways/edge", {
      name: "edge",
      listeners: [{ name: "http", port, address: "127.0.0.1" }],
      extAuthz: { upstream: "ext-authz", timeoutMs: 2_000 },
      ...settings,
    });

  /** The bucket size the Envoy's filter config (by ECDS) gives each consumer, as its config_dump shows. */
  async function bucketOf(e: EnvoyProcess): Promise<number | undefined> {
    const config = (await e.extensionConfigs()).get("portico.caller_limits");
    const d = (config?.descriptors ?? []).find((x: any) =>
      x.entries.some((en: any) => en.key === "limit" && en.value === "native.limits[0]"),
    );
    return d?.token_bucket?.max_tokens;
  }

  const waitForBuckets = (es: EnvoyProcess[], size: number) =>
    waitFor(async () => ((await Promise.all(es.map(bucketOf))).every((b) => b === size) ? true : undefined), {
      what: `each Envoy's bucket to be ${size}`,
      timeoutMs: 20_000,
    });

  async function lane(target: number, localAddress = "127.0.0.1", among = envoys): Promise<Lane> {
    const l = await openLane({
      envoys: among,
      target,
      port,
      localAddress,
      probePath: "/probe",
      counter: "http.edge_http.downstream_cx_total",
    });
    lanes.push(l);
    return l;
  }

  /**
   * Sends `n` requests of one caller on a lane and counts the admitted ones, with the tokens the
   * Envoy may have refilled meanwhile (its share of the rate: LIMIT per WINDOW_S × members).
   */
  async function send(l: Lane, n: number, who: Consumer | "anonymous", members: number, path = "/limited") {
    const headers: Record<string, string> = who === "anonymous" ? {} : { "x-api-key": KEYS[who] };
    const started = performance.now();
    let admitted = 0;
    for (let i = 0; i < n; i++) {
      const res = await l.get(path, headers);
      if (res.status === 200) {
        admitted++;
        // The gateway's default (`rateLimitHeaders: exact`): an Envoy's bucket is not reported.
        expect(res.headers["x-ratelimit-limit"]).toBeUndefined();
      } else {
        expect(res.status).toBe(429);
        // A token is back within the window × Envoys / limit: 60 s × 2 / 20 = 6 s with two Envoys.
        const retryAfter = String(Math.ceil((WINDOW_S * members) / LIMIT));
        expect(res.headers["retry-after"]).toBe(retryAfter);
        expect(JSON.parse(res.body).code).toBe("rate_limited");
        // The group's limit, however many Envoys share it.
        expect(res.headers["x-ratelimit-limit"]).toBe(`${LIMIT}, ${LIMIT};w=${WINDOW_S}`);
        expect(res.headers["x-ratelimit-remaining"]).toBe("0");
        expect(res.headers["x-ratelimit-reset"]).toBe(retryAfter);
      }
    }
    const seconds = (performance.now() - started) / 1000;
    return { admitted, refill: Math.floor((seconds * LIMIT) / (WINDOW_S * members)) };
  }

  beforeAll(async () => {
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
    // Membership changes are divided again after 100 ms of quiet, rather than 1 s.
    api = await startAdmin({ membershipDebounceMs: 100 });
    await put("/api/v1/upstreams/app", { name: "app", endpoints: [{ host: "127.0.0.1", port: app.port }] });
    await put("/api/v1/upstreams/ext-authz", {
      name: "ext-authz",
      protocol: "grpc",
      endpoints: [{ host: "127.0.0.1", port: authzPort }],
    });
    await putGateway();
    await put("/api/v1/authPolicies/keys", { name: "keys", accept: ["apiKey"], allowAnonymous: true });
    await put("/api/v1/rateLimitPolicies/native", {
      name: "native",
      limits: [{ requests: LIMIT, per: "minute" }],
    });
    await put("/api/v1/routes/limited", {
      name: "limited",
      gateway: "edge",
      match: { pathPrefix: "/limited" },
      upstream: "app",
      authPolicy: "keys",
      rateLimitPolicy: "native",
    });
    await put("/api/v1/routes/probe", {
      name: "probe",
      gateway: "edge",
      match: { path: "/probe" },
      upstream: "app",
    });
    for (const id of ["edge-a", "edge-b"]) {
      const e = track(await startEnvoy({ nodeId: id, group: "edge", xdsPort: api.cp.xdsPort }));
      envoys.push(e);
      await e.waitReady({ timeoutMs: 20_000 });
    }
    await waitForBuckets(envoys, LIMIT / 2);
  }, 90_000);

  afterAll(async () => {
    for (const l of lanes) l.close();
    await Promise.all(envoys.map((e) => e.stop()));
    await api?.stop();
    await authz?.stop();
    await app?.close();
  });

  it("pushes each Envoy half the limit, and no call to a rate-limit service", async () => {
    for (const e of envoys) {
      expect(await bucketOf(e)).toBe(LIMIT / 2);
      const dump = await e.configDump();
      const listeners = dump.configs.find((c: any) => c["@type"].endsWith(".ListenersConfigDump"));
      const hcm = listeners.dynamic_listeners[0].active_state.listener.filter_chains[0].filters[0];
      const filters = hcm.typed_config.http_filters.map((f: { name: string }) => f.name);
      expect(filters).toContain("portico.caller_limits");
      expect(filters).not.toContain("envoy.filters.http.ratelimit");
    }
  });

  it("admits exactly the limit when a consumer's requests are split evenly between the Envoys", async () => {
    const [a, b] = [await lane(0), await lane(1)];
    const onA = await send(a, 15, "acme", 2);
    const onB = await send(b, 15, "acme", 2);
    expect(onA.admitted).toBeGreaterThanOrEqual(LIMIT / 2);
    expect(onA.admitted).toBeLessThanOrEqual(LIMIT / 2 + onA.refill);
    expect(onB.admitted).toBeGreaterThanOrEqual(LIMIT / 2);
    expect(onB.admitted).toBeLessThanOrEqual(LIMIT / 2 + onB.refill);
    // Another consumer has buckets of its own.
    expect((await send(a, 1, "globex", 2)).admitted).toBe(1);
  });

  it("admits at most the limit, and at least each Envoy's share, when the split is uneven", async () => {
    const [a, b] = [await lane(0), await lane(1)];
    // 24 to one Envoy, 6 to the other: min(24, 10) + min(6, 10) = 16.
    const onA = await send(a, 24, "initech", 2);
    const onB = await send(b, 6, "initech", 2);
    const admitted = onA.admitted + onB.admitted;
    expect(admitted).toBeGreaterThanOrEqual(16);
    expect(admitted).toBeLessThanOrEqual(Math.min(LIMIT, 16 + onA.refill + onB.refill));
    // All to one Envoy: the stated lower bound, floor(limit / Envoys) = 10, is what it admits.
    const alone = await send(a, 30, "hooli", 2);
    expect(alone.admitted).toBeGreaterThanOrEqual(LIMIT / 2);
    expect(alone.admitted).toBeLessThanOrEqual(LIMIT / 2 + alone.refill);
  });

  it("limits anonymous callers per address, each address on its own buckets", async () => {
    const [a, b] = [await lane(0, "127.0.0.2"), await lane(1, "127.0.0.2")];
    const onA = await send(a, 12, "anonymous", 2);
    const onB = await send(b, 12, "anonymous", 2);
    expect(onA.admitted + onB.admitted).toBeGreaterThanOrEqual(LIMIT);
    expect(onA.admitted + onB.admitted).toBeLessThanOrEqual(LIMIT + onA.refill + onB.refill);
    // Another address is not held by the first one's count.
    const other = await lane(0, "127.0.0.3");
    const fresh = await send(other, 12, "anonymous", 2);
    expect(fresh.admitted).toBeGreaterThanOrEqual(LIMIT / 2);
    expect(fresh.admitted).toBeLessThanOrEqual(LIMIT / 2 + fresh.refill);
  });

  it("keeps every bucket when the route table is pushed again, and shares them between the routes of a policy", async () => {
    const a = await lane(0, "127.0.0.5");
    const first = await send(a, LIMIT / 2 + 2, "globex", 2);
    expect(first.admitted).toBeLessThanOrEqual(LIMIT / 2 + first.refill);
    // A route of the same policy and an unrelated one: a new route table for every Envoy.
    const before = await envoys[0]!.stat("listener_manager.lds.update_success");
    await put("/api/v1/routes/also-limited", {
      name: "also-limited",
      gateway: "edge",
      match: { pathPrefix: "/also-limited" },
      upstream: "app",
      authPolicy: "keys",
      rateLimitPolicy: "native",
    });
    await put("/api/v1/routes/unrelated", {
      name: "unrelated",
      gateway: "edge",
      match: { path: "/unrelated" },
      upstream: "app",
    });
    // Neither listener nor filter config was pushed again: only the route tables.
    expect(await envoys[0]!.stat("listener_manager.lds.update_success")).toBe(before);
    // globex's bucket on this Envoy is as empty as it was, on both routes of the policy.
    const again = await send(a, 3, "globex", 2);
    const other = await send(a, 3, "globex", 2, "/also-limited");
    expect(again.admitted).toBeLessThanOrEqual(first.refill + again.refill);
    expect(other.admitted).toBeLessThanOrEqual(first.refill + again.refill + other.refill);
    // A consumer the Envoy has not seen gets its share on the new route too.
    expect((await send(a, 1, "wayne", 2, "/also-limited")).admitted).toBe(1);
  });

  it("gives the remaining Envoy the whole limit when the other leaves, and halves it when one joins", async () => {
    const a = await lane(0, "127.0.0.4");
    await envoys[1]!.stop();
    await waitForBuckets([envoys[0]!], LIMIT);
    const node = await api.call("GET", "/api/v1/status");
    expect(node.json.nodes.filter((n: { group: string }) => n.group === "edge")).toHaveLength(1);
    // The whole limit on the one Envoy left, for a consumer no Envoy has seen.
    const whole = await send(a, LIMIT + 5, "umbrella", 1);
    expect(whole.admitted).toBeGreaterThanOrEqual(LIMIT);
    expect(whole.admitted).toBeLessThanOrEqual(LIMIT + whole.refill);
    // An Envoy joins: both get half again.
    const c = track(await startEnvoy({ nodeId: "edge-c", group: "edge", xdsPort: api.cp.xdsPort }));
    envoys[1] = c;
    await c.waitReady({ timeoutMs: 20_000 });
    await waitForBuckets(envoys, LIMIT / 2);
  }, 60_000);

  it("reports each Envoy's bucket on every answer when the gateway says always, and nothing when off", async () => {
    const headersOf = async (e: EnvoyProcess) =>
      (await e.extensionConfigs()).get("portico.caller_limits")?.enable_x_ratelimit_headers;
    await putGateway({ rateLimitHeaders: "always" });
    await waitFor(
      async () => ((await Promise.all(envoys.map(headersOf))).every((h) => h) ? true : undefined),
      {
        what: "Envoy's own rate-limit headers in each Envoy's filter config",
        timeoutMs: 20_000,
      },
    );
    const a = await lane(0, "127.0.0.6");
    const key = { "x-api-key": KEYS.acme };
    const first = await a.get("/limited", key);
    expect(first.status).toBe(200);
    // This Envoy's bucket: its share, 10 tokens.
    expect(first.headers["x-ratelimit-limit"]).toBe(String(LIMIT / 2));
    expect(Number(first.headers["x-ratelimit-remaining"])).toBeLessThan(LIMIT / 2);
    let refused;
    for (let i = 0; i < LIMIT && !refused; i++) {
      const res = await a.get("/limited", key);
      if (res.status === 429) refused = res;
    }
    expect(refused?.headers["x-ratelimit-remaining"]).toBe("0");
    expect(refused?.headers["retry-after"]).toBe(String((WINDOW_S * 2) / LIMIT));

    await putGateway({ rateLimitHeaders: "off" });
    await waitFor(
      async () => ((await Promise.all(envoys.map(headersOf))).some((h) => h) ? undefined : true),
      {
        what: "no rate-limit headers in any Envoy's filter config",
        timeoutMs: 20_000,
      },
    );
    let quiet;
    for (let i = 0; i <= LIMIT && !quiet; i++) {
      const res = await a.get("/limited", { "x-api-key": KEYS.globex });
      expect(res.headers["x-ratelimit-limit"]).toBeUndefined();
      if (res.status === 429) quiet = res;
    }
    expect(quiet?.headers["retry-after"]).toBe(String((WINDOW_S * 2) / LIMIT));
    expect(quiet?.headers["x-ratelimit-remaining"]).toBeUndefined();
  }, 60_000);
});
