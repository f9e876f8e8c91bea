import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { identityUri, XdsClient, type ClientUpdate, xdsClientTls, type PolicyRole } from "@portico/common";
import { POLICY_GROUP, AuthTypeUrl } from "@portico/contract";
import { REPO_ROOT } from "@portico/envoy";
import { XdsPolicySource, type CompiledPolicy } from "@portico/ext-authz";
import {
  makeIdentityCert,
  makeTestPki,
  removeTestPki,
  type CertFiles,
  type TestPki,
} from "../harness/certs.js";
import { spawnControlPlane } from "../harness/control-plane-process.js";
import {
  freePort,
  freePorts,
  httpGet,
  startAdmin,
  startEnvoy,
  startHttpUpstream,
  waitFor,
  type AdminHandle,
  type HttpUpstream,
} from "../harness/index.js";
import { useEnvoyLogs } from "../harness/logs.js";

type Obj = Record<string, any>;

/** A process started by these tests, with its output kept for assertions and failures. */
interface Service {
  child: ChildProcess;
  output(): string;
  exited: Promise<number | null>;
  stop(): Promise<void>;
}

function spawnService(script: string, args: string[], env: Record<string, string> = {}): Service {
  const child = spawn(process.execPath, ["--import", "tsx", path.join(REPO_ROOT, script), ...args], {
    cwd: REPO_ROOT,
    env: { ...process.env, LOG_LEVEL: "info", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout!.on("data", (b: Buffer) => (out += b.toString()));
  child.stderr!.on("data", (b: Buffer) => (out += b.toString()));
  const exited = new Promise<number | null>((resolve) => child.once("close", (code) => resolve(code)));
  return {
    child,
    output: () => out,
    exited,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** The client's first error or update, whichever comes first; a refused client must not hang a test. */
function firstOutcome(client: XdsClient, timeoutMs = 10_000): Promise<Error | ClientUpdate> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no error and no update in ${timeoutMs} ms`)), timeoutMs);
    const done = (outcome: Error | ClientUpdate) => {
      clearTimeout(timer);
      resolve(outcome);
    };
    client.once("error", done);
    client.once("update", done);
  });
}

/**
 * The xDS channel over mTLS, end to end: a control plane that requires client certificates signed
 * by its CA, real Envoys bootstrapped with and without one, the policy services' xDS clients, and
 * the services' and the control plane's own command-line flags.
 */
describe("xDS over mTLS", () => {
  const track = useEnvoyLogs();
  let pki: TestPki;
  /** Each client's certificate names its workload identity: the edge's Envoys, each policy service. */
  let edge: CertFiles;
  const policy = {} as Record<PolicyRole, CertFiles>;
  let upstream: HttpUpstream;
  let port: number;
  let api: AdminHandle;
  let target: string;
  const services: Service[] = [];

  const fleetNode = async (id: string): Promise<Obj | undefined> =>
    ((await api.call("GET", "/api/v1/status")).json.nodes as Obj[]).find((n) => n.id === id);

  beforeAll(async () => {
    pki = makeTestPki();
    edge = makeIdentityCert(pki, "gateway-edge", identityUri({ kind: "gateway", group: "edge" }));
    for (const role of ["ext-authz", "ratelimit", "aggregator"] as const)
      policy[role] = makeIdentityCert(pki, `policy-${role}`, identityUri({ kind: "policy", role }));
    upstream = await startHttpUpstream("secure-app");
    port = await freePort();
    api = await startAdmin({ xdsTls: { cert: pki.server.cert, key: pki.server.key, clientCa: pki.ca.cert } });
    target = `127.0.0.1:${api.cp.xdsPort}`;
    const writes: Array<[string, object]> = [
      ["/api/v1/gateways/edge", { name: "edge", listeners: [{ name: "http", port, address: "127.0.0.1" }] }],
      ["/api/v1/upstreams/app", { name: "app", endpoints: [{ host: "127.0.0.1", port: upstream.port }] }],
      [
        "/api/v1/routes/app",
        { name: "app", gateway: "edge", match: { pathPrefix: "/app" }, upstream: "app" },
      ],
      ["/api/v1/authPolicies/partners", { accept: ["apiKey"], requiredScopes: ["orders:read"] }],
    ];
    for (const [p, body] of writes) {
      const res = await api.call("PUT", p, { body });
      expect(res.status, `${p}: ${res.text}`).toBeLessThan(300);
    }
  });

  afterAll(async () => {
    await Promise.all(services.map((s) => s.stop()));
    await api?.stop();
    await upstream?.close();
    removeTestPki(pki);
  });

  for (const [host, protocol] of [
    ["127.0.0.1", "sotw"],
    ["localhost", "delta"],
  ] as const) {
    it(`an Envoy with a certificate the CA signed gets its listener over ${protocol}, checking the server as ${host}, and serves the route`, async () => {
      const nodeId = `edge-mtls-${protocol}`;
      const envoy = track(
        await startEnvoy({
          nodeId,
          group: "edge",
          xdsHost: host,
          xdsPort: api.cp.xdsPort,
          protocol,
          xdsTls: { caFile: pki.ca.cert, certFile: edge.cert, keyFile: edge.key },
        }),
      );
      try {
        await envoy.waitReady({ timeoutMs: 20_000 });
        expect(await envoy.listeners()).toEqual(["edge/http"]);
        const res = await waitFor(
          async () => {
            const r = await httpGet(`http://127.0.0.1:${port}/app/orders`).catch(() => undefined);
            return r?.status === 200 ? r : undefined;
          },
          { what: "the route served through the Envoy that got its config over mTLS" },
        );
        expect(JSON.parse(res.body)).toMatchObject({ upstream: "secure-app", path: "/app/orders" });
        expect(await fleetNode(nodeId)).toMatchObject({ group: "edge", protocol });
        expect(await envoy.stat("cluster.xds_cluster.ssl.handshake")).toBeGreaterThanOrEqual(1);
      } finally {
        await envoy.stop();
      }
    });
  }

  for (const [what, client] of [
    ["no client certificate", undefined],
    ["a client certificate from another CA", "other"],
  ] as const) {
    it(`an Envoy with ${what} is refused and receives nothing`, async () => {
      const nodeId = `edge-refused-${client ?? "none"}`;
      const envoy = track(
        await startEnvoy({
          nodeId,
          group: "edge",
          xdsPort: api.cp.xdsPort,
          xdsTls: {
            caFile: pki.ca.cert,
            ...(client ? { certFile: pki.otherClient.cert, keyFile: pki.otherClient.key } : {}),
          },
        }),
      );
      try {
        // Several connections, each ended by the server during the handshake: Envoy retried.
        await envoy.waitForStat("cluster.xds_cluster.upstream_cx_total", (n) => n >= 3, undefined, {
          timeoutMs: 15_000,
        });
        expect(await envoy.listeners()).toEqual([]);
        expect(await envoy.clusters()).toEqual([]);
        // Under TLS 1.3 the client finishes its handshake before the server has read its (missing
        // or foreign) certificate, so Envoy counts itself connected for the moment until the
        // server's alert: not connected is what it settles to, never staying connected.
        await envoy.waitForStat("control_plane.connected_state", (n) => n === 0, undefined, {
          timeoutMs: 5_000,
        });
        expect(await envoy.stat("listener_manager.lds.update_success")).toBe(0);
        expect(await envoy.stat("cluster_manager.cds.update_success")).toBe(0);
        expect(await fleetNode(nodeId)).toBeUndefined();
      } finally {
        await envoy.stop();
      }
    });
  }

  it("a policy service with a certificate the CA signed gets its resources over mTLS", async () => {
    const { credentials, transport } = xdsClientTls({
      ca: pki.ca.cert,
      cert: policy["ext-authz"].cert,
      key: policy["ext-authz"].key,
    });
    expect(transport).toBe("mtls");
    const installed: CompiledPolicy[] = [];
    const source = new XdsPolicySource({
      target,
      nodeId: "ext-authz-mtls",
      credentials,
      authorizer: { setPolicy: (p) => installed.push(p), warm: async () => {} },
    });
    try {
      const policy = await new Promise<CompiledPolicy>((resolve) => source.once("ready", resolve));
      expect([...policy.authPolicies.keys()]).toEqual(["partners"]);
      expect(installed).toHaveLength(1);
      const node = await waitFor(async () => (await fleetNode("ext-authz-mtls"))?.appliedRevision && true, {
        what: "the ext-authz node applied in /api/v1/status",
      });
      expect(node).toBe(true);
    } finally {
      source.close();
    }
  });

  const refusedClients: Array<[string, () => grpc.ChannelCredentials]> = [
    ["in plaintext", () => grpc.credentials.createInsecure()],
    ["without a client certificate", () => xdsClientTls({ ca: pki.ca.cert }).credentials!],
    [
      "with a certificate from another CA",
      () =>
        xdsClientTls({ ca: pki.ca.cert, cert: pki.otherClient.cert, key: pki.otherClient.key }).credentials!,
    ],
    [
      "not trusting the control plane's CA",
      () =>
        xdsClientTls({ ca: pki.otherCa.cert, cert: policy["ext-authz"].cert, key: policy["ext-authz"].key })
          .credentials!,
    ],
  ];
  for (const [what, credentials] of refusedClients) {
    it(`an xDS client ${what} is refused and receives nothing`, async () => {
      const nodeId = `refused-${what.replace(/\W+/g, "-")}`;
      const updates: ClientUpdate[] = [];
      const client = new XdsClient({
        target,
        node: { id: nodeId, cluster: POLICY_GROUP },
        protocol: "sotw",
        credentials: credentials(),
      });
      client.on("update", (u) => updates.push(u));
      try {
        const outcome = firstOutcome(client);
        client.subscribe(AuthTypeUrl.AuthPolicy);
        const error = await outcome;
        expect(error).toBeInstanceOf(Error);
        expect((error as grpc.ServiceError).code).toBe(grpc.status.UNAVAILABLE);
        expect(updates).toEqual([]);
        expect(client.resources(AuthTypeUrl.AuthPolicy).size).toBe(0);
        expect(await fleetNode(nodeId)).toBeUndefined();
      } finally {
        client.close();
      }
    });
  }

  it("ext-authz, ratelimit-service and aggregator take the TLS files from flags or the environment and get their config", async () => {
    const [authzPort, rlPort, aggPort] = await freePorts(3);
    const tlsFlags = [
      "--xds-tls-ca",
      pki.ca.cert,
      "--xds-tls-cert",
      policy["ext-authz"].cert,
      "--xds-tls-key",
      policy["ext-authz"].key,
    ];
    const started = {
      "ext-authz-flags": spawnService("ext-authz/src/main.ts", [
        "--xds",
        target,
        "--node-id",
        "ext-authz-flags",
        "--listen",
        `127.0.0.1:${authzPort}`,
        "--metrics",
        "off",
        ...tlsFlags,
      ]),
      "ratelimit-env": spawnService(
        "ratelimit-service/src/main.ts",
        [
          "--xds",
          target,
          "--node-id",
          "ratelimit-env",
          "--listen",
          `127.0.0.1:${rlPort}`,
          "--metrics-listen=",
        ],
        {
          PORTICO_RATELIMIT_XDS_TLS_CA: pki.ca.cert,
          PORTICO_RATELIMIT_XDS_TLS_CERT: policy.ratelimit.cert,
          PORTICO_RATELIMIT_XDS_TLS_KEY: policy.ratelimit.key,
        },
      ),
      "aggregator-env": spawnService(
        "aggregator/src/main.ts",
        ["--xds", target, "--node-id", "aggregator-env", "--listen", `127.0.0.1:${aggPort}`],
        {
          PORTICO_AGGREGATOR_XDS_TLS_CA: pki.ca.cert,
          PORTICO_AGGREGATOR_XDS_TLS_CERT: policy.aggregator.cert,
          PORTICO_AGGREGATOR_XDS_TLS_KEY: policy.aggregator.key,
        },
      ),
    };
    services.push(...Object.values(started));
    for (const [id, service] of Object.entries(started)) {
      await waitFor(
        async () => {
          if (service.child.exitCode !== null) return "exited";
          return (await fleetNode(id))?.appliedRevision !== undefined && "applied";
        },
        { what: `${id} applied its config in /api/v1/status`, timeoutMs: 30_000 },
      ).then((state) => expect(state, service.output()).toBe("applied"));
      expect(service.output()).toMatch(/"(xdsT|t)ransport":"mtls"/);
    }
    expect(((await fleetNode("ext-authz-flags"))!.types as Obj)[AuthTypeUrl.AuthPolicy]).toBeDefined();
  });

  it("a service refuses to start on unusable TLS files, naming the flag and the file", async () => {
    const svc = spawnService("aggregator/src/main.ts", [
      "--xds",
      target,
      "--xds-tls-ca",
      pki.ca.cert,
      "--xds-tls-cert",
      pki.client.cert,
      "--xds-tls-key",
      pki.otherClient.key,
    ]);
    services.push(svc);
    expect(await svc.exited).toBe(1);
    expect(svc.output()).toContain(
      `--xds-tls-key ${pki.otherClient.key} is not the key of --xds-tls-cert ${pki.client.cert}`,
    );
  });
});

