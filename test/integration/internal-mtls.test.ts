import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { healthServiceDefinition } from "@portico/common";
import { REPO_ROOT } from "@portico/envoy";
import { sha256Hex, AUTHORIZATION_SERVICE, authTypes, method } from "@portico/ext-authz";
import { createRateLimitClient, type RateLimitRequest } from "@portico/ratelimit-service";
import {
  freePort,
  httpRequest,
  makeIdentityCert,
  makeTestPki,
  removeTestPki,
  RUN_FROM_SOURCE,
  startAdmin,
  startEnvoy,
  startHttpUpstream,
  waitFor,
  type AdminHandle,
  type CertFiles,
  type EnvoyProcess,
  type HttpUpstream,
  type TestPki,
} from "../harness/index.js";
import { useEnvoyLogs } from "../harness/logs.js";

const KEY = "pk_test_acme_0123456789";

interface Service {
  child: ChildProcess;
  /** JSON log lines from stdout. */
  lines: Record<string, unknown>[];
  exited: Promise<number | null>;
}

const running: Service[] = [];

/** A service's main.ts, as deployed, from source. */
function startService(main: string, args: string[]): Service {
  const child = spawn(process.execPath, [...RUN_FROM_SOURCE, path.join(REPO_ROOT, main), ...args], {
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, VITEST: "", LOG_LEVEL: "info" },
  });
  const lines: Record<string, unknown>[] = [];
  createInterface({ input: child.stdout! }).on("line", (l) => {
    try {
      lines.push(JSON.parse(l) as Record<string, unknown>);
    } catch {
      // Not a log line.
    }
  });
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const service = { child, lines, exited };
  running.push(service);
  return service;
}

async function stopService(s: Service): Promise<void> {
  if (s.child.exitCode !== null || s.child.signalCode !== null) return;
  s.child.kill("SIGTERM");
  await s.exited;
}

async function waitReadyz(s: Service, opsPort: number, what: string): Promise<void> {
  await waitFor(
    async () => {
      if (s.child.exitCode !== null) throw new Error(`${what} exited: ${JSON.stringify(s.lines.slice(-3))}`);
      return (
        (await fetch(`http://127.0.0.1:${opsPort}/readyz`).then(
          (r) => r.status,
          () => 0,
        )) === 200
      );
    },
    { what: `${what} /readyz`, timeoutMs: 30_000 },
  );
}

