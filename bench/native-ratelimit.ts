// Accuracy of the limits each Envoy counts (`enforce: envoy`): the group's limit divided among its
// connected Envoys, each counting its share in `local_ratelimit` dynamic descriptors. Real Envoys
// of one gateway group on one host (sharing the listening port, SO_REUSEPORT), the control plane
// and ext-authz in this process, API keys naming one consumer per case. Each request goes on a
// kept-alive connection known to reach a chosen Envoy, so the split of traffic is the bench's.
//
// Measured: requests admitted, for 1, 2 and 4 Envoys, traffic even and uneven (80% on one Envoy,
// the rest spread), as one burst at twice the limit in a minute-long window (the bucket sizes) and
// as a steady flow at twice the limit for a few seconds (the refill rate); then around membership
// changes (an Envoy leaving, one joining), where the control plane divides again and pushes, and
// around an unrelated route change of the same listener. Each is set beside what one exact counter
// for the whole group would admit with the same algorithm (a token bucket holding the limit and
// refilling it every window: the burst's limit, or the limit plus the limit per second × seconds for
// the steady flow), and beside the bound the design states for divided buckets. Only the `measured`
// columns are measurements; `formula` columns are computed.
//   npx tsx bench/native-ratelimit.ts [--seconds 5]
import fs from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import os from "node:os";
import { silentLogger } from "@portico/common";
import { REPO_ROOT } from "@portico/envoy";
import { sha256Hex, Authorizer, AuthzServer } from "@portico/ext-authz";
import {
  freePort,
  openLane,
  policyOf,
  startAdmin,
  startEnvoy,
  startHttpUpstream,
  waitFor,
  type EnvoyProcess,
  type Lane,
} from "@portico/testing";

const { values } = parseArgs({ options: { seconds: { type: "string", default: "5" } } });
/** Length of each steady-flow case. */
const SECONDS = Number(values.seconds);
/** The burst cases' limit: per consumer, per minute (a minute is long beside a burst: no refill to speak of). */
const BURST_LIMIT = 60;
/** The steady cases' limit: per consumer, per second, offered at twice that. */
const STEADY_LIMIT = 20;
const UNEVEN_SHARE = 0.8;

const consumers = Array.from({ length: 64 }, (_, i) => `c${i}`);
const keyOf = (c: string) => `pk_bench_native_${c}_000000000000`;
let nextConsumer = 0;
const freshConsumer = () => consumers[nextConsumer++]!;

interface Row {
  scenario: string;
  envoys: string;
  traffic: string;
  offered: number;
  /** What one exact counter for the group would admit (formula). */
  exact: number;
  admitted: number;
  bound: string;
}
const rows: Row[] = [];

const upstream = await startHttpUpstream("app");
const authzPort = await freePort();
const authz = new AuthzServer({
  authorizer: new Authorizer({
    policy: policyOf({
      consumers: consumers.map((name) => ({ name })),
      apiKeys: consumers.map((c) => ({ name: `${c}-key`, consumer: c, sha256: sha256Hex(keyOf(c)) })),
    }),
    logger: silentLogger(),
  }),
  address: `127.0.0.1:${authzPort}`,
});
await authz.start();
// The control plane's default hold-off (1 s of quiet) before it divides again.
const api = await startAdmin();
const port = await freePort();
const put = async (p: string, body: object) => {
  const res = await api.call("PUT", `/api/v1/${p}?wait=applied&timeout=30s`, { body });
  if (res.status >= 300) throw new Error(`PUT ${p}: ${res.status} ${res.text}`);
};
await put("upstreams/app", { name: "app", endpoints: [{ host: "127.0.0.1", port: upstream.port }] });
await put("upstreams/ext-authz", {
  name: "ext-authz",
  protocol: "grpc",
  endpoints: [{ host: "127.0.0.1", port: authzPort }],
});
await put("gateways/edge", {
  name: "edge",
  listeners: [{ name: "http", port, address: "127.0.0.1" }],
  extAuthz: { upstream: "ext-authz", timeoutMs: 2_000 },
});
await put("authPolicies/keys", { name: "keys", accept: ["apiKey"] });
await put("rateLimitPolicies/burst", { name: "burst", limits: [{ requests: BURST_LIMIT, per: "minute" }] });
await put("rateLimitPolicies/steady", {
  name: "steady",
  limits: [{ requests: STEADY_LIMIT, per: "second" }],
});
for (const name of ["burst", "steady"]) {
  await put(`routes/${name}`, {
    name,
    gateway: "edge",
    match: { pathPrefix: `/${name}` },
    upstream: "app",
    authPolicy: "keys",
    rateLimitPolicy: name,
  });
}
await put("routes/probe", { name: "probe", gateway: "edge", match: { path: "/probe" }, upstream: "app" });

