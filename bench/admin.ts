// Admin API benchmarks: a write through the API with ?wait=applied until a real Envoy serves it;
// an edit of a watched config file until Envoy serves it, at the default debounce and at none;
// and admin writes per second on the file store and on the Redis store, with the control plane's
// RSS. The control plane runs as its own process so its memory is its own.
//   npx tsx bench/admin.ts [--quick]
import type { ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { stringify } from "yaml";
import { hashToken } from "@portico/control-plane";
import {
  startRedis,
  spawnControlPlane,
  startEnvoy,
  httpGet,
  freePorts,
  startHttpUpstream,
  waitFor,
} from "@portico/testing";
import { findEnvoy, REPO_ROOT } from "@portico/envoy";
import { processMemory } from "./lib/proc.js";
import { percentile as pct } from "./lib/stats.js";

const quick = process.argv.includes("--quick");
const TOKEN = "bench-token";
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "portico-bench-admin-"));
const tokensFile = path.join(dir, "tokens.json");
fs.writeFileSync(tokensFile, JSON.stringify([{ name: "bench", role: "admin", sha256: hashToken(TOKEN) }]));
const children: ChildProcess[] = [];
const cleanups: (() => Promise<unknown>)[] = [];

const ms = (n: number) => `${n.toFixed(2)} ms`;

const rssMiB = (pid: number) => processMemory(pid).rssKiB / 1024;

async function startCp(
  store: string,
  adminPort: number,
  xdsPort: number,
  args: string[] = [],
): Promise<ChildProcess> {
  const child = await spawnControlPlane({ store, tokensFile, adminPort, xdsPort, args });
  children.push(child);
  return child;
}

