// JWT authentication end to end through a real Envoy: Portico's ext-authz (gRPC ext_authz filter)
// against Envoy's native jwt_authn verifying the same token, on the same Envoy binary and the same
// upstream, in the same run, with an unauthenticated route as the floor; and the full chain
// (ext_authz + the rate-limit service + route) against that bare route. Load: wrk (closed loop).
//   npx tsx bench/auth-envoy.ts [--seconds 8] [--rounds 3] [--connections 32]
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { generateKeyPairSync, sign } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { hashToken, TokenRegistry } from "@portico/control-plane";
import { startControlPlane } from "@portico/control-plane";
import { silentLogger } from "@portico/common";
import { REPO_ROOT } from "@portico/envoy";
import { startEnvoy, type EnvoyProcess } from "@portico/testing";
import { httpRequest } from "@portico/testing";
import { freePorts } from "@portico/testing";
import { startHttpUpstream } from "@portico/testing";
import { waitFor } from "@portico/testing";
import { RUN_FROM_SOURCE } from "@portico/testing";

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "8" },
    rounds: { type: "string", default: "3" },
    connections: { type: "string", default: "32" },
  },
});
const SECONDS = Number(values.seconds);
const ROUNDS = Number(values.rounds);
const CONNECTIONS = Number(values.connections);

if (spawnSync("wrk", ["--version"]).error) {
  console.error("wrk is needed (apt-get install -y wrk)");
  process.exit(1);
}

const ISSUER = "https://idp.bench";
const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
const jwk = { ...(publicKey.export({ format: "jwk" }) as object), kid: "bench-1", alg: "RS256", use: "sig" };
const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString("base64url");
const now = Math.floor(Date.now() / 1000);
const input = `${b64({ alg: "RS256", kid: "bench-1", typ: "JWT" })}.${b64({ iss: ISSUER, aud: "bench", sub: "user-1", iat: now, exp: now + 3600 })}`;
const TOKEN = `${input}.${sign("sha256", Buffer.from(input), privateKey).toString("base64url")}`;
const provider = {
  name: "idp",
  issuer: ISSUER,
  audiences: ["bench"],
  jwks: { keys: [jwk] },
  algorithms: ["RS256"],
};

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "portico-bench-auth-"));
const children: ChildProcess[] = [];
const envoys: EnvoyProcess[] = [];

interface WrkResult {
  requests: number;
  rps: number;
  p50: number;
  p99: number;
  non2xx: number;
}

function toMs(v: string): number {
  const m = /^([\d.]+)(us|ms|s)$/.exec(v.trim());
  if (!m) throw new Error(`wrk latency '${v}'`);
  const n = Number(m[1]);
  return m[2] === "us" ? n / 1000 : m[2] === "s" ? n * 1000 : n;
}

/** wrk in a child process, awaited: the upstream in this process must keep answering meanwhile. */
async function wrk(
  url: string,
  headers: Record<string, string>,
  connections = CONNECTIONS,
): Promise<WrkResult> {
  const args = ["-t1", `-c${connections}`, `-d${SECONDS}s`, "--latency"];
  for (const [k, v] of Object.entries(headers)) args.push("-H", `${k}: ${v}`);
  const child = spawn("wrk", [...args, url], { stdio: ["ignore", "pipe", "inherit"] });
  let out = "";
  child.stdout.on("data", (b: Buffer) => (out += b.toString()));
  await new Promise((resolve) => child.on("close", resolve));
  if (!/Requests\/sec/.test(out)) throw new Error(`wrk failed: ${out}`);
  const pct = (p: string) => toMs(new RegExp(`^\\s+${p}%\\s+(\\S+)`, "m").exec(out)![1]!);
  return {
    requests: Number(/(\d+) requests in/.exec(out)![1]),
    rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)![1]),
    p50: pct("50"),
    p99: pct("99"),
    non2xx: Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0),
  };
}

