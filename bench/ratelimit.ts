// Rate-limit benchmark: decisions per second and p50/p99 latency of ShouldRateLimit over gRPC at a
// few concurrency levels, for the memory backend, Redis strict and Redis local-first, beside a
// grpc-js server that answers a fixed response (channelz off, as the services run); the same for
// the limiter alone (no gRPC); redis-benchmark's INCR and EVALSHA of the decision script with the
// benchmarked descriptor's two keys, on the same Redis in the same run, as the ceiling; and the
// over-admission measured with two local-first instances sharing one limit, beside its worst-case
// bound (a formula, not a measurement); and p50/p99 at a fixed 1,000 and 3,000 decisions/s
// (open loop: ghz when installed, else a Node client) in local-first and strict modes beside
// envoyproxy/ratelimit (the reference Go implementation, built from the Go module proxy when Go
// is installed) and a grpc-js server that does no work (the floor of any service in Node) on the
// same Redis and load, in interleaved rounds, medians. Loopback only. Prints figures;
// never fails on a time.
//
//   npx tsx bench/ratelimit.ts [--quick] [--seconds N] [--rounds N] [--fixed-rate-only] [--no-reference] [--compiled]
//
// `--compiled` runs the service's build as production does (bench/lib/service.ts).
import { execFile, spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { parseArgs, promisify } from "node:util";
import { startRedis, freePort, type RedisServer, RUN_FROM_SOURCE } from "@portico/testing";
import { findGhz, ghzLoad, nodeLoad, writeProtoset, type LoadResult } from "./lib/grpc-load.js";
import { processCpuUs } from "./lib/proc.js";
import { buildReference, REFERENCE_NAME, startReference } from "./lib/reference-ratelimit.js";
import { serviceEntry, SHIPPED_NODE_ARGS } from "./lib/service.js";
import { median } from "./lib/stats.js";
import {
  buildConfig,
  matchDescriptor,
  ManualClock,
  MemoryLimiter,
  parseRedisSpec,
  LocalFirstRedisLimiter,
  DECIDE,
  StrictRedisLimiter,
  createRateLimitClient,
  messageTypes,
  type RateLimitClient,
  type LimitCheck,
  type LimitRule,
  type RateLimiter,
} from "@portico/ratelimit-service";

const RLS_METHOD = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";

const run = promisify(execFile);
const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const { values: argv } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    seconds: { type: "string" },
    rounds: { type: "string" },
    "fixed-rate-only": { type: "boolean", default: false },
    "no-reference": { type: "boolean", default: false },
    compiled: { type: "boolean", default: false },
  },
});
const QUICK = argv.quick;
/** Measured seconds per point; the whole run stays under two minutes. */
const SECONDS = Number(argv.seconds ?? (QUICK ? 1 : 2.5));
const CONCURRENCY = QUICK ? [1, 32] : [1, 16, 64];
const KEYS = 1_000;

const CONFIG_YAML = `
domain: bench
descriptors:
  - key: api_key
    rate_limits:
      - { unit: second, requests_per_unit: 1000000, algorithm: token_bucket }
      - { unit: month, requests_per_unit: 4000000000, calendar: true }
`;

interface Point {
  backend: string;
  concurrency: number;
  perSecond: number;
  p50: number;
  p99: number;
}

function pct(sorted: Float64Array, p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/** Keeps `concurrency` calls in flight for `seconds` after a short warm-up; latencies in ms. */
async function load(
  call: (i: number) => Promise<unknown>,
  concurrency: number,
  seconds: number,
): Promise<{ perSecond: number; p50: number; p99: number }> {
  const warmupEnd = performance.now() + Math.min(500, seconds * 250);
  const end = warmupEnd + seconds * 1000;
  const lat: number[] = [];
  let i = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      for (;;) {
        const t0 = performance.now();
        if (t0 >= end) return;
        await call(i++);
        const t1 = performance.now();
        if (t0 >= warmupEnd) lat.push(t1 - t0);
      }
    }),
  );
  const sorted = Float64Array.from(lat).sort();
  return { perSecond: lat.length / seconds, p50: pct(sorted, 50), p99: pct(sorted, 99) };
}

