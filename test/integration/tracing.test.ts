import { randomUUID } from "node:crypto";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { RpcTracing } from "@portico/common";
import { createTracing } from "@portico/common/tracing-sdk";
import { sha256Hex, Authorizer, AuthzServer } from "@portico/ext-authz";
import { policyOf } from "../harness/ext-authz-fixtures.js";
import {
  XdsConfigSource,
  MemoryLimiter,
  startRateLimitService,
  type RateLimitServer,
  type RateLimitConfig,
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
  type HttpUpstream,
} from "../harness/index.js";
import { useEnvoyLogs } from "../harness/logs.js";
import { startOtlpReceiver, type OtlpReceiver, type ReceivedSpan } from "../harness/otlp.js";

const KEY = "pk_test_acme_0123456789";
const SERVICE_NAME = "edge-gateway";
const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-01$/;

/** JSON log lines written by a pino logger, kept for the test to search. */
function capturedLogger(): { logger: pino.Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const logger = pino({ level: "info" }, { write: (s: string) => void lines.push(JSON.parse(s)) });
  return { logger, lines };
}

/** Envoy's JSON access log lines (its stdout, which the harness keeps). */
function accessLines(envoy: EnvoyProcess): Record<string, unknown>[] {
  return envoy
    .logs()
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .flatMap((l) => {
      try {
        return [JSON.parse(l) as Record<string, unknown>];
      } catch {
        return [];
      }
    });
}

/** Whether `span` is below `ancestor` in the tree the spans of one trace make. */
function descends(spans: readonly ReceivedSpan[], span: ReceivedSpan, ancestor: ReceivedSpan): boolean {
  const byId = new Map(spans.map((s) => [s.spanId, s]));
  let at: ReceivedSpan | undefined = byId.get(span.parentSpanId);
  for (let hops = 0; at && hops < 20; hops++) {
    if (at.spanId === ancestor.spanId) return true;
    at = byId.get(at.parentSpanId);
  }
  return false;
}

/**
 * Observability through a real Envoy: the gateway's `tracing` setting makes Envoy trace with
 * OpenTelemetry and send its spans to a collector (an OTLP receiver started here); ext-authz and the
 * rate limiter, called by Envoy with the trace context in their gRPC metadata, send spans of the
 * same trace; the upstream gets the traceparent; and the access log and the services' log lines
 * carry the ids that join them.
 */
