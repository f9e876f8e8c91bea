// The PKI init: makes (or keeps, or renews) the internal CA, every workload's certificate and the
// Redis login, into a directory per workload (compose's `certs` service) or a Secret per workload
// (the Kubernetes Job). Safe to run at every start.
//
//   node deploy/dist/pki/init.js --out DIR \
//     --control-plane control-plane \
//     --policy ext-authz --policy ratelimit --policy aggregator \
//     --gateway edge=edge-envoy --gateway bff-web \
//     --redis-user portico
import { parseArgs } from "node:util";
import { createLogger, positiveFlag } from "@portico/common";
import { ensurePki, type PkiChange, type PkiStore } from "./ensure.js";
import { FilePkiStore } from "./file-store.js";
import { inClusterApi, KubernetesPkiStore } from "./kubernetes-store.js";
import { hostNames, parseOwner, policyRole, workload, type Owner, type PkiPlan } from "./plan.js";

export const PKI_USAGE = `usage: init.js (--out DIR | --kubernetes) [workloads] [options]
workloads (each gets a key and a certificate naming its identity, and the DNS names or IP
addresses peers dial it by):
  --control-plane NAME[,NAME]    the control plane (spiffe://portico/control-plane)
  --policy ROLE[=NAME,...]       ext-authz, ratelimit or aggregator (spiffe://portico/policy/ROLE);
                                 DNS name ROLE unless names are given
  --gateway GROUP[=NAME,...]     the Envoys of a gateway group (spiffe://portico/gateway/GROUP)
  --redis-user NAME              a Redis ACL user with a generated password, for the control plane,
                                 the rate limiter and the aggregator; the default user is turned off
options:
  --portico-owner UID[:GID]      owner of the control plane's and policy services' files (as root)
  --envoy-owner UID[:GID]        owner of the gateways' files
  --redis-owner UID[:GID]        owner of Redis's files
  --days N                       workload certificate lifetime (365); renewed with a third left
  --ca-days N                    CA lifetime (3650)
  --renew LIST                   make these anew now: directory names, ca (everything), redis, all
                                 (default: $PORTICO_PKI_RENEW)
  --kubernetes                   write Secrets portico-pki-<dir> in the pod's namespace; names
                                 without a dot also get their .<namespace>.svc[.cluster.local] forms`;

export interface PkiInit {
  plan: PkiPlan;
  out?: string;
  kubernetes: boolean;
  renew: Set<string>;
}

const list = (text: string) =>
  text
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);

/** `NAME[=a,b]` → [NAME, host names], with `fallback` names when none are given. */
function nameAndHosts(
  text: string,
  flag: string,
  fallback: (name: string) => string[],
): [string, { dns: string[]; ip: string[] }] {
  const at = text.indexOf("=");
  if (at < 0) return [text, hostNames(fallback(text), flag)];
  return [text.slice(0, at), hostNames(list(text.slice(at + 1)), flag)];
}

export function parsePkiArgs(argv: string[], env: NodeJS.ProcessEnv = process.env): PkiInit {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      out: { type: "string" },
      kubernetes: { type: "boolean", default: false },
      "control-plane": { type: "string" },
      policy: { type: "string", multiple: true, default: [] },
      gateway: { type: "string", multiple: true, default: [] },
      "redis-user": { type: "string" },
      "portico-owner": { type: "string" },
      "envoy-owner": { type: "string" },
      "redis-owner": { type: "string" },
      days: { type: "string", default: "365" },
      "ca-days": { type: "string", default: "3650" },
      renew: { type: "string", default: env.PORTICO_PKI_RENEW ?? "" },
    },
  });
  if (Boolean(values.out) === values.kubernetes) throw new Error("give either --out DIR or --kubernetes");
  const owner = (flag: "portico-owner" | "envoy-owner" | "redis-owner"): Owner | undefined =>
    values[flag] === undefined ? undefined : parseOwner(values[flag], `--${flag}`);
  const portico = owner("portico-owner");
  const envoy = owner("envoy-owner");

  const workloads = [];
  if (values["control-plane"] !== undefined) {
    const names = hostNames(list(values["control-plane"]), "--control-plane");
    workloads.push(workload({ kind: "control-plane" }, names, portico));
  }
  for (const text of values.policy) {
    const [role, dns] = nameAndHosts(text, "--policy", (r) => [r]);
    workloads.push(workload({ kind: "policy", role: policyRole(role, "--policy") }, dns, portico));
  }
  for (const text of values.gateway) {
    const [group, dns] = nameAndHosts(text, "--gateway", () => []);
    workloads.push(workload({ kind: "gateway", group }, dns, envoy));
  }
  const dirs = workloads.map((w) => w.dir);
  const twice = dirs.find((d, i) => dirs.indexOf(d) !== i);
  if (twice) throw new Error(`${twice} is named twice`);
  if (workloads.length === 0)
    throw new Error("name at least one workload (--control-plane, --policy, --gateway)");

  const redisOwner = owner("redis-owner");
  const plan: PkiPlan = {
    workloads,
    ...(values["redis-user"]
      ? { redis: { username: values["redis-user"], ...(redisOwner ? { owner: redisOwner } : {}) } }
      : {}),
    leafDays: positiveFlag(values.days, "days", true),
    caDays: positiveFlag(values["ca-days"], "ca-days", true),
  };
  if (plan.caDays <= plan.leafDays) throw new Error("--ca-days must be longer than --days");
  const renew = new Set(list(values.renew));
  const known = new Set(["all", "ca", "redis", ...dirs]);
  for (const r of renew)
    if (!known.has(r)) throw new Error(`--renew: '${r}' is none of ${[...known].join(", ")}`);
  return { plan, ...(values.out ? { out: values.out } : {}), kubernetes: values.kubernetes, renew };
}

/** A Service's name without a dot is dialled in its namespace by its short and its full forms. */
export function withNamespaceNames(plan: PkiPlan, namespace: string): PkiPlan {
  const full = (n: string) =>
    n.includes(".") ? [n] : [n, `${n}.${namespace}.svc`, `${n}.${namespace}.svc.cluster.local`];
  return {
    ...plan,
    workloads: plan.workloads.map((w) => ({ ...w, dns: [...new Set(w.dns.flatMap(full))] })),
  };
}

export async function runPkiInit(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<PkiChange[]> {
  const init = parsePkiArgs(argv, env);
  let store: PkiStore;
  let plan = init.plan;
  if (init.kubernetes) {
    const api = inClusterApi(env);
    store = new KubernetesPkiStore(api);
    plan = withNamespaceNames(plan, api.namespace);
  } else {
    store = new FilePkiStore(init.out!);
  }
  return ensurePki(plan, store, { renew: init.renew });
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const log = createLogger("pki");
  const argv = process.argv.slice(2);
  if (argv.includes("--help") || argv.includes("-h")) {
    console.log(PKI_USAGE);
  } else {
    try {
      for (const c of await runPkiInit(argv)) log.info(c, `${c.dir}: ${c.action}`);
    } catch (err) {
      log.error((err as Error).message);
      process.exitCode = 1;
    }
  }
}