/** The service from this checkout, or from `root` (another checkout, to compare with). */
function startService(args: string[], port: number, root = REPO): ChildProcess {
  return spawn(
    process.execPath,
    [
      // BENCH_PROFILE=DIR writes a CPU profile of each service process there.
      ...(process.env.BENCH_PROFILE ? ["--cpu-prof", `--cpu-prof-dir=${process.env.BENCH_PROFILE}`] : []),
      ...serviceEntry(root, "ratelimit-service", argv.compiled),
      "--listen",
      `127.0.0.1:${port}`,
      "--metrics-listen",
      "",
      ...args,
    ],
    { cwd: root, env: { ...process.env, LOG_LEVEL: "warn" }, stdio: ["ignore", "ignore", "inherit"] },
  );
}

/**
 * The grpc-js ceiling (bench/lib/grpc-echo.ts) in its own process, as the services run in theirs,
 * with the Node arguments the rate limiter ships with.
 */
function startEcho(port: number, answer: Buffer): ChildProcess {
  return spawn(
    process.execPath,
    [
      ...SHIPPED_NODE_ARGS["ratelimit-service"],
      ...RUN_FROM_SOURCE,
      "bench/lib/grpc-echo.ts",
      String(port),
      RLS_METHOD,
      answer.toString("base64"),
    ],
    { cwd: REPO, stdio: ["ignore", "ignore", "inherit"] },
  );
}

