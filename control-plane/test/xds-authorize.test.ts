import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  identityUri,
  silentLogger,
  XdsClient,
  xdsClientTls,
  xdsServerTls,
  type ClientUpdate,
  type Logger,
  type WorkloadIdentity,
} from "@portico/common";
import { AUTH_TYPE_URLS, AuthTypeUrl, COMPOSITE_ROUTE_TYPE_URL, POLICY_GROUP } from "@portico/contract";
import { makeIdentityCert, makeTestPki, removeTestPki, type CertFiles, type TestPki } from "@portico/testing";
import "../src/translate/aggregator-policy.js";
import "../src/translate/auth-policy.js";
import { RATE_LIMIT_CONFIG_TYPE_URL } from "../src/translate/ratelimit-policy.js";
import { authorizeXds, policyTypes } from "../src/xds/authorize.js";
import { checkXdsExposure, isLoopbackHost } from "../src/xds/exposure.js";
import { TokenRegistry } from "../src/admin/auth.js";
import { startControlPlane } from "../src/control-plane.js";
import { XdsServer } from "../src/xds/server.js";
import { buildSnapshot } from "../src/xds/snapshot.js";
import { isKnownType, pushOrder, TypeUrl } from "../src/xds/types.js";
import { rawStream, resources } from "./xds-helpers.js";

const ENVOY_TYPES = [
  TypeUrl.Listener,
  TypeUrl.Route,
  TypeUrl.ExtensionConfig,
  TypeUrl.Cluster,
  TypeUrl.Endpoint,
  TypeUrl.Secret,
];
const gateway = (group: string): WorkloadIdentity => ({ kind: "gateway", group });
const authz: WorkloadIdentity = { kind: "policy", role: "ext-authz" };
const ratelimit: WorkloadIdentity = { kind: "policy", role: "ratelimit" };
const aggregator: WorkloadIdentity = { kind: "policy", role: "aggregator" };

describe("authorizeXds", () => {
  it("lets a gateway read Envoy's types of its own group, and nothing else", () => {
    for (const typeUrl of ENVOY_TYPES)
      expect(authorizeXds(gateway("edge"), { cluster: "edge", typeUrl })).toBeUndefined();
    expect(authorizeXds(gateway("edge"), { cluster: "edge" })).toBeUndefined();

    expect(authorizeXds(gateway("bff-web"), { cluster: "edge", typeUrl: TypeUrl.Listener })).toEqual({
      reason: "group",
      message: "gateway bff-web may subscribe only as node.cluster 'bff-web', not 'edge'",
    });
    expect(authorizeXds(gateway("edge"), { cluster: POLICY_GROUP })?.reason).toBe("group");
    for (const typeUrl of [
      ...AUTH_TYPE_URLS,
      RATE_LIMIT_CONFIG_TYPE_URL,
      COMPOSITE_ROUTE_TYPE_URL,
      "type.googleapis.com/x.Y",
    ]) {
      const refusal = authorizeXds(gateway("edge"), { cluster: "edge", typeUrl });
      expect(refusal?.reason, typeUrl).toBe("type");
      expect(refusal?.message).toContain(`gateway edge may not read `);
      expect(refusal?.message).toContain(typeUrl);
    }
  });

  it("lets each policy service read its own role's types of the policy group, never a secret", () => {
    const own: Array<[WorkloadIdentity, readonly string[]]> = [
      [authz, AUTH_TYPE_URLS],
      [ratelimit, [RATE_LIMIT_CONFIG_TYPE_URL]],
      [aggregator, [COMPOSITE_ROUTE_TYPE_URL]],
    ];
    const policyTypeUrls = own.flatMap(([, types]) => types);
    for (const [identity, types] of own) {
      for (const typeUrl of [...policyTypeUrls, ...ENVOY_TYPES]) {
        const refusal = authorizeXds(identity, { cluster: POLICY_GROUP, typeUrl });
        if (types.includes(typeUrl)) expect(refusal, typeUrl).toBeUndefined();
        else expect(refusal?.reason, typeUrl).toBe("type");
      }
      expect(authorizeXds(identity, { cluster: "edge", typeUrl: types[0] })?.reason).toBe("group");
    }
    const secret = authorizeXds(authz, { cluster: POLICY_GROUP, typeUrl: TypeUrl.Secret })?.message ?? "";
    expect(secret).toContain(
      `policy service ext-authz may not read Secret (${TypeUrl.Secret}): it reads only `,
    );
    expect(secret).toContain("AuthPolicy");
    expect(authorizeXds(ratelimit, { cluster: POLICY_GROUP, typeUrl: TypeUrl.Listener })?.message).toBe(
      `policy service ratelimit may not read Listener (${TypeUrl.Listener}): it reads only RateLimitConfig`,
    );
  });

  it("refuses a certificate that names no identity, and the control plane's own", () => {
    expect(authorizeXds(undefined, { cluster: "edge", typeUrl: TypeUrl.Cluster })).toEqual({
      reason: "no_identity",
      message:
        "the client certificate names no Portico workload identity (it needs exactly one URI SAN, " +
        "spiffe://portico/gateway/<group> or spiffe://portico/policy/<role>); it asked for node.cluster 'edge', " +
        `Cluster (${TypeUrl.Cluster})`,
    });
    const cp = authorizeXds(
      { kind: "control-plane" },
      { cluster: POLICY_GROUP, typeUrl: AuthTypeUrl.ApiKey },
    );
    expect(cp?.reason).toBe("not_a_client");
    expect(cp?.message).toContain("control plane identity serves xDS and is not a client identity");
  });

  it("does not echo a long name the client chose in full", () => {
    const refusal = authorizeXds(gateway("edge"), { cluster: "x".repeat(100_000) });
    expect(refusal?.message.length).toBeLessThan(400);
  });

  it("has a reader for every type beyond Envoy's, each type readable by exactly one role", () => {
    const policy = pushOrder().filter((t) => !ENVOY_TYPES.includes(t));
    expect(policy.length).toBeGreaterThan(0);
    const byRole = (["ext-authz", "ratelimit", "aggregator"] as const).flatMap((r) => policyTypes(r));
    expect(byRole.sort()).toEqual(policy.sort());
    for (const t of policy) expect(isKnownType(t)).toBe(true);
  });
});