/** The sum of the /metrics samples whose line matches. */
async function metric(opsPort: number, line: RegExp): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${opsPort}/metrics`)).text();
  return text
    .split("\n")
    .filter((l) => line.test(l))
    .reduce((sum, l) => sum + Number(l.split(" ").at(-1)), 0);
}

/** gRPC channel credentials: the internal CA to check the server, and a client certificate if any. */
function channel(ca: string, client?: CertFiles): grpc.ChannelCredentials {
  return client
    ? grpc.credentials.createSsl(
        fs.readFileSync(ca),
        fs.readFileSync(client.key),
        fs.readFileSync(client.cert),
      )
    : grpc.credentials.createSsl(fs.readFileSync(ca));
}

function unary<Req, Res>(
  address: string,
  creds: grpc.ChannelCredentials,
  m: { path: string; requestSerialize: (v: Req) => Buffer; responseDeserialize: (b: Buffer) => Res },
  req: Req,
): Promise<Res> {
  const client = new grpc.Client(address, creds);
  return new Promise<Res>((resolve, reject) =>
    client.makeUnaryRequest(
      m.path,
      m.requestSerialize,
      m.responseDeserialize,
      req,
      new grpc.Metadata(),
      { deadline: Date.now() + 5_000 },
      (err, res) => {
        client.close();
        if (err) reject(err);
        else resolve(res!);
      },
    ),
  );
}

/** The gRPC status code of a call that must fail. */
async function refusal(call: Promise<unknown>): Promise<{ code: grpc.status; details: string }> {
  const err = await call.then(
    () => undefined,
    (e: grpc.ServiceError) => e,
  );
  if (!err) throw new Error("the call was answered");
  return { code: err.code, details: err.details };
}

const { CheckRequest, CheckResponse } = authTypes();
const check = method<object, { status?: { code?: number } }>(
  AUTHORIZATION_SERVICE,
  "Check",
  CheckRequest,
  CheckResponse,
);
const checkRequest = {
  attributes: {
    request: {
      http: {
        method: "GET",
        path: "/orders",
        headers: { ":path": "/orders", ":method": "GET", "x-api-key": KEY },
      },
    },
    context_extensions: { accept: "apiKey", anonymous: "false" },
  },
};
const health = healthServiceDefinition().Check as unknown as {
  path: string;
  requestSerialize: (v: { service: string }) => Buffer;
  responseDeserialize: (b: Buffer) => { status: string };
};

/** What a request on route R with policy `capped` counts on, as Envoy sends it. */
const cappedRoute = (route: string, hits: number): RateLimitRequest => ({
  domain: "edge",
  descriptors: [
    {
      entries: [
        { key: "policy", value: "capped" },
        { key: "route", value: route },
      ],
    },
  ],
  hits_addend: hits,
});

/**
 * ext-authz and the rate limiter with `--tls-*`: only a client certificate from the internal CA
 * that names a gateway gets a call answered. A real Envoy with its gateway identity in the
 * bootstrap calls both over mTLS (`tls.gatewayIdentity` upstreams) and serves a protected route
 * as it would without TLS; its admin interface stays on loopback behind a readiness listener.
 */
describe("internal mTLS between Envoy and the policy services", () => {
  const track = useEnvoyLogs();
  let pki: TestPki;
  let dir: string;
  let authzServerCert: CertFiles;
  let rlsServerCert: CertFiles;
  let gateway: CertFiles;
  let aggregator: CertFiles;
  let twoNames: CertFiles;
  let strangerGateway: CertFiles;
  let authz: Service;
  let rls: Service;
  let authzPort: number;
  let authzOps: number;
  let rlsPort: number;
  let rlsOps: number;
  let api: AdminHandle;
  let upstream: HttpUpstream;
  let envoy: EnvoyProcess;
  let port: number;
  let readyPort: number;
  let adminPort: number;

  const tlsArgs = (server: CertFiles) => [
    "--tls-cert",
    server.cert,
    "--tls-key",
    server.key,
    "--tls-client-ca",
    pki.ca.cert,
  ];
  const authzAddress = () => `127.0.0.1:${authzPort}`;
  const rlsAddress = () => `127.0.0.1:${rlsPort}`;
  const decisions = () => metric(authzOps, /^portico_ext_authz_decisions_total\{/);

  beforeAll(async () => {
    pki = makeTestPki();
    const serverSans = "IP:127.0.0.1,DNS:localhost";
    authzServerCert = makeIdentityCert(pki, "ext-authz", "spiffe://portico/policy/ext-authz", {
      usage: "serverAuth",
      extraSan: serverSans,
    });
    rlsServerCert = makeIdentityCert(pki, "ratelimit", "spiffe://portico/policy/ratelimit", {
      usage: "serverAuth",
      extraSan: serverSans,
    });
    gateway = makeIdentityCert(pki, "gateway-edge", "spiffe://portico/gateway/edge");
    aggregator = makeIdentityCert(pki, "aggregator", "spiffe://portico/policy/aggregator");
    twoNames = makeIdentityCert(pki, "two-names", [
      "spiffe://portico/gateway/edge",
      "spiffe://portico/policy/ext-authz",
    ]);
    strangerGateway = makeIdentityCert(pki, "stranger-edge", "spiffe://portico/gateway/edge", {
      ca: pki.otherCa,
    });

    dir = fs.mkdtempSync(path.join(os.tmpdir(), "portico-internal-mtls-"));
    const policyFile = path.join(dir, "policy.yaml");
    fs.writeFileSync(
      policyFile,
      [
        "consumers:",
        "  - { name: acme, plan: gold }",
        "apiKeys:",
        `  - { name: acme-live, consumer: acme, sha256: "${sha256Hex(KEY)}" }`,
        "",
      ].join("\n"),
    );
    const rlsConfig = path.join(dir, "ratelimit");
    fs.mkdirSync(rlsConfig);
    // The descriptors the control plane's policy `capped` (3 an hour by route) makes Envoy send.
    fs.writeFileSync(
      path.join(rlsConfig, "edge.yaml"),
      [
        "domain: edge",
        "descriptors:",
        "  - key: policy",
        "    value: capped",
        "    descriptors:",
        "      - key: route",
        "        rate_limit: { unit: hour, requests_per_unit: 3, algorithm: token_bucket }",
        "",
      ].join("\n"),
    );

    [authzPort, authzOps, rlsPort, rlsOps, port, readyPort, adminPort] = [
      await freePort(),
      await freePort(),
      await freePort(),
      await freePort(),
      await freePort(),
      await freePort(),
      await freePort(),
    ];
    authz = startService("ext-authz/src/main.ts", [
      "--policy",
      policyFile,
      "--listen",
      authzAddress(),
      "--metrics",
      `127.0.0.1:${authzOps}`,
      ...tlsArgs(authzServerCert),
    ]);
    rls = startService("ratelimit-service/src/main.ts", [
      "--config",
      rlsConfig,
      "--listen",
      rlsAddress(),
      "--metrics-listen",
      `127.0.0.1:${rlsOps}`,
      ...tlsArgs(rlsServerCert),
    ]);
    upstream = await startHttpUpstream("orders");
    api = await startAdmin();
    await Promise.all([waitReadyz(authz, authzOps, "ext-authz"), waitReadyz(rls, rlsOps, "rate limiter")]);

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
    ] as const) {
      await put(`/api/v1/upstreams/${name}`, {
        name,
        protocol: "grpc",
        endpoints: [{ host: "127.0.0.1", port: p }],
        tls: { gatewayIdentity: true },
      });
    }
    await put("/api/v1/gateways/edge", {
      name: "edge",
      listeners: [{ name: "http", port, address: "127.0.0.1" }],
      extAuthz: { upstream: "ext-authz", timeoutMs: 2_000 },
      // Fail closed: a rate limiter Envoy cannot reach answers 503, never a silent pass.
      rateLimit: { upstream: "rls", timeoutMs: 2_000, failClosed: true },
    });
    await put("/api/v1/authPolicies/keys", { name: "keys", accept: ["apiKey"] });
    await put("/api/v1/rateLimitPolicies/capped", {
      name: "capped",
      limits: [{ requests: 3, per: "hour", by: "route", algorithm: "token_bucket" }],
    });
    await put("/api/v1/routes/orders", {
      name: "orders",
      gateway: "edge",
      match: { pathPrefix: "/orders" },
      upstream: "orders",
      authPolicy: "keys",
    });
    await put("/api/v1/routes/limited", {
      name: "limited",
      gateway: "edge",
      match: { pathPrefix: "/limited" },
      upstream: "orders",
      authPolicy: "keys",
      rateLimitPolicy: "capped",
    });
    envoy = track(
      await startEnvoy({
        nodeId: "edge-mtls",
        group: "edge",
        xdsPort: api.cp.xdsPort,
        identity: { certFile: gateway.cert, keyFile: gateway.key, caFile: pki.ca.cert },
        readyPort,
        adminPort,
      }),
    );
    await envoy.waitReady({ timeoutMs: 20_000 });
  }, 120_000);

  afterAll(async () => {
    await envoy?.stop();
    await api?.stop();
    await upstream?.close();
    await Promise.all(running.map(stopService));
    removeTestPki(pki);
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it("both services say at start that their gRPC port is mTLS", async () => {
    await waitFor(() => authz.lines.find((l) => l.msg === "ext-authz serving"), {
      what: "ext-authz's start line",
    });
    expect(authz.lines.find((l) => l.msg === "ext-authz serving")).toMatchObject({ transport: "mtls" });
    expect(rls.lines.find((l) => l.msg === "rate-limit service listening")).toMatchObject({
      transport: "mtls",
    });
  });

  it("refuses a client without a certificate, and one from another CA, at the handshake", async () => {
    const before = await decisions();
    for (const creds of [channel(pki.ca.cert), channel(pki.ca.cert, strangerGateway)]) {
      expect((await refusal(unary(authzAddress(), creds, check, checkRequest))).code).toBe(
        grpc.status.UNAVAILABLE,
      );
      expect((await refusal(unary(rlsAddress(), creds, health, { service: "" }))).code).toBe(
        grpc.status.UNAVAILABLE,
      );
    }
    // Plaintext does not get through either.
    expect(
      (await refusal(unary(authzAddress(), grpc.credentials.createInsecure(), check, checkRequest))).code,
    ).toBe(grpc.status.UNAVAILABLE);
    expect(await decisions()).toBe(before);
  });

  it("refuses a verified certificate that names no gateway with PERMISSION_DENIED, before Check runs", async () => {
    const before = await decisions();
    const policy = await refusal(
      unary(authzAddress(), channel(pki.ca.cert, aggregator), check, checkRequest),
    );
    expect(policy.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(policy.details).toMatch(/only gateways may call this service.*policy service aggregator/);
    // Naming a gateway and something else is naming no one identity.
    const both = await refusal(unary(authzAddress(), channel(pki.ca.cert, twoNames), check, checkRequest));
    expect(both.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(await decisions()).toBe(before);
    expect(await metric(authzOps, /^portico_ext_authz_calls_refused_total\{reason="not-a-gateway"\}/)).toBe(
      2,
    );
    const line = await waitFor(
      () => authz.lines.find((l) => l.msg === "call refused: the caller is not a gateway"),
      {
        what: "ext-authz's refusal line",
      },
    );
    expect(line).toMatchObject({ method: `/${AUTHORIZATION_SERVICE}/Check`, code: "PERMISSION_DENIED" });
  });

  it("answers a gateway's Check, and health to any verified client", async () => {
    const res = await unary(authzAddress(), channel(pki.ca.cert, gateway), check, checkRequest);
    expect(res.status?.code ?? 0).toBe(grpc.status.OK);
    for (const client of [gateway, aggregator]) {
      expect(await unary(authzAddress(), channel(pki.ca.cert, client), health, { service: "" })).toEqual({
        status: "SERVING",
      });
      expect(await unary(rlsAddress(), channel(pki.ca.cert, client), health, { service: "" })).toEqual({
        status: "SERVING",
      });
    }
  });

  it("a ShouldRateLimit from a non-gateway burns nothing, however many hits it asks for", async () => {
    const outsider = createRateLimitClient(rlsAddress(), channel(pki.ca.cert, aggregator));
    const gw = createRateLimitClient(rlsAddress(), channel(pki.ca.cert, gateway));
    try {
      const refused = await refusal(outsider.shouldRateLimit(cappedRoute("victim", 1_000_000)));
      expect(refused.code).toBe(grpc.status.PERMISSION_DENIED);
      const first = await gw.shouldRateLimit(cappedRoute("victim", 1));
      expect(first.overall_code).toBe("OK");
      // The gateway's hit is the first the counter has seen.
      expect(first.statuses[0]!.limit_remaining).toBe(2);
    } finally {
      outsider.close();
      gw.close();
    }
    expect(await metric(rlsOps, /^portico_ratelimit_calls_refused_total\{reason="not-a-gateway"\}/)).toBe(1);
  });

  it("through Envoy: an authorised request is served, an unauthorised one refused, limits counted", async () => {
    const url = (p: string) => `http://127.0.0.1:${port}${p}`;
    const before = upstream.requests;
    const anonymous = await httpRequest(url("/orders/1"));
    expect(anonymous.status).toBe(401);
    expect(anonymous.headers["www-authenticate"]).toMatch(/^ApiKey /);
    expect(upstream.requests).toBe(before);
    const keyed = await httpRequest(url("/orders/1"), { headers: { "x-api-key": KEY } });
    expect(keyed.status).toBe(200);
    expect(JSON.parse(keyed.body).headers["x-portico-consumer"]).toBe("acme");

    const statuses: number[] = [];
    for (let i = 0; i < 4; i++)
      statuses.push((await httpRequest(url("/limited"), { headers: { "x-api-key": KEY } })).status);
    expect(statuses).toEqual([200, 200, 200, 429]);
    // Both clusters spoke TLS, with the gateway's certificate.
    expect(await envoy.stat("cluster.ext-authz.ssl.handshake")).toBeGreaterThan(0);
    expect(await envoy.stat("cluster.rls.ssl.handshake")).toBeGreaterThan(0);
  });

  it("the readiness listener answers GET /ready only; the admin interface is on loopback alone", async () => {
    // 127.0.0.2 is another address of this host: the ready listener (0.0.0.0) answers there…
    const ready = `http://127.0.0.2:${readyPort}`;
    const res = await httpRequest(`${ready}/ready`);
    expect(res.status).toBe(200);
    expect(res.body.trim()).toBe("LIVE");
    for (const p of ["/stats", "/quitquitquit", "/config_dump", "/ready/", "/readyz"])
      expect((await httpRequest(`${ready}${p}`)).status, p).toBe(404);
    expect((await httpRequest(`${ready}/ready`, { method: "POST" })).status).toBe(404);
    // …while the admin port takes connections on 127.0.0.1 only.
    expect(envoy.adminPort).toBe(adminPort);
    expect((await envoy.adminRequest("/ready")).status).toBe(200);
    const refused = await new Promise<string>((resolve) => {
      const s = net.connect({ host: "127.0.0.2", port: adminPort });
      s.once("connect", () => {
        s.destroy();
        resolve("connected");
      });
      s.once("error", (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    });
    expect(refused).toBe("ECONNREFUSED");
  });
});