async function ready(client: RateLimitClient): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    try {
      await client.shouldRateLimit({
        domain: "bench",
        descriptors: [{ entries: [{ key: "api_key", value: "warm" }] }],
      });
      return;
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

async function redisBenchmark(port: number, label: string, args: string[]): Promise<string> {
  const { stdout } = await run("redis-benchmark", ["-p", String(port), "-q", ...args], { timeout: 60_000 });
  const m = /([\d.]+) requests per second(?:, p50=([\d.]+) msec)?/.exec(stdout.split("\r").pop() ?? stdout);
  return m
    ? `${label.padEnd(38)} ${Number(m[1]).toFixed(0).padStart(9)}/s${m[2] ? `   p50 ${m[2]} ms` : ""}`
    : `${label}: ${stdout.trim()}`;
}

/**
 * The decision script's keys and arguments for the benchmarked descriptor, as strict mode sends
 * them (ratelimit-service/src/redis/strict.ts): one key per limit, so a token bucket and a
 * calendar-month quota are two keys per call. redis-benchmark puts a random key number in place
 * of each `__rand_int__`.
 */
function decideArgs(rules: readonly LimitRule[], now: number): string[] {
  const keys: string[] = [];
  const args: (string | number)[] = [now, 1, 1, rules.length];
  rules.forEach((r, i) => {
    keys.push(`bench:${i}:__rand_int__`);
    if (r.calendar) args.push("c", r.requestsPerUnit, now + 40 * 86_400_000, 0, 0);
    else if (r.algorithm === "token_bucket")
      args.push("b", r.requestsPerUnit, r.windowMs / r.requestsPerUnit, r.burst, 0);
    else throw new Error(`the Redis ceiling does not model ${r.algorithm} (${r.source})`);
  });
  return [String(keys.length), ...keys, ...args.map(String)];
}

async function ceiling(redis: RedisServer, rules: readonly LimitRule[]): Promise<string[]> {
  const n = QUICK ? "100000" : "200000";
  const { stdout: sha } = await run("redis-cli", ["-p", String(redis.port), "script", "load", DECIDE.lua]);
  const evalArgs = ["evalsha", sha.trim(), ...decideArgs(rules, Date.now())];
  const keys = `${rules.length} key${rules.length === 1 ? "" : "s"}`;
  return Promise.all([
    redisBenchmark(redis.port, "INCR, 50 connections", [
      "-n",
      n,
      "-c",
      "50",
      "-r",
      String(KEYS),
      "-t",
      "incr",
    ]),
    redisBenchmark(redis.port, "INCR, 50 connections, pipeline 16", [
      "-n",
      n,
      "-c",
      "50",
      "-P",
      "16",
      "-r",
      String(KEYS),
      "-t",
      "incr",
    ]),
  ]).then(async (incr) => [
    ...incr,
    await redisBenchmark(redis.port, `EVALSHA decide (${keys}), 50 connections`, [
      "-n",
      n,
      "-c",
      "50",
      "-r",
      String(KEYS),
      ...evalArgs,
    ]),
    await redisBenchmark(redis.port, `EVALSHA decide (${keys}), 50 conns, pipeline 16`, [
      "-n",
      n,
      "-c",
      "50",
      "-P",
      "16",
      "-r",
      String(KEYS),
      ...evalArgs,
    ]),
  ]);
}

function checks(): LimitCheck[] {
  const config = buildConfig([{ file: "bench.yaml", text: CONFIG_YAML }]);
  return Array.from({ length: KEYS }, (_, i) => {
    const m = matchDescriptor(config, "bench", [{ key: "api_key", value: `k${i}` }])!;
    return { key: m.counterKey, limits: m.set.limits, hits: 1, countRefused: true };
  });
}

/** Two local-first instances hammer one key of limit L; how many get through beyond L. */
async function overAdmission(redis: RedisServer, syncPeriodMs: number, syncHits: number, L: number) {
  const config = buildConfig([
    {
      file: "o.yaml",
      text: `domain: o\ndescriptors: [{key: k, rate_limit: {unit: hour, requests_per_unit: ${L}}}]`,
    },
  ]);
  const m = matchDescriptor(config, "o", [{ key: "k", value: "v" }])!;
  const check: LimitCheck = { key: m.counterKey, limits: m.set.limits, hits: 1, countRefused: true };
  const clock = new ManualClock(Date.now());
  const prefix = `over-${syncPeriodMs}-${syncHits}-${L}:`;
  const ls = [0, 1].map(
    () =>
      new LocalFirstRedisLimiter({
        connection: parseRedisSpec(redis.url),
        clock,
        prefix,
        heartbeatMs: 100,
        syncPeriodMs,
        syncHits,
      }),
  );
  await Promise.all(ls.map((l) => l.waitUntilUp()));
  while (!ls.every((l) => l.instances() === 2)) {
    await Promise.all(ls.map((l) => l.heartbeat()));
    await new Promise((r) => setTimeout(r, 20));
  }
  let admitted = 0;
  const hammer = async (l: LocalFirstRedisLimiter) => {
    for (let r = 0; r < Math.ceil((3 * L) / 64); r++) {
      const res = await Promise.all(Array.from({ length: 64 }, () => l.check([check])));
      for (const [x] of res) if (x!.admitted) admitted++;
      await new Promise((res2) => setImmediate(res2));
    }
  };
  await Promise.all(ls.map(hammer));
  // What is left once both have read the final count.
  for (let i = 0; i < 1_000; i++) {
    await Promise.all(ls.map((l) => l.flush()));
    const res = await Promise.all(ls.map((l) => l.check([check])));
    const ok = res.filter(([x]) => x!.admitted).length;
    admitted += ok;
    if (ok === 0) break;
  }
  await Promise.all(ls.map((l) => l.close()));
  // Not measured: the stated worst case for two instances, from the formula.
  return { admitted, extra: admitted - L, worstCaseBound: { formula: "ceil(L/2)", value: Math.ceil(L / 2) } };
}

interface FixedRatePoint {
  mode: string;
  rate: number;
  generator: LoadResult["generator"];
  rounds: number;
  /** Medians over the rounds. */
  p50: number;
  p99: number;
  perSecond: number;
  errors: number;
  /** The service's event-loop delay and GC during the runs (medians), from its own /metrics. */
  loopLagP99Ms: number;
  loopLagMaxMs: number;
  gcMsPerSecond: number;
  gcPausesOver1Ms: number;
  syncsPerSecond: number;
  /** The service's CPU time per decision (the scrapes around the run included), µs. */
  cpuUsPerDecision: number;
  samples: (LoadResult & ServiceHealth)[];
}

/** What held the service's event loop up during a run: its delay percentiles and GC pauses. */
interface ServiceHealth {
  loopLagP99Ms: number;
  loopLagMaxMs: number;
  gcSeconds: number;
  gcOver1Ms: number;
  /** Redis calls made off the request path (local-first sync batches). */
  syncBatches: number;
  /** The service process's CPU time so far (user + system), in µs. */
  cpuUs: number;
}

/** prom-client's event-loop probe fires every 10 ms; the delays it reports include those 10 ms. */
const LOOP_PROBE_MS = 10;

/**
 * The service's event-loop delay beyond its 10 ms probe (prom-client resets it on every scrape,
 * so a scrape before a run and one after give the run's) and its GC totals so far.
 */
async function serviceHealth(metricsPort: number, pid: number): Promise<ServiceHealth> {
  const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  const cpuUs = processCpuUs(pid);
  const one = (name: string) => Number(new RegExp(`^${name} ([\\d.e+-]+)`, "m").exec(text)?.[1] ?? NaN);
  const sum = (re: RegExp) => [...text.matchAll(re)].reduce((n, m) => n + Number(m[1]), 0);
  return {
    loopLagP99Ms: Math.max(0, one("nodejs_eventloop_lag_p99_seconds") * 1000 - LOOP_PROBE_MS),
    loopLagMaxMs: Math.max(0, one("nodejs_eventloop_lag_max_seconds") * 1000 - LOOP_PROBE_MS),
    gcSeconds: sum(/^nodejs_gc_duration_seconds_sum\{[^}]*\} ([\d.e+-]+)/gm),
    gcOver1Ms:
      sum(/^nodejs_gc_duration_seconds_count\{[^}]*\} ([\d.e+-]+)/gm) -
      sum(/^nodejs_gc_duration_seconds_bucket\{le="0\.001",[^}]*\} ([\d.e+-]+)/gm),
    syncBatches: sum(/^portico_ratelimit_sync_batches_total\{[^}]*\} ([\d.e+-]+)/gm),
    cpuUs,
  };
}