/** User + system CPU time of a process so far, in ms (from /proc; clock ticks are 10 ms). */
function cpuMs(pid: number): number {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main(): Promise<void> {
  const [portA, portB, authzPort, adminPort, xdsPort, rlPort, rlMetricsPort] = await freePorts(7);
  const upstream = await startHttpUpstream("bench");

  // ext-authz as its own process, from a static policy with the same provider.
  const policyFile = path.join(dir, "policy.json");
  fs.writeFileSync(policyFile, JSON.stringify({ jwtProviders: [provider] }));
  const authz = spawn(
    process.execPath,
    [
      // BENCH_PROFILE=DIR writes a CPU profile of ext-authz there.
      ...(process.env.BENCH_PROFILE ? ["--cpu-prof", `--cpu-prof-dir=${process.env.BENCH_PROFILE}`] : []),
      ...RUN_FROM_SOURCE,
      path.join(REPO_ROOT, "ext-authz/src/main.ts"),
      "--policy",
      policyFile,
      "--listen",
      `127.0.0.1:${authzPort}`,
      "--metrics",
      "off",
      "--log-level",
      "warn",
    ],
    { stdio: ["ignore", "inherit", "inherit"] },
  );
  children.push(authz);

  // The rate-limit service as its own process, taking its policy over xDS (memory backend).
  const ratelimit = spawn(
    process.execPath,
    [
      ...RUN_FROM_SOURCE,
      path.join(REPO_ROOT, "ratelimit-service/src/main.ts"),
      "--xds",
      `127.0.0.1:${xdsPort}`,
      "--listen",
      `127.0.0.1:${rlPort}`,
      "--metrics-listen",
      `127.0.0.1:${rlMetricsPort}`,
    ],
    { stdio: ["ignore", "inherit", "inherit"], env: { ...process.env, LOG_LEVEL: "warn" } },
  );
  children.push(ratelimit);

  const cp = await startControlPlane({
    store: `file:${path.join(dir, "store")}`,
    xdsPort,
    adminPort,
    tokens: new TokenRegistry([{ name: "bench", role: "admin", sha256: hashToken("t") }]),
    log: silentLogger(),
  });
  const put = async (p: string, body: object) => {
    const res = await fetch(`http://127.0.0.1:${adminPort}/api/v1/${p}`, {
      method: "PUT",
      headers: { authorization: "Bearer t", "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    if (res.status >= 300) throw new Error(`${p}: ${res.status} ${await res.text()}`);
  };
  await put("upstreams/app", { name: "app", endpoints: [{ host: "127.0.0.1", port: upstream.port }] });
  await put("upstreams/ext-authz", {
    name: "ext-authz",
    protocol: "grpc",
    endpoints: [{ host: "127.0.0.1", port: authzPort }],
  });
  await put("upstreams/ratelimit", {
    name: "ratelimit",
    protocol: "grpc",
    endpoints: [{ host: "127.0.0.1", port: rlPort }],
  });
  // Limits high enough never to refuse: every request still makes the full round of decisions.
  await put("rateLimitPolicies/generous", {
    name: "generous",
    limits: [
      { requests: 100_000_000, per: "second", by: "consumer" },
      { requests: 1_000_000_000, per: "day", by: "consumer" },
    ],
  });
  await put("jwtProviders/idp", provider);
  await put("authPolicies/users", { name: "users", accept: ["idp"] });
  for (const [name, port, jwt] of [
    ["via-service", portA, "ext_authz"],
    ["via-envoy", portB, "jwt_authn"],
  ] as const) {
    await put(`gateways/${name}`, {
      name,
      listeners: [{ name: "http", port, address: "127.0.0.1" }],
      extAuthz: { upstream: "ext-authz", jwt },
      rateLimit: { upstream: "ratelimit" },
    });
    await put(`routes/${name}-chain`, {
      name: `${name}-chain`,
      gateway: name,
      match: { path: "/chain" },
      upstream: "app",
      authPolicy: "users",
      rateLimitPolicy: "generous",
    });
    await put(`routes/${name}-auth`, {
      name: `${name}-auth`,
      gateway: name,
      match: { path: "/auth" },
      upstream: "app",
      authPolicy: "users",
    });
    await put(`routes/${name}-bare`, {
      name: `${name}-bare`,
      gateway: name,
      match: { path: "/bare" },
      upstream: "app",
    });
    const envoy = await startEnvoy({
      nodeId: `bench-${name}`,
      group: name,
      xdsPort: cp.xdsPort,
      logLevel: "warn",
      componentLogLevel: "upstream:warn",
    });
    envoys.push(envoy);
    await envoy.waitReady({ timeoutMs: 30_000 });
  }
  const auth = { authorization: `Bearer ${TOKEN}` };
  for (const [port, p] of [
    [portA, "/auth"],
    [portB, "/auth"],
    [portA, "/chain"],
  ] as const) {
    await waitFor(
      async () => (await httpRequest(`http://127.0.0.1:${port}${p}`, { headers: auth })).status === 200,
      { timeoutMs: 30_000, what: `authenticated route ${p} on port ${port}` },
    );
    const refused = await httpRequest(`http://127.0.0.1:${port}${p}`);
    if (refused.status !== 401) throw new Error(`port ${port} let an unauthenticated request through`);
  }

  // Warm-up: connections, caches (verified tokens in both), JIT.
  await wrk(`http://127.0.0.1:${portA}/auth`, auth);
  await wrk(`http://127.0.0.1:${portB}/auth`, auth);
  const scenarios = [
    { label: "bare route (no auth)", url: `http://127.0.0.1:${portA}/bare`, headers: {} },
    { label: "ext_authz → Portico ext-authz", url: `http://127.0.0.1:${portA}/auth`, headers: auth },
    { label: "jwt_authn (Envoy native)", url: `http://127.0.0.1:${portB}/auth`, headers: auth },
    { label: "full chain: ext_authz+ratelimit", url: `http://127.0.0.1:${portA}/chain`, headers: auth },
  ];
  // Two loads: saturation (many connections: throughput and queueing) and light (two connections:
  // what authentication adds to one request when nothing waits in line).
  const loads = [
    { name: "saturation", connections: CONNECTIONS },
    { name: "light", connections: 2 },
  ];
  const report = [];
  for (const load of loads) {
    const results = new Map<string, WrkResult[]>(scenarios.map((s) => [s.label, []]));
    const authzCpu = new Map<string, number[]>(scenarios.map((s) => [s.label, []]));
    // Interleaved rounds, so drift in a noisy machine hits every scenario alike.
    for (let round = 0; round < ROUNDS; round++) {
      for (const s of scenarios) {
        const before = cpuMs(authz.pid!);
        const r = await wrk(s.url, s.headers, load.connections);
        results.get(s.label)!.push(r);
        authzCpu.get(s.label)!.push(((cpuMs(authz.pid!) - before) * 1000) / r.requests);
      }
    }
    const summary = scenarios.map((s) => {
      const rs = results.get(s.label)!;
      return {
        scenario: s.label,
        rps: median(rs.map((r) => r.rps)),
        p50Ms: median(rs.map((r) => r.p50)),
        p99Ms: median(rs.map((r) => r.p99)),
        non2xx: rs.reduce((a, r) => a + r.non2xx, 0),
        extAuthzCpuUsPerRequest: median(authzCpu.get(s.label)!),
      };
    });
    const [bare, , native] = summary as [(typeof summary)[0], unknown, (typeof summary)[0]];
    console.log(
      `\nJWT auth through Envoy, ${load.name}: wrk -t1 -c${load.connections} -d${SECONDS}s, ${ROUNDS} interleaved rounds, medians; Envoy --concurrency 1\n`,
    );
    console.log(
      "scenario                         req/s      p50 ms   p99 ms   non-2xx   vs jwt_authn (req/s, p99)   vs bare (req/s, p99)   ext-authz CPU/request",
    );
    for (const r of summary) {
      const ratio = `${(r.rps / native.rps).toFixed(2)}x, ${(r.p99Ms / native.p99Ms).toFixed(2)}x`;
      const vsBare = `${(r.rps / bare.rps).toFixed(2)}x, ${(r.p99Ms / bare.p99Ms).toFixed(2)}x`;
      console.log(
        `${r.scenario.padEnd(32)} ${r.rps.toFixed(0).padStart(7)}   ${r.p50Ms.toFixed(2).padStart(6)}   ${r.p99Ms.toFixed(2).padStart(6)}   ${String(r.non2xx).padStart(7)}   ${ratio.padEnd(27)} ${vsBare.padEnd(22)} ${r.extAuthzCpuUsPerRequest.toFixed(0)} µs`,
      );
    }
    report.push({ load: load.name, connections: load.connections, results: summary });
  }
  fs.mkdirSync(path.join(REPO_ROOT, "bench/results"), { recursive: true });
  fs.writeFileSync(
    path.join(REPO_ROOT, "bench/results/auth-envoy.json"),
    JSON.stringify(
      { tool: "wrk", seconds: SECONDS, rounds: ROUNDS, cpus: os.cpus().length, report },
      null,
      2,
    ),
  );
  await cp.stop();
  await upstream.close();
}

try {
  await main();
} finally {
  for (const e of envoys) await e.stop().catch(() => undefined);
  for (const c of children) {
    c.kill("SIGTERM");
    await new Promise((resolve) => c.once("exit", resolve));
  }
  fs.rmSync(dir, { recursive: true, force: true });
}
