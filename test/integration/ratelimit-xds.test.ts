import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { healthServiceDefinition } from "@portico/common";
import { REPO_ROOT } from "@portico/envoy";
import {
  RATE_LIMIT_CONFIG_TYPE_URL,
  XdsConfigSource,
  MemoryLimiter,
  createRateLimitClient,
  type RateLimitClient,
  startRateLimitService,
  type RateLimitServer,
  type RateLimitConfig,
} from "@portico/ratelimit-service";
import { freePort, startAdmin, waitFor, type AdminHandle } from "../harness/index.js";

/** The descriptor Envoy sends for an anonymous caller of a `by: ip` policy. */
const byIp = (policy: string, ip: string) => ({
  domain: "edge",
  descriptors: [
    {
      entries: [
        { key: "policy", value: policy },
        { key: "remote_address", value: ip },
      ],
    },
  ],
});

function healthOf(address: string): Promise<string> {
  const Ctor = grpc.makeGenericClientConstructor(healthServiceDefinition(), "Health");
  const client = new Ctor(address, grpc.credentials.createInsecure()) as unknown as grpc.Client & {
    Check(req: object, cb: (err: grpc.ServiceError | null, res?: { status: string }) => void): void;
  };
  return new Promise((resolve, reject) =>
    client.Check({ service: "" }, (err, res) => {
      client.close();
      if (err) reject(err);
      else resolve(res!.status);
    }),
  );
}

/**
 * The rate-limit service as an xDS client of the control plane: what the admin API writes reaches
 * it as versioned, acknowledged config; what it cannot load it refuses, visibly, and keeps going.
 */
describe("rate-limit service config over xDS", () => {
  let api: AdminHandle;
  let server: RateLimitServer;
  let limiter: MemoryLimiter;
  let client: RateLimitClient;
  let source: XdsConfigSource | undefined;
  const rejected: string[] = [];

  const policy = (name: string, requests: number, extra: object = {}) => ({
    name,
    limits: [{ requests, per: "hour", by: "ip", algorithm: "token_bucket" }],
    ...extra,
  });
  const node = async () =>
    (await api.call("GET", "/api/v1/status")).json.nodes.find((n: any) => n.id === "ratelimit-1");

  beforeAll(async () => {
    // Semantic checks off, so that a policy only the service refuses can reach it.
    api = await startAdmin({ skipSemanticChecks: true });
    const put = async (p: string, body: object) =>
      expect((await api.call("PUT", p, { body })).status).toBeLessThan(300);
    await put("/api/v1/upstreams/rls", {
      name: "rls",
      protocol: "grpc",
      endpoints: [{ host: "127.0.0.1", port: 8081 }],
    });
    await put("/api/v1/upstreams/app", { name: "app", endpoints: [{ host: "127.0.0.1", port: 8080 }] });
    await put("/api/v1/gateways/edge", {
      name: "edge",
      listeners: [{ name: "http", port: 10000 }],
      rateLimit: { upstream: "rls" },
    });
    for (const p of [policy("one", 3), policy("two", 5)]) {
      await put(`/api/v1/rateLimitPolicies/${p.name}`, p);
      await put(`/api/v1/routes/${p.name}`, {
        name: p.name,
        gateway: "edge",
        match: { pathPrefix: `/${p.name}` },
        upstream: "app",
        rateLimitPolicy: p.name,
      });
    }
    limiter = new MemoryLimiter();
    server = await startRateLimitService({ limiter, port: 0 });
    client = createRateLimitClient(server.address);
  });

  afterAll(async () => {
    source?.close();
    client?.close();
    await server?.stop();
    await limiter?.close();
    await api?.stop();
  });

  it("is NOT_SERVING and answers UNAVAILABLE until its first config arrives, then serves it", async () => {
    expect(await healthOf(server.address)).toBe("NOT_SERVING");
    await expect(client.shouldRateLimit(byIp("one", "10.0.0.1"))).rejects.toMatchObject({
      code: grpc.status.UNAVAILABLE,
    });
    source = new XdsConfigSource({
      target: `127.0.0.1:${api.cp.xdsPort}`,
      nodeId: "ratelimit-1",
      onConfig: (c) => server.setConfig(c),
      onReject: (reason) => rejected.push(reason),
    });
    await waitFor(() => server.ready || undefined, { what: "the first config", timeoutMs: 10_000 });
    expect(await healthOf(server.address)).toBe("SERVING");
    const answers = [];
    for (let i = 0; i < 4; i++)
      answers.push((await client.shouldRateLimit(byIp("one", "10.0.0.1"))).overall_code);
    expect(answers).toEqual(["OK", "OK", "OK", "OVER_LIMIT"]);
  });

  it("shows as an ACKing node of the policy group in /api/v1/status", async () => {
    const n = await waitFor(
      async () => ((await node())?.types[RATE_LIMIT_CONFIG_TYPE_URL]?.ackedVersion ? node() : undefined),
      {
        what: "the ACK in /status",
      },
    );
    expect(n).toMatchObject({ group: "portico:policy" });
    expect(n.types[RATE_LIMIT_CONFIG_TYPE_URL].lastNack).toBeUndefined();
  });

  it("a change through the admin API reaches the service; counters of unchanged limits carry on", async () => {
    for (let i = 0; i < 2; i++) await client.shouldRateLimit(byIp("two", "10.0.0.2"));
    const before = (await node()).types[RATE_LIMIT_CONFIG_TYPE_URL].ackedVersion;
    const res = await api.call("PUT", "/api/v1/rateLimitPolicies/one?wait=applied&timeout=10s", {
      body: policy("one", 10),
    });
    expect(res.status).toBe(200);
    expect(res.json.rollout.nodes).toContainEqual(
      expect.objectContaining({ id: "ratelimit-1", state: "applied" }),
    );
    expect((await node()).types[RATE_LIMIT_CONFIG_TYPE_URL].ackedVersion).not.toBe(before);
    // Policy one's limit is 10 now.
    const one = [];
    for (let i = 0; i < 11; i++)
      one.push((await client.shouldRateLimit(byIp("one", "10.0.0.3"))).overall_code);
    expect(one).toEqual([...Array(10).fill("OK"), "OVER_LIMIT"]);
    // Policy two did not change: the 2 requests before the reload still count against its 5.
    const two = [];
    for (let i = 0; i < 4; i++)
      two.push((await client.shouldRateLimit(byIp("two", "10.0.0.2"))).overall_code);
    expect(two).toEqual(["OK", "OK", "OK", "OVER_LIMIT"]);
  });

  it("reads the same config over the delta protocol", async () => {
    let got: RateLimitConfig | undefined;
    const delta = new XdsConfigSource({
      target: `127.0.0.1:${api.cp.xdsPort}`,
      nodeId: "ratelimit-delta",
      protocol: "delta",
      onConfig: (c) => (got = c),
    });
    try {
      const c = await waitFor(() => got, { what: "the config over delta" });
      expect([...c.domains.get("edge")!.root.exact.keys()].sort()).toEqual([
        "policy\u0000one",
        "policy\u0000two",
      ]);
    } finally {
      delta.close();
    }
  });

  it("refuses a config it cannot load with a NACK naming the problem, and keeps the running one", async () => {
    const res = await api.call("PUT", "/api/v1/rateLimitPolicies/two?wait=applied&timeout=10s", {
      body: policy("two", 1000, {
        timeZone: "Mars/Olympus",
        limits: [{ requests: 1000, per: "day", by: "ip", enforce: "service" }],
      }),
    });
    expect(res.status).toBe(200);
    const mine = res.json.rollout.nodes.find((n: any) => n.id === "ratelimit-1");
    expect(mine).toMatchObject({ state: "nacked", type: RATE_LIMIT_CONFIG_TYPE_URL });
    expect(mine.error).toMatch(/xds:edge: .*time_zone: unknown time zone 'Mars\/Olympus'/);
    expect((await node()).types[RATE_LIMIT_CONFIG_TYPE_URL].lastNack.message).toMatch(/Mars\/Olympus/);
    expect(rejected.at(-1)).toMatch(/Mars\/Olympus/);
    // Still the old policy two: its bucket is empty.
    expect((await client.shouldRateLimit(byIp("two", "10.0.0.2"))).overall_code).toBe("OVER_LIMIT");
  });
});