/** The reference has no event-loop or GC figures here: only its CPU time, from /proc. */
function cpuOnly(pid: number): ServiceHealth {
  return {
    loopLagP99Ms: NaN,
    loopLagMaxMs: NaN,
    gcSeconds: NaN,
    gcOver1Ms: NaN,
    syncBatches: NaN,
    cpuUs: processCpuUs(pid),
  };
}

/** What the no-work gRPC server answers every call with: OK, one status per limit, as the service answers. */
function fixedAnswer(): Buffer {
  const { response } = messageTypes();
  return Buffer.from(
    response
      .encode(
        response.fromObject({
          overall_code: "OK",
          // One status per limit of the descriptor, as the service answers.
          statuses: [
            {
              code: "OK",
              current_limit: { requests_per_unit: 1000000, unit: "SECOND" },
              limit_remaining: 999999,
            },
            {
              code: "OK",
              current_limit: { requests_per_unit: 4000000000, unit: "MONTH" },
              limit_remaining: 3999999999,
            },
          ],
        }),
      )
      .finish(),
  );
}

/** The mode under which the reference's figures are kept. */
const REFERENCE = "reference";
/** The grpc-js server answering at once, request unread: the floor of any service in Node here. */
const NO_WORK = "grpc-js no-work";
/** The servers that are not Portico's: only their CPU is known, not their event loop or syncs. */
const cpuOnlyMode = (mode: string) => mode === REFERENCE || mode === NO_WORK;

/**
 * p50 and p99 of ShouldRateLimit at fixed rates, local-first and strict on the same Redis, beside
 * envoyproxy/ratelimit (unless --no-reference, or it cannot be built), the services and rates
 * taken in turn in each round so that drift on a shared machine hits all alike.
 * BENCH_BASELINE=DIR (another checkout of this repository, its dependencies installed) adds that
 * checkout's service in both modes to the same rounds: before and after a change, measured alike.
 */
