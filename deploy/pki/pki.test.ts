import { execFile } from "node:child_process";
import { X509Certificate } from "node:crypto";
import fs from "node:fs";
import https from "node:https";
import os from "node:os";
import path from "node:path";
import tls from "node:tls";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { certificateIdentity, identityUri } from "@portico/common";
import { issueCa, issueLeaf } from "./certificates.js";
import { ensurePki, redisAcl, type PkiChange } from "./ensure.js";
import { FilePkiStore } from "./file-store.js";
import { parsePkiArgs, withNamespaceNames } from "./init.js";
import { KubernetesPkiStore, SECRET_PREFIX } from "./kubernetes-store.js";
import type { PkiPlan } from "./plan.js";

const run = promisify(execFile);
const DAY = 86_400_000;
const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), "portico-pki-"));
const COMPOSE_ARGS = [
  "--control-plane=control-plane",
  "--policy=ext-authz",
  "--policy=ratelimit",
  "--policy=aggregator",
  "--gateway=edge=edge-envoy",
  "--gateway=sidecar-users",
  "--redis-user=portico",
];
const plan = (extra: string[] = []): PkiPlan =>
  parsePkiArgs(["--out=/unused", ...COMPOSE_ARGS, ...extra], {}).plan;
const actions = (changes: PkiChange[]) => Object.fromEntries(changes.map((c) => [c.dir, c.action]));
const read = (dir: string, ...p: string[]) => fs.readFileSync(path.join(dir, ...p), "utf8");

