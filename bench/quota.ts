// Over-admission of calendar quotas counted off the request path (`enforce: usage`): Envoy streams
// an access log entry per served request to the control plane (flushed every second, or at 16 KiB),
// the control plane counts it into its ledger and, once a caller's quota is used up, pushes a deny
// to every Envoy of the group by ECDS. Between the request that uses the quota up and the deny
// taking effect, Envoy keeps serving the caller: that is the over-admission, bounded by
//
//   R × (F + L + P)   R: the caller's rate, F: Envoy's flush interval (1 s), L: the ledger's round
//                     trip for the batch, P: the push (deny recorded → every Envoy acknowledged it)
//
// Real Envoys (1 or 2, one gateway group, sharing the listening port), the control plane in this
// process (file store: memory ledger; Redis store: a local redis-server), one route with a daily
// quota per consumer (anonymous callers per address: each case sends from its own loopback
// address, so no ext-authz call muddies the timings). Each case offers a fixed rate (open loop, on
// kept-alive connections) with a quota of a few seconds' worth, until the deny answers.
//
// Measured per case: the rate achieved, requests admitted beyond the quota, exhaustion (the answer
// to the request that used the quota up) → deny recorded by the control plane → deny acknowledged
// by every Envoy → first refused request sent; `bound` is R × (F + measured L + P, from
// exhaustion to the deny recorded less the flush wait, which is at most F, plus the push).
//   npx tsx --conditions=source bench/quota.ts [--rates 100,300,1000] [--envoys 1,2] [--stores file,redis] [--quota-seconds 3]
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { REPO_ROOT } from "@portico/envoy";
import {
  freePort,
  startAdmin,
  startEnvoy,
  startHttpUpstream,
  startRedis,
  waitFor,
  type AdminHandle,
  type EnvoyProcess,
  type RedisServer,
} from "@portico/testing";

const { values } = parseArgs({
  options: {
    rates: { type: "string", default: "100,300,1000" },
    envoys: { type: "string", default: "1,2" },
    stores: { type: "string", default: "file,redis" },
    "quota-seconds": { type: "string", default: "3" },
  },
});
const RATES = values.rates.split(",").map(Number);
const ENVOYS = values.envoys.split(",").map(Number);
const STORES = values.stores.split(",") as ("file" | "redis")[];
const QUOTA_SECONDS = Number(values["quota-seconds"]);
/** Envoy's flush interval for usage logs (translate/features/quota.ts). */
const FLUSH_S = 1;
const ECDS = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";

interface Answer {
  sentAt: number;
  doneAt: number;
  status: number;
}

interface Row {
  store: string;
  envoys: number;
  offered: number;
  achieved: number;
  quota: number;
  admitted: number;
  over: number;
  exhaustToRecordedMs: number;
  pushMs: number;
  exhaustToDenyMs: number;
  bound: number;
}
const rows: Row[] = [];

const upstream = await startHttpUpstream("app");
let nextAddress = 10;

/** Offers `rate` requests a second from one address until a refusal has been seen for 300 ms. */
async function offer(port: number, rate: number, quota: number, from: string): Promise<Answer[]> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 256, localAddress: from });
  const answers: Answer[] = [];
  const started = performance.now();
  const deadline = started + (quota / rate + 10) * 1_000;
  let sent = 0;
  let refusedAt: number | undefined;
  let inFlight = 0;
  const one = () => {
    const sentAt = performance.now();
    inFlight++;
    const req = http.request({ host: "127.0.0.1", port, path: "/metered", agent }, (res) => {
      res.resume();
      res.on("end", () => {
        inFlight--;
        const doneAt = performance.now();
        const status = res.statusCode ?? 0;
        answers.push({ sentAt, doneAt, status });
        if (status === 429 && refusedAt === undefined) refusedAt = doneAt;
      });
    });
    req.on("error", () => {
      inFlight--;
    });
    req.end();
  };
  while (true) {
    const now = performance.now();
    if (now > deadline || (refusedAt !== undefined && now - refusedAt > 300)) break;
    const due = Math.floor(((now - started) / 1_000) * rate);
    for (; sent < due; sent++) one();
    await new Promise((r) => setTimeout(r, 2));
  }
  await waitFor(() => inFlight === 0, { what: "the last answers", timeoutMs: 10_000 });
  agent.destroy();
  return answers;
}

