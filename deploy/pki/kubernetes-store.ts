// PKI material as Kubernetes Secrets, one per directory (`portico-pki-<dir>`, a key per file),
// written through the API server with the Job's own service account: no kubectl and no manual step.
// A pod mounts only its own Secret.
import fs from "node:fs";
import https from "node:https";
import type { PkiStore, StoredFile } from "./ensure.js";

export const SECRET_PREFIX = "portico-pki-";
const SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";

export interface KubernetesApi {
  /** https://host:port of the API server. */
  url: string;
  /** PEM CA the API server's certificate chains to. */
  ca: string;
  namespace: string;
  /** Read at each call: projected service account tokens are rotated while a pod runs. */
  token: () => string;
}

/** The API server as a pod sees it: the service environment variables and the mounted service account. */
export function inClusterApi(env: NodeJS.ProcessEnv = process.env, dir = SERVICE_ACCOUNT_DIR): KubernetesApi {
  const host = env.KUBERNETES_SERVICE_HOST;
  const port = env.KUBERNETES_SERVICE_PORT ?? "443";
  if (!host)
    throw new Error("--kubernetes: KUBERNETES_SERVICE_HOST is not set; run it in a pod of the cluster");
  const read = (name: string) => {
    try {
      return fs.readFileSync(`${dir}/${name}`, "utf8").trim();
    } catch (err) {
      throw new Error(
        `--kubernetes: cannot read the service account's ${name} in ${dir} (${(err as NodeJS.ErrnoException).code}); ` +
          "is automountServiceAccountToken off?",
        { cause: err },
      );
    }
  };
  return {
    url: `https://${host.includes(":") ? `[${host}]` : host}:${port}`,
    ca: read("ca.crt"),
    namespace: read("namespace"),
    token: () => read("token"),
  };
}

interface Secret {
  apiVersion: "v1";
  kind: "Secret";
  metadata: { name: string; namespace?: string; resourceVersion?: string; labels?: Record<string, string> };
  type?: string;
  data?: Record<string, string>;
}

export class KubernetesPkiStore implements PkiStore {
  constructor(private readonly api: KubernetesApi) {}

  where(dir: string): string {
    return `secret/${SECRET_PREFIX}${dir}`;
  }

  private path(name?: string): string {
    const base = `/api/v1/namespaces/${encodeURIComponent(this.api.namespace)}/secrets`;
    return name === undefined ? base : `${base}/${encodeURIComponent(name)}`;
  }

  private async get(name: string): Promise<Secret | undefined> {
    const res = await this.request("GET", this.path(name));
    if (res.status === 404) return undefined;
    if (res.status !== 200) throw apiError("read", name, res);
    return JSON.parse(res.body) as Secret;
  }

  async read(dir: string): Promise<Map<string, string>> {
    const secret = await this.get(SECRET_PREFIX + dir);
    return new Map(
      Object.entries(secret?.data ?? {}).map(([k, v]) => [k, Buffer.from(v, "base64").toString("utf8")]),
    );
  }

  async write(dir: string, files: StoredFile[]): Promise<void> {
    const name = SECRET_PREFIX + dir;
    const current = await this.get(name);
    const data = { ...(current?.data ?? {}) };
    for (const f of files) data[f.name] = Buffer.from(f.text, "utf8").toString("base64");
    if (current && JSON.stringify(data) === JSON.stringify(current.data ?? {})) return;
    const secret: Secret = {
      apiVersion: "v1",
      kind: "Secret",
      metadata: {
        name,
        namespace: this.api.namespace,
        labels: { "app.kubernetes.io/part-of": "portico", "app.kubernetes.io/managed-by": "portico-pki" },
        // Replaces exactly the version read: a concurrent writer makes this fail, not vanish.
        ...(current?.metadata.resourceVersion ? { resourceVersion: current.metadata.resourceVersion } : {}),
      },
      type: "Opaque",
      data,
    };
    const res = current
      ? await this.request("PUT", this.path(name), secret)
      : await this.request("POST", this.path(), secret);
    if (res.status !== 200 && res.status !== 201) throw apiError(current ? "update" : "create", name, res);
  }

  private request(method: string, path: string, body?: unknown): Promise<{ status: number; body: string }> {
    const url = new URL(path, this.api.url);
    const payload = body === undefined ? undefined : JSON.stringify(body);
    return new Promise((resolve, reject) => {
      const req = https.request(
        url,
        {
          method,
          ca: this.api.ca,
          headers: {
            authorization: `Bearer ${this.api.token()}`,
            accept: "application/json",
            ...(payload
              ? { "content-type": "application/json", "content-length": Buffer.byteLength(payload) }
              : {}),
          },
          timeout: 15_000,
        },
        (res) => {
          let text = "";
          res.setEncoding("utf8");
          res.on("data", (c: string) => (text += c));
          res.on("end", () => resolve({ status: res.statusCode ?? 0, body: text }));
          res.on("error", reject);
        },
      );
      req.on("timeout", () =>
        req.destroy(new Error(`the API server did not answer ${method} ${path} in 15s`)),
      );
      req.on("error", reject);
      req.end(payload);
    });
  }
}

function apiError(op: string, name: string, res: { status: number; body: string }): Error {
  let message = res.body.slice(0, 300);
  try {
    message = (JSON.parse(res.body) as { message?: string }).message ?? message;
  } catch {
    // not a Status object: the raw text says more than nothing
  }
  const hint = res.status === 403 ? " (the Job's Role must allow it)" : "";
  return new Error(`cannot ${op} Secret ${name}: ${res.status} ${message}${hint}`);
}