const envoys: EnvoyProcess[] = [];
let started = 0;
async function addEnvoy(): Promise<void> {
  const e = await startEnvoy({ nodeId: `bench-edge-${started++}`, group: "edge", xdsPort: api.cp.xdsPort });
  await e.waitReady({ timeoutMs: 30_000 });
  envoys.push(e);
}

/** The burst policy's bucket in the Envoy's caller-limits filter config (its share of BURST_LIMIT), fetched by ECDS. */
async function bucketOf(e: EnvoyProcess): Promise<number | undefined> {
  const config = (await e.extensionConfigs()).get("portico.caller_limits");
  const d = (config?.descriptors ?? []).find((x: { entries: { key: string; value: string }[] }) =>
    x.entries.some((en) => en.key === "limit" && en.value === "burst.limits[0]"),
  );
  return d?.token_bucket?.max_tokens;
}

/** Waits until every running Envoy holds its share for `n` Envoys; returns how long that took. */
async function dividedAmong(n: number): Promise<number> {
  const t0 = performance.now();
  const share = Math.max(1, Math.floor(BURST_LIMIT / n));
  await waitFor(
    async () => ((await Promise.all(envoys.map(bucketOf))).every((b) => b === share) ? true : undefined),
    { what: `every Envoy's bucket to be ${share}`, timeoutMs: 30_000, intervalMs: 20 },
  );
  return performance.now() - t0;
}

let lanes: Lane[] = [];
async function openLanes(): Promise<void> {
  for (const l of lanes) l.close();
  lanes = [];
  for (let i = 0; i < envoys.length; i++) {
    lanes.push(
      await openLane({
        envoys,
        target: i,
        port,
        probePath: "/probe",
        counter: "http.edge_http.downstream_cx_total",
        attempts: 256,
      }),
    );
  }
}

/** How many of `total` requests go to each Envoy: even, or UNEVEN_SHARE on the first. */
function split(total: number, n: number, uneven: boolean): number[] {
  if (!uneven || n === 1)
    return Array.from({ length: n }, (_, i) => Math.floor(total / n) + (i < total % n ? 1 : 0));
  const first = Math.round(total * UNEVEN_SHARE);
  return [first, ...split(total - first, n - 1, false)];
}

/** Sends `counts[i]` requests of one consumer on lane i, all lanes at once; the admitted count. */
async function burst(consumer: string, counts: number[], on = lanes): Promise<number> {
  const headers = { "x-api-key": keyOf(consumer) };
  const per = await Promise.all(
    counts.map(async (n, i) => {
      let ok = 0;
      for (let k = 0; k < n; k++) if ((await on[i]!.get("/burst", headers)).status === 200) ok++;
      return ok;
    }),
  );
  return per.reduce((a, b) => a + b, 0);
}

/** Offers `rate` requests a second of one consumer for SECONDS, lane i taking `weights[i]` of them. */
async function steady(
  consumer: string,
  rate: number,
  weights: number[],
): Promise<{ offered: number; admitted: number; lanes: { offered: number; seconds: number }[] }> {
  const headers = { "x-api-key": keyOf(consumer) };
  const start = performance.now();
  const end = start + SECONDS * 1000;
  const per = await Promise.all(
    weights.map(async (w, i) => {
      const gap = 1000 / (rate * w);
      let next = performance.now();
      let offered = 0;
      let ok = 0;
      while (next < end) {
        const wait = next - performance.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        offered++;
        if ((await lanes[i]!.get("/steady", headers)).status === 200) ok++;
        next += gap;
      }
      return { offered, ok, seconds: (performance.now() - start) / 1000 };
    }),
  );
  return {
    offered: per.reduce((a, p) => a + p.offered, 0),
    admitted: per.reduce((a, p) => a + p.ok, 0),
    lanes: per.map((p) => ({ offered: p.offered, seconds: p.seconds })),
  };
}

function weightsOf(n: number, uneven: boolean): number[] {
  return split(1000, n, uneven).map((x) => x / 1000);
}