function api(adminPort: number) {
  return async (method: string, p: string, body?: unknown) => {
    const res = await fetch(`http://127.0.0.1:${adminPort}${p}`, {
      method,
      headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    if (res.status >= 300) throw new Error(`${method} ${p}: ${res.status} ${text}`);
    return text ? JSON.parse(text) : undefined;
  };
}

async function writeThroughput(store: string, label: string, seconds: number, concurrency: number) {
  const [adminPort, xdsPort] = await freePorts(2);
  const child = await startCp(store, adminPort, xdsPort);
  const call = api(adminPort);
  const rssIdle = rssMiB(child.pid!);
  let done = 0;
  const lat: number[] = [];
  const end = Date.now() + seconds * 1000;
  await Promise.all(
    Array.from({ length: concurrency }, async (_, w) => {
      for (let i = 0; Date.now() < end; i++) {
        const t = performance.now();
        await call("PUT", `/api/v1/upstreams/w${w}-${i % 200}`, {
          name: `w${w}-${i % 200}`,
          endpoints: [{ host: "127.0.0.1", port: 1000 + (i % 1000) }],
        });
        lat.push(performance.now() - t);
        done++;
      }
    }),
  );
  const rss = rssMiB(child.pid!);
  child.kill("SIGTERM");
  return {
    label,
    concurrency,
    writesPerSec: done / seconds,
    p50: pct(lat, 50),
    p99: pct(lat, 99),
    rssIdle,
    rss,
  };
}

/** Writes a whole file or none, as an editor saving it does: the watcher never reads half of one. */
function writeWhole(file: string, text: string): void {
  fs.writeFileSync(`${file}.partial`, text);
  fs.renameSync(`${file}.partial`, file);
}

/**
 * An edit of the watched config file (one route added) → the first 200 for that route through a
 * real Envoy. `debounceArgs` empty: the control plane's default hold-off, which it reports in its
 * status; the debounce runs from the file's last change event to its read, so it is in every edit's
 * latency (admin API writes do not wait for it).
 */
async function fileToServed(debounceArgs: string[], n: number, upstreamPort: number) {
  const tag = debounceArgs.length ? `debounce-${debounceArgs.at(-1)}` : "debounce-default";
  const [adminPort, xdsPort, listenerPort] = await freePorts(3);
  const file = path.join(dir, `${tag}.yaml`);
  const routes: object[] = [
    { name: "base", gateway: "edge", match: { pathPrefix: "/base" }, upstream: "bench" },
  ];
  const write = () =>
    writeWhole(
      file,
      stringify({
        gateways: [{ name: "edge", listeners: [{ name: "http", port: listenerPort, address: "127.0.0.1" }] }],
        upstreams: [{ name: "bench", endpoints: [{ host: "127.0.0.1", port: upstreamPort }] }],
        routes,
      }),
    );
  write();
  const child = await startCp(`file:${path.join(dir, `store-${tag}`)}`, adminPort, xdsPort, [
    "--config",
    file,
    "--watch",
    ...debounceArgs,
  ]);
  const status = await api(adminPort)("GET", "/api/v1/status");
  const debounceMs = status.config.file.debounceMs as number;
  const envoy = await startEnvoy({
    nodeId: `bench-${tag}`,
    group: "edge",
    xdsPort,
    logLevel: "error",
    componentLogLevel: "",
  });
  try {
    await envoy.waitReady({ timeoutMs: 20_000 });
    const base = `http://127.0.0.1:${listenerPort}`;
    await waitFor(async () => (await httpGet(`${base}/base`)).status === 200, {
      what: "GET /base through Envoy",
      timeoutMs: 10_000,
      intervalMs: 20,
    });
    const floor: number[] = [];
    for (let k = 0; k < 100; k++) {
      const t = performance.now();
      if ((await httpGet(`${base}/base`)).status === 200) floor.push(performance.now() - t);
    }
    const served: number[] = [];
    let notServed = 0;
    for (let i = 0; i < n; i++) {
      routes.push({ name: `probe-${i}`, gateway: "edge", match: { path: `/probe-${i}` }, upstream: "bench" });
      const t0 = performance.now();
      write();
      for (;;) {
        const r = await httpGet(`${base}/probe-${i}`).catch(() => undefined);
        if (r?.status === 200) {
          served.push(performance.now() - t0);
          break;
        }
        if (performance.now() - t0 > 10_000) {
          notServed++;
          break;
        }
        await sleep(1);
      }
      // Edits further apart than the debounce, so each is a push of its own.
      await sleep(debounceMs + 20);
    }
    return {
      debounceMs,
      served: { p50: pct(served, 50), p99: pct(served, 99), max: pct(served, 100), notServed },
      plainRequest: { p50: pct(floor, 50), p99: pct(floor, 99) },
    };
  } finally {
    await envoy.stop();
    child.kill("SIGTERM");
  }
}

async function main() {
  const envoyBin = await findEnvoy({ install: true });
  console.log(
    `machine: ${os.cpus().length} cores, node ${process.version}, envoy ${envoyBin.version}${quick ? " (quick)" : ""}`,
  );

  // 1. Admin write → served by a real Envoy.
  const upstream = await startHttpUpstream("bench");
  cleanups.push(() => upstream.close());
  const [adminPort, xdsPort, listenerPort] = await freePorts(3);
  const child = await startCp(`file:${path.join(dir, "store-e2e")}`, adminPort, xdsPort);
  const call = api(adminPort);
  await call("PUT", "/api/v1/gateways/edge", {
    name: "edge",
    listeners: [{ name: "http", port: listenerPort, address: "127.0.0.1" }],
  });
  await call("PUT", "/api/v1/upstreams/bench", {
    name: "bench",
    endpoints: [{ host: "127.0.0.1", port: upstream.port }],
  });
  await call("PUT", "/api/v1/routes/base", {
    name: "base",
    gateway: "edge",
    match: { pathPrefix: "/base" },
    upstream: "bench",
  });
  const envoy = await startEnvoy({
    nodeId: "bench-edge",
    group: "edge",
    xdsPort,
    logLevel: "error",
    componentLogLevel: "",
  });
  cleanups.push(() => envoy.stop());
  await envoy.waitReady({ timeoutMs: 20_000 });

  const n = quick ? 30 : 200;
  const waited: number[] = [];
  const noWait: number[] = [];
  const served: number[] = [];
  let notServed = 0;
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    const res = await call("PUT", `/api/v1/routes/probe-${i}?wait=applied&timeout=10s`, {
      name: `probe-${i}`,
      gateway: "edge",
      match: { path: `/probe-${i}` },
      upstream: "bench",
    });
    waited.push(performance.now() - t);
    const first = await httpGet(`http://127.0.0.1:${listenerPort}/probe-${i}`);
    if (!res.rollout?.applied || first.status !== 200) notServed++;
    served.push(performance.now() - t);
    const t2 = performance.now();
    await call("PUT", `/api/v1/upstreams/nowait-${i % 20}`, {
      name: `nowait-${i % 20}`,
      endpoints: [{ host: "127.0.0.1", port: 2000 + i }],
    });
    noWait.push(performance.now() - t2);
  }
  const rssWithEnvoy = rssMiB(child.pid!);
  child.kill("SIGTERM");

  // 1b. Config file edit → served by a real Envoy, at the default debounce and with none.
  const fileEdits = quick ? 10 : 50;
  const fileDefault = await fileToServed([], fileEdits, upstream.port);
  const fileNoDebounce = await fileToServed(["--debounce-ms", "0"], fileEdits, upstream.port);

  // 2. Writes per second, file store vs Redis store (Redis: no persistence, and AOF everysec).
  const seconds = quick ? 2 : 5;
  const redis = await startRedis();
  cleanups.push(() => redis.stop());
  const redisAof = await startRedis({ args: ["--appendonly", "yes", "--appendfsync", "everysec"] });
  cleanups.push(() => redisAof.stop());
  const throughput = [];
  for (const c of [1, 8]) {
    throughput.push(await writeThroughput(`file:${path.join(dir, `store-${c}`)}`, "file store", seconds, c));
    throughput.push(await writeThroughput(redis.url, "redis store", seconds, c));
    throughput.push(
      await writeThroughput(`${redisAof.url}?prefix=aof`, "redis store, AOF everysec", seconds, c),
    );
  }

  console.log(
    `\nadmin write → served by a real Envoy (${n} route writes, each then one request through Envoy)`,
  );
  console.log(
    `  PUT ?wait=applied answered:          p50 ${ms(pct(waited, 50))}  p99 ${ms(pct(waited, 99))}`,
  );
  console.log(
    `  … and first request served (200):    p50 ${ms(pct(served, 50))}  p99 ${ms(pct(served, 99))}  (${notServed} not served on the first request)`,
  );
  console.log(
    `  baseline, PUT without wait (commit): p50 ${ms(pct(noWait, 50))}  p99 ${ms(pct(noWait, 99))}`,
  );
  console.log(
    `  ratio wait/commit p50: ${(pct(waited, 50) / pct(noWait, 50)).toFixed(2)}x;  control-plane RSS ${rssWithEnvoy.toFixed(0)} MiB`,
  );
  console.log(
    `\nconfig file edit → served by a real Envoy (${fileEdits} edits, each adding one route, then requests until it answers 200)`,
  );
  for (const r of [fileDefault, fileNoDebounce]) {
    console.log(
      `  --debounce-ms ${String(r.debounceMs).padEnd(4)}${r === fileDefault ? "(default)" : "         "} p50 ${ms(r.served.p50)}  p99 ${ms(r.served.p99)}  max ${ms(r.served.max)}  (${r.served.notServed} never served)`,
    );
  }
  console.log(
    `  baseline, a plain request through the same Envoy: p50 ${ms(fileDefault.plainRequest.p50)}  p99 ${ms(fileDefault.plainRequest.p99)}`,
  );
  console.log(
    `\nadmin writes per second (${seconds}s each; every write a new revision, validated, committed, published)`,
  );
  for (const t of throughput) {
    console.log(
      `  ${t.label.padEnd(27)} concurrency ${String(t.concurrency).padStart(2)}: ${t.writesPerSec.toFixed(0).padStart(5)} writes/s  p50 ${ms(t.p50)}  p99 ${ms(t.p99)}  RSS ${t.rssIdle.toFixed(0)} → ${t.rss.toFixed(0)} MiB`,
    );
  }
  const results = {
    waited,
    served,
    noWait,
    notServed,
    throughput,
    rssWithEnvoy,
    fileEdit: { defaultDebounce: fileDefault, noDebounce: fileNoDebounce },
  };
  fs.mkdirSync(path.join(REPO_ROOT, "bench", "results"), { recursive: true });
  fs.writeFileSync(
    path.join(REPO_ROOT, "bench", "results", "admin.json"),
    JSON.stringify({ at: new Date().toISOString(), quick, ...summary(results) }, null, 2),
  );
}

function summary(r: {
  waited: number[];
  served: number[];
  noWait: number[];
  notServed: number;
  throughput: unknown[];
  rssWithEnvoy: number;
  fileEdit: unknown;
}) {
  return {
    writeWaitApplied: { p50: pct(r.waited, 50), p99: pct(r.waited, 99) },
    writeServed: { p50: pct(r.served, 50), p99: pct(r.served, 99), notServedOnFirstRequest: r.notServed },
    writeNoWait: { p50: pct(r.noWait, 50), p99: pct(r.noWait, 99) },
    throughput: r.throughput,
    rssMiB: r.rssWithEnvoy,
    fileEditServed: r.fileEdit,
  };
}

try {
  await main();
} finally {
  for (const c of children) c.kill("SIGKILL");
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
  fs.rmSync(dir, { recursive: true, force: true });
}