async function fixedRate(redis: RedisServer, dir: string): Promise<FixedPointSet> {
  const rates = [1_000, 3_000];
  const rounds = Number(argv.rounds ?? (QUICK ? 2 : 3));
  const seconds = QUICK ? 4 : 8;
  const ghz = findGhz();
  const protoset = ghz
    ? writeProtoset("envoy/service/ratelimit/v3/rls.proto", path.join(dir, "rls.protoset"))
    : "";
  const messages = Array.from({ length: KEYS }, (_, i) => ({
    domain: "bench",
    descriptors: [{ entries: [{ key: "api_key", value: `k${i}` }] }],
  }));
  const baseline = process.env.BENCH_BASELINE;
  const modes: [string, string[], string][] = [
    ["local-first", ["--backend", redis.url, "--mode", "local-first", "--redis-prefix", "f-lf:"], REPO],
    ["strict", ["--backend", redis.url, "--mode", "strict", "--redis-prefix", "f-strict:"], REPO],
    ...(baseline
      ? ([
          [
            "local-first (baseline)",
            ["--backend", redis.url, "--mode", "local-first", "--redis-prefix", "b-lf:"],
            baseline,
          ],
          [
            "strict (baseline)",
            ["--backend", redis.url, "--mode", "strict", "--redis-prefix", "b-strict:"],
            baseline,
          ],
        ] as [string, string[], string][])
      : []),
  ];
  const services: {
    mode: string;
    port: number;
    child: ChildProcess;
    client: RateLimitClient;
    health: () => Promise<ServiceHealth>;
  }[] = [];
  let reference: FixedPointSet["reference"] = argv["no-reference"]
    ? { name: REFERENCE_NAME, error: "left out (--no-reference)" }
    : undefined;
  try {
    for (const [mode, args, root] of modes) {
      const port = await freePort();
      const metricsPort = await freePort();
      const child = startService(
        ["--config", dir, ...args, "--metrics-listen", `127.0.0.1:${metricsPort}`],
        port,
        root,
      );
      const client = createRateLimitClient(`127.0.0.1:${port}`);
      services.push({ mode, port, child, client, health: () => serviceHealth(metricsPort, child.pid!) });
      await ready(client);
    }
    {
      const port = await freePort();
      const child = startEcho(port, fixedAnswer());
      const client = createRateLimitClient(`127.0.0.1:${port}`);
      services.push({
        mode: NO_WORK,
        port,
        child,
        client,
        health: () => Promise.resolve(cpuOnly(child.pid!)),
      });
      await ready(client);
    }
    if (!reference) {
      const built = await buildReference();
      try {
        if ("error" in built) throw new Error(built.error);
        const ports = { grpc: await freePort(), http: await freePort(), debug: await freePort() };
        const server = await startReference({ binary: built.binary, redisPort: redis.port, dir, ports });
        const client = createRateLimitClient(`127.0.0.1:${server.port}`);
        await ready(client).catch((err: unknown) => {
          client.close();
          server.stop();
          throw err;
        });
        services.push({
          mode: REFERENCE,
          port: server.port,
          child: server.child,
          client,
          health: () => Promise.resolve(cpuOnly(server.child.pid!)),
        });
        reference = { name: REFERENCE_NAME };
      } catch (err) {
        reference = { name: REFERENCE_NAME, error: (err as Error).message };
      }
      if (reference.error) console.log(`${REFERENCE_NAME} left out: ${reference.error}`);
    }
    const drive = (s: (typeof services)[number], rps: number, secs: number) =>
      ghz
        ? ghzLoad({
            ghz,
            protoset,
            call: "envoy.service.ratelimit.v3.RateLimitService.ShouldRateLimit",
            target: `127.0.0.1:${s.port}`,
            messages,
            rps,
            seconds: secs,
            dir,
          })
        : nodeLoad((i) => s.client.shouldRateLimit(messages[i % KEYS]!), rps, secs);
    // Warm-up: the JIT, the connections and every key's counters.
    for (const s of services) await drive(s, 1_000, 2);
    const samples = new Map<string, (LoadResult & ServiceHealth)[]>();
    for (let round = 0; round < rounds; round++) {
      for (const rate of rates) {
        for (const s of services) {
          const before = await s.health();
          const load = await drive(s, rate, seconds);
          const after = await s.health();
          const r = {
            ...load,
            loopLagP99Ms: after.loopLagP99Ms,
            loopLagMaxMs: after.loopLagMaxMs,
            gcSeconds: after.gcSeconds - before.gcSeconds,
            gcOver1Ms: after.gcOver1Ms - before.gcOver1Ms,
            syncBatches: after.syncBatches - before.syncBatches,
            cpuUs: (after.cpuUs - before.cpuUs) / Math.max(1, load.count),
          };
          const key = `${s.mode}@${rate}`;
          samples.set(key, [...(samples.get(key) ?? []), r]);
          const service = cpuOnlyMode(s.mode)
            ? `${r.cpuUs.toFixed(0)} µs CPU/decision`
            : `event-loop delay p99 ${r.loopLagP99Ms.toFixed(1)} ms, max ${r.loopLagMaxMs.toFixed(1)} ms; GC ${((1000 * r.gcSeconds) / seconds).toFixed(1)} ms/s, ${r.gcOver1Ms} pauses > 1 ms; ${(r.syncBatches / seconds).toFixed(0)} syncs/s; ${r.cpuUs.toFixed(0)} µs CPU/decision`;
          console.log(
            `round ${round + 1}: ${s.mode.padEnd(12)} @${rate}/s  ${r.perSecond.toFixed(0)}/s answered  p50 ${r.p50.toFixed(3)} ms  p99 ${r.p99.toFixed(3)} ms` +
              `  | service: ${service}${r.errors ? `  ${r.errors} errors` : ""}`,
          );
        }
      }
    }
    const points: FixedRatePoint[] = [];
    for (const rate of rates) {
      for (const s of services) {
        const rs = samples.get(`${s.mode}@${rate}`)!;
        points.push({
          mode: s.mode,
          rate,
          generator: rs[0]!.generator,
          rounds,
          p50: median(rs.map((r) => r.p50)),
          p99: median(rs.map((r) => r.p99)),
          perSecond: median(rs.map((r) => r.perSecond)),
          errors: rs.reduce((n, r) => n + r.errors, 0),
          loopLagP99Ms: median(rs.map((r) => r.loopLagP99Ms)),
          loopLagMaxMs: median(rs.map((r) => r.loopLagMaxMs)),
          gcMsPerSecond: median(rs.map((r) => (1000 * r.gcSeconds) / seconds)),
          gcPausesOver1Ms: median(rs.map((r) => r.gcOver1Ms)),
          syncsPerSecond: median(rs.map((r) => r.syncBatches / seconds)),
          cpuUsPerDecision: median(rs.map((r) => r.cpuUs)),
          samples: rs,
        });
      }
    }
    return { generator: ghz ? "ghz" : "node", seconds, points, reference };
  } finally {
    for (const s of services) {
      s.client.close();
      s.child.kill("SIGTERM");
    }
  }
}

