import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  freePort,
  httpGet,
  startAdmin,
  startEnvoy,
  waitFor,
  type AdminHandle,
  type EnvoyProcess,
} from "../harness/index.js";
import { useEnvoyLogs } from "../harness/logs.js";

/** A backend that succeeds on every `succeedEvery`-th request and answers 503 to the others (1 = never fails). */
async function flakyUpstream(name: string, succeedEvery: number) {
  let count = 0;
  let served = 0;
  const server = http.createServer((req, res) => {
    req.resume();
    count++;
    if (count % succeedEvery !== 0) {
      res.writeHead(503, { "x-upstream": name }).end("unavailable");
      return;
    }
    served++;
    res.writeHead(200, { "x-upstream": name }).end(JSON.stringify({ upstream: name }));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    port: (server.address() as AddressInfo).port,
    get requests() {
      return count;
    },
    get served() {
      return served;
    },
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

/** Retries and outlier detection configured through the admin API, exercised through a real Envoy. */
describe("resilience through a real Envoy", () => {
  const track = useEnvoyLogs();
  let api: AdminHandle;
  let envoy: EnvoyProcess;
  let port: number;
  const closers: (() => Promise<void>)[] = [];

  beforeAll(async () => {
    port = await freePort();
    api = await startAdmin();
    await api.call("PUT", "/api/v1/gateways/edge", {
      body: { name: "edge", listeners: [{ name: "http", port, address: "127.0.0.1" }] },
    });
    envoy = track(await startEnvoy({ nodeId: "edge-r", group: "edge", xdsPort: api.cp.xdsPort }));
  });

  afterAll(async () => {
    await envoy?.stop();
    await api?.stop();
    for (const c of closers) await c();
  });

  /** A route on `/<name>` from `primary` (at `port`) failing over to `fallback`, applied by Envoy. */
  async function failoverRoute(name: string, primary: { name: string; port: number }, fallback: string) {
    await api.call("PUT", `/api/v1/upstreams/${primary.name}`, {
      body: { name: primary.name, endpoints: [{ host: "127.0.0.1", port: primary.port }] },
    });
    const put = await api.call("PUT", `/api/v1/routes/${name}?wait=applied`, {
      body: {
        name,
        gateway: "edge",
        match: { pathPrefix: `/${name}` },
        upstream: primary.name,
        fallback: { upstream: fallback },
      },
    });
    expect(put.json.rollout.applied).toBe(true);
  }

  it("retries a flaky upstream into success", async () => {
    // Two of every three requests fail; three attempts always find the good one.
    const flaky = await flakyUpstream("flaky", 3);
    closers.push(flaky.close);
    await api.call("PUT", "/api/v1/upstreams/flaky", {
      body: { name: "flaky", endpoints: [{ host: "127.0.0.1", port: flaky.port }] },
    });
    const put = await api.call("PUT", "/api/v1/routes/flaky?wait=applied", {
      body: {
        name: "flaky",
        gateway: "edge",
        match: { pathPrefix: "/flaky" },
        upstream: "flaky",
        retries: { attempts: 2, on: ["5xx"], perTryTimeoutMs: 500, backoff: { baseMs: 1, maxMs: 5 } },
      },
    });
    expect(put.json.rollout.applied).toBe(true);
    const statuses: number[] = [];
    for (let i = 0; i < 20; i++) statuses.push((await httpGet(`http://127.0.0.1:${port}/flaky/x`)).status);
    expect(statuses).toEqual(Array(20).fill(200));
    expect(flaky.requests).toBe(60);
    expect(await envoy.stat("cluster.flaky.upstream_rq_retry_success")).toBeGreaterThan(0);
  });

  it("ejects a dead endpoint and sends traffic to the healthy one", async () => {
    const dead = await flakyUpstream("dead", Number.MAX_SAFE_INTEGER); // fails every request
    closers.push(dead.close);
    const healthy = await flakyUpstream("healthy", 1); // never fails
    closers.push(healthy.close);
    const deadPort = dead.port;

    await api.call("PUT", "/api/v1/upstreams/pool", {
      body: {
        name: "pool",
        endpoints: [
          { host: "127.0.0.1", port: deadPort },
          { host: "127.0.0.1", port: healthy.port },
        ],
        outlierDetection: {
          consecutive5xx: 2,
          intervalMs: 100,
          baseEjectionMs: 30_000,
          maxEjectionPercent: 50,
        },
      },
    });
    const put = await api.call("PUT", "/api/v1/routes/pool?wait=applied", {
      body: { name: "pool", gateway: "edge", match: { pathPrefix: "/pool" }, upstream: "pool" },
    });
    expect(put.json.rollout.applied).toBe(true);
    await waitFor(async () => (await envoy.endpoints("pool")).length === 2 || undefined, {
      what: "both endpoints",
    });
    // Drive traffic until the dead endpoint is ejected.
    await waitFor(
      async () => {
        for (let i = 0; i < 10; i++) await httpGet(`http://127.0.0.1:${port}/pool/x`);
        return ((await envoy.stat("cluster.pool.outlier_detection.ejections_active")) ?? 0) >= 1 || undefined;
      },
      { what: "the dead endpoint to be ejected", timeoutMs: 10_000 },
    );
    const after: string[] = [];
    for (let i = 0; i < 20; i++) {
      const res = await httpGet(`http://127.0.0.1:${port}/pool/x`);
      after.push(`${res.status} ${res.headers["x-upstream"]}`);
    }
    expect(after).toEqual(Array(20).fill("200 healthy"));
  });

  it("serves the configured static fallback when every endpoint is down", async () => {
    const gone = await freePort(); // nothing listens there
    await api.call("PUT", "/api/v1/upstreams/gone", {
      body: { name: "gone", endpoints: [{ host: "127.0.0.1", port: gone }] },
    });
    const put = await api.call("PUT", "/api/v1/routes/catalog?wait=applied", {
      body: {
        name: "catalog",
        gateway: "edge",
        match: { pathPrefix: "/catalog" },
        upstream: "gone",
        fallback: { status: 200, body: '{"items":[],"degraded":true}', contentType: "application/json" },
      },
    });
    expect(put.json.rollout.applied).toBe(true);
    const res = await httpGet(`http://127.0.0.1:${port}/catalog/1`);
    expect(res.status).toBe(200);
    expect(res.headers["x-portico-degraded"]).toBe("fallback");
    expect(res.headers["content-type"]).toBe("application/json");
    expect(JSON.parse(res.body)).toEqual({ items: [], degraded: true });
  });

  it("fails over to the fallback upstream once the primary's endpoints are ejected", async () => {
    const dead = await freePort();
    const backup = await flakyUpstream("backup", 1);
    closers.push(backup.close);
    await api.call("PUT", "/api/v1/upstreams/primary", {
      body: {
        name: "primary",
        endpoints: [{ host: "127.0.0.1", port: dead }],
        outlierDetection: {
          consecutive5xx: 1,
          intervalMs: 100,
          baseEjectionMs: 30_000,
          maxEjectionPercent: 100,
        },
      },
    });
    await api.call("PUT", "/api/v1/upstreams/backup", {
      body: { name: "backup", endpoints: [{ host: "127.0.0.1", port: backup.port }] },
    });
    const put = await api.call("PUT", "/api/v1/routes/failover?wait=applied", {
      body: {
        name: "failover",
        gateway: "edge",
        match: { pathPrefix: "/failover" },
        upstream: "primary",
        fallback: { upstream: "backup" },
      },
    });
    expect(put.json.rollout.applied).toBe(true);
    await waitFor(
      async () => {
        const res = await httpGet(`http://127.0.0.1:${port}/failover/x`);
        return res.status === 200 && res.headers["x-upstream"] === "backup" ? res : undefined;
      },
      { what: "traffic to fail over to the backup upstream", timeoutMs: 10_000 },
    );
    const after: string[] = [];
    for (let i = 0; i < 10; i++) {
      const res = await httpGet(`http://127.0.0.1:${port}/failover/x`);
      after.push(`${res.status} ${res.headers["x-upstream"]}`);
    }
    expect(after).toEqual(Array(10).fill("200 backup"));
  });

  it("fails over from a dead primary without health checks on the first request, marked degraded", async () => {
    const dead = await freePort(); // nothing listens there
    const spare = await flakyUpstream("spare", 1);
    closers.push(spare.close);
    await api.call("PUT", "/api/v1/upstreams/spare", {
      body: { name: "spare", endpoints: [{ host: "127.0.0.1", port: spare.port }] },
    });
    await failoverRoute("cold", { name: "gone-primary", port: dead }, "spare");
    await waitFor(async () => (await envoy.endpoints("spare~fallback")).length === 1 || undefined, {
      what: "the fallback's endpoints",
    });
    // No request has failed before this one: the refused connection is retried on the fallback.
    const first = await httpGet(`http://127.0.0.1:${port}/cold/1`);
    expect(first.status).toBe(200);
    expect(first.headers["x-upstream"]).toBe("spare");
    expect(first.headers["x-portico-degraded"]).toBe("fallback");
    // The primary's endpoint is ejected: the next requests go straight to the fallback.
    await envoy.waitForStat(
      "cluster.gone-primary~primary.outlier_detection.ejections_active",
      (n) => n === 1,
      "the dead endpoint to be ejected",
    );
    for (let i = 0; i < 5; i++) {
      const res = await httpGet(`http://127.0.0.1:${port}/cold/${i}`);
      expect(`${res.status} ${res.headers["x-upstream"]} ${res.headers["x-portico-degraded"]}`).toBe(
        "200 spare fallback",
      );
    }
    // One retry in all: once ejected, the primary is not tried again.
    expect(await envoy.stat("cluster.gone-primary~or~spare.upstream_rq_retry")).toBe(1);
  });

  it("marks only the fallback's answers degraded: a healthy primary's are not", async () => {
    const primary = await flakyUpstream("live-primary", 1);
    closers.push(primary.close);
    await failoverRoute("warm", { name: "live-primary", port: primary.port }, "spare");
    const res = await waitFor(
      async () => {
        const r = await httpGet(`http://127.0.0.1:${port}/warm/1`);
        return r.status === 200 ? r : undefined;
      },
      { what: "the warm failover route" },
    );
    expect(res.headers["x-upstream"]).toBe("live-primary");
    expect(res.headers["x-portico-degraded"]).toBeUndefined();
  });
});