describe("the PKI init", () => {
  it("makes a CA and, per workload, a key and a certificate naming exactly its identity and host names", async () => {
    const out = tmp();
    const changes = await ensurePki(plan(), new FilePkiStore(out));
    expect(actions(changes)).toEqual({
      ca: "created",
      redis: "created",
      "control-plane": "created",
      "ext-authz": "created",
      ratelimit: "created",
      aggregator: "created",
      "gateway-edge": "created",
      "gateway-sidecar-users": "created",
    });
    const ca = new X509Certificate(read(out, "ca", "ca.pem"));
    expect(ca.ca).toBe(true);
    const expected = {
      "control-plane": ["URI:spiffe://portico/control-plane", "DNS:control-plane"],
      "ext-authz": ["URI:spiffe://portico/policy/ext-authz", "DNS:ext-authz"],
      "gateway-edge": ["URI:spiffe://portico/gateway/edge", "DNS:edge-envoy"],
      "gateway-sidecar-users": ["URI:spiffe://portico/gateway/sidecar-users"],
    };
    for (const [dir, sans] of Object.entries(expected)) {
      const cert = new X509Certificate(read(out, dir, "cert.pem"));
      expect(cert.subjectAltName!.split(", ").sort()).toEqual([...sans].sort());
      expect(cert.verify(ca.publicKey)).toBe(true);
      expect(cert.ca).toBe(false);
      expect(read(out, dir, "ca.pem")).toBe(read(out, "ca", "ca.pem"));
      // What the control plane and the policy services read from a peer's certificate.
      expect(identityUri(certificateIdentity(cert)!)).toBe(sans[0]!.slice(4));
      expect(fs.statSync(path.join(out, dir, "key.pem")).mode & 0o777).toBe(0o600);
      expect(fs.statSync(path.join(out, dir, "cert.pem")).mode & 0o777).toBe(0o644);
    }
    expect(fs.statSync(path.join(out, "ca", "ca-key.pem")).mode & 0o777).toBe(0o600);
    expect(fs.statSync(path.join(out, "ca")).mode & 0o777).toBe(0o700);
    // openssl agrees, strictly, that each is a TLS server and a TLS client certificate.
    for (const purpose of ["sslserver", "sslclient"])
      await run("openssl", [
        "verify",
        "-x509_strict",
        "-purpose",
        purpose,
        "-CAfile",
        path.join(out, "ca", "ca.pem"),
        path.join(out, "gateway-edge", "cert.pem"),
      ]);
  });

  it("gives the Redis password to the Redis clients only, and Redis an ACL with the default user off", async () => {
    const out = tmp();
    await ensurePki(plan(), new FilePkiStore(out));
    const password = read(out, "redis", "password").trim();
    expect(password).toMatch(/^[A-Za-z0-9_-]{43}$/);
    for (const dir of ["control-plane", "ratelimit", "aggregator"]) {
      expect(read(out, dir, "redis-password")).toBe(`${password}\n`);
      expect(fs.statSync(path.join(out, dir, "redis-password")).mode & 0o777).toBe(0o600);
    }
    for (const dir of ["ext-authz", "gateway-edge"])
      expect(fs.existsSync(path.join(out, dir, "redis-password"))).toBe(false);
    const acl = read(out, "redis", "users.acl");
    expect(acl).toBe(redisAcl("portico", password));
    expect(acl.split("\n")[0]).toBe("user default off resetpass -@all");
    // The ACL holds a hash, never the password.
    expect(acl).not.toContain(password);
  });

  it("keeps everything on a second run, byte for byte", async () => {
    const out = tmp();
    const store = new FilePkiStore(out);
    await ensurePki(plan(), store);
    const before = snapshot(out);
    const changes = await ensurePki(plan(), store);
    expect(new Set(changes.map((c) => c.action))).toEqual(new Set(["kept"]));
    expect(snapshot(out)).toEqual(before);
  });

  it("renews a certificate with a third of its life left, and one whose names changed; keeps the CA", async () => {
    const out = tmp();
    const store = new FilePkiStore(out);
    await ensurePki(plan(), store);
    const edgeBefore = read(out, "gateway-edge", "cert.pem");
    const later = await ensurePki(plan(), store, { now: new Date(Date.now() + 250 * DAY) });
    const byDir = Object.fromEntries(later.map((c) => [c.dir, c]));
    expect(byDir.ca!.action).toBe("kept");
    expect(byDir["gateway-edge"]!.action).toBe("renewed");
    expect(byDir["gateway-edge"]!.why).toMatch(/^it expires on \d{4}-\d\d-\d\d$/);
    expect(read(out, "gateway-edge", "cert.pem")).not.toBe(edgeBefore);

    const renamed = await ensurePki(withEdgeName(plan(), "edge.example"), store);
    const edge = renamed.find((c) => c.dir === "gateway-edge")!;
    expect(edge.action).toBe("renewed");
    expect(edge.why).toContain("DNS:edge.example");
    expect(renamed.find((c) => c.dir === "control-plane")!.action).toBe("kept");
  });

  it("reissues every certificate when the CA is renewed, and repairs a key that is not its certificate's", async () => {
    const out = tmp();
    const store = new FilePkiStore(out);
    await ensurePki(plan(), store);
    fs.writeFileSync(path.join(out, "ext-authz", "key.pem"), issueCa(new Date(), 2).key);
    const repaired = await ensurePki(plan(), store);
    expect(repaired.find((c) => c.dir === "ext-authz")).toMatchObject({
      action: "renewed",
      why: "its key is missing or not the certificate's",
    });
    const caBefore = read(out, "ca", "ca.pem");
    const renewed = await ensurePki(plan(), store, { renew: new Set(["ca"]) });
    expect(read(out, "ca", "ca.pem")).not.toBe(caBefore);
    for (const c of renewed.filter((c) => !["ca", "redis"].includes(c.dir)))
      expect(c, c.dir).toMatchObject({ action: "renewed", why: "the CA changed" });
    expect(renewed.find((c) => c.dir === "redis")!.action).toBe("kept");
  });

  it("makes a certificate that works for mTLS both ways: a TLS server that requires a gateway client, and that client", async () => {
    const out = tmp();
    await ensurePki(plan(), new FilePkiStore(out));
    const server = tls.createServer({
      cert: read(out, "control-plane", "cert.pem"),
      key: read(out, "control-plane", "key.pem"),
      ca: read(out, "control-plane", "ca.pem"),
      requestCert: true,
      rejectUnauthorized: true,
    });
    const peers: (string | undefined)[] = [];
    server.on("secureConnection", (s) => {
      peers.push(
        certificateIdentity(s.getPeerCertificate()) &&
          identityUri(certificateIdentity(s.getPeerCertificate())!),
      );
      s.end("ok");
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as { port: number }).port;
    try {
      const answer = await new Promise<string>((resolve, reject) => {
        const s = tls.connect({
          host: "127.0.0.1",
          port,
          servername: "control-plane",
          ca: read(out, "gateway-edge", "ca.pem"),
          cert: read(out, "gateway-edge", "cert.pem"),
          key: read(out, "gateway-edge", "key.pem"),
        });
        let text = "";
        s.on("data", (d) => (text += d));
        s.on("end", () => resolve(text));
        s.on("error", reject);
      });
      expect(answer).toBe("ok");
      expect(peers).toEqual(["spiffe://portico/gateway/edge"]);
    } finally {
      server.close();
    }
  });

  it("signs with the CA's own subject, so a CA made elsewhere can issue too", () => {
    const ca = issueCa(new Date(), 10);
    const leaf = issueLeaf(
      ca,
      "x",
      { uri: "spiffe://portico/control-plane", dns: [], ip: ["127.0.0.1", "::1"] },
      new Date(),
      1,
    );
    const cert = new X509Certificate(leaf.cert);
    expect(cert.issuer).toBe(new X509Certificate(ca.cert).subject);
    expect(cert.subjectAltName).toContain("IP Address:127.0.0.1");
    expect(cert.checkIP("::1")).toBe("::1");
  });

  it("keeps certificates with IP addresses on a second run", async () => {
    const out = tmp();
    const p = parsePkiArgs(["--out=/unused", "--control-plane=control-plane,127.0.0.1,::1"], {}).plan;
    await ensurePki(p, new FilePkiStore(out));
    expect(actions(await ensurePki(p, new FilePkiStore(out)))["control-plane"]).toBe("kept");
  });

  it("refuses flags it cannot act on, naming them", () => {
    const parse = (args: string[]) => () => parsePkiArgs(args, {});
    expect(parse(["--control-plane=cp"])).toThrow(/--out DIR or --kubernetes/);
    expect(parse(["--out=x", "--policy=gateway"])).toThrow(/--policy: 'gateway' is not a policy role/);
    expect(parse(["--out=x", "--gateway=a/b"])).toThrow(/cannot be named in a certificate/);
    expect(parse(["--out=x", "--gateway=edge=Edge_Envoy"])).toThrow(
      /--gateway: 'Edge_Envoy' is not a lower-case DNS name/,
    );
    expect(parse(["--out=x", "--gateway=edge", "--gateway=edge"])).toThrow(/gateway-edge is named twice/);
    expect(parse(["--out=x", "--gateway=edge", "--renew=edg"])).toThrow(/--renew: 'edg' is none of/);
    expect(parse(["--out=x", "--gateway=edge", "--envoy-owner=envoy"])).toThrow(
      /--envoy-owner: 'envoy' is not UID/,
    );
    expect(parsePkiArgs(["--out=x", "--gateway=edge"], { PORTICO_PKI_RENEW: "all" }).renew).toEqual(
      new Set(["all"]),
    );
  });
});

describe("the PKI init on Kubernetes", () => {
  let api: FakeApi;
  beforeAll(async () => {
    api = await fakeApiServer();
  });
  afterAll(() => api.close());

  it("writes a Secret per workload through the API server, and on a second run writes nothing", async () => {
    const store = new KubernetesPkiStore({
      url: api.url,
      ca: api.ca,
      namespace: "gw",
      token: () => "sa-token",
    });
    const p = withNamespaceNames(plan(), "gw");
    await ensurePki(p, store);
    expect([...api.secrets.keys()].sort()).toEqual(
      [
        "ca",
        "redis",
        "control-plane",
        "ext-authz",
        "ratelimit",
        "aggregator",
        "gateway-edge",
        "gateway-sidecar-users",
      ]
        .map((d) => SECRET_PREFIX + d)
        .sort(),
    );
    const cp = api.secrets.get(`${SECRET_PREFIX}control-plane`)!;
    expect(Object.keys(cp.data).sort()).toEqual(["ca.pem", "cert.pem", "key.pem", "redis-password"]);
    const cert = new X509Certificate(Buffer.from(cp.data["cert.pem"]!, "base64"));
    expect(cert.subjectAltName!.split(", ").sort()).toEqual(
      [
        "URI:spiffe://portico/control-plane",
        "DNS:control-plane",
        "DNS:control-plane.gw.svc",
        "DNS:control-plane.gw.svc.cluster.local",
      ].sort(),
    );
    expect(api.authorizations.every((a) => a === "Bearer sa-token")).toBe(true);
    const writes = api.writes;
    const again = await ensurePki(p, store);
    expect(new Set(again.map((c) => c.action))).toEqual(new Set(["kept"]));
    expect(api.writes).toBe(writes);
  });

  it("says what the Role must allow when the API server refuses", async () => {
    api.forbid = true;
    const store = new KubernetesPkiStore({ url: api.url, ca: api.ca, namespace: "other", token: () => "t" });
    await expect(ensurePki(plan(), store)).rejects.toThrow(
      /cannot read Secret portico-pki-ca: 403 .*the Job's Role must allow it/,
    );
    api.forbid = false;
  });
});

function withEdgeName(p: PkiPlan, name: string): PkiPlan {
  return { ...p, workloads: p.workloads.map((w) => (w.dir === "gateway-edge" ? { ...w, dns: [name] } : w)) };
}

function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const sub of fs.readdirSync(dir))
    for (const f of fs.readdirSync(path.join(dir, sub))) out[`${sub}/${f}`] = read(dir, sub, f);
  return out;
}