describe("checkXdsExposure", () => {
  it("knows loopback addresses", () => {
    for (const h of ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST", "::ffff:127.0.0.1"])
      expect(isLoopbackHost(h), h).toBe(true);
    for (const h of ["0.0.0.0", "::", "10.0.0.1", "128.0.0.1", "control-plane", "localhost.example.com", ""])
      expect(isLoopbackHost(h), h).toBe(false);
  });

  it("allows unauthenticated xDS on loopback, refuses it elsewhere unless told, and warns then", () => {
    for (const transport of ["plaintext", "tls"] as const) {
      expect(checkXdsExposure({ host: "127.0.0.1", transport })).toMatchObject({ ok: true, level: "info" });
      const refused = checkXdsExposure({ host: "0.0.0.0", transport });
      expect(refused.ok).toBe(false);
      expect(refused.message).toContain("refusing to serve xDS");
      expect(refused.message).toContain("on 0.0.0.0");
      expect(refused.message).toContain("--xds-insecure");
      const insecure = checkXdsExposure({ host: "0.0.0.0", transport, insecure: true });
      expect(insecure).toMatchObject({ ok: true, level: "warn" });
      expect(insecure.message).toMatch(/^INSECURE: /);
    }
    expect(checkXdsExposure({ host: "0.0.0.0", transport: "mtls" })).toMatchObject({
      ok: true,
      level: "info",
    });
  });

  it("is enforced by startControlPlane itself, before anything is opened", async () => {
    await expect(
      startControlPlane({
        store: "file:/nonexistent/portico-store",
        tokens: new TokenRegistry([]),
        xdsHost: "0.0.0.0",
        xdsPort: 0,
        adminPort: 0,
        log: silentLogger(),
      }),
    ).rejects.toThrow(/refusing to serve xDS in plaintext on 0\.0\.0\.0: .*--xds-insecure/);
  });
});

/** The xDS server over real mTLS on loopback, with the identity checks on. */
describe("xDS streams under workload identities", () => {
  let pki: TestPki;
  let server: XdsServer;
  let target: string;
  const certs: Record<string, CertFiles> = {};
  const creds = (name: string) =>
    xdsClientTls({ ca: pki.ca.cert, cert: certs[name]!.cert, key: certs[name]!.key }).credentials!;
  const refused = async (name: string) =>
    Number(
      (await server.metrics.refusedStreams.get()).values.find((v) => v.labels.reason === name)?.value ?? 0,
    );

  beforeAll(async () => {
    pki = makeTestPki();
    certs.edge = makeIdentityCert(pki, "edge", identityUri(gateway("edge")));
    certs.authz = makeIdentityCert(pki, "authz", identityUri(authz));
    certs.none = pki.client;
    server = new XdsServer({
      log: silentLogger(),
      credentials: xdsServerTls({ cert: pki.server.cert, key: pki.server.key, clientCa: pki.ca.cert })
        .credentials,
      authorizeClients: true,
    });
    target = `127.0.0.1:${await server.listen("127.0.0.1", 0)}`;
    server.cache.set(
      buildSnapshot("edge", [
        ...resources({ clusters: ["a"], listeners: ["l1"] }),
        {
          typeUrl: TypeUrl.Secret,
          name: "site/cert",
          message: {
            name: "site/cert",
            tls_certificate: { private_key: { inline_string: "SECRET-KEY-BYTES" } },
          },
        },
      ]),
    );
    server.cache.set(
      buildSnapshot(POLICY_GROUP, [
        {
          typeUrl: AuthTypeUrl.AuthPolicy,
          name: "partners",
          message: { name: "partners", accept: ["apiKey"] },
        },
      ]),
    );
  });
  afterAll(async () => {
    await server?.close(500);
    removeTestPki(pki);
  });

  it("serves a gateway its group's listeners and secrets", async () => {
    const client = new XdsClient({
      target,
      node: { id: "edge-1", cluster: "edge" },
      protocol: "sotw",
      credentials: creds("edge"),
    });
    const updates: ClientUpdate[] = [];
    client.on("update", (u) => updates.push(u));
    try {
      client.subscribe(TypeUrl.Listener);
      client.subscribe(TypeUrl.Secret, ["site/cert"]);
      await expect
        .poll(() => updates.map((u) => u.typeUrl).sort(), { timeout: 5_000 })
        .toEqual([TypeUrl.Listener, TypeUrl.Secret].sort());
      expect([...client.resources(TypeUrl.Secret).keys()]).toEqual(["site/cert"]);
      expect(server.fleet.get("edge-1")?.group).toBe("edge");
    } finally {
      client.close();
    }
  });

  const cases: Array<[string, string, Parameters<typeof rawStream>[2], string, string]> = [
    [
      "a certificate naming no identity",
      "none",
      { requests: [{ node: { id: "n1", cluster: "edge" }, type_url: TypeUrl.Cluster }] },
      "no_identity",
      "names no Portico workload identity",
    ],
    [
      "a gateway asking as another group",
      "edge",
      {
        protocol: "delta",
        requests: [{ node: { id: "n2", cluster: POLICY_GROUP }, type_url: AuthTypeUrl.ApiKey }],
      },
      "group",
      "gateway edge may subscribe only as node.cluster 'edge', not 'portico:policy'",
    ],
    [
      "a gateway asking for a policy type",
      "edge",
      { requests: [{ node: { id: "n3", cluster: "edge" }, type_url: AuthTypeUrl.ApiKey }] },
      "type",
      `gateway edge may not read ApiKey (${AuthTypeUrl.ApiKey})`,
    ],
    [
      "a policy service asking for secrets on SDS",
      "authz",
      {
        path: "/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets",
        requests: [{ node: { id: "n4", cluster: POLICY_GROUP }, resource_names: ["site/cert"] }],
      },
      "type",
      `policy service ext-authz may not read Secret (${TypeUrl.Secret})`,
    ],
  ];
  for (const [what, cert, o, reason, message] of cases) {
    it(`ends the stream of ${what} before sending anything; the node never joins the fleet`, async () => {
      const before = await refused(reason);
      const nodeId = (o.requests[0]!.node as { id: string }).id;
      const outcome = await rawStream(target, creds(cert), {
        ...o,
        // A NACK with a guessed nonce and further requests behind the first: none of it counts.
        requests: [
          ...o.requests,
          { type_url: TypeUrl.Cluster, response_nonce: "s1", error_detail: { code: 3, message: "no" } },
          { type_url: TypeUrl.Listener },
        ],
      });
      expect(outcome.received).toEqual([]);
      expect(outcome.code).toBe(grpc.status.PERMISSION_DENIED);
      expect(outcome.details).toContain(message);
      expect(server.fleet.get(nodeId)).toBeUndefined();
      expect(await refused(reason)).toBe(before + 1);
      expect((await server.metrics.nacks.get()).values.reduce((n, v) => n + v.value, 0)).toBe(0);
    });
  }

  it("ends a gateway's stream that later asks for a policy type, and it leaves the fleet", async () => {
    const client = new XdsClient({
      target,
      node: { id: "edge-2", cluster: "edge" },
      protocol: "delta",
      credentials: creds("edge"),
    });
    const errors: grpc.ServiceError[] = [];
    const updates: ClientUpdate[] = [];
    client.on("error", (e) => errors.push(e as grpc.ServiceError));
    client.on("update", (u) => updates.push(u));
    try {
      client.subscribe(TypeUrl.Cluster);
      await expect.poll(() => server.fleet.get("edge-2")?.group, { timeout: 5_000 }).toBe("edge");
      await expect.poll(() => updates.length, { timeout: 5_000 }).toBe(1);
      client.subscribe(AuthTypeUrl.AuthPolicy);
      await expect
        .poll(() => errors.map((e) => e.code), { timeout: 5_000 })
        .toEqual([grpc.status.PERMISSION_DENIED]);
      expect(errors[0]!.details).toContain(`gateway edge may not read AuthPolicy`);
      expect(updates.map((u) => u.typeUrl)).toEqual([TypeUrl.Cluster]);
      await expect.poll(() => server.fleet.get("edge-2"), { timeout: 5_000 }).toBeUndefined();
    } finally {
      client.close();
    }
  });

  it("logs refusals within the budget and counts the lines left out", async () => {
    const warnings: Array<{ fields: Record<string, unknown>; msg: string }> = [];
    const log: any = {
      child: () => log,
      warn: (fields: Record<string, unknown>, msg: string) => warnings.push({ fields, msg }),
      info: () => {},
      debug: () => {},
      error: () => {},
    };
    const quiet = new XdsServer({
      log: log as Logger,
      credentials: xdsServerTls({ cert: pki.server.cert, key: pki.server.key, clientCa: pki.ca.cert })
        .credentials,
      authorizeClients: true,
      refusalLogsPerSecond: 1,
    });
    const quietTarget = `127.0.0.1:${await quiet.listen("127.0.0.1", 0)}`;
    try {
      for (let i = 0; i < 3; i++) {
        const outcome = await rawStream(quietTarget, creds("authz"), {
          requests: [{ node: { id: `log-${i}`, cluster: "edge" }, type_url: TypeUrl.Listener }],
        });
        expect(outcome.code).toBe(grpc.status.PERMISSION_DENIED);
      }
      const refusals = warnings.filter((w) => w.msg.startsWith("xDS stream refused: "));
      const dropped = (await quiet.metrics.refusalLogsDropped.get()).values[0]?.value ?? 0;
      expect(refusals.length).toBeGreaterThanOrEqual(1);
      expect(refusals.length + dropped).toBe(3);
      expect(refusals[0]!.msg).toBe(
        `xDS stream refused: policy service ext-authz may subscribe only as node.cluster '${POLICY_GROUP}', not 'edge'`,
      );
      expect(refusals[0]!.fields).toMatchObject({
        reason: "group",
        identity: "policy service ext-authz",
        node: "log-0",
      });
    } finally {
      await quiet.close(500);
    }
  });

  it("serves a policy service its role's types", async () => {
    const client = new XdsClient({
      target,
      node: { id: "authz-1", cluster: POLICY_GROUP },
      protocol: "delta",
      credentials: creds("authz"),
    });
    try {
      client.subscribe(AuthTypeUrl.AuthPolicy);
      await expect
        .poll(() => [...client.resources(AuthTypeUrl.AuthPolicy).keys()], { timeout: 5_000 })
        .toEqual(["partners"]);
    } finally {
      client.close();
    }
  });
});