async function runStore(store: "file" | "redis"): Promise<void> {
  let redis: RedisServer | undefined;
  if (store === "redis") redis = await startRedis();
  const api: AdminHandle = await startAdmin(redis ? { store: redis.url } : {});
  const port = await freePort();
  const put = async (p: string, body: object) => {
    const res = await api.call("PUT", `/api/v1/${p}?wait=applied&timeout=30s`, { body });
    if (res.status >= 300) throw new Error(`PUT ${p}: ${res.status} ${res.text}`);
  };
  await put("upstreams/app", { name: "app", endpoints: [{ host: "127.0.0.1", port: upstream.port }] });
  await put("gateways/edge", { name: "edge", listeners: [{ name: "http", port, address: "127.0.0.1" }] });
  const envoys: EnvoyProcess[] = [];
  // When each Envoy acknowledged each ECDS version (the deny filter's config).
  const acks = new Map<string, Map<string, number>>();
  api.cp.xds.fleet.on("ack", (status: { id: string }, typeUrl: string, version: string) => {
    if (typeUrl !== ECDS) return;
    let byEnvoy = acks.get(version);
    if (!byEnvoy) acks.set(version, (byEnvoy = new Map()));
    if (!byEnvoy.has(status.id)) byEnvoy.set(status.id, performance.now());
  });
  // When the control plane recorded each deny (its snapshot's ECDS version changed).
  const pushes: { at: number; version: string }[] = [];
  api.cp.xds.cache.watch("edge", (s) => {
    const version = s.get(ECDS).version;
    if (pushes.at(-1)?.version !== version) pushes.push({ at: performance.now(), version });
  });
  try {
    for (const count of ENVOYS) {
      while (envoys.length < count) {
        const e = await startEnvoy({
          nodeId: `edge-${envoys.length + 1}`,
          group: "edge",
          xdsPort: api.cp.xdsPort,
          logLevel: "warning",
          componentLogLevel: "upstream:warning,config:warning",
        });
        await e.waitReady({ timeoutMs: 30_000 });
        envoys.push(e);
      }
      for (const rate of RATES) {
        const quota = Math.round(rate * QUOTA_SECONDS);
        const name = `q${rate}-${count}-${store}`;
        await put(`rateLimitPolicies/${name}`, { name, limits: [{ requests: quota, per: "day" }] });
        await put("routes/metered", {
          name: "metered",
          gateway: "edge",
          match: { pathPrefix: "/metered" },
          upstream: "app",
          rateLimitPolicy: name,
        });
        const from = `127.0.0.${nextAddress++}`;
        const subject = `a:${from}`;
        const pushedBefore = pushes.length;
        const answers = await offer(port, rate, quota, from);
        const ok = answers.filter((a) => a.status === 200).sort((a, b) => a.doneAt - b.doneAt);
        const refused = answers.filter((a) => a.status === 429).sort((a, b) => a.sentAt - b.sentAt);
        const deny = api.cp.usage.denies().find((d) => d.subject === subject);
        if (!deny || refused.length === 0 || ok.length < quota) {
          throw new Error(`${name}: no deny arrived (${ok.length} admitted, ${refused.length} refused)`);
        }
        const exhaustedAt = ok[quota - 1]!.doneAt;
        const recorded = pushes.slice(pushedBefore).find((p) => p.at >= exhaustedAt) ?? pushes.at(-1)!;
        const acked = [...(acks.get(recorded.version)?.values() ?? [])];
        const ackedAt = acked.length >= count ? Math.max(...acked) : Number.NaN;
        const firstRefused = refused[0]!.sentAt;
        const window = answers.filter((a) => a.sentAt >= exhaustedAt - 1_000 && a.sentAt < exhaustedAt);
        const achieved = window.length || rate;
        const exhaustToRecordedMs = recorded.at - exhaustedAt;
        const pushMs = ackedAt - recorded.at;
        // The flush wait is at most F; what exceeds F of exhaustion → recorded is L (and transport).
        const ledgerMs = Math.max(0, exhaustToRecordedMs - FLUSH_S * 1_000);
        rows.push({
          store,
          envoys: count,
          offered: rate,
          achieved,
          quota,
          admitted: ok.length,
          over: ok.length - quota,
          exhaustToRecordedMs: Math.round(exhaustToRecordedMs),
          pushMs: Math.round(pushMs),
          exhaustToDenyMs: Math.round(firstRefused - exhaustedAt),
          bound: Math.ceil(achieved * (FLUSH_S + (ledgerMs + pushMs) / 1_000)),
        });
        console.log(JSON.stringify(rows.at(-1)));
      }
    }
  } finally {
    await Promise.all(envoys.map((e) => e.stop()));
    await api.stop();
    await redis?.stop();
  }
}

for (const store of STORES) await runStore(store);
await upstream.close();

const header = [
  "store",
  "Envoys",
  "offered /s",
  "achieved /s",
  "quota",
  "admitted",
  "over quota",
  "exhaustion → deny recorded (ms)",
  "push → all Envoys acked (ms)",
  "exhaustion → first refusal (ms)",
  "bound R×(F+L+P)",
];
console.log(
  `\nCalendar quotas counted from access logs: over-admission, ${os.cpus().length} cores, loopback, F = ${FLUSH_S} s\n`,
);
console.log(`| ${header.join(" | ")} |`);
console.log(`| ${header.map(() => "---").join(" | ")} |`);
for (const r of rows) {
  console.log(
    `| ${[r.store, r.envoys, r.offered, r.achieved, r.quota, r.admitted, r.over, r.exhaustToRecordedMs, r.pushMs, r.exhaustToDenyMs, r.bound].join(" | ")} |`,
  );
}
fs.mkdirSync(path.join(REPO_ROOT, "bench", "results"), { recursive: true });
fs.writeFileSync(
  path.join(REPO_ROOT, "bench", "results", "quota.json"),
  JSON.stringify(
    { cores: os.cpus().length, flushSeconds: FLUSH_S, quotaSeconds: QUOTA_SECONDS, rows },
    null,
    2,
  ) + "\n",
);
