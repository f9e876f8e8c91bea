import { execFile } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { parse, parseAllDocuments } from "yaml";
import { parseConfigText } from "@portico/control-plane";
import { findEnvoy } from "@portico/envoy";
import { ensurePki } from "../pki/ensure.js";
import { FilePkiStore } from "../pki/file-store.js";
import { parsePkiArgs } from "../pki/init.js";
import { SECRET_PREFIX } from "../pki/kubernetes-store.js";
import { edgeBootstrapConfigMap, K8S_ENVOY_READY_PORT, K8S_PKI_DIR } from "./render-bootstrap.js";
import {
  allowedIngress,
  serviceTarget,
  validateManifests,
  workloads,
  type Manifest,
  type Workload,
} from "./validate-manifests.js";

const run = promisify(execFile);
const here = path.dirname(new URL(import.meta.url).pathname);
const manifests = fs
  .readdirSync(here)
  .filter((f) => f.endsWith(".yaml"))
  .map((f) => path.join(here, f));
const docs = (file: string) => parseAllDocuments(fs.readFileSync(file, "utf8")).map((d) => d.toJS());
const all: Manifest[] = manifests.flatMap(docs).filter(Boolean);
const byName = (name: string): Workload => {
  const w = workloads(all).find((x) => x.name === name);
  if (!w) throw new Error(`no workload ${name}`);
  return w;
};
const argsOf = (w: Workload): string[] => w.containers.flatMap((c) => c.args ?? []);
const flag = (w: Workload, name: string) =>
  argsOf(w)
    .find((a) => a.startsWith(`--${name}=`))
    ?.slice(name.length + 3);
const envOf = (w: Workload) =>
  new Map<string, string>(w.containers.flatMap((c) => c.env ?? []).map((e: Manifest) => [e.name, e.value]));
const pkiJob = () => byName("portico-pki");
const pkiInit = () => parsePkiArgs(argsOf(pkiJob()).slice(1), {});
const PKI_SECRET_RE = new RegExp(`^${SECRET_PREFIX}`);

/**
 * Who may connect to what, as the architecture draws it: anyone reaches the gateway and its ready
 * listener; only the gateways reach the policy services; only the aggregator reaches the parts
 * listener; every xDS client reaches the control plane; only its users reach Redis; the admin API
 * only from pods labelled for it. Ports no one may reach from another pod (metrics, probes) are [].
 */
const ARCHITECTURE: Record<string, Record<number, string[]>> = {
  "portico-control-plane": {
    18000: ["portico-aggregator", "portico-edge", "portico-ext-authz", "portico-ratelimit"],
    9000: ["pods portico/admin-client=true"],
  },
  "portico-ext-authz": { 9191: ["portico-edge"], 9192: [] },
  "portico-ratelimit": { 8081: ["portico-edge"], 6070: [] },
  "portico-aggregator": { 8090: ["portico-edge"] },
  "portico-edge": { 10000: ["*"], 10001: ["portico-aggregator"], [K8S_ENVOY_READY_PORT]: ["*"] },
  "portico-redis": { 6379: ["portico-aggregator", "portico-control-plane", "portico-ratelimit"] },
  "portico-pki": {},
};

