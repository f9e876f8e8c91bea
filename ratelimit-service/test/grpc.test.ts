/** The service over real gRPC, called the way Envoy calls it. */
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ManualClock } from "../src/limiter/clock.js";
import { MemoryLimiter } from "../src/limiter/memory.js";
import { createRateLimitClient, type RateLimitClient } from "../src/service/codec.js";
import { matchDescriptor } from "../src/config/match.js";
import { healthServiceDefinition } from "@portico/common";
import { RateLimitMetrics } from "../src/service/metrics.js";
import { startRateLimitService, type RateLimitServer } from "../src/service/server.js";
import { d, req, yamlConfig } from "./helpers.js";

const config = yamlConfig(`
domain: edge
descriptors:
  - key: api_key
    rate_limit: { unit: minute, requests_per_unit: 3, name: per-key }
  - key: internal
    rate_limit: { unlimited: true }
  - key: quota
    rate_limits:
      - { unit: second, requests_per_unit: 100, algorithm: token_bucket }
      - { unit: month, requests_per_unit: 5, calendar: true }
`);

describe("ShouldRateLimit over gRPC", () => {
  const clock = new ManualClock(Date.parse("2030-03-31T23:59:30Z"));
  const limiter = new MemoryLimiter({ clock });
  let server: RateLimitServer;
  let client: RateLimitClient;

  beforeAll(async () => {
    server = await startRateLimitService({ config, limiter, port: 0 });
    client = createRateLimitClient(server.address);
  });
  afterAll(async () => {
    client.close();
    await server.stop();
    await limiter.close();
  });

  it("answers per descriptor with the limit, what remains and the reset; key A is refused while key B passes", async () => {
    for (let i = 0; i < 3; i++) {
      const r = await client.shouldRateLimit(req("edge", d("api_key=A")));
      expect(r.overall_code).toBe("OK");
      expect(r.statuses[0]).toMatchObject({
        code: "OK",
        current_limit: { name: "per-key", requests_per_unit: 3, unit: "MINUTE" },
        limit_remaining: 2 - i,
        duration_until_reset: { seconds: 30 },
      });
    }
    const refused = await client.shouldRateLimit(req("edge", d("api_key=A"), d("api_key=B")));
    expect(refused.overall_code).toBe("OVER_LIMIT");
    expect(refused.statuses.map((s) => s.code)).toEqual(["OVER_LIMIT", "OK"]);
    expect(refused.response_headers_to_add).toMatchObject([{ key: "retry-after", value: "30" }]);
  });

  it("unlimited answers OK with limit_remaining 4294967295", async () => {
    const r = await client.shouldRateLimit(req("edge", d("internal=x")));
    expect(r.statuses[0]).toMatchObject({ code: "OK", limit_remaining: 4_294_967_295 });
  });

  it("hits_addend per request, overridden per descriptor", async () => {
    const r = await client.shouldRateLimit({
      domain: "edge",
      hits_addend: 2,
      descriptors: [
        { entries: [{ key: "quota", value: "q1" }] },
        { entries: [{ key: "quota", value: "q2" }], hits_addend: { value: 4 } },
      ],
    });
    expect(r.statuses.map((s) => s.limit_remaining)).toEqual([3, 1]);
    // A monthly quota: the next request in April starts again.
    const over = await client.shouldRateLimit(req("edge", d("quota=q2"), d("quota=q2")));
    expect(over.statuses.map((s) => s.code)).toEqual(["OK", "OVER_LIMIT"]);
    clock.set(Date.parse("2030-04-01T00:00:00Z"));
    expect((await client.shouldRateLimit(req("edge", d("quota=q2")))).statuses[0]).toMatchObject({
      code: "OK",
      limit_remaining: 4,
      current_limit: { unit: "MONTH", requests_per_unit: 5 },
    });
  });

  it("an empty domain or no descriptors is INVALID_ARGUMENT", async () => {
    await expect(client.shouldRateLimit(req("", d("api_key=A")))).rejects.toMatchObject({
      code: grpc.status.INVALID_ARGUMENT,
      details: "rate limit domain must not be empty",
    });
    await expect(client.shouldRateLimit(req("edge"))).rejects.toMatchObject({
      code: grpc.status.INVALID_ARGUMENT,
      details: "rate limit descriptor list must not be empty",
    });
    const invalid = await server.metrics.invalidRequests.get();
    expect(invalid.values[0]!.value).toBe(2);
  });

  it("serves grpc.health.v1: Check and Watch", async () => {
    const Ctor = grpc.makeGenericClientConstructor(healthServiceDefinition(), "Health");
    const health = new Ctor(server.address, grpc.credentials.createInsecure()) as unknown as {
      Check(
        r: { service: string },
        cb: (e: grpc.ServiceError | null, res?: { status: string }) => void,
      ): void;
      Watch(r: { service: string }): grpc.ClientReadableStream<{ status: string }>;
      close(): void;
    };
    const check = (service: string) =>
      new Promise<{ status: string }>((resolve, reject) =>
        health.Check({ service }, (e, res) => (e ? reject(e) : resolve(res!))),
      );
    expect(await check("")).toEqual({ status: "SERVING" });
    expect(await check("envoy.service.ratelimit.v3.RateLimitService")).toEqual({ status: "SERVING" });
    await expect(check("nope")).rejects.toMatchObject({ code: grpc.status.NOT_FOUND });
    const stream = health.Watch({ service: "" });
    // Cancelling below ends the stream with CANCELLED, which is the expected end.
    stream.on("error", () => undefined);
    const seen: string[] = [];
    await new Promise<void>((resolve) => {
      stream.on("data", (m: { status: string }) => {
        seen.push(m.status);
        if (seen.length === 1) server.health.set("NOT_SERVING", "");
        if (seen.length === 2) resolve();
      });
    });
    expect(seen).toEqual(["SERVING", "NOT_SERVING"]);
    stream.cancel();
    health.close();
    server.health.set("SERVING", "");
  });

  it("applies a limit Envoy sends in the descriptor (from dynamic metadata), as upstream", async () => {
    const call = () =>
      client.shouldRateLimit({
        domain: "edge",
        descriptors: [
          { entries: [{ key: "tenant", value: "t1" }], limit: { requests_per_unit: 2, unit: "HOUR" } },
        ],
      });
    const codes = [];
    for (let i = 0; i < 3; i++) codes.push((await call()).overall_code);
    expect(codes).toEqual(["OK", "OK", "OVER_LIMIT"]);
  });

  it("takes a new config without a restart", async () => {
    server.setConfig(
      yamlConfig(
        "domain: edge\ndescriptors: [{key: api_key, rate_limit: {unit: hour, requests_per_unit: 1}}]",
      ),
    );
    const codes = [];
    for (let i = 0; i < 2; i++)
      codes.push((await client.shouldRateLimit(req("edge", d("api_key=C")))).overall_code);
    expect(codes).toEqual(["OK", "OVER_LIMIT"]);
    server.setConfig(config);
  });

  it("counts per rule with the rule's name as the label", async () => {
    const text = await server.metrics.registry.metrics();
    expect(text).toMatch(/portico_ratelimit_over_limit_total\{domain="edge",rule="per-key"\} 1/);
    expect(text).toMatch(/portico_ratelimit_total_hits_total\{domain="edge",rule="per-key"\} 5/);
    // Key A's third call used 3 of 3 (above 80%); its first two and key B's call did not.
    expect(text).toMatch(/portico_ratelimit_near_limit_total\{domain="edge",rule="per-key"\} 1/);
  });
});

describe("metric labels", () => {
  it("add a detailed rule's values only up to a bound, then share one series", () => {
    const metrics = new RateLimitMetrics(undefined, 3);
    const rule = matchDescriptor(config, "edge", [{ key: "api_key", value: "x" }])!.set.limits[0]!;
    const labels = Array.from({ length: 10 }, (_, i) => metrics.labels(rule, `api_key=k${i}`).rule);
    expect(new Set(labels).size).toBe(4);
    expect(labels.slice(3).every((l) => l === "per-key|…other")).toBe(true);
    expect(metrics.labels(rule, "api_key=k1").rule).toBe("per-key|api_key=k1");
  });
});