for (const n of [1, 2, 4]) {
  while (envoys.length < n) await addEnvoy();
  await dividedAmong(n);
  await openLanes();
  const share = Math.max(1, Math.floor(BURST_LIMIT / n));
  for (const uneven of n === 1 ? [false] : [false, true]) {
    const traffic = uneven ? `uneven (${UNEVEN_SHARE * 100}% on one)` : "even";
    const counts = split(2 * BURST_LIMIT, n, uneven);
    const admitted = await burst(freshConsumer(), counts);
    rows.push({
      scenario: "burst, limit per minute",
      envoys: String(n),
      traffic,
      offered: 2 * BURST_LIMIT,
      exact: BURST_LIMIT,
      admitted,
      bound: `Σ min(sent to Envoy i, floor(${BURST_LIMIT}/${n})) = ${counts.reduce((a, d) => a + Math.min(d, share), 0)}`,
    });
    const weights = weightsOf(n, uneven);
    const flow = await steady(freshConsumer(), 2 * STEADY_LIMIT, weights);
    const steadyShare = Math.max(1, Math.floor(STEADY_LIMIT / n));
    // Each Envoy: at most what it was sent, and its bucket plus its rate (limit / n a second) over
    // the time its lane ran (measured: a little over SECONDS, the last answer included).
    const bound = flow.lanes.reduce(
      (a, l) => a + Math.min(l.offered, Math.floor(steadyShare + (STEADY_LIMIT / n) * l.seconds)),
      0,
    );
    rows.push({
      scenario: `steady ${SECONDS} s at twice a per-second limit`,
      envoys: String(n),
      traffic,
      offered: flow.offered,
      exact: Math.min(
        flow.offered,
        Math.floor(STEADY_LIMIT + STEADY_LIMIT * Math.max(...flow.lanes.map((l) => l.seconds))),
      ),
      admitted: flow.admitted,
      bound: `≤ Σ min(sent to Envoy i, floor(${STEADY_LIMIT}/${n}) + ${STEADY_LIMIT}/${n}·its seconds) = ${bound}`,
    });
  }
}

// Pushes within one minute-long window of the burst limit: 4 → 3 → 4 Envoys, then a route added.
{
  const c = freshConsumer();
  const before = await burst(c, split(2 * BURST_LIMIT, 4, false));
  const leaving = envoys.pop()!;
  lanes.pop()!.close();
  await leaving.stop();
  const leaveMs = await dividedAmong(3);
  const after = await burst(c, split(2 * BURST_LIMIT, 3, false));
  rows.push({
    scenario: `an Envoy leaves (4 → 3); re-divided ${(leaveMs / 1000).toFixed(2)} s after it stopped (measured)`,
    envoys: "4 → 3",
    traffic: "even, before and after",
    offered: 4 * BURST_LIMIT,
    exact: BURST_LIMIT,
    admitted: before + after,
    bound: `≤ ${4 * Math.floor(BURST_LIMIT / 4)} before + ${3 * Math.floor(BURST_LIMIT / 3)} after: a re-division starts every bucket of the group afresh`,
  });
  const d = freshConsumer();
  const before2 = await burst(d, split(2 * BURST_LIMIT, 3, false));
  const t1 = performance.now();
  await addEnvoy();
  await dividedAmong(4);
  const joinMs = performance.now() - t1;
  await openLanes();
  const after2 = await burst(d, split(2 * BURST_LIMIT, 4, false));
  rows.push({
    scenario: `an Envoy joins (3 → 4); re-divided ${(joinMs / 1000).toFixed(2)} s after its start (measured, start-up included)`,
    envoys: "3 → 4",
    traffic: "even, before and after",
    offered: 4 * BURST_LIMIT,
    exact: BURST_LIMIT,
    admitted: before2 + after2,
    bound: `≤ ${3 * Math.floor(BURST_LIMIT / 3)} before + ${4 * Math.floor(BURST_LIMIT / 4)} after: a re-division starts every bucket of the group afresh`,
  });
  const e = freshConsumer();
  const before3 = await burst(e, split(2 * BURST_LIMIT, 4, false));
  await put("routes/unrelated", {
    name: "unrelated",
    gateway: "edge",
    match: { path: "/unrelated" },
    upstream: "app",
  });
  const after3 = await burst(e, split(2 * BURST_LIMIT, 4, false));
  rows.push({
    scenario: "another route of the listener added (no membership change)",
    envoys: "4",
    traffic: "even, before and after",
    offered: 4 * BURST_LIMIT,
    exact: BURST_LIMIT,
    admitted: before3 + after3,
    bound: `≤ ${4 * Math.floor(BURST_LIMIT / 4)}: a route table pushed leaves the buckets as they are`,
  });
}

for (const l of lanes) l.close();
await Promise.all(envoys.map((e) => e.stop()));
await api.stop();
await authz.stop();
await upstream.close();

const header = [
  "scenario",
  "Envoys",
  "traffic",
  "offered",
  "one exact counter (formula)",
  "admitted (measured)",
  "admitted / exact (measured)",
  "divided buckets' bound (formula)",
];
console.log(`\nLimits each Envoy counts: admitted, ${os.cpus().length} cores, loopback\n`);
console.log(`| ${header.join(" | ")} |`);
console.log(`| ${header.map(() => "---").join(" | ")} |`);
for (const r of rows) {
  const cells = [r.scenario, r.envoys, r.traffic, r.offered, r.exact, r.admitted];
  console.log(`| ${[...cells, `${((100 * r.admitted) / r.exact).toFixed(1)}%`, r.bound].join(" | ")} |`);
}

fs.mkdirSync(path.join(REPO_ROOT, "bench", "results"), { recursive: true });
fs.writeFileSync(
  path.join(REPO_ROOT, "bench", "results", "native-ratelimit.json"),
  JSON.stringify({ cores: os.cpus().length, seconds: SECONDS, rows }, null, 2) + "\n",
);
