import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import * as grpc from "@grpc/grpc-js";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { REPO_ROOT } from "@portico/envoy";
import { sha256Hex, AUTHORIZATION_SERVICE, authTypes, method } from "@portico/ext-authz";
import { rateLimitServiceDefinition } from "@portico/ratelimit-service";
import { freePort, waitFor } from "../harness/index.js";
import { startOtlpReceiver, type OtlpReceiver } from "../harness/otlp.js";

const TRACE = "0af7651916cd43dd8448eb211c80319c";
const PARENT = "b7ad6b7169203331";

interface Service {
  child: ChildProcess;
  /** Its JSON log lines (stdout). */
  lines: Record<string, unknown>[];
  /** Called with each log line as it arrives. */
  onLine?: (line: Record<string, unknown>) => void;
}

const running: Service[] = [];

/** Starts a service's main.ts as it is deployed, keeping its log lines. */
function startService(main: string, args: string[], env: Record<string, string> = {}): Service {
  const child = spawn(
    path.join(REPO_ROOT, "node_modules", ".bin", "tsx"),
    [path.join(REPO_ROOT, main), ...args],
    { stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, VITEST: "", LOG_LEVEL: "info", ...env } },
  );
  const service: Service = { child, lines: [] };
  createInterface({ input: child.stdout! }).on("line", (l) => {
    let line: Record<string, unknown>;
    try {
      line = JSON.parse(l) as Record<string, unknown>;
    } catch {
      return; // Not a log line.
    }
    service.lines.push(line);
    service.onLine?.(line);
  });
  running.push(service);
  return service;
}

async function stop(s: Service): Promise<void> {
  if (s.child.exitCode !== null || s.child.signalCode !== null) return;
  const exited = new Promise((r) => s.child.once("exit", r));
  s.child.kill("SIGTERM");
  await exited;
}

const status = (url: string) =>
  fetch(url).then(
    (r) => r.status,
    () => 0,
  );

/** One unary call with Envoy's trace context in the metadata, as Envoy's gRPC client sends it. */
function tracedCall<Req, Res>(
  address: string,
  m: { path: string; requestSerialize: (v: Req) => Buffer; responseDeserialize: (b: Buffer) => Res },
  req: Req,
): Promise<Res> {
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  const md = new grpc.Metadata();
  md.set("traceparent", `00-${TRACE}-${PARENT}-01`);
  return new Promise<Res>((resolve, reject) =>
    client.makeUnaryRequest(m.path, m.requestSerialize, m.responseDeserialize, req, md, (err, res) => {
      client.close();
      if (err) reject(err);
      else resolve(res!);
    }),
  );
}

/**
 * The services as deployed (`main.ts`): `/metrics`, `/healthz` and `/readyz` beside the gRPC port,
 * and spans sent to the OTLP endpoint of the standard environment variable.
 */