describe("Kubernetes manifests", () => {
  it("pass strict schema validation, and a broken one does not", { timeout: 300_000 }, async () => {
    const out = await validateManifests(manifests);
    expect(out).toMatch(/passed for resource horizontalpodautoscaler\/portico-edge/);
    const broken = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "portico-k8s-")), "broken.yaml");
    fs.writeFileSync(
      broken,
      fs.readFileSync(path.join(here, "edge-envoy.yaml"), "utf8").replace("replicas: 2", "replicas: two"),
    );
    await expect(validateManifests([broken])).rejects.toThrow(/replicas/);
  });

  it("run several control-plane replicas on the shared Redis store", () => {
    const cp = docs(path.join(here, "control-plane.yaml")).find((d) => d.kind === "Deployment");
    expect(cp.spec.replicas).toBeGreaterThan(1);
    expect(cp.spec.template.spec.containers[0].args).toContain("--store=redis://portico-redis:6379");
    const seed = docs(path.join(here, "control-plane.yaml")).find((d) => d.kind === "ConfigMap");
    expect(() => parseConfigText(seed.data["portico.yaml"])).not.toThrow();
  });

  it("carry the edge bootstrap rendered from the template, which Envoy accepts with the PKI Job's files", async () => {
    const file = path.join(here, "edge-envoy-bootstrap.yaml");
    expect(fs.readFileSync(file, "utf8"), "stale: run npx tsx deploy/k8s/render-bootstrap.ts").toBe(
      edgeBootstrapConfigMap(),
    );
    // Envoy reads the certificate files when it validates: made for real, as the Job makes them.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "portico-k8s-"));
    await ensurePki(pkiInit().plan, new FilePkiStore(dir));
    const bootstrap = path.join(dir, "envoy.yaml");
    fs.writeFileSync(
      bootstrap,
      docs(file)[0].data["envoy.yaml"].replaceAll(K8S_PKI_DIR, path.join(dir, "gateway-edge")),
    );
    const envoy = await findEnvoy();
    await run(envoy.path, ["--mode", "validate", "-c", bootstrap, "--disable-hot-restart", "-l", "error"]);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("deny every connection to a Portico pod by default, and allow exactly the architecture's flows", () => {
    const deny = all.filter((d) => d.kind === "NetworkPolicy" && d.spec.ingress === undefined);
    expect(deny.map((d) => d.metadata.name)).toEqual(["portico-default-deny"]);
    expect(deny[0].spec.policyTypes).toEqual(["Ingress"]);
    const found: Record<string, Record<number, string[]>> = {};
    for (const w of workloads(all)) {
      expect(w.labels["app.kubernetes.io/part-of"], w.name).toBe("portico");
      const allowed = allowedIngress(all, w);
      expect(allowed, `no NetworkPolicy selects ${w.name}`).toBeDefined();
      found[w.name] = Object.fromEntries(allowed!);
    }
    expect(found).toEqual(ARCHITECTURE);
  });

  it("allow every connection the workloads' own settings make", () => {
    const flows: { from: string; to: { workload: string; port: number }; why: string }[] = [];
    const hostPort = (text: string) => {
      const m = /^(?:rediss?:\/\/)?([^:/]+):(\d+)/.exec(text);
      if (!m) throw new Error(`not host:port: ${text}`);
      return serviceTarget(all, m[1]!, Number(m[2]));
    };
    for (const w of workloads(all)) {
      for (const name of ["xds", "store", "backend", "redis"]) {
        const v = flag(w, name);
        if (v) flows.push({ from: w.name, to: hostPort(v), why: `--${name}=${v}` });
      }
      const parts = flag(w, "parts-host");
      if (parts)
        flows.push({ from: w.name, to: serviceTarget(all, parts, 10001), why: `--parts-host=${parts}` });
    }
    // The seed's policy-service upstreams are what the edge gateways call.
    const seed = parse(
      all.find((d) => d.kind === "ConfigMap" && d.metadata.name === "portico-seed").data["portico.yaml"],
    );
    for (const u of seed.upstreams.filter((x: Manifest) =>
      ["ext-authz", "ratelimit", "aggregator"].includes(x.name),
    ))
      for (const e of u.endpoints)
        flows.push({
          from: "portico-edge",
          to: serviceTarget(all, e.host, e.port),
          why: `upstream ${u.name}`,
        });
    expect(flows.length).toBeGreaterThanOrEqual(10);
    for (const f of flows) {
      const allowed = allowedIngress(all, byName(f.to.workload))!.get(f.to.port) ?? [];
      expect(
        allowed.includes(f.from) || allowed.includes("*"),
        `${f.from} → ${f.to.workload}:${f.to.port} (${f.why})`,
      ).toBe(true);
    }
  });

  it("run xDS over mTLS only, the policy services for gateways only, and Redis behind its ACL user", () => {
    const cp = byName("portico-control-plane");
    for (const name of ["xds-tls-cert", "xds-tls-key", "xds-tls-client-ca"])
      expect(flag(cp, name), name).toMatch(/^\/etc\/portico\/pki\//);
    expect(argsOf(cp).join(" ")).not.toMatch(/--xds-insecure/);
    expect(envOf(cp).get("PORTICO_XDS_INSECURE")).toBeUndefined();
    const clients = workloads(all).filter((w) => flag(w, "xds"));
    expect(clients.map((w) => w.name).sort()).toEqual([
      "portico-aggregator",
      "portico-ext-authz",
      "portico-ratelimit",
    ]);
    for (const w of clients)
      for (const name of ["xds-tls-ca", "xds-tls-cert", "xds-tls-key"])
        expect(flag(w, name), `${w.name} --${name}`).toBeDefined();
    for (const w of [byName("portico-ext-authz"), byName("portico-ratelimit")])
      for (const name of ["tls-cert", "tls-key", "tls-client-ca"])
        expect(flag(w, name), `${w.name} --${name}`).toBeDefined();

    const bootstrap = parse(
      all.find((d) => d.metadata?.name === "portico-edge-bootstrap").data["envoy.yaml"],
    );
    expect(bootstrap.admin.address.socket_address.address).toBe("127.0.0.1");
    const xds = bootstrap.static_resources.clusters.find((c: Manifest) => c.name === "xds_cluster");
    expect(xds.transport_socket.typed_config.common_tls_context.tls_certificates).toHaveLength(1);
    const ready = bootstrap.static_resources.listeners.find(
      (l: Manifest) => l.address.socket_address.port_value === K8S_ENVOY_READY_PORT,
    );
    expect(ready).toBeDefined();
    const edge = byName("portico-edge");
    expect(
      edge.ports.has(bootstrap.admin.address.socket_address.port_value),
      "the admin port is not a container port",
    ).toBe(false);
    const probe = edge.containers[0].readinessProbe.httpGet;
    expect(probe.path).toBe("/ready");
    expect(
      typeof probe.port === "number" ? probe.port : [...edge.ports].find(([, n]) => n === probe.port)?.[0],
    ).toBe(K8S_ENVOY_READY_PORT);

    const redis = byName("portico-redis");
    const redisArgs = argsOf(redis);
    expect(redisArgs[redisArgs.indexOf("--aclfile") + 1]).toBe("/etc/redis/pki/users.acl");
    expect(redis.containers[0].readinessProbe.exec.command.join(" ")).toMatch(
      /REDISCLI_AUTH=.*--user portico ping/,
    );
    expect(pkiInit().plan.redis?.username).toBe("portico");
    for (const name of ["portico-control-plane", "portico-ratelimit", "portico-aggregator"]) {
      expect(envOf(byName(name)).get("PORTICO_REDIS_USERNAME"), name).toBe("portico");
      expect(envOf(byName(name)).get("PORTICO_REDIS_PASSWORD_FILE"), name).toBe(
        `${K8S_PKI_DIR}/redis-password`,
      );
    }
  });

  it("give each pod its own PKI Secret, all made by the PKI Job, whose Role reaches those Secrets only", () => {
    const init = pkiInit();
    expect(init.kubernetes).toBe(true);
    const made = new Set(
      ["ca", "redis", ...init.plan.workloads.map((w) => w.dir)].map((d) => SECRET_PREFIX + d),
    );
    const mounted = new Map<string, string>();
    for (const w of workloads(all)) {
      const secrets = (w.pod.spec.volumes ?? [])
        .map((v: Manifest) => v.secret?.secretName)
        .filter((n: string | undefined) => n && PKI_SECRET_RE.test(n));
      if (w.name === "portico-pki") {
        expect(secrets).toEqual([]);
        expect(w.pod.spec.serviceAccountName).toBe("portico-pki");
        continue;
      }
      expect(secrets, w.name).toHaveLength(1);
      expect(made.has(secrets[0]), `${w.name} mounts ${secrets[0]}, which the Job does not make`).toBe(true);
      expect(w.pod.spec.automountServiceAccountToken, w.name).toBe(false);
      mounted.set(secrets[0], w.name);
    }
    expect(mounted.has(`${SECRET_PREFIX}ca`)).toBe(false);
    expect(new Set(mounted.keys())).toEqual(new Set([...made].filter((n) => n !== `${SECRET_PREFIX}ca`)));
    const role = all.find((d) => d.kind === "Role" && d.metadata.name === "portico-pki");
    const named = role.rules.find((r: Manifest) => r.resourceNames);
    expect(new Set(named.resourceNames)).toEqual(made);
    expect(named.verbs.sort()).toEqual(["get", "update"]);
    const unnamed = role.rules.filter((r: Manifest) => !r.resourceNames);
    expect(unnamed).toEqual([{ apiGroups: [""], resources: ["secrets"], verbs: ["create"] }]);
  });
});