/** `main.ts --xds`: the service as it is deployed, fed by the control plane. */
describe("ratelimit-service --xds", () => {
  let api: AdminHandle | undefined;
  let child: ChildProcess | undefined;

  afterAll(async () => {
    if (child && child.exitCode === null) {
      const exited = new Promise((r) => child!.once("exit", r));
      child.kill("SIGTERM");
      await exited;
    }
    await api?.stop();
  });

  it("reports itself not ready (but alive) until the control plane, started later, has sent its config", async () => {
    const [xdsPort, grpcPort, metricsPort] = [await freePort(), await freePort(), await freePort()];
    child = spawn(
      path.join(REPO_ROOT, "node_modules", ".bin", "tsx"),
      [
        path.join(REPO_ROOT, "ratelimit-service", "src", "main.ts"),
        "--xds",
        `127.0.0.1:${xdsPort}`,
        "--node-id",
        "ratelimit-main",
        "--listen",
        `127.0.0.1:${grpcPort}`,
        "--metrics-listen",
        `127.0.0.1:${metricsPort}`,
      ],
      { stdio: "ignore" },
    );
    const statusOf = (p: string) =>
      fetch(`http://127.0.0.1:${metricsPort}${p}`).then(
        (r) => r.status,
        () => 0,
      );
    await waitFor(async () => ((await statusOf("/readyz")) === 503 ? true : undefined), {
      what: "the service to start, waiting for its config",
      timeoutMs: 20_000,
    });
    expect(await statusOf("/healthz")).toBe(200);
    expect(await healthOf(`127.0.0.1:${grpcPort}`)).toBe("NOT_SERVING");

    api = await startAdmin({ xdsPort });
    const put = async (p: string, body: object) =>
      expect((await api!.call("PUT", p, { body })).status).toBeLessThan(300);
    await put("/api/v1/upstreams/rls", {
      name: "rls",
      protocol: "grpc",
      endpoints: [{ host: "127.0.0.1", port: grpcPort }],
    });
    // No route uses a policy yet: the gateway's domain arrives empty, which is a config all the same.
    await put("/api/v1/gateways/edge", {
      name: "edge",
      listeners: [{ name: "http", port: 10000 }],
      rateLimit: { upstream: "rls" },
    });
    await waitFor(async () => ((await statusOf("/readyz")) === 200 ? true : undefined), {
      what: "the service to become ready",
      timeoutMs: 20_000,
    });
    expect(await healthOf(`127.0.0.1:${grpcPort}`)).toBe("SERVING");
    const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    expect(metrics).toMatch(/^portico_ratelimit_config_updates_total\{result="accepted"\} 1$/m);
    const status = (await api.call("GET", "/api/v1/status")).json;
    expect(status.nodes.find((n: any) => n.id === "ratelimit-main")).toMatchObject({
      group: "portico:policy",
    });
  });
});
