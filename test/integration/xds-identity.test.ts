import crypto from "node:crypto";
import fs from "node:fs";
import https from "node:https";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  decodeDeltaDiscoveryResponse,
  decodeDiscoveryResponse,
  encodeDeltaDiscoveryRequest,
  encodeDiscoveryRequest,
  identityUri,
  XdsClient,
  xdsClientTls,
  type ClientUpdate,
  type DeltaDiscoveryRequest,
  type DiscoveryRequest,
} from "@portico/common";
import { AuthTypeUrl, POLICY_GROUP, TYPE_PREFIX } from "@portico/contract";
import {
  freePorts,
  makeIdentityCert,
  makeTestPki,
  removeTestPki,
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

type Obj = Record<string, any>;

const T = {
  Cluster: `${TYPE_PREFIX}envoy.config.cluster.v3.Cluster`,
  Listener: `${TYPE_PREFIX}envoy.config.listener.v3.Listener`,
  Route: `${TYPE_PREFIX}envoy.config.route.v3.RouteConfiguration`,
  Secret: `${TYPE_PREFIX}envoy.extensions.transport_sockets.tls.v3.Secret`,
};

type Request = Partial<DiscoveryRequest> | Partial<DeltaDiscoveryRequest>;

/** How a rogue stream ended, and every message that reached it first, as raw bytes. */
interface Outcome {
  code: grpc.status;
  details: string;
  received: Buffer[];
}

/**
 * An ADS stream made with grpc-js the way an attacker would: `requests` go as they are (the node,
 * types it may not have, NACKs with guessed nonces); whatever arrives is kept raw and, with
 * `answer: "nack"`, refused at once (which would roll a config back), or never answered (which
 * would hold every `?wait=applied`). Resolves when the server ends the stream.
 */
function rogue(
  target: string,
  credentials: grpc.ChannelCredentials,
  o: {
    protocol?: "sotw" | "delta";
    requests: Request[];
    answer?: "nack" | "none";
    timeoutMs?: number;
    /** Ends the stream from this side. */
    signal?: AbortSignal;
  },
): Promise<Outcome> {
  const delta = o.protocol === "delta";
  const client = new grpc.Client(target, credentials);
  const call = client.makeBidiStreamRequest<any, Buffer>(
    `/envoy.service.discovery.v3.AggregatedDiscoveryService/${delta ? "DeltaAggregatedResources" : "StreamAggregatedResources"}`,
    delta ? encodeDeltaDiscoveryRequest : encodeDiscoveryRequest,
    (b: Buffer) => b,
  );
  const received: Buffer[] = [];
  return new Promise<Outcome>((resolve, reject) => {
    const timer = setTimeout(() => {
      call.cancel();
      client.close();
      reject(
        new Error(
          `the rogue stream was still open after ${o.timeoutMs ?? 10_000} ms, with ${received.length} messages received`,
        ),
      );
    }, o.timeoutMs ?? 10_000);
    call.on("data", (b: Buffer) => {
      received.push(b);
      if (o.answer === "none") return;
      const r = delta ? decodeDeltaDiscoveryResponse(b) : decodeDiscoveryResponse(b);
      call.write({
        type_url: r.type_url,
        response_nonce: r.nonce,
        error_detail: { code: 3, message: "rogue NACK" },
      });
    });
    call.on("error", () => {});
    call.on("status", (st: grpc.StatusObject) => {
      clearTimeout(timer);
      client.close();
      resolve({ code: st.code, details: st.details, received });
    });
    o.signal?.addEventListener("abort", () => call.cancel());
    for (const r of o.requests) call.write(r);
  });
}

/** NACKs of responses the rogue never received, with the nonces a control plane is likely to have used. */
const guessedNacks = (typeUrl: string): Request[] =>
  Array.from({ length: 30 }, (_, i) => ({
    type_url: typeUrl,
    response_nonce: `s${i + 1}`,
    version_info: "",
    error_detail: { code: 3, message: "rogue NACK" },
  }));

/**
 * The control plane's xDS identity model with real TLS: a client certificate names a gateway group
 * or a policy role, and the stream gets that identity's resources or nothing at all.
 */
describe("xDS workload identities", () => {
  const track = useEnvoyLogs();
  let pki: TestPki;
  let api: AdminHandle;
  let target: string;
  let upstream: HttpUpstream;
  let edgePort: number;
  let bffPort: number;
  let envoy: EnvoyProcess;
  let siteKeyPem: string;
  let ticketKey: string;
  const certs: Record<string, CertFiles> = {};
  /** Every node that ever joined the fleet, and every NACK the fleet recorded, in order. */
  const joined: string[] = [];
  const nacks: string[] = [];

  const creds = (name: keyof typeof certs | string) =>
    xdsClientTls({ ca: pki.ca.cert, cert: certs[name]!.cert, key: certs[name]!.key }).credentials!;
  const status = async (): Promise<Obj> => (await api.call("GET", "/api/v1/status")).json;
  const nodeIds = async (): Promise<string[]> => ((await status()).nodes as Obj[]).map((n) => n.id).sort();
  const metric = async (name: string, labels = ""): Promise<number> => {
    const text = await (await fetch(`${api.url}/metrics`)).text();
    const lines = text.split("\n").filter((l) => l.startsWith(name) && l.includes(labels));
    return lines.reduce((n, l) => n + Number(l.slice(l.lastIndexOf(" ") + 1)), 0);
  };
  /** Every secret byte the edge's snapshot holds, as it would travel (PEM text, raw ticket key). */
  const secretBytes = () => [Buffer.from(siteKeyPem), Buffer.from(ticketKey, "base64")];
  const expectNothingArrived = (o: Outcome) => {
    expect(o.received).toEqual([]);
    const all = Buffer.concat(o.received);
    for (const s of secretBytes()) expect(all.includes(s)).toBe(false);
  };

  beforeAll(async () => {
    pki = makeTestPki();
    certs.edge = makeIdentityCert(pki, "gw-edge", identityUri({ kind: "gateway", group: "edge" }));
    certs.bffWeb = makeIdentityCert(pki, "gw-bff-web", identityUri({ kind: "gateway", group: "bff-web" }));
    certs.authz = makeIdentityCert(pki, "policy-authz", identityUri({ kind: "policy", role: "ext-authz" }));
    certs.ratelimit = makeIdentityCert(pki, "policy-rl", identityUri({ kind: "policy", role: "ratelimit" }));
    certs.controlPlane = makeIdentityCert(pki, "cp-id", identityUri({ kind: "control-plane" }));
    certs.two = makeIdentityCert(pki, "two-ids", [
      identityUri({ kind: "gateway", group: "edge" }),
      identityUri({ kind: "policy", role: "ext-authz" }),
    ]);
    certs.foreignEdge = makeIdentityCert(
      pki,
      "foreign-edge",
      identityUri({ kind: "gateway", group: "edge" }),
      {
        ca: pki.otherCa,
      },
    );
    certs.noIdentity = pki.client;

    upstream = await startHttpUpstream("identity-app");
    [edgePort, bffPort] = await freePorts(2);
    api = await startAdmin({
      xdsTls: { cert: pki.server.cert, key: pki.server.key, clientCa: pki.ca.cert },
      autoRollback: true,
    });
    target = `127.0.0.1:${api.cp.xdsPort}`;
    api.cp.xds.fleet.on("connect", (n) => joined.push(n.id));
    api.cp.xds.fleet.on("nack", (n) => nacks.push(n.id));
    siteKeyPem = fs.readFileSync(pki.server.key, "utf8");
    ticketKey = crypto.randomBytes(80).toString("base64");
    const writes: Array<[string, object]> = [
      [
        "/api/v1/certificates/site",
        {
          name: "site",
          certificatePem: fs.readFileSync(pki.server.cert, "utf8"),
          privateKeyPem: siteKeyPem,
          sessionTicketKeys: [ticketKey],
        },
      ],
      [
        "/api/v1/gateways/edge",
        {
          name: "edge",
          listeners: [
            { name: "https", port: edgePort, address: "127.0.0.1", protocol: "https", certificate: "site" },
          ],
        },
      ],
      [
        "/api/v1/gateways/bff-web",
        { name: "bff-web", listeners: [{ name: "http", port: bffPort, address: "127.0.0.1" }] },
      ],
      ["/api/v1/upstreams/app", { name: "app", endpoints: [{ host: "127.0.0.1", port: upstream.port }] }],
      [
        "/api/v1/routes/app",
        { name: "app", gateway: "edge", match: { pathPrefix: "/app" }, upstream: "app" },
      ],
      [
        "/api/v1/routes/web",
        { name: "web", gateway: "bff-web", match: { pathPrefix: "/web" }, upstream: "app" },
      ],
      ["/api/v1/authPolicies/partners", { accept: ["apiKey"], requiredScopes: ["orders:read"] }],
    ];
    for (const [p, body] of writes) {
      const res = await api.call("PUT", p, { body });
      expect(res.status, `${p}: ${res.text}`).toBeLessThan(300);
    }

    // An Envoy of gateway group edge, proving who it is with its gateway certificate.
    envoy = track(
      await startEnvoy({
        nodeId: "edge-envoy",
        group: "edge",
        xdsPort: api.cp.xdsPort,
        xdsTls: { caFile: pki.ca.cert, certFile: certs.edge.cert, keyFile: certs.edge.key },
      }),
    );
    await envoy.waitReady({ timeoutMs: 20_000 });
  });

  afterAll(async () => {
    await envoy?.stop();
    await api?.stop();
    await upstream?.close();
    removeTestPki(pki);
  });

  it("an Envoy with its gateway certificate gets its listener and its TLS certificate by SDS, and serves the route", async () => {
    expect(await envoy.listeners()).toEqual(["edge/https"]);
    const res = await waitFor(
      () =>
        new Promise<{ status: number; body: string } | undefined>((resolve) => {
          const req = https.get(
            {
              host: "127.0.0.1",
              port: edgePort,
              path: "/app/orders",
              ca: fs.readFileSync(pki.ca.cert),
              servername: "localhost",
              agent: false,
            },
            (r) => {
              let body = "";
              r.on("data", (c) => (body += c));
              r.on("end", () => resolve(r.statusCode === 200 ? { status: 200, body } : undefined));
            },
          );
          req.on("error", () => resolve(undefined));
        }),
      { what: "the https route served by the Envoy with a gateway identity" },
    );
    expect(JSON.parse(res.body)).toMatchObject({ upstream: "identity-app", path: "/app/orders" });
    expect(await envoy.stat("cluster.xds_cluster.ssl.handshake")).toBeGreaterThanOrEqual(1);
  });

  it("a gateway certificate gets its own group's listeners and secrets, and nothing of another group", async () => {
    const clients: XdsClient[] = [];
    const open = (name: string, group: string) => {
      const c = new XdsClient({
        target,
        node: { id: `probe-${name}`, cluster: group },
        protocol: "sotw",
        credentials: creds(name),
      });
      clients.push(c);
      const updates: ClientUpdate[] = [];
      c.on("update", (u) => updates.push(u));
      c.subscribe(T.Listener);
      c.subscribe(T.Secret, ["site/cert", "site/tickets"]);
      return { c, updates };
    };
    try {
      const edge = open("edge", "edge");
      const bff = open("bffWeb", "bff-web");
      for (const { updates } of [edge, bff])
        await waitFor(() => new Set(updates.map((u) => u.typeUrl)).size === 2, {
          what: "listeners and secrets answered",
        });
      expect([...edge.c.resources(T.Listener).keys()]).toEqual(["edge/https"]);
      expect([...edge.c.resources(T.Secret).keys()].sort()).toEqual(["site/cert", "site/tickets"]);
      // The gateway does get the key: the refusals below are about who asks, not what is served.
      const edgeSecrets = Buffer.concat(
        [...edge.c.resources(T.Secret).values()].map((r) => Buffer.from(r.any.value)),
      );
      for (const s of secretBytes()) expect(edgeSecrets.includes(s)).toBe(true);
      // bff-web's own listener; the edge's certificate is not in its snapshot, so it gets none.
      expect([...bff.c.resources(T.Listener).keys()]).toEqual(["bff-web/http"]);
      expect(bff.c.resources(T.Secret).size).toBe(0);
    } finally {
      for (const c of clients) c.close();
    }
  });

  it("a policy certificate gets its role's policy resources", async () => {
    const client = new XdsClient({
      target,
      node: { id: "probe-authz", cluster: POLICY_GROUP },
      protocol: "delta",
      credentials: creds("authz"),
    });
    try {
      client.subscribe(AuthTypeUrl.AuthPolicy);
      await waitFor(() => client.resources(AuthTypeUrl.AuthPolicy).size > 0, {
        what: "the auth policy delivered",
      });
      expect([...client.resources(AuthTypeUrl.AuthPolicy).keys()]).toEqual(["partners"]);
    } finally {
      client.close();
    }
  });

  for (const [what, credentials] of [
    ["no client certificate", () => xdsClientTls({ ca: pki.ca.cert }).credentials!],
    ["a gateway certificate from another CA", () => creds("foreignEdge")],
  ] as const) {
    it(`a client with ${what} is refused in the handshake and receives nothing`, async () => {
      const outcome = await rogue(target, credentials(), {
        requests: [
          {
            node: { id: "rogue-handshake", cluster: "edge" },
            type_url: T.Secret,
            resource_names: ["site/cert"],
          },
        ],
      });
      expectNothingArrived(outcome);
      expect(outcome.code).toBe(grpc.status.UNAVAILABLE);
      expect(joined).not.toContain("rogue-handshake");
    });
  }

  const refusals: Array<{
    what: string;
    cert: string;
    protocol: "sotw" | "delta";
    requests: Request[];
    reason: string;
    details: string;
  }> = [
    {
      what: "a valid bff-web certificate asking as node.cluster edge",
      cert: "bffWeb",
      protocol: "sotw",
      requests: [
        { node: { id: "rogue-group", cluster: "edge" }, type_url: T.Cluster },
        { type_url: T.Listener },
        { type_url: T.Secret, resource_names: ["site/cert", "site/tickets"] },
        ...guessedNacks(T.Cluster),
      ],
      reason: "group",
      details: "gateway bff-web may subscribe only as node.cluster 'bff-web', not 'edge'",
    },
    {
      what: "an edge gateway certificate asking for a policy type",
      cert: "edge",
      protocol: "delta",
      requests: [
        {
          node: { id: "rogue-gw-policy", cluster: "edge" },
          type_url: AuthTypeUrl.ApiKey,
          resource_names_subscribe: ["*"],
        },
      ],
      reason: "type",
      details: `gateway edge may not read ApiKey (${AuthTypeUrl.ApiKey})`,
    },
    {
      what: "an edge gateway certificate asking for policy types as the policy group",
      cert: "edge",
      protocol: "sotw",
      requests: [
        { node: { id: "rogue-gw-policy-group", cluster: POLICY_GROUP }, type_url: AuthTypeUrl.AuthPolicy },
      ],
      reason: "group",
      details: `gateway edge may subscribe only as node.cluster 'edge', not '${POLICY_GROUP}'`,
    },
    {
      what: "an ext-authz certificate asking for Secrets",
      cert: "authz",
      protocol: "sotw",
      requests: [
        {
          node: { id: "rogue-policy-sds", cluster: POLICY_GROUP },
          type_url: T.Secret,
          resource_names: ["site/cert"],
        },
      ],
      reason: "type",
      details: `policy service ext-authz may not read Secret (${T.Secret})`,
    },
    {
      what: "a ratelimit certificate asking for Listeners",
      cert: "ratelimit",
      protocol: "delta",
      requests: [
        {
          node: { id: "rogue-policy-lds", cluster: POLICY_GROUP },
          type_url: T.Listener,
          resource_names_subscribe: ["*"],
        },
      ],
      reason: "type",
      details: `policy service ratelimit may not read Listener (${T.Listener})`,
    },
    {
      what: "an ext-authz certificate asking for the edge's Secrets as the edge",
      cert: "authz",
      protocol: "sotw",
      requests: [
        {
          node: { id: "rogue-policy-edge", cluster: "edge" },
          type_url: T.Secret,
          resource_names: ["site/cert"],
        },
      ],
      reason: "group",
      details: `policy service ext-authz may subscribe only as node.cluster '${POLICY_GROUP}', not 'edge'`,
    },
    {
      what: "a certificate naming no Portico identity",
      cert: "noIdentity",
      protocol: "sotw",
      requests: [{ node: { id: "rogue-no-id", cluster: "edge" }, type_url: T.Cluster }],
      reason: "no_identity",
      details: "the client certificate names no Portico workload identity",
    },
    {
      what: "a certificate naming two identities",
      cert: "two",
      protocol: "sotw",
      requests: [{ node: { id: "rogue-two-ids", cluster: "edge" }, type_url: T.Cluster }],
      reason: "no_identity",
      details: "the client certificate names no Portico workload identity",
    },
    {
      what: "the control plane's own identity",
      cert: "controlPlane",
      protocol: "delta",
      requests: [
        {
          node: { id: "rogue-cp-id", cluster: POLICY_GROUP },
          type_url: AuthTypeUrl.ApiKey,
          resource_names_subscribe: ["*"],
        },
      ],
      reason: "not_a_client",
      details: "the control plane identity serves xDS and is not a client identity",
    },
  ];
  for (const r of refusals) {
    it(`${r.what}: PERMISSION_DENIED before anything is sent, counted, and never in the fleet`, async () => {
      const before = await metric("portico_xds_refused_streams_total", `reason="${r.reason}"`);
      const outcome = await rogue(target, creds(r.cert), { protocol: r.protocol, requests: r.requests });
      expectNothingArrived(outcome);
      expect(outcome.code).toBe(grpc.status.PERMISSION_DENIED);
      expect(outcome.details).toContain(r.details);
      expect(await metric("portico_xds_refused_streams_total", `reason="${r.reason}"`)).toBe(before + 1);
      const nodeId = (r.requests[0]!.node as { id: string }).id;
      expect(joined).not.toContain(nodeId);
    });
  }

  it("a NACK from a refused stream rolls nothing back, and a write with ?wait=applied is not held by it", async () => {
    // A legitimate edge node that never answers keeps the latest revision unconfirmed, the one
    // state in which a NACK would roll the config back.
    const stopHolder = new AbortController();
    const holder = rogue(target, creds("edge"), {
      answer: "none",
      signal: stopHolder.signal,
      requests: [{ node: { id: "edge-holder", cluster: "edge" }, type_url: T.Cluster }],
      timeoutMs: 60_000,
    });
    await waitFor(async () => (await nodeIds()).includes("edge-holder"), { what: "the holder in the fleet" });
    const put = await api.call("PUT", "/api/v1/routes/app", {
      body: {
        name: "app",
        gateway: "edge",
        match: { pathPrefix: "/app" },
        upstream: "app",
        timeoutMs: 5_000,
      },
    });
    expect(put.status, put.text).toBe(200);
    const published = (await status()).config;
    expect(published.lastGoodRevision).toBeLessThan(published.revision);

    const nacksBefore = await metric("portico_xds_nacks_total");
    for (const protocol of ["sotw", "delta"] as const) {
      const outcome = await rogue(target, creds("bffWeb"), {
        protocol,
        requests: [
          protocol === "sotw"
            ? { node: { id: `rogue-nack-${protocol}`, cluster: "edge" }, type_url: T.Cluster }
            : {
                node: { id: `rogue-nack-${protocol}`, cluster: "edge" },
                type_url: T.Cluster,
                resource_names_subscribe: ["*"],
              },
          ...guessedNacks(T.Cluster),
          ...guessedNacks(T.Listener),
        ],
      });
      expectNothingArrived(outcome);
      expect(outcome.code).toBe(grpc.status.PERMISSION_DENIED);
    }
    const after = (await status()).config;
    expect(after.revision).toBe(published.revision);
    expect(after.lastGoodRevision).toBe(published.lastGoodRevision);
    expect((await api.call("GET", "/api/v1/revisions?limit=1")).json.items[0].number).toBe(
      published.revision,
    );
    expect(await metric("portico_xds_nacks_total")).toBe(nacksBefore);
    expect(nacks).toEqual([]);
    expect(joined.filter((id) => id.startsWith("rogue-"))).toEqual([]);
    expect(await nodeIds()).toEqual(["edge-envoy", "edge-holder"]);

    // The holder goes; a rogue that would never ACK tries to join while a write waits.
    stopHolder.abort();
    expect((await holder).received.length).toBeGreaterThan(0);
    await waitFor(async () => !(await nodeIds()).includes("edge-holder"), { what: "the holder gone" });
    const stalling = rogue(target, creds("bffWeb"), {
      answer: "none",
      requests: [
        { node: { id: "rogue-stall", cluster: "edge" }, type_url: T.Cluster },
        { type_url: T.Listener },
      ],
    });
    const waited = await api.call("PUT", "/api/v1/routes/app?wait=applied&timeout=20s", {
      body: {
        name: "app",
        gateway: "edge",
        match: { pathPrefix: "/app" },
        upstream: "app",
        timeoutMs: 6_000,
      },
    });
    const stalled = await stalling;
    expectNothingArrived(stalled);
    expect(stalled.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(waited.status, waited.text).toBe(200);
    expect(waited.json.rollout).toMatchObject({ applied: true, timedOut: false });
    expect((waited.json.rollout.nodes as Obj[]).map((n) => n.id)).toEqual(["edge-envoy"]);
    expect(joined).not.toContain("rogue-stall");
  });

  it("an Envoy bootstrapped as another group than its certificate names gets nothing", async () => {
    const before = await metric("portico_xds_refused_streams_total", 'reason="group"');
    const wrong = track(
      await startEnvoy({
        nodeId: "bff-as-edge",
        group: "edge",
        xdsPort: api.cp.xdsPort,
        xdsTls: { caFile: pki.ca.cert, certFile: certs.bffWeb!.cert, keyFile: certs.bffWeb!.key },
      }),
    );
    try {
      await waitFor(
        async () => (await metric("portico_xds_refused_streams_total", 'reason="group"')) >= before + 2,
        {
          what: "the Envoy's streams refused twice (it retried)",
          timeoutMs: 20_000,
        },
      );
      expect(await wrong.listeners()).toEqual([]);
      expect(await wrong.clusters()).toEqual([]);
      expect(await wrong.stat("listener_manager.lds.update_success")).toBe(0);
      expect(await wrong.stat("cluster_manager.cds.update_success")).toBe(0);
      expect(joined).not.toContain("bff-as-edge");
    } finally {
      await wrong.stop();
    }
  });
});