describe("tracing and access logs through Envoy", () => {
  const track = useEnvoyLogs();
  let receiver: OtlpReceiver;
  let api: AdminHandle;
  let envoy: EnvoyProcess;
  let upstream: HttpUpstream;
  let authz: AuthzServer;
  let rls: RateLimitServer;
  let source: XdsConfigSource;
  let config: RateLimitConfig | undefined;
  const tracers: RpcTracing[] = [];
  const authzLogs = capturedLogger();
  const rlsLogs = capturedLogger();
  let port: number;
  const url = (p: string) => `http://127.0.0.1:${port}${p}`;

  beforeAll(async () => {
    receiver = await startOtlpReceiver();
    upstream = await startHttpUpstream("orders");
    const [authzPort, rlsPort] = [await freePort(), await freePort()];
    port = await freePort();
    const tracing = (serviceName: string) => {
      const t = createTracing({ serviceName, endpoint: receiver.endpoint, flushMs: 100 });
      tracers.push(t);
      return t;
    };
    authz = new AuthzServer({
      authorizer: new Authorizer({
        policy: policyOf({
          consumers: [{ name: "acme", plan: "gold" }],
          apiKeys: [{ name: "acme-live", consumer: "acme", sha256: sha256Hex(KEY) }],
        }),
        logger: authzLogs.logger,
      }),
      address: `127.0.0.1:${authzPort}`,
      logger: authzLogs.logger,
      tracing: tracing("ext-authz"),
    });
    await authz.start();
    rls = await startRateLimitService({
      limiter: new MemoryLimiter(),
      port: rlsPort,
      log: rlsLogs.logger,
      tracing: tracing("ratelimit-service"),
    });

    api = await startAdmin();
    source = new XdsConfigSource({
      target: `127.0.0.1:${api.cp.xdsPort}`,
      nodeId: "ratelimit-tracing",
      onConfig: (c) => {
        config = c;
        rls.setConfig(c);
      },
    });
    const put = async (p: string, body: object) => {
      const res = await api.call("PUT", p, { body });
      expect(res.status, res.text).toBeLessThan(300);
    };
    await put("/api/v1/upstreams/orders", {
      name: "orders",
      endpoints: [{ host: "127.0.0.1", port: upstream.port }],
    });
    for (const [name, p] of [
      ["ext-authz", authzPort],
      ["rls", rlsPort],
      ["otel-collector", receiver.port],
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
      rateLimit: { upstream: "rls", timeoutMs: 2_000 },
      tracing: { upstream: "otel-collector", samplingPercent: 100, serviceName: SERVICE_NAME },
    });
    await put("/api/v1/consumers/acme", { name: "acme" });
    await put("/api/v1/authPolicies/keys", { name: "keys", accept: ["apiKey"] });
    await put("/api/v1/rateLimitPolicies/roomy", {
      name: "roomy",
      limits: [{ requests: 1000, per: "hour", algorithm: "token_bucket" }],
    });
    await put("/api/v1/rateLimitPolicies/one-only", {
      name: "one-only",
      limits: [{ requests: 1, per: "hour", algorithm: "token_bucket" }],
    });
    for (const [name, policy] of [
      ["orders", "roomy"],
      ["quota", "one-only"],
    ] as const) {
      await put(`/api/v1/routes/${name}`, {
        name,
        gateway: "edge",
        match: { pathPrefix: `/${name}` },
        upstream: "orders",
        authPolicy: "keys",
        rateLimitPolicy: policy,
      });
    }
    envoy = track(
      await startEnvoy({
        nodeId: "edge-tracing",
        group: "edge",
        xdsPort: api.cp.xdsPort,
        // Access log lines reach stdout within 10 s by default; the test reads them sooner.
        extraArgs: ["--file-flush-interval-msec", "100"],
      }),
    );
    await envoy.waitReady({ timeoutMs: 20_000 });
    await waitFor(() => config?.domains.get("edge")?.root.exact.size === 2 || undefined, {
      what: "the rate-limit service to receive both policies",
      timeoutMs: 10_000,
    });
  });

  afterAll(async () => {
    source?.close();
    await envoy?.stop();
    await api?.stop();
    await authz?.stop();
    await rls?.stop();
    await Promise.all(tracers.map((t) => t.shutdown()));
    await receiver?.close();
    await upstream?.close();
  });

  it("makes one trace of one request: Envoy's spans, ext-authz's and the rate limiter's, and the upstream's traceparent", async () => {
    const requestId = randomUUID();
    const res = await httpRequest(url("/orders/7"), {
      headers: { "x-api-key": KEY, "x-request-id": requestId },
    });
    expect(res.status, res.body).toBe(200);
    const seen = (JSON.parse(res.body) as { headers: Record<string, string> }).headers;
    // The client's id reaches the upstream unchanged (Envoy does not write its sampling into it).
    expect(seen["x-request-id"]).toBe(requestId);
    const m = TRACEPARENT.exec(seen.traceparent ?? "");
    expect(m, `traceparent at the upstream: ${seen.traceparent}`).not.toBeNull();
    const [, traceId, upstreamParent] = m!;

    const spans = (
      await receiver.waitForSpans((all) => {
        const mine = all.filter((s) => s.traceId === traceId);
        return (
          mine.some((s) => s.service === "ext-authz") &&
          mine.some((s) => s.service === "ratelimit-service") &&
          mine.some((s) => s.service === SERVICE_NAME && s.parentSpanId === "")
        );
      }, `spans of trace ${traceId} from Envoy, ext-authz and the rate limiter`)
    ).filter((s) => s.traceId === traceId);

    const root = spans.find((s) => s.service === SERVICE_NAME && s.parentSpanId === "")!;
    expect(root.kind).toBe("SPAN_KIND_SERVER");
    expect(root.attributes["portico.gateway"]).toBe("edge");
    const check = spans.find((s) => s.service === "ext-authz")!;
    expect(check).toMatchObject({
      name: "envoy.service.auth.v3.Authorization/Check",
      kind: "SPAN_KIND_SERVER",
    });
    expect(check.attributes).toMatchObject({
      "rpc.system": "grpc",
      "portico.auth.code": "ok",
      "portico.consumer": "acme",
      "portico.request_id": requestId,
    });
    expect(descends(spans, check, root), "ext-authz's span under Envoy's").toBe(true);
    const limit = spans.find((s) => s.service === "ratelimit-service")!;
    expect(limit.name).toBe("envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit");
    expect(limit.attributes["portico.ratelimit.code"]).toBe("OK");
    expect(descends(spans, limit, root), "the rate limiter's span under Envoy's").toBe(true);
    // Envoy's gRPC calls are spans of their own, between the request's span and the services'.
    const checkCall = spans.find((s) => s.spanId === check.parentSpanId)!;
    expect(checkCall.service).toBe(SERVICE_NAME);

    // The upstream's parent is Envoy's span for the upstream call, itself under the request's.
    await receiver.waitForSpans(
      (all) => all.some((s) => s.spanId === upstreamParent),
      "Envoy's upstream span",
    );
    const upstreamSpan = receiver.spans.find((s) => s.spanId === upstreamParent)!;
    expect(upstreamSpan).toMatchObject({ service: SERVICE_NAME, traceId, kind: "SPAN_KIND_CLIENT" });
    expect(descends(receiver.spans, upstreamSpan, root)).toBe(true);
  });

  it("continues a trace the client started, whose traceparent it sends", async () => {
    const traceId = randomUUID().replace(/-/g, "");
    const parent = "00f067aa0ba902b7";
    const res = await httpRequest(url("/orders/8"), {
      headers: { "x-api-key": KEY, traceparent: `00-${traceId}-${parent}-01` },
    });
    expect(res.status).toBe(200);
    const seen = (JSON.parse(res.body) as { headers: Record<string, string> }).headers;
    expect(TRACEPARENT.exec(seen.traceparent ?? "")?.[1]).toBe(traceId);
    const spans = await receiver.waitForSpans(
      (all) =>
        all.some((s) => s.traceId === traceId && s.service === SERVICE_NAME && s.parentSpanId === parent) &&
        all.some((s) => s.traceId === traceId && s.service === "ext-authz"),
      `Envoy's and ext-authz's spans in the client's trace ${traceId}`,
    );
    const root = spans.find((s) => s.traceId === traceId && s.parentSpanId === parent)!;
    const check = spans.find((s) => s.traceId === traceId && s.service === "ext-authz")!;
    expect(descends(spans, check, root)).toBe(true);
  });

  it("logs consumer, route, request id, trace id and outcome in Envoy's access log, joined by ext-authz's line for a refusal", async () => {
    const allowedId = randomUUID();
    expect(
      (await httpRequest(url("/orders/9"), { headers: { "x-api-key": KEY, "x-request-id": allowedId } }))
        .status,
    ).toBe(200);
    const deniedId = randomUUID();
    expect((await httpRequest(url("/orders/10"), { headers: { "x-request-id": deniedId } })).status).toBe(
      401,
    );

    const lineOf = (id: string) =>
      waitFor(() => accessLines(envoy).find((l) => l.request_id === id), {
        what: `the access log line of request ${id}`,
      });
    const allowed = await lineOf(allowedId);
    expect(allowed).toMatchObject({
      gateway: "edge",
      route: "orders",
      consumer: "acme",
      status: 200,
      flags: "-",
      method: "GET",
      path: "/orders/9",
      upstream: "orders",
      client_ip: "127.0.0.1",
    });
    expect(allowed.trace_id).toMatch(/^[0-9a-f]{32}$/);

    const denied = await lineOf(deniedId);
    expect(denied).toMatchObject({
      route: "orders",
      status: 401,
      flags: "UAEX",
      details: "ext_authz_denied",
    });
    expect(denied.consumer ?? null).toBeNull();
    // ext-authz's own line for the refusal carries the same request id and trace id.
    const authzLine = await waitFor(() => authzLogs.lines.find((l) => l.request_id === deniedId), {
      what: "ext-authz's log line for the refusal",
    });
    expect(authzLine).toMatchObject({
      msg: "denied",
      code: "missing_credentials",
      status: 401,
      trace_id: denied.trace_id,
      path: "/orders/10",
    });
    expect((authzLine.policy as Record<string, string>).accept).toBe("apiKey");
  });

  it("marks a rate-limited request RL in the access log, and the rate limiter's line has its trace id", async () => {
    const ids = [randomUUID(), randomUUID()];
    const statuses: number[] = [];
    for (const id of ids)
      statuses.push(
        (await httpRequest(url("/quota"), { headers: { "x-api-key": KEY, "x-request-id": id } })).status,
      );
    expect(statuses).toEqual([200, 429]);
    const refused = await waitFor(() => accessLines(envoy).find((l) => l.request_id === ids[1]), {
      what: "the access log line of the refused request",
    });
    expect(refused).toMatchObject({
      route: "quota",
      status: 429,
      flags: "RL",
      details: "request_rate_limited",
      consumer: "acme",
    });
    const rlsLine = await waitFor(
      () => rlsLogs.lines.find((l) => l.msg === "over limit" && l.trace_id === refused.trace_id),
      { what: "the rate limiter's line for the refusal, with the trace id of the access log's" },
    );
    expect(rlsLine.domain).toBe("edge");
    const keys = (rlsLine.descriptors as { keys: string[]; code: string }[]).find(
      (d) => d.code === "OVER_LIMIT",
    );
    expect(keys?.keys).toContain("consumer");
    // The values (who the caller is) stay out of the rate limiter's log.
    expect(JSON.stringify(rlsLine)).not.toContain("acme");
  });
});
