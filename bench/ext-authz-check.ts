// ext-authz Check benchmark: requests/s and latency called directly over gRPC with cached
// credentials (the hot path: verified-token cache, hashed API keys). The server runs in its own
// process, as in production, so the load generator does not share its event loop.
//   npx tsx bench/ext-authz-check.ts [--quick] [--rounds N] [--compiled]
// Prints: open-loop latency at 1,000 checks/s (handler time measured inside the server, and the
// client's round trip), then closed-loop throughput at several concurrencies, then the server's
// CPU time per unbatched Check on an API-key hit beside the grpc-js floor (a server on the same
// stack that decodes the request and sends a fixed answer), in interleaved rounds, medians.
// BENCH_PROFILE=DIR writes a CPU profile of each server process there. BENCH_BASELINE=DIR (another
// checkout of this repository, its dependencies installed) adds the CPU per Check of that
// checkout's ext-authz beside this one's, both started as in production (its main). `--compiled`
// runs ext-authz from its build (the servers load the packages' dist/, main.js for BENCH_BASELINE).
import { fork, spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import * as grpc from "@grpc/grpc-js";
import {
  sha256Hex,
  Authorizer,
  AuthzServer,
  toRequestAttributes,
  decodeCheckRequest,
  AUTHORIZATION_SERVICE,
  authTypes,
  method,
  loadPolicyFile,
} from "@portico/ext-authz";
import { claims, ISSUER, AUDIENCE, rsaKey, signJwt, freePort } from "@portico/testing";
import { REPO_ROOT } from "@portico/envoy";
import { startFixedAnswerServer } from "./lib/grpc-echo.js";
import { processCpuUs } from "./lib/proc.js";
import { serviceEntry, SHIPPED_NODE_ARGS } from "./lib/service.js";
import { median } from "./lib/stats.js";

type Obj = Record<string, unknown>;

function pct(xs: Float64Array | number[], p: number): number {
  const s = Float64Array.from(xs).sort();
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? NaN;
}
const us = (ms: number) => `${(ms * 1000).toFixed(0)} µs`;

// ---- server side (child process) -------------------------------------------------------------

/** What every server child answers besides its own commands: its CPU time so far, in µs. */
function answerCpu(msg: { cmd: string }): boolean {
  if (msg.cmd !== "cpu") return false;
  const u = process.cpuUsage();
  process.send!({ cpuUs: u.user + u.system });
  return true;
}

async function serve(port: number, policyFile: string): Promise<void> {
  const loaded = await loadPolicyFile(policyFile);
  if (!loaded.ok) throw new Error(loaded.error.message);
  const authorizer = new Authorizer({ policy: loaded.value });
  let handler: number[] = [];
  let recording = true;
  const server = new AuthzServer({
    authorizer,
    address: `127.0.0.1:${port}`,
    onCheckDone: (ms) => {
      if (recording) handler.push(ms);
    },
  });
  await server.start();
  process.on("message", (msg: { cmd: string }) => {
    if (answerCpu(msg)) return;
    if (msg.cmd === "reset") {
      handler = [];
      recording = true;
      process.send!({ n: 0 });
    }
    // The CPU rounds measure the server as it runs in production: without this benchmark's
    // own per-check bookkeeping.
    if (msg.cmd === "quiet") {
      handler = [];
      recording = false;
      process.send!({ n: 0 });
    }
    if (msg.cmd === "report") {
      process.send!({
        n: handler.length,
        p50: pct(handler, 50),
        p99: pct(handler, 99),
        p999: pct(handler, 99.9),
        max: Math.max(...handler),
        jwtHitRatio: authorizer.metrics.hitRatio("jwt"),
      });
    }
    if (msg.cmd === "stop") void server.stop(1_000).then(() => process.exit(0));
  });
  process.send!({ ready: true });
}

/**
 * The same gRPC stack with a handler that does no work, and channelz off as in ext-authz: what
 * the transport costs on this machine. `decode`: the floor also reads the request, as any
 * service must, the way ext-authz reads it; without, it answers the bytes unread.
 */
async function serveFixed(port: number, decode: boolean): Promise<void> {
  const { CheckResponse } = authTypes();
  const ok = Buffer.from(
    CheckResponse.encode(CheckResponse.fromObject({ status: { code: 0 }, ok_response: {} })).finish(),
  );
  const read = decode ? readRequest() : undefined;
  const server = await startFixedAnswerServer(port, `/${AUTHORIZATION_SERVICE}/Check`, ok, read);
  process.on("message", (msg: { cmd: string }) => {
    if (answerCpu(msg)) return;
    if (msg.cmd === "stop") server.tryShutdown(() => process.exit(0));
    else process.send!({ n: 0 });
  });
  process.send!({ ready: true });
}

/** The request as ext-authz reads it: into the attributes its decision reads. */
function readRequest(): (b: Buffer) => unknown {
  return decodeCheckRequest;
}

if (process.argv[2]?.startsWith("--serve")) {
  // The load generator owns this process: when it goes, so does the server.
  process.on("disconnect", () => process.exit(0));
  const port = Number(process.argv[3]);
  if (process.argv[2] === "--serve") await serve(port, process.argv[4]!);
  else await serveFixed(port, process.argv[2] === "--serve-floor");
} else {
  await main();
}

// ---- load generator --------------------------------------------------------------------------

interface ServerReport {
  n: number;
  p50: number;
  p99: number;
  p999: number;
  max: number;
  jwtHitRatio: number;
  cpuUs: number;
}

interface Started {
  port: number;
  ask: (cmd: string) => Promise<ServerReport>;
  stop: () => Promise<void>;
}

/**
 * Node's flags for a server child: this process's, less the `source` condition when `compiled`,
 * and those ext-authz ships with, so that it and the floor run as production runs ext-authz.
 */
function childExecArgv(compiled: boolean): string[] {
  const own = compiled ? process.execArgv.filter((a) => a !== "--conditions=source") : process.execArgv;
  return [...own, ...SHIPPED_NODE_ARGS["ext-authz"]];
}

async function startChild(args: string[], profileName: string, compiled: boolean): Promise<Started> {
  const port = await freePort();
  const profile = process.env.BENCH_PROFILE
    ? [
        "--cpu-prof",
        `--cpu-prof-dir=${process.env.BENCH_PROFILE}`,
        `--cpu-prof-name=${profileName}.cpuprofile`,
      ]
    : [];
  const child: ChildProcess = fork(process.argv[1]!, [args[0]!, String(port), ...args.slice(1)], {
    execArgv: [...childExecArgv(compiled), ...profile],
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  await new Promise<void>((resolve, reject) => {
    child.once("message", () => resolve());
    child.once("exit", (code) => reject(new Error(`server exited with ${code}`)));
  });
  return {
    port,
    ask: (cmd) =>
      new Promise<ServerReport>((resolve) => {
        child.once("message", (m) => resolve(m as ServerReport));
        child.send({ cmd });
      }),
    stop: async () => {
      child.send({ cmd: "stop" });
      await new Promise((r) => child.once("exit", r));
    },
  };
}

/** ext-authz as production starts it, from the checkout at `root`, on a static policy. */
async function startMain(root: string, policyFile: string, compiled: boolean): Promise<Started> {
  const port = await freePort();
  const child = spawn(
    process.execPath,
    [
      ...serviceEntry(root, "ext-authz", compiled),
      "--policy",
      policyFile,
      "--listen",
      `127.0.0.1:${port}`,
      "--metrics",
      "off",
      "--log-level",
      "warn",
    ],
    { cwd: root, stdio: ["ignore", "inherit", "inherit"] },
  );
  const exited = new Promise((r) => child.once("exit", r));
  // Serving once its port takes connections.
  const deadline = Date.now() + 30_000;
  for (;;) {
    const up = await new Promise<boolean>((resolve) => {
      const c = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
      c.waitForReady(Date.now() + 500, (err) => {
        c.close();
        resolve(!err);
      });
    });
    if (up) break;
    if (child.exitCode !== null || Date.now() > deadline)
      throw new Error(`ext-authz from ${root} did not start`);
  }
  return {
    port,
    ask: async (cmd) => ({ n: 0, cpuUs: cmd === "cpu" ? processCpuUs(child.pid!) : 0 }) as ServerReport,
    stop: async () => {
      child.kill("SIGTERM");
      await exited;
    },
  };
}

async function main(): Promise<void> {
  const { values: flags } = parseArgs({
    options: {
      quick: { type: "boolean", default: false },
      rounds: { type: "string" },
      compiled: { type: "boolean", default: false },
    },
  });
  const quick = flags.quick;
  const compiled = flags.compiled;
  const seconds = quick ? 3 : 10;
  const rounds = Number(flags.rounds ?? (quick ? 3 : 5));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "portico-bench-authz-"));
  const key = rsaKey("bench-1");
  const policyFile = path.join(dir, "policy.yaml");
  const apiKeys = Array.from({ length: 1_000 }, (_, i) => `pk_bench_${i}_${"x".repeat(24)}`);
  const policyDoc = {
    jwtProviders: [
      {
        name: "idp",
        issuer: ISSUER,
        audiences: [AUDIENCE],
        jwks: { keys: [key.jwk] },
        algorithms: ["RS256"],
      },
    ],
    consumers: [{ name: "acme", plan: "gold", scopes: ["orders:read"] }],
    apiKeys: apiKeys.map((k, i) => ({ name: `key-${i}`, consumer: "acme", sha256: sha256Hex(k) })),
    authPolicies: [{ name: "orders", accept: ["jwt", "apiKey"], requiredScopes: ["orders:read"] }],
  };
  fs.writeFileSync(policyFile, JSON.stringify(policyDoc));

  const { CheckRequest, CheckResponse } = authTypes();
  const check = method<Obj, Obj>(AUTHORIZATION_SERVICE, "Check", CheckRequest, CheckResponse);
  // What Envoy sends for a browser-like request: the pseudo-headers, a dozen ordinary headers,
  // the request id and the route's settings.
  const requestObject = (i: number, headers: Record<string, string>) => ({
    attributes: {
      source: { address: { socket_address: { address: "203.0.113.9", port_value: 40000 } } },
      destination: { address: { socket_address: { address: "127.0.0.1", port_value: 10000 } } },
      request: {
        time: { seconds: 1_700_000_000, nanos: 0 },
        http: {
          id: String(1_000_000 + i),
          method: "GET",
          path: "/orders/42",
          host: "api.example.com",
          scheme: "http",
          protocol: "HTTP/1.1",
          headers: {
            ":authority": "api.example.com",
            ":path": "/orders/42",
            ":method": "GET",
            ":scheme": "http",
            "user-agent": "Mozilla/5.0 (X11; Linux x86_64) bench/1.0",
            accept: "application/json",
            "accept-encoding": "gzip, deflate, br",
            "accept-language": "en-GB,en;q=0.9",
            "x-forwarded-proto": "http",
            "x-request-id": `0d9b3c1e-8a5f-4a7e-9c51-${String(i).padStart(12, "0")}`,
            "x-envoy-expected-rq-timeout-ms": "15000",
            ...headers,
          },
        },
      },
      context_extensions: { policy: "orders" },
    },
  });
  const now = Date.now();
  const jwtHeaders = Array.from({ length: 1_000 }, (_, i) => ({
    authorization: `Bearer ${signJwt(key, claims(now, { sub: `user-${i}`, exp: Math.floor(now / 1000) + 3600 }))}`,
  }));
  // Encoded once: the benchmark measures the server, not the client's protobuf encoding.
  const jwtRequests = jwtHeaders.map((h, i) => check.requestSerialize(requestObject(i, h)));
  const keyRequests = apiKeys.map((k, i) => check.requestSerialize(requestObject(i, { "x-api-key": k })));
  const results: Record<string, unknown> = {};
  let denied = 0;

  console.log(
    `ext-authz Check (${os.cpus().length} cores, node ${process.version}, load average ${os.loadavg()[0]!.toFixed(2)} at start)`,
  );

  // 1. The handler alone, in this process: no gRPC, no protobuf.
  {
    const loaded = await loadPolicyFile(policyFile);
    if (!loaded.ok) throw new Error(loaded.error.message);
    const authorizer = new Authorizer({ policy: loaded.value });
    const attrs = jwtHeaders.map((h, i) => toRequestAttributes(requestObject(i, h)));
    for (const a of attrs) await authorizer.check(a);
    const n = quick ? 100_000 : 300_000;
    const lat = new Float64Array(n);
    const t0 = performance.now();
    for (let i = 0; i < n; i++) {
      const s0 = performance.now();
      const d = await authorizer.check(attrs[i % attrs.length]!);
      lat[i] = performance.now() - s0;
      if (!d.allowed) denied++;
    }
    const perSec = n / ((performance.now() - t0) / 1000);
    results.inProcess = {
      perSec: Math.round(perSec),
      p50us: Math.round(pct(lat, 50) * 1000),
      p99us: Math.round(pct(lat, 99) * 1000),
    };
    console.log(
      `${"handler only, in process".padEnd(30)} ${Math.round(perSec)} checks/s on one core  p50 ${us(pct(lat, 50))}  p99 ${us(pct(lat, 99))}`,
    );
  }

  async function run(target: Started, expectAllowed = true) {
    const client = new grpc.Client(`127.0.0.1:${target.port}`, grpc.credentials.createInsecure());
    const send = (buf: Buffer) =>
      new Promise<void>((resolve, reject) =>
        client.makeUnaryRequest(
          check.path,
          (b: Buffer) => b,
          (b: Buffer) => b,
          buf,
          (err, res) => {
            if (err) return reject(err);
            if (expectAllowed) {
              const decoded = CheckResponse.decode(res!) as unknown as { ok_response?: unknown };
              if (!decoded.ok_response) denied++;
            }
            resolve();
          },
        ),
      );

    /** `rate` calls a second, each sent on its schedule whatever the previous one is doing. */
    async function drive(requests: Buffer[], rate: number, secs: number): Promise<Float64Array> {
      const total = Math.round(rate * secs);
      const rtt = new Float64Array(total);
      const start = performance.now();
      const pending: Promise<void>[] = [];
      for (let i = 0; i < total; i++) {
        const wait = start + (i * 1000) / rate - performance.now();
        if (wait > 1) await new Promise((r) => setTimeout(r, wait));
        const t0 = performance.now();
        pending.push(send(requests[i % requests.length]!).then(() => void (rtt[i] = performance.now() - t0)));
      }
      await Promise.all(pending);
      return rtt;
    }

    async function openLoop(label: string, requests: Buffer[], rate: number, secs: number) {
      await target.ask("reset");
      const start = performance.now();
      const rtt = await drive(requests, rate, secs);
      const perSec = rtt.length / ((performance.now() - start) / 1000);
      const server = await target.ask("report");
      const handler = server.n > 0;
      results[label] = {
        rate,
        perSec: Math.round(perSec),
        ...(handler
          ? {
              handlerP50us: Math.round(server.p50 * 1000),
              handlerP99us: Math.round(server.p99 * 1000),
              handlerP999us: Math.round(server.p999 * 1000),
            }
          : {}),
        rttP50us: Math.round(pct(rtt, 50) * 1000),
        rttP99us: Math.round(pct(rtt, 99) * 1000),
      };
      console.log(
        `${label.padEnd(30)} ${Math.round(perSec)} checks/s` +
          (handler
            ? `  handler p50 ${us(server.p50)}  p99 ${us(server.p99)}  p99.9 ${us(server.p999)}`
            : "") +
          `  |  round trip p50 ${us(pct(rtt, 50))}  p99 ${us(pct(rtt, 99))}`,
      );
    }

    async function closedLoop(label: string, requests: Buffer[], concurrency: number, secs: number) {
      await target.ask("reset");
      const rtt: number[] = [];
      const deadline = performance.now() + secs * 1000;
      let n = 0;
      const start = performance.now();
      await Promise.all(
        Array.from({ length: concurrency }, async () => {
          while (performance.now() < deadline) {
            const t0 = performance.now();
            await send(requests[n++ % requests.length]!);
            rtt.push(performance.now() - t0);
          }
        }),
      );
      const perSec = n / ((performance.now() - start) / 1000);
      const server = await target.ask("report");
      results[label] = {
        concurrency,
        perSec: Math.round(perSec),
        ...(server.n > 0
          ? { handlerP50us: Math.round(server.p50 * 1000), handlerP99us: Math.round(server.p99 * 1000) }
          : {}),
        rttP50us: Math.round(pct(rtt, 50) * 1000),
        rttP99us: Math.round(pct(rtt, 99) * 1000),
      };
      console.log(
        `${label.padEnd(30)} ${Math.round(perSec)} checks/s` +
          (server.n > 0 ? `  handler p50 ${us(server.p50)}  p99 ${us(server.p99)}` : "") +
          `  |  round trip p50 ${us(pct(rtt, 50))}  p99 ${us(pct(rtt, 99))}`,
      );
    }

    /** The server's CPU time per call over `secs` of calls at `rate`/s, in µs. */
    async function cpuPerCall(requests: Buffer[], rate: number, secs: number): Promise<number> {
      const before = (await target.ask("cpu")).cpuUs;
      const rtt = await drive(requests, rate, secs);
      const after = (await target.ask("cpu")).cpuUs;
      return (after - before) / rtt.length;
    }

    // Warm-up: every token verified once (fills the cache), and the JIT on both sides.
    for (const r of jwtRequests) await send(r);
    for (let i = 0; i < 5_000; i++) await send(jwtRequests[i % jwtRequests.length]!);
    for (let i = 0; i < 5_000; i++) await send(keyRequests[i % keyRequests.length]!);
    return { openLoop, closedLoop, cpuPerCall, close: () => client.close() };
  }

  // 2. Over gRPC, the server in its own process.
  const authz = await startChild(["--serve", policyFile], "ext-authz", compiled);
  const a = await run(authz);
  await a.openLoop("JWT (cached) @1000/s", jwtRequests, 1_000, seconds);
  await a.openLoop("API key @1000/s", keyRequests, 1_000, seconds);
  await a.openLoop("JWT (cached) @2000/s", jwtRequests, 2_000, seconds);
  for (const c of [1, 16, 64])
    await a.closedLoop(`JWT (cached) closed c=${c}`, jwtRequests, c, quick ? 2 : 5);
  const final = await authz.ask("report");

  // 3. The same load on a gRPC server that answers a fixed response: the transport's share.
  const echo = await startChild(["--serve-echo"], "echo", compiled);
  const e = await run(echo, false);
  await e.openLoop("no-op gRPC server @1000/s", jwtRequests, 1_000, seconds);
  await e.closedLoop("no-op gRPC server closed c=16", jwtRequests, 16, quick ? 2 : 5);

  // 4. CPU per unbatched Check: calls far enough apart that each is read, decided and answered
  // on its own (no two in one read), API-key hits, ext-authz and the floor in turn.
  const floor = await startChild(["--serve-floor"], "floor", compiled);
  const f = await run(floor, false);
  const baselineRoot = process.env.BENCH_BASELINE;
  const mains = baselineRoot
    ? {
        current: await startMain(REPO_ROOT, policyFile, compiled),
        baseline: await startMain(baselineRoot, policyFile, compiled),
      }
    : undefined;
  const m = mains ? { current: await run(mains.current), baseline: await run(mains.baseline) } : undefined;
  const cpuRate = 500;
  const cpuSeconds = quick ? 4 : 8;
  await authz.ask("quiet");
  const cpu = {
    authz: [] as number[],
    floor: [] as number[],
    echo: [] as number[],
    mainCurrent: [] as number[],
    mainBaseline: [] as number[],
  };
  for (let r = 0; r < rounds; r++) {
    cpu.authz.push(await a.cpuPerCall(keyRequests, cpuRate, cpuSeconds));
    cpu.floor.push(await f.cpuPerCall(keyRequests, cpuRate, cpuSeconds));
    cpu.echo.push(await e.cpuPerCall(keyRequests, cpuRate, cpuSeconds));
    if (m) {
      cpu.mainCurrent.push(await m.current.cpuPerCall(keyRequests, cpuRate, cpuSeconds));
      cpu.mainBaseline.push(await m.baseline.cpuPerCall(keyRequests, cpuRate, cpuSeconds));
    }
  }
  const cpuAuthz = median(cpu.authz);
  const cpuFloor = median(cpu.floor);
  const cpuEcho = median(cpu.echo);
  results.cpuPerCheck = {
    rate: cpuRate,
    seconds: cpuSeconds,
    rounds,
    authzUs: cpuAuthz,
    floorUs: cpuFloor,
    unreadUs: cpuEcho,
    samples: cpu,
  };
  console.log(
    `\nserver CPU per unbatched Check (${cpuRate}/s, ${cpuSeconds} s a round, ${rounds} interleaved rounds, medians):\n` +
      `  ext-authz, API-key hit                 ${cpuAuthz.toFixed(1)} µs   (rounds: ${cpu.authz.map((x) => x.toFixed(0)).join(", ")})\n` +
      `  grpc-js floor: decode + fixed answer   ${cpuFloor.toFixed(1)} µs   (rounds: ${cpu.floor.map((x) => x.toFixed(0)).join(", ")})\n` +
      `  grpc-js, request unread, fixed answer  ${cpuEcho.toFixed(1)} µs   (rounds: ${cpu.echo.map((x) => x.toFixed(0)).join(", ")})`,
  );
  if (m && mains) {
    const now = median(cpu.mainCurrent);
    const before = median(cpu.mainBaseline);
    results.cpuPerCheckMain = { currentUs: now, baselineUs: before, baseline: baselineRoot };
    console.log(
      `  ext-authz main.ts, this checkout       ${now.toFixed(1)} µs   (rounds: ${cpu.mainCurrent.map((x) => x.toFixed(0)).join(", ")})\n` +
        `  ext-authz main.ts, ${baselineRoot}   ${before.toFixed(1)} µs   (rounds: ${cpu.mainBaseline.map((x) => x.toFixed(0)).join(", ")})`,
    );
    m.current.close();
    m.baseline.close();
    await mains.current.stop();
    await mains.baseline.stop();
  }
  for (const s of [a, e, f]) s.close();
  for (const s of [authz, echo, floor]) await s.stop();

  const rows = [
    {
      measure: "ext-authz CPU per Check, unbatched, API-key hit",
      aim: "≤ 1.3x the grpc-js floor (decode + fixed answer) measured in the same run",
      measured: `${cpuAuthz.toFixed(0)} µs vs floor ${cpuFloor.toFixed(0)} µs (measured) = ${(cpuAuthz / cpuFloor).toFixed(2)}x`,
      ratio: cpuAuthz / cpuFloor,
    },
  ];
  console.log(`\n| measure | aim | measured |\n| --- | --- | --- |`);
  for (const r of rows) console.log(`| ${r.measure} | ${r.aim} | ${r.measured} |`);
  console.log(
    `\nverified-token cache hit ratio in the server since start: ${(final.jwtHitRatio * 100).toFixed(2)}%; denied: ${denied}`,
  );
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(path.join(REPO_ROOT, "bench", "results"), { recursive: true });
  fs.writeFileSync(
    path.join(REPO_ROOT, "bench", "results", "ext-authz-check.json"),
    JSON.stringify(
      {
        at: new Date().toISOString(),
        quick,
        cores: os.cpus().length,
        node: process.version,
        loadAverage: os.loadavg(),
        denied,
        rows,
        results,
      },
      null,
      2,
    ),
  );
  if (denied > 0) {
    console.error(
      `${denied} checks were denied: the benchmark's setup is wrong, the figures do not describe the hot path`,
    );
    process.exitCode = 1;
  }
}
