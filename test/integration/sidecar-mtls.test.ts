import fs from "node:fs";
import https from "node:https";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "@portico/common";
import { Authorizer, AuthzServer, sha256Hex } from "@portico/ext-authz";
import { policyOf } from "../harness/ext-authz-fixtures.js";
import {
  freePort,
  httpRequest,
  makeIdentityCert,
  makeTestPki,
  removeTestPki,
  startAdmin,
  startEnvoy,
  startHttpUpstream,
  type AdminHandle,
  type CertFiles,
  type EnvoyProcess,
  type HttpUpstream,
  type TestPki,
} from "../harness/index.js";
import { useEnvoyLogs } from "../harness/logs.js";

const KEY = "pk_test_acme_0123456789";
/** The name the edge dials the sidecar by, as in compose: SNI and a DNS SAN of its certificate. */
const SIDECAR_NAME = "users-envoy";

interface Echo {
  path: string;
  headers: Record<string, string | undefined>;
}

/**
 * One HTTPS request straight to the sidecar's listener, as a workload on the network would send
 * it: the internal CA checks the sidecar, and `client` is the certificate presented, if any.
 * Resolves with the answer, or rejects with the TLS or socket error.
 */
function sidecarRequest(
  port: number,
  ca: string,
  client: CertFiles | undefined,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: "127.0.0.1",
        port,
        path: "/users/1",
        servername: SIDECAR_NAME,
        ca: fs.readFileSync(ca),
        ...(client ? { cert: fs.readFileSync(client.cert), key: fs.readFileSync(client.key) } : {}),
        headers: { connection: "close", ...headers },
        agent: false,
        timeout: 5_000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("error", reject);
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
      },
    );
    req.on("timeout", () => req.destroy(new Error("no answer within 5 s")));
    req.on("error", reject);
    req.end();
  });
}

/** The error a request that must fail ends with. */
async function failure(request: Promise<unknown>): Promise<NodeJS.ErrnoException> {
  const err = await request.then(
    () => undefined,
    (e: NodeJS.ErrnoException) => e,
  );
  if (!err) throw new Error("the request was answered");
  return err;
}

/**
 * A service behind its sidecar Envoy, as in compose: the edge authenticates callers with ext-authz
 * and calls the sidecar over mTLS with its gateway identity; the sidecar's listener keeps the
 * identity headers (trustIdentityHeaders) and, with gatewayIdentity, serves only clients whose
 * certificate the internal CA signed and names a gateway. Both Envoys' certificates come from their
 * bootstraps (`identity`), as the PKI init makes them.
 */
