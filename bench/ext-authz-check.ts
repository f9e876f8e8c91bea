// ext-authz Check benchmark: requests/s and latency called directly over gRPC with cached
// credentials (the hot path: verified-token cache, hashed API keys). The server runs in its own
// process, as in production, so the load generator does not share its event loop.
//   npx tsx bench/ext-authz-check.ts [--quick]
// Prints: open-loop latency at 1,000 checks/s (handler time measured inside the server, and the
// client's round trip), then closed-loop throughput at several concurrencies.
import { fork, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import {
  sha256Hex,
  Authorizer,
  AuthzServer,
  toRequestAttributes,
  AUTHORIZATION_SERVICE,
  authTypes,
  method,
  loadPolicyFile,
} from "@portico/ext-authz";
import { claims, ISSUER, AUDIENCE, rsaKey, signJwt, freePort } from "@portico/testing";
import { REPO_ROOT } from "@portico/envoy";
import { startFixedAnswerServer } from "./lib/grpc-echo.js";

type Obj = Record<string, unknown>;

function pct(xs: Float64Array | number[], p: number): number {
  const s = Float64Array.from(xs).sort();
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? NaN;
}
const us = (ms: number) => `${(ms * 1000).toFixed(0)} µs`;

// ---- server side (child process) -------------------------------------------------------------

async function serve(port: number, policyFile: string): Promise<void> {
  const loaded = await loadPolicyFile(policyFile);
  if (!loaded.ok) throw new Error(loaded.error.message);
  const authorizer = new Authorizer({ policy: loaded.value });
  let handler: number[] = [];
  const server = new AuthzServer({
    authorizer,
    address: `127.0.0.1:${port}`,
    onCheckDone: (ms) => handler.push(ms),
  });
  await server.start();
  process.on("message", (msg: { cmd: string }) => {
    if (msg.cmd === "reset") {
      handler = [];
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
 * The same gRPC stack with a handler that does nothing, and channelz off as in ext-authz: what the
 * transport alone costs on this machine.
 */
async function serveEcho(port: number): Promise<void> {
  const { CheckResponse } = authTypes();
  const ok = Buffer.from(
    CheckResponse.encode(CheckResponse.fromObject({ status: { code: 0 }, ok_response: {} })).finish(),
  );
  const server = await startFixedAnswerServer(port, `/${AUTHORIZATION_SERVICE}/Check`, ok);
  process.on("message", (msg: { cmd: string }) => {
    if (msg.cmd === "stop") server.tryShutdown(() => process.exit(0));
    else process.send!({ n: 0 });
  });
  process.send!({ ready: true });
}

if (process.argv[2] === "--serve" || process.argv[2] === "--serve-echo") {
  // The load generator owns this process: when it goes, so does the server.
  process.on("disconnect", () => process.exit(0));
  if (process.argv[2] === "--serve") await serve(Number(process.argv[3]), process.argv[4]!);
  else await serveEcho(Number(process.argv[3]));
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
}

interface Started {
  port: number;
  ask: (cmd: string) => Promise<ServerReport>;
  stop: () => Promise<void>;
}

async function startChild(args: string[]): Promise<Started> {
  const port = await freePort();
  const child: ChildProcess = fork(process.argv[1]!, [args[0]!, String(port), ...args.slice(1)], {
    execArgv: process.execArgv,
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

async function main(): Promise<void> {
  const quick = process.argv.includes("--quick");
  const seconds = quick ? 3 : 10;
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
  const requestObject = (headers: Record<string, string>) => ({
    attributes: {
      source: { address: { socket_address: { address: "203.0.113.9", port_value: 40000 } } },
      request: {
        http: { method: "GET", path: "/orders/42", headers: { ":path": "/orders/42", ...headers } },
      },
      context_extensions: { policy: "orders" },
    },
  });
  const now = Date.now();
  const jwtHeaders = Array.from({ length: 1_000 }, (_, i) => ({
    authorization: `Bearer ${signJwt(key, claims(now, { sub: `user-${i}`, exp: Math.floor(now / 1000) + 3600 }))}`,
  }));
  // Encoded once: the benchmark measures the server, not the client's protobuf encoding.
  const jwtRequests = jwtHeaders.map((h) => check.requestSerialize(requestObject(h)));
  const keyRequests = apiKeys.map((k) => check.requestSerialize(requestObject({ "x-api-key": k })));
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
    const attrs = jwtHeaders.map((h) => toRequestAttributes(requestObject(h)));
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

  async function run(target: Started) {
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
            const decoded = CheckResponse.decode(res!) as unknown as { ok_response?: unknown };
            if (!decoded.ok_response) denied++;
            resolve();
          },
        ),
      );

    async function openLoop(label: string, requests: Buffer[], rate: number, secs: number) {
      await target.ask("reset");
      const total = rate * secs;
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
      const perSec = total / ((performance.now() - start) / 1000);
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

    // Warm-up: every token verified once (fills the cache), and the JIT on both sides.
    for (const r of jwtRequests) await send(r);
    for (let i = 0; i < 5_000; i++) await send(jwtRequests[i % jwtRequests.length]!);
    return { openLoop, closedLoop, close: () => client.close() };
  }

  // 2. Over gRPC, the server in its own process.
  const authz = await startChild(["--serve", policyFile]);
  const a = await run(authz);
  await a.openLoop("JWT (cached) @1000/s", jwtRequests, 1_000, seconds);
  await a.openLoop("API key @1000/s", keyRequests, 1_000, seconds);
  await a.openLoop("JWT (cached) @2000/s", jwtRequests, 2_000, seconds);
  for (const c of [1, 16, 64])
    await a.closedLoop(`JWT (cached) closed c=${c}`, jwtRequests, c, quick ? 2 : 5);
  const final = await authz.ask("report");
  a.close();
  await authz.stop();

  // 3. The same load on a gRPC server that answers a fixed response: the transport's share.
  const echo = await startChild(["--serve-echo"]);
  const e = await run(echo);
  denied = 0;
  await e.openLoop("no-op gRPC server @1000/s", jwtRequests, 1_000, seconds);
  await e.closedLoop("no-op gRPC server closed c=16", jwtRequests, 16, quick ? 2 : 5);
  e.close();
  await echo.stop();

  console.log(
    `verified-token cache hit ratio in the server since start: ${(final.jwtHitRatio * 100).toFixed(2)}%; denied: ${denied}`,
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