interface FixedPointSet {
  generator: string;
  seconds: number;
  points: FixedRatePoint[];
  /** envoyproxy/ratelimit in the same rounds (its points have mode "reference"), or why not. */
  reference?: { name: string; error?: string };
}

/** The issue's row for these figures: measured beside the aim, and beside the reference's p99. */
function fixedRateRow(set: FixedPointSet) {
  const at = (mode: string, rate: number) => set.points.find((p) => p.mode === mode && p.rate === rate);
  const p99s = (mode: string) => [1_000, 3_000].map((r) => at(mode, r)?.p99.toFixed(2) ?? "?").join(" / ");
  const ratios = (mode: string) =>
    [1_000, 3_000]
      .map((r) => {
        const [ours, ref] = [at(mode, r), at(REFERENCE, r)];
        return ours && ref ? `${(ours.p99 / ref.p99).toFixed(2)}x` : "?";
      })
      .join(" / ");
  const beside = at(REFERENCE, 1_000)
    ? `; ${set.reference!.name}, same load and Redis: ${p99s(REFERENCE)} ms, so local-first ${ratios("local-first")} and strict ${ratios("strict")} of it`
    : "";
  const floor = at(NO_WORK, 1_000)
    ? `; a grpc-js server that does no work, same load: ${p99s(NO_WORK)} ms`
    : "";
  return {
    measure: "rate limiter p99 at 1,000 and 3,000 decisions/s (fixed-rate gRPC load, Redis on loopback)",
    aim: "local-first ≤ 1.5 ms, strict ≤ 2 ms",
    measured: `local-first ${p99s("local-first")} ms; strict ${p99s("strict")} ms${beside}${floor} (${set.generator}, medians of ${set.points[0]?.rounds ?? 0} rounds)`,
  };
}

const fmt = (p: Point) =>
  `${p.backend.padEnd(22)} c=${String(p.concurrency).padEnd(3)} ${p.perSecond.toFixed(0).padStart(8)}/s   p50 ${p.p50.toFixed(3)} ms   p99 ${p.p99.toFixed(3)} ms`;

