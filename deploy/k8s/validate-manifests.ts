// Schema validation of the Kubernetes manifests, offline: the kubernetes-validate package from
// PyPI carries the API schemas of every Kubernetes release, so no cluster and no network at
// validation time are needed. Installed once into a tools venv.
import { execFile } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { REPO_ROOT } from "@portico/envoy";

const run = promisify(execFile);
export const KUBERNETES_VALIDATE_PIN = "kubernetes-validate==1.37.0";
export const KUBERNETES_VERSION = "1.33.0";
const venv = path.join(REPO_ROOT, ".portico", "tools-venv");
const bin = path.join(venv, "bin", "kubernetes-validate");

export async function kubernetesValidate(): Promise<string> {
  if (fs.existsSync(bin)) return bin;
  if (!fs.existsSync(path.join(venv, "bin", "python3"))) await run("python3", ["-m", "venv", venv]);
  await run(path.join(venv, "bin", "pip"), ["install", "--quiet", KUBERNETES_VALIDATE_PIN], {
    timeout: 600_000,
  });
  return bin;
}

/** Validates files strictly (unknown fields are errors); resolves with the tool's output, rejects with it. */
export async function validateManifests(files: string[]): Promise<string> {
  const tool = await kubernetesValidate();
  try {
    const { stdout, stderr } = await run(tool, ["--strict", "-k", KUBERNETES_VERSION, ...files]);
    return `${stdout}${stderr}`;
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string };
    throw new Error(`${e.stdout ?? ""}${e.stderr ?? ""}`.trim() || String(err));
  }
}

// What the manifests let through, read statically: each workload's pods, the ports they open, the
// NetworkPolicies that select them and, for each port, who may connect.

type Labels = Record<string, string>;
/** A parsed manifest: plain YAML data, each reader below names the fields it uses. */
export type Manifest = any;

export interface Workload {
  kind: string;
  name: string;
  labels: Labels;
  /** Container ports by number, with their names. */
  ports: Map<number, string | undefined>;
  containers: Manifest[];
  pod: Manifest;
}

/** Deployments, StatefulSets and Jobs: what runs pods. */
export function workloads(docs: Manifest[]): Workload[] {
  return docs
    .filter((d) => ["Deployment", "StatefulSet", "Job"].includes(d?.kind))
    .map((d) => {
      const pod = d.spec.template;
      const containers = pod.spec.containers as Manifest[];
      const ports = new Map<number, string | undefined>();
      for (const c of containers) for (const p of c.ports ?? []) ports.set(p.containerPort, p.name);
      return {
        kind: d.kind,
        name: d.metadata.name,
        labels: pod.metadata.labels ?? {},
        ports,
        containers,
        pod,
      };
    });
}

const matches = (selector: Labels | undefined, labels: Labels) =>
  Object.entries(selector ?? {}).every(([k, v]) => labels[k] === v);

/** A source that is not a workload of these manifests: `*` (anyone) or a label selector's text. */
const selectorText = (s: Labels) =>
  `pods ${Object.entries(s)
    .map(([k, v]) => `${k}=${v}`)
    .join(",")}`;

/**
 * For one workload, each of its ports → who may connect to it: workload names, `*` for anyone,
 * or `pods k=v` for a selector no workload here matches. A port no policy opens maps to [].
 * Undefined when no NetworkPolicy selects the workload (everything is open).
 */
export function allowedIngress(docs: Manifest[], w: Workload): Map<number, string[]> | undefined {
  const all = workloads(docs);
  const policies = docs.filter(
    (d) => d?.kind === "NetworkPolicy" && matches(d.spec.podSelector?.matchLabels, w.labels),
  );
  if (!policies.some((p) => (p.spec.policyTypes ?? ["Ingress"]).includes("Ingress"))) return undefined;
  const out = new Map<number, Set<string>>([...w.ports.keys()].map((p) => [p, new Set<string>()]));
  const resolvePort = (p: number | string) =>
    typeof p === "number" ? p : [...w.ports].find(([, n]) => n === p)?.[0];
  for (const policy of policies) {
    for (const rule of policy.spec.ingress ?? []) {
      const sources: string[] =
        rule.from === undefined
          ? ["*"]
          : (rule.from as Manifest[]).flatMap((peer) => {
              if (!peer.podSelector || peer.namespaceSelector || peer.ipBlock) return ["*"];
              const sel = peer.podSelector.matchLabels as Labels;
              const found = all.filter((x) => matches(sel, x.labels)).map((x) => x.name);
              return found.length ? found : [selectorText(sel)];
            });
      const ports =
        rule.ports === undefined
          ? [...w.ports.keys()]
          : (rule.ports as Manifest[]).map((p) => resolvePort(p.port));
      for (const port of ports) {
        if (port === undefined || !out.has(port))
          throw new Error(
            `NetworkPolicy ${policy.metadata.name} opens a port ${String(port)} that ${w.name} does not have`,
          );
        for (const s of sources) out.get(port)!.add(s);
      }
    }
  }
  return new Map([...out].map(([p, s]) => [p, [...s].sort()]));
}

/** The workload and container port a Service's `host:port` reaches. */
export function serviceTarget(
  docs: Manifest[],
  host: string,
  port: number,
): { workload: string; port: number } {
  const svc = docs.find((d) => d?.kind === "Service" && d.metadata.name === host);
  if (!svc) throw new Error(`no Service ${host}`);
  const sp = (svc.spec.ports as Manifest[]).find((p) => p.port === port);
  if (!sp) throw new Error(`Service ${host} has no port ${port}`);
  const w = workloads(docs).find((x) => matches(svc.spec.selector, x.labels));
  if (!w) throw new Error(`Service ${host} selects no workload`);
  const target = sp.targetPort ?? sp.port;
  const containerPort = typeof target === "number" ? target : [...w.ports].find(([, n]) => n === target)?.[0];
  if (containerPort === undefined)
    throw new Error(`Service ${host} targets a port ${target} that ${w.name} does not have`);
  return { workload: w.name, port: containerPort };
}