describe("the control plane's --xds-tls-* flags", () => {
  let pki: TestPki;
  let authz: CertFiles;
  let dir: string;
  let cp: ChildProcess | undefined;
  const services: Service[] = [];

  beforeAll(() => {
    pki = makeTestPki();
    authz = makeIdentityCert(pki, "policy-ext-authz", identityUri({ kind: "policy", role: "ext-authz" }));
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "portico-cp-tls-"));
  });
  afterAll(async () => {
    await Promise.all(services.map((s) => s.stop()));
    if (cp && cp.exitCode === null) {
      const gone = new Promise((resolve) => cp!.once("exit", resolve));
      cp.kill("SIGTERM");
      await gone;
    }
    removeTestPki(pki);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("serve xDS over mTLS: a client with an identity certificate the CA signed opens a stream, others are refused", async () => {
    const [adminPort, xdsPort] = await freePorts(2);
    cp = await spawnControlPlane({
      store: `file:${path.join(dir, "store")}`,
      tokensFile: path.join(dir, "tokens.json"),
      adminPort,
      xdsPort,
      args: [
        "--xds-tls-cert",
        pki.server.cert,
        "--xds-tls-key",
        pki.server.key,
        "--xds-tls-client-ca",
        pki.ca.cert,
      ],
    });
    const streams = async () => {
      const text = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
      return Number(/^portico_xds_streams\S* (\d+)$/m.exec(text)?.[1] ?? "0");
    };
    const connect = (credentials: grpc.ChannelCredentials | undefined, id: string) => {
      const client = new XdsClient({
        target: `127.0.0.1:${xdsPort}`,
        node: { id, cluster: POLICY_GROUP },
        protocol: "delta",
        credentials,
      });
      client.subscribe(AuthTypeUrl.AuthPolicy);
      return client;
    };

    const refused = connect(xdsClientTls({ ca: pki.ca.cert }).credentials, "no-cert");
    try {
      // The store is empty, so an accepted client would get no update either: the error decides.
      const error = await firstOutcome(refused);
      expect(error).toBeInstanceOf(Error);
      expect((error as grpc.ServiceError).code).toBe(grpc.status.UNAVAILABLE);
    } finally {
      refused.close();
    }
    expect(await streams()).toBe(0);

    // Signed by the CA but naming no workload identity: through the handshake, then refused.
    const anonymous = connect(
      xdsClientTls({ ca: pki.ca.cert, cert: pki.client.cert, key: pki.client.key }).credentials,
      "no-identity",
    );
    try {
      const error = await firstOutcome(anonymous);
      expect((error as grpc.ServiceError).code).toBe(grpc.status.PERMISSION_DENIED);
      expect((error as grpc.ServiceError).details).toContain("names no Portico workload identity");
    } finally {
      anonymous.close();
    }

    const accepted = connect(
      xdsClientTls({ ca: pki.ca.cert, cert: authz.cert, key: authz.key }).credentials,
      "with-cert",
    );
    const errors: Error[] = [];
    accepted.on("error", (e) => errors.push(e));
    try {
      await waitFor(async () => (await streams()) === 1, {
        what: "the mTLS client's stream on the control plane",
      });
      expect(errors).toEqual([]);
    } finally {
      accepted.close();
    }
  });

  it("refuses to start with a client CA but no server certificate", async () => {
    const [adminPort, xdsPort] = await freePorts(2);
    const svc = spawnService("control-plane/src/main.ts", [
      "--store",
      `file:${path.join(dir, "store-2")}`,
      "--tokens-file",
      path.join(dir, "tokens-2.json"),
      "--admin-port",
      String(adminPort),
      "--xds-port",
      String(xdsPort),
      "--xds-tls-client-ca",
      pki.ca.cert,
    ]);
    expect(await svc.exited).toBe(1);
    expect(svc.output()).toContain("--xds-tls-client-ca (mTLS) needs --xds-tls-cert and --xds-tls-key");
  });

  const startOn = async (name: string, args: string[], env: Record<string, string> = {}) => {
    const [adminPort, xdsPort] = await freePorts(2);
    const svc = spawnService(
      "control-plane/src/main.ts",
      [
        "--store",
        `file:${path.join(dir, `store-${name}`)}`,
        "--tokens-file",
        path.join(dir, `tokens-${name}.json`),
        "--admin-port",
        String(adminPort),
        "--xds-port",
        String(xdsPort),
        ...args,
      ],
      env,
    );
    services.push(svc);
    return { svc, adminPort };
  };

  it("refuses to serve xDS without client certificates on a non-loopback address", async () => {
    for (const [name, args] of [
      ["plaintext", []],
      ["tls", ["--xds-tls-cert", pki.server.cert, "--xds-tls-key", pki.server.key]],
    ] as const) {
      const { svc } = await startOn(`exposed-${name}`, ["--xds-host", "0.0.0.0", ...args]);
      expect(await svc.exited, svc.output()).toBe(1);
      expect(svc.output()).toContain("refusing to serve xDS");
      expect(svc.output()).toContain("on 0.0.0.0");
      expect(svc.output()).toContain("--xds-insecure");
    }
  });

  for (const [how, args, env] of [
    ["--xds-insecure", ["--xds-insecure"], {}],
    ["PORTICO_XDS_INSECURE=true", [], { PORTICO_XDS_INSECURE: "true" }],
  ] as const) {
    it(`serves plaintext xDS on a non-loopback address with ${how}, warning that it is insecure`, async () => {
      const { svc, adminPort } = await startOn(
        `insecure-${how.length}`,
        ["--xds-host", "0.0.0.0", ...args],
        env,
      );
      await waitFor(
        async () => {
          if (svc.child.exitCode !== null) return "exited";
          const res = await fetch(`http://127.0.0.1:${adminPort}/healthz`).catch(() => undefined);
          return res?.ok && "up";
        },
        { what: "the control plane started with insecure xDS", timeoutMs: 20_000 },
      ).then((state) => expect(state, svc.output()).toBe("up"));
      const line = svc
        .output()
        .split("\n")
        .find((l) => l.includes("INSECURE: xDS in plaintext on 0.0.0.0"));
      expect(line, svc.output()).toBeDefined();
      expect(JSON.parse(line!).level).toBe(40);
      await svc.stop();
    });
  }
});