async function main(): Promise<void> {
  const started = performance.now();
  const redis = await startRedis();
  const children: ChildProcess[] = [];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "portico-bench-rl-"));
  try {
    fs.writeFileSync(path.join(dir, "bench.yaml"), CONFIG_YAML);
    if (argv["fixed-rate-only"]) {
      console.log(
        `# rate-limit benchmark, fixed rates only (${os.cpus().length} CPUs, load average ${os.loadavg()[0]!.toFixed(2)})`,
      );
      const fixed = await fixedRate(redis, dir);
      printFixed(fixed);
      writeResults({
        at: new Date().toISOString(),
        quick: QUICK,
        fixedRate: fixed,
        rows: [fixedRateRow(fixed)],
      });
      return;
    }
    console.log(
      `# rate-limit benchmark (${os.cpus().length} CPUs, ${os.cpus()[0]?.model ?? "?"}), ${SECONDS}s per point`,
    );
    console.log(`# one descriptor per call: a token bucket and a calendar-month quota, ${KEYS} API keys\n`);

    console.log("## ceiling: redis-benchmark on the same redis-server");
    const cs = checks();
    const ceilingLines = await ceiling(redis, cs[0]!.limits);
    for (const line of ceilingLines) console.log(line);

    console.log(
      "\n## ShouldRateLimit over gRPC (the service in its own process, this process as the client)",
    );
    const grpcPoints: Point[] = [];
    const okAnswer = fixedAnswer();
    const backends: [string, string[]][] = [
      ["grpc-js echo (ceiling)", []],
      ["memory", ["--backend", "memory"]],
      ["redis strict", ["--backend", redis.url, "--mode", "strict", "--redis-prefix", "g-strict:"]],
      ["redis local-first", ["--backend", redis.url, "--mode", "local-first", "--redis-prefix", "g-lf:"]],
    ];
    for (const [name, args] of backends) {
      const port = await freePort();
      const child =
        args.length === 0 ? startEcho(port, okAnswer) : startService(["--config", dir, ...args], port);
      children.push(child);
      const client = createRateLimitClient(`127.0.0.1:${port}`);
      await ready(client);
      for (const c of CONCURRENCY) {
        const r = await load(
          (i) =>
            client.shouldRateLimit({
              domain: "bench",
              descriptors: [{ entries: [{ key: "api_key", value: `k${i % KEYS}` }] }],
            }),
          c,
          SECONDS,
        );
        const p = { backend: name, concurrency: c, ...r };
        grpcPoints.push(p);
        console.log(fmt(p));
      }
      client.close();
      child.kill("SIGTERM");
      await new Promise((r) => child.once("exit", r));
    }

    const alonePoints: (Point & { degraded: number })[] = [];
    console.log("\n## the limiter alone, in this process (no gRPC)");
    const limiters: [string, () => RateLimiter][] = [
      ["memory", () => new MemoryLimiter()],
      [
        "redis strict",
        () =>
          new StrictRedisLimiter({
            connection: parseRedisSpec(redis.url),
            prefix: "l-strict:",
            timeoutMs: 50,
          }),
      ],
      [
        "redis local-first",
        () => new LocalFirstRedisLimiter({ connection: parseRedisSpec(redis.url), prefix: "l-lf:" }),
      ],
    ];
    for (const [name, make] of limiters) {
      const l = make();
      if (l instanceof StrictRedisLimiter || l instanceof LocalFirstRedisLimiter) await l.waitUntilUp();
      for (const c of [1, 64]) {
        let degraded = 0;
        const r = await load(
          async (i) => {
            const [res] = await l.check([cs[i % KEYS]!]);
            if (res!.degraded) degraded++;
          },
          c,
          SECONDS / 2,
        );
        alonePoints.push({ backend: name, concurrency: c, ...r, degraded });
        console.log(
          `${fmt({ backend: name, concurrency: c, ...r })}${degraded ? `   (${degraded} decided without Redis)` : ""}`,
        );
      }
      await l.close();
    }

    console.log(
      "\n## over-admission: two local-first instances, one limit L, each offered 3L in bursts of 64",
    );
    const runs: [number, number, number][] = QUICK
      ? [[100, 100, 1_000]]
      : [
          [100, 100, 1_000],
          [20, 10, 1_000],
          [1_000, 1_000_000, 1_000],
          [100, 100, 10_000],
        ];
    const overAdmitted: object[] = [];
    for (const [T, K, L] of runs) {
      const o = await overAdmission(redis, T, K, L);
      overAdmitted.push({ syncPeriodMs: T, syncHits: K, limit: L, ...o });
      console.log(
        `T=${String(T).padEnd(5)} K=${String(K).padEnd(8)} L=${String(L).padEnd(6)} admitted ${o.admitted} (+${o.extra}, ${((100 * o.extra) / L).toFixed(1)}%)   worst-case bound (formula ${o.worstCaseBound.formula}) +${o.worstCaseBound.value}`,
      );
    }

    console.log(
      `\n## fixed rates: p50 / p99 at 1,000 and 3,000 decisions/s, one descriptor per call, ${KEYS} keys`,
    );
    const fixed = await fixedRate(redis, dir);
    printFixed(fixed);

    const at = (backend: string) => grpcPoints.filter((p) => p.backend === backend);
    const best = (backend: string) => Math.max(...at(backend).map((p) => p.perSecond));
    console.log(
      `\nlocal-first / strict over gRPC (best of each): ${(best("redis local-first") / best("redis strict")).toFixed(2)}x; ` +
        `local-first p99 at c=${CONCURRENCY.at(-1)}: ${at("redis local-first").at(-1)!.p99.toFixed(3)} ms`,
    );
    console.log(`total ${((performance.now() - started) / 1000).toFixed(0)} s`);
    writeResults({
      at: new Date().toISOString(),
      quick: QUICK,
      cpus: os.cpus().length,
      secondsPerPoint: SECONDS,
      redisBenchmark: ceilingLines,
      grpc: grpcPoints,
      limiterAlone: alonePoints,
      overAdmission: overAdmitted,
      localFirstOverStrictGrpc: best("redis local-first") / best("redis strict"),
      fixedRate: fixed,
      rows: [fixedRateRow(fixed)],
    });
  } finally {
    for (const c of children) c.kill("SIGKILL");
    await redis.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function printFixed(set: FixedPointSet): void {
  console.log(`\nfixed-rate load (${set.generator}), ${set.seconds} s a run, medians of interleaved rounds:`);
  for (const p of set.points) {
    const service = cpuOnlyMode(p.mode)
      ? `${p.cpuUsPerDecision.toFixed(0)} µs CPU/decision`
      : `event-loop delay p99 ${p.loopLagP99Ms.toFixed(1)} ms, GC ${p.gcMsPerSecond.toFixed(1)} ms/s, ${p.syncsPerSecond.toFixed(0)} syncs/s, ${p.cpuUsPerDecision.toFixed(0)} µs CPU/decision`;
    console.log(
      `${p.mode.padEnd(12)} @${String(p.rate).padEnd(5)} p50 ${p.p50.toFixed(3)} ms   p99 ${p.p99.toFixed(3)} ms   (p99 by round: ${p.samples.map((r) => r.p99.toFixed(2)).join(", ")})` +
        `   service ${service}${p.errors ? `   ${p.errors} errors` : ""}`,
    );
  }
  if (set.reference && !set.reference.error) {
    console.log(
      `${REFERENCE}: ${set.reference.name}, upstream's defaults, one fixed-window limit of the same descriptor (upstream has one limit per descriptor, no token bucket or calendar periods): INCRBY + EXPIRE in one pipeline per decision`,
    );
    console.log("p99 beside the reference (same load, same Redis, same rounds):");
    for (const rate of [1_000, 3_000]) {
      const ref = set.points.find((p) => p.mode === REFERENCE && p.rate === rate);
      if (!ref) continue;
      for (const p of set.points.filter((x) => x.rate === rate && x.mode !== REFERENCE)) {
        console.log(
          `  @${rate}/s ${p.mode.padEnd(22)} p50 ${p.p50.toFixed(3)} / p99 ${p.p99.toFixed(3)} ms   reference p50 ${ref.p50.toFixed(3)} / p99 ${ref.p99.toFixed(3)} ms   p99 ratio ${(p.p99 / ref.p99).toFixed(2)}x`,
        );
      }
    }
  }
  const row = fixedRateRow(set);
  console.log(
    `\n| measure | aim | measured |\n| --- | --- | --- |\n| ${row.measure} | ${row.aim} | ${row.measured} |`,
  );
}

function writeResults(results: object): void {
  fs.mkdirSync(path.join(REPO, "bench", "results"), { recursive: true });
  fs.writeFileSync(path.join(REPO, "bench", "results", "ratelimit.json"), JSON.stringify(results, null, 2));
}

await main();