describe("service operations endpoints and tracing from the environment", () => {
  let receiver: OtlpReceiver | undefined;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "portico-ops-"));

  afterEach(async () => {
    await Promise.all(running.splice(0).map(stop));
  });
  afterAll(async () => {
    await receiver?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("ext-authz: alive and ready with a policy, process and decision metrics, a span per Check in the caller's trace", async () => {
    receiver ??= await startOtlpReceiver();
    const policyFile = path.join(dir, "policy.yaml");
    fs.writeFileSync(
      policyFile,
      `consumers: [{ name: acme }]\napiKeys: [{ name: acme-live, consumer: acme, sha256: ${sha256Hex("k")} }]\n`,
    );
    const [grpcPort, opsPort] = [await freePort(), await freePort()];
    const svc = startService(
      "ext-authz/src/main.ts",
      ["--policy", policyFile, "--listen", `127.0.0.1:${grpcPort}`, "--metrics", `127.0.0.1:${opsPort}`],
      { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint, OTEL_SERVICE_NAME: "authz-under-test" },
    );
    const ops = `http://127.0.0.1:${opsPort}`;
    await waitFor(async () => (await status(`${ops}/readyz`)) === 200 || undefined, {
      what: "ext-authz to be ready",
      timeoutMs: 20_000,
    });
    expect(await status(`${ops}/healthz`)).toBe(200);

    const { CheckRequest, CheckResponse } = authTypes();
    const check = method<object, { status?: { code?: number } }>(
      AUTHORIZATION_SERVICE,
      "Check",
      CheckRequest,
      CheckResponse,
    );
    const requestId = "3c0b0a52-5f4e-4d5e-9a77-0d8f7f3b2a11";
    const res = await tracedCall(`127.0.0.1:${grpcPort}`, check, {
      attributes: {
        request: {
          http: {
            method: "GET",
            path: "/orders",
            headers: { ":path": "/orders", ":method": "GET", "x-request-id": requestId },
          },
        },
        context_extensions: { accept: "apiKey", anonymous: "false" },
      },
    });
    expect(res.status?.code).toBe(grpc.status.UNAUTHENTICATED);

    const spans = await receiver.waitForSpans(
      (all) => all.some((s) => s.traceId === TRACE && s.service === "authz-under-test"),
      "ext-authz's span in the caller's trace",
    );
    const span = spans.find((s) => s.traceId === TRACE && s.service === "authz-under-test")!;
    expect(span).toMatchObject({ parentSpanId: PARENT, kind: "SPAN_KIND_SERVER" });
    expect(span.attributes).toMatchObject({
      "portico.auth.code": "missing_credentials",
      "portico.request_id": requestId,
    });
    const denied = await waitFor(() => svc.lines.find((l) => l.msg === "denied"), {
      what: "the refusal's log line",
    });
    expect(denied).toMatchObject({
      request_id: requestId,
      trace_id: TRACE,
      code: "missing_credentials",
      status: 401,
    });

    const metrics = await (await fetch(`${ops}/metrics`)).text();
    expect(metrics).toMatch(
      /^portico_ext_authz_decisions_total\{result="deny",code="missing_credentials"\} 1$/m,
    );
    expect(metrics).toMatch(/^portico_ext_authz_check_duration_seconds_count\{result="deny"\} 1$/m);
    expect(metrics).toMatch(/^process_cpu_seconds_total /m);
  });

  it("ext-authz: alive but not ready while it waits for its policy over xDS", async () => {
    const [xdsPort, grpcPort, opsPort] = [await freePort(), await freePort(), await freePort()];
    startService("ext-authz/src/main.ts", [
      "--xds",
      `127.0.0.1:${xdsPort}`,
      "--listen",
      `127.0.0.1:${grpcPort}`,
      "--metrics",
      `127.0.0.1:${opsPort}`,
    ]);
    const ops = `http://127.0.0.1:${opsPort}`;
    await waitFor(async () => (await status(`${ops}/healthz`)) === 200 || undefined, {
      what: "ext-authz to answer /healthz",
      timeoutMs: 20_000,
    });
    const res = await fetch(`${ops}/readyz`);
    expect(res.status).toBe(503);
    expect(await res.text()).toBe("no policy yet\n");
  });

  it("ratelimit-service: ready with a config, a span per ShouldRateLimit, and an over-limit line with the trace id", async () => {
    receiver ??= await startOtlpReceiver();
    const configFile = path.join(dir, "limits.yaml");
    fs.writeFileSync(
      configFile,
      "domain: edge\ndescriptors:\n  - key: remote_address\n    rate_limit: { unit: hour, requests_per_unit: 1, name: per-ip }\n",
    );
    const [grpcPort, opsPort] = [await freePort(), await freePort()];
    const svc = startService(
      "ratelimit-service/src/main.ts",
      [
        "--config",
        configFile,
        "--listen",
        `127.0.0.1:${grpcPort}`,
        "--metrics-listen",
        `127.0.0.1:${opsPort}`,
      ],
      { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint },
    );
    const ops = `http://127.0.0.1:${opsPort}`;
    await waitFor(async () => (await status(`${ops}/readyz`)) === 200 || undefined, {
      what: "the rate limiter to be ready",
      timeoutMs: 20_000,
    });
    expect(await status(`${ops}/healthz`)).toBe(200);

    const should = rateLimitServiceDefinition().ShouldRateLimit as unknown as {
      path: string;
      requestSerialize: (v: object) => Buffer;
      responseDeserialize: (b: Buffer) => { overall_code: string };
    };
    const req = {
      domain: "edge",
      descriptors: [{ entries: [{ key: "remote_address", value: "198.51.100.4" }] }],
    };
    const codes = [];
    for (let i = 0; i < 2; i++)
      codes.push((await tracedCall(`127.0.0.1:${grpcPort}`, should, req)).overall_code);
    expect(codes).toEqual(["OK", "OVER_LIMIT"]);

    const spans = await receiver.waitForSpans(
      (all) => all.filter((s) => s.traceId === TRACE && s.service === "ratelimit-service").length === 2,
      "the rate limiter's two spans in the caller's trace",
    );
    const mine = spans.filter((s) => s.traceId === TRACE && s.service === "ratelimit-service");
    expect(mine.map((s) => s.attributes["portico.ratelimit.code"]).sort()).toEqual(["OK", "OVER_LIMIT"]);
    expect(mine.every((s) => s.parentSpanId === PARENT)).toBe(true);

    const line = await waitFor(() => svc.lines.find((l) => l.msg === "over limit"), {
      what: "the over-limit log line",
    });
    expect(line).toMatchObject({
      domain: "edge",
      trace_id: TRACE,
      code: "OVER_LIMIT",
      descriptors: [{ keys: ["remote_address"], code: "OVER_LIMIT", limit: "per-ip" }],
    });
    expect(JSON.stringify(line)).not.toContain("198.51.100.4");
    const metrics = await (await fetch(`${ops}/metrics`)).text();
    expect(metrics).toMatch(/^portico_ratelimit_responses_total\{code="OVER_LIMIT"\} 1$/m);
    expect(metrics).toMatch(/^portico_ratelimit_decision_seconds_count 2$/m);
  });

  it("ratelimit-service: a SIGTERM once its gRPC port listens drains it and exits 0, while the rest still starts", async () => {
    const configFile = path.join(dir, "drain.yaml");
    fs.writeFileSync(
      configFile,
      "domain: edge\ndescriptors:\n  - key: remote_address\n    rate_limit: { unit: hour, requests_per_unit: 1 }\n",
    );
    const svc = startService("ratelimit-service/src/main.ts", [
      "--config",
      configFile,
      "--listen",
      `127.0.0.1:${await freePort()}`,
      // Its ops server starts after the gRPC port listens.
      "--metrics-listen",
      `127.0.0.1:${await freePort()}`,
    ]);
    const exited = new Promise<[number | null, NodeJS.Signals | null]>((r) =>
      svc.child.once("exit", (code, signal) => r([code, signal])),
    );
    // The signal goes as the line arrives, not at the next poll.
    await new Promise<void>((resolve, reject) => {
      svc.onLine = (l) => {
        if (l.msg === "rate-limit service listening") resolve();
      };
      svc.child.once("exit", () => reject(new Error("the rate limiter exited before it listened")));
    });
    svc.child.kill("SIGTERM");
    // Ended by the signal itself, the process would report the signal and no code.
    expect(await exited).toEqual([0, null]);
    expect(svc.lines.some((l) => l.msg === "shutting down" && l.signal === "SIGTERM")).toBe(true);
  });
});