describe("sidecar listeners accept gateways only (gatewayIdentity)", () => {
  const track = useEnvoyLogs();
  let pki: TestPki;
  let edgeCert: CertFiles;
  let sidecarCert: CertFiles;
  let bffWebCert: CertFiles;
  let aggregatorCert: CertFiles;
  let strangerGateway: CertFiles;
  let upstream: HttpUpstream;
  let authz: AuthzServer;
  let api: AdminHandle;
  let edge: EnvoyProcess;
  let sidecar: EnvoyProcess;
  let edgePort: number;
  let sidecarPort: number;
  /** The sidecar listener's stats, named after its address. */
  const sidecarStat = (name: string) => sidecar.stat(`listener.0.0.0.0_${sidecarPort}.ssl.${name}`);
  const direct = (client: CertFiles | undefined, headers: Record<string, string> = {}) =>
    sidecarRequest(sidecarPort, pki.ca.cert, client, headers);

  beforeAll(async () => {
    pki = makeTestPki();
    // Each Envoy's certificate as deploy/pki makes it: one URI SAN naming its gateway group, the
    // names peers dial it by, both TLS usages (it serves and it calls).
    const both = { usage: "serverAuth,clientAuth" } as const;
    edgeCert = makeIdentityCert(pki, "gateway-edge", "spiffe://portico/gateway/edge", both);
    sidecarCert = makeIdentityCert(pki, "gateway-sidecar-users", "spiffe://portico/gateway/sidecar-users", {
      ...both,
      extraSan: `DNS:${SIDECAR_NAME},IP:127.0.0.1`,
    });
    bffWebCert = makeIdentityCert(pki, "gateway-bff-web", "spiffe://portico/gateway/bff-web", both);
    aggregatorCert = makeIdentityCert(pki, "aggregator", "spiffe://portico/policy/aggregator");
    strangerGateway = makeIdentityCert(pki, "stranger-edge", "spiffe://portico/gateway/edge", {
      ca: pki.otherCa,
    });

    const authzPort = await freePort();
    [edgePort, sidecarPort] = [await freePort(), await freePort()];
    upstream = await startHttpUpstream("users");
    authz = new AuthzServer({
      authorizer: new Authorizer({
        policy: policyOf({
          consumers: [{ name: "acme", plan: "gold" }],
          apiKeys: [{ name: "acme-live", consumer: "acme", sha256: sha256Hex(KEY) }],
        }),
        logger: silentLogger(),
      }),
      address: `127.0.0.1:${authzPort}`,
    });
    await authz.start();
    api = await startAdmin();
    const put = async (p: string, body: object) => {
      const res = await api.call("PUT", p, { body });
      expect(res.status, res.text).toBeLessThan(300);
    };
    await put("/api/v1/upstreams/ext-authz", {
      name: "ext-authz",
      protocol: "grpc",
      endpoints: [{ host: "127.0.0.1", port: authzPort }],
    });
    await put("/api/v1/upstreams/users-local", {
      name: "users-local",
      endpoints: [{ host: "127.0.0.1", port: upstream.port }],
    });
    // The edge's way to the service: its sidecar, over mTLS with the edge's gateway identity.
    await put("/api/v1/upstreams/users", {
      name: "users",
      endpoints: [{ host: "127.0.0.1", port: sidecarPort }],
      tls: { gatewayIdentity: true, sni: SIDECAR_NAME },
    });
    await put("/api/v1/gateways/edge", {
      name: "edge",
      listeners: [{ name: "http", port: edgePort, address: "127.0.0.1" }],
      extAuthz: { upstream: "ext-authz", timeoutMs: 2_000 },
    });
    // Every interface, as a sidecar in its own container or pod binds: only mTLS keeps others out.
    await put("/api/v1/gateways/sidecar-users", {
      name: "sidecar-users",
      listeners: [
        {
          name: "inbound",
          port: sidecarPort,
          address: "0.0.0.0",
          protocol: "https",
          gatewayIdentity: true,
          trustIdentityHeaders: true,
        },
      ],
    });
    await put("/api/v1/authPolicies/members", { name: "members", accept: ["apiKey"] });
    await put("/api/v1/routes/users", {
      name: "users",
      gateway: "edge",
      match: { pathPrefix: "/users" },
      upstream: "users",
      authPolicy: "members",
    });
    await put("/api/v1/routes/users-inbound", {
      name: "users-inbound",
      gateway: "sidecar-users",
      match: { pathPrefix: "/" },
      upstream: "users-local",
    });

    const identity = (c: CertFiles) => ({ certFile: c.cert, keyFile: c.key, caFile: pki.ca.cert });
    [sidecar, edge] = await Promise.all([
      startEnvoy({
        nodeId: "users-sidecar",
        group: "sidecar-users",
        xdsPort: api.cp.xdsPort,
        identity: identity(sidecarCert),
      }).then(track),
      startEnvoy({
        nodeId: "edge",
        group: "edge",
        xdsPort: api.cp.xdsPort,
        identity: identity(edgeCert),
      }).then(track),
    ]);
    await Promise.all([sidecar.waitReady({ timeoutMs: 20_000 }), edge.waitReady({ timeoutMs: 20_000 })]);
  }, 120_000);

  afterAll(async () => {
    await Promise.all([edge?.stop(), sidecar?.stop()]);
    await api?.stop();
    await authz?.stop();
    await upstream?.close();
    removeTestPki(pki);
  });

  it("through the edge: the identity the edge authenticated reaches the service, a forged one does not", async () => {
    const url = `http://127.0.0.1:${edgePort}/users/1`;
    const keyed = await httpRequest(url, { headers: { "x-api-key": KEY, "x-portico-consumer": "admin" } });
    expect(keyed.status, keyed.body).toBe(200);
    const echo = keyed.json<Echo>();
    expect(echo.path).toBe("/users/1");
    expect(echo.headers["x-portico-consumer"]).toBe("acme");
    expect(echo.headers["x-portico-plan"]).toBe("gold");
    // The sidecar does not pass on who called it.
    expect(echo.headers["x-forwarded-client-cert"]).toBeUndefined();
    const before = upstream.requests;
    expect((await httpRequest(url, { headers: { "x-portico-consumer": "acme" } })).status).toBe(401);
    expect(upstream.requests).toBe(before);
    // The hop was TLS, verified both ways.
    expect(await edge.stat("cluster.users.ssl.handshake")).toBeGreaterThan(0);
    expect(await sidecarStat("handshake")).toBeGreaterThan(0);
  });

  it("a plaintext request straight to the sidecar gets no answer", async () => {
    const before = upstream.requests;
    const err = await failure(
      httpRequest(`http://127.0.0.1:${sidecarPort}/users/1`, { headers: { "x-portico-consumer": "acme" } }),
    );
    expect(err.message).toMatch(/socket hang up|ECONNRESET/);
    expect(upstream.requests).toBe(before);
  });

  it("refuses at the handshake a client without a certificate, one from another CA, and one naming no gateway", async () => {
    const before = upstream.requests;
    const forged = { "x-portico-consumer": "acme" };
    const counts = async () => ({
      noCert: (await sidecarStat("fail_verify_no_cert")) ?? 0,
      error: (await sidecarStat("fail_verify_error")) ?? 0,
      san: (await sidecarStat("fail_verify_san")) ?? 0,
    });
    const start = await counts();

    expect((await failure(direct(undefined, forged))).code).toBe("ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED");
    // A gateway's name, but signed by a CA the fleet does not trust.
    expect((await failure(direct(strangerGateway, forged))).code).toMatch(/^ERR_SSL_/);
    // Signed by the internal CA, but a policy service: not a gateway.
    expect((await failure(direct(aggregatorCert, forged))).code).toMatch(/^ERR_SSL_/);

    expect(upstream.requests).toBe(before);
    // Each for its own reason, as the sidecar counted them.
    const end = await counts();
    expect({
      noCert: end.noCert - start.noCert,
      error: end.error - start.error,
      san: end.san - start.san,
    }).toEqual({ noCert: 1, error: 1, san: 1 });
  });

  it("answers any gateway's certificate, and believes the identity headers it sends (gateways are trusted)", async () => {
    for (const client of [bffWebCert, edgeCert]) {
      const res = await direct(client, { "x-portico-consumer": "globex", "x-portico-plan": "free" });
      expect(res.status, res.body).toBe(200);
      expect((JSON.parse(res.body) as Echo).headers).toMatchObject({
        "x-portico-consumer": "globex",
        "x-portico-plan": "free",
      });
    }
  });

  it("the admin API refuses a listener off loopback that trusts identity headers without gatewayIdentity", async () => {
    const listener = { name: "inbound", port: sidecarPort, trustIdentityHeaders: true };
    const refused = await api.call("PUT", "/api/v1/gateways/sidecar-orders", {
      body: { name: "sidecar-orders", listeners: [{ ...listener, address: "0.0.0.0" }] },
    });
    expect(refused.status).toBe(422);
    expect(refused.json.details).toEqual([
      {
        field: "listeners[0].trustIdentityHeaders",
        reason: expect.stringMatching(
          /pass as any consumer: set gatewayIdentity .* or bind the listener to 127\.0\.0\.1 or ::1$/,
        ),
      },
    ]);
    // On loopback only processes of this host reach it: taken.
    const loopback = await api.call("PUT", "/api/v1/gateways/sidecar-orders", {
      body: { name: "sidecar-orders", listeners: [{ ...listener, address: "127.0.0.1" }] },
    });
    expect(loopback.status, loopback.text).toBeLessThan(300);
  });
});