interface FakeApi {
  url: string;
  ca: string;
  secrets: Map<string, { metadata: { name: string; resourceVersion: string }; data: Record<string, string> }>;
  authorizations: string[];
  writes: number;
  forbid: boolean;
  close(): void;
}

/** The part of the Kubernetes API the store uses: Secrets in a namespace, over HTTPS. */
async function fakeApiServer(): Promise<FakeApi> {
  const ca = issueCa(new Date(), 2);
  const serving = issueLeaf(
    ca,
    "api",
    { uri: "spiffe://portico/control-plane", dns: [], ip: ["127.0.0.1"] },
    new Date(),
    1,
  );
  const state: FakeApi = {
    url: "",
    ca: ca.cert,
    secrets: new Map(),
    authorizations: [],
    writes: 0,
    forbid: false,
    close: () => server.close(),
  };
  let version = 0;
  const server = https.createServer({ cert: serving.cert, key: serving.key }, (req, res) => {
    state.authorizations.push(req.headers.authorization ?? "");
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      const m = /^\/api\/v1\/namespaces\/([^/]+)\/secrets(?:\/([^/]+))?$/.exec(req.url ?? "");
      const send = (status: number, obj: unknown) => {
        res.writeHead(status, { "content-type": "application/json" });
        res.end(JSON.stringify(obj));
      };
      if (!m) return send(404, { kind: "Status", message: "not found" });
      if (state.forbid)
        return send(403, {
          kind: "Status",
          message: `secrets "${m[2]}" is forbidden: User cannot get resource`,
        });
      const [, , name] = m;
      if (req.method === "GET") {
        const s = state.secrets.get(name!);
        return s ? send(200, s) : send(404, { kind: "Status", message: `secrets "${name}" not found` });
      }
      const secret = JSON.parse(body);
      state.writes++;
      if (req.method === "POST") {
        if (state.secrets.has(secret.metadata.name)) return send(409, { message: "already exists" });
      } else if (state.secrets.get(name!)?.metadata.resourceVersion !== secret.metadata.resourceVersion) {
        return send(409, { message: "conflict" });
      }
      secret.metadata.resourceVersion = String(++version);
      state.secrets.set(secret.metadata.name, secret);
      send(req.method === "POST" ? 201 : 200, secret);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  state.url = `https://127.0.0.1:${(server.address() as { port: number }).port}`;
  return state;
}