describe("--tls-* flags", () => {
  let pki: TestPki;
  beforeAll(() => {
    pki = makeTestPki();
  });
  afterAll(async () => {
    await Promise.all(running.map(stopService));
    removeTestPki(pki);
  });

  it("ext-authz and the rate limiter refuse a partial set, naming what is missing", async () => {
    const authz = startService("ext-authz/src/main.ts", [
      "--listen",
      "127.0.0.1:0",
      "--metrics",
      "off",
      "--tls-cert",
      pki.server.cert,
      "--tls-key",
      pki.server.key,
    ]);
    const rls = startService("ratelimit-service/src/main.ts", [
      "--listen",
      "127.0.0.1:0",
      "--metrics-listen",
      "",
      "--tls-client-ca",
      pki.ca.cert,
    ]);
    expect(await authz.exited).toBe(2);
    expect(await rls.exited).not.toBe(0);
    expect(JSON.stringify(authz.lines)).toMatch(
      /--tls-cert, --tls-key and --tls-client-ca \(env PORTICO_AUTHZ_TLS_CERT, .*\) go together: --tls-client-ca is missing/,
    );
    expect(JSON.stringify(rls.lines)).toMatch(
      /--tls-cert, --tls-key and --tls-client-ca \(env PORTICO_RATELIMIT_TLS_CERT, .*\) go together: --tls-cert and --tls-key are missing/,
    );
  });

  it("a key that is not the certificate's stops the start, naming both flags", async () => {
    const authz = startService("ext-authz/src/main.ts", [
      "--listen",
      "127.0.0.1:0",
      "--metrics",
      "off",
      "--tls-cert",
      pki.server.cert,
      "--tls-key",
      pki.client.key,
      "--tls-client-ca",
      pki.ca.cert,
    ]);
    expect(await authz.exited).toBe(2);
    expect(JSON.stringify(authz.lines)).toMatch(/--tls-key .* is not the key of --tls-cert/);
  });
});
