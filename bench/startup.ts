// Start-up time and resident memory of each Portico service, as it runs in production (compiled
// JavaScript on plain `node`) beside the way it ran before packages were compiled (TypeScript
// through tsx's loader, on the Node the machine ships). Each round starts every service in every
// runtime once, interleaved, from static config (no control plane, no Redis):
//   start-up: spawn → first 200 from its /readyz (or the control plane's /healthz)
//   RSS:      VmRSS one second after it became ready, idle
//   node scripts/node.mjs --conditions=source --import tsx bench/startup.ts [--rounds 5]
//       [--old-node PATH] [--before-root DIR] [--out FILE]
// --before-root names a checkout of an earlier revision (with its node_modules installed), whose
// services then run as that revision ran them: TypeScript through its own tsx, on the old Node.
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { hashToken } from "@portico/control-plane";
import { REPO_ROOT } from "@portico/envoy";
import { freePorts, RUN_FROM_SOURCE } from "@portico/testing";
import { processMemory } from "./lib/proc.js";
import { median } from "./lib/stats.js";

const { values } = parseArgs({
  options: {
    rounds: { type: "string", default: "5" },
    "old-node": { type: "string" },
    "before-root": { type: "string" },
    out: { type: "string" },
  },
});
const rounds = Number(values.rounds);

interface Runtime {
  label: string;
  node: string;
  /** argv before the entry point, and the entry point of a package. */
  argv(pkg: string): string[];
}

function nodeVersion(bin: string): string {
  return spawnSync(bin, ["--version"], { encoding: "utf8" }).stdout.trim();
}

/** The first `node` on PATH older than the one running this script: the machine's own. */
function machineNode(): string | undefined {
  for (const dir of (process.env.PATH ?? "").split(path.delimiter)) {
    const bin = path.join(dir, "node");
    if (!fs.existsSync(bin) || fs.realpathSync(bin) === fs.realpathSync(process.execPath)) continue;
    return bin;
  }
  return undefined;
}

const oldNode = values["old-node"] ?? machineNode() ?? process.execPath;
const beforeRoot = values["before-root"] && path.resolve(values["before-root"]);
const runtimes: Runtime[] = [
  beforeRoot
    ? {
        label: `before: tsx, ${nodeVersion(oldNode)}`,
        node: oldNode,
        argv: (pkg) => [
          "--import",
          pathToFileURL(path.join(beforeRoot, "node_modules", "tsx", "dist", "loader.mjs")).href,
          path.join(beforeRoot, pkg, "src", "main.ts"),
        ],
      }
    : {
        label: `tsx, ${nodeVersion(oldNode)}`,
        node: oldNode,
        argv: (pkg) => [...RUN_FROM_SOURCE, path.join(REPO_ROOT, pkg, "src", "main.ts")],
      },
  {
    label: `compiled, ${process.version}`,
    node: process.execPath,
    argv: (pkg) => [path.join(REPO_ROOT, pkg, "dist", "main.js")],
  },
];
for (const pkg of ["control-plane", "ext-authz", "ratelimit-service", "aggregator"]) {
  if (!fs.existsSync(path.join(REPO_ROOT, pkg, "dist", "main.js"))) {
    console.error(`${pkg}/dist/main.js is missing: run npm run build first`);
    process.exit(2);
  }
}

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "portico-bench-startup-"));
const tokensFile = path.join(dir, "tokens.json");
fs.writeFileSync(tokensFile, JSON.stringify([{ name: "bench", role: "admin", sha256: hashToken("bench") }]));

interface Service {
  name: string;
  pkg: string;
  /** Arguments, and the URL that answers 200 once the service can do its job. */
  start(ports: number[], run: number): { args: string[]; ready: string };
  env?: Record<string, string>;
}

const services: Service[] = [
  {
    name: "control-plane",
    pkg: "control-plane",
    start: ([admin, xds], run) => ({
      args: [
        "--store",
        `file:${path.join(dir, `store-${run}`)}`,
        "--config",
        path.join(REPO_ROOT, "deploy/demo/portico.yaml"),
        "--tokens-file",
        tokensFile,
        "--admin-port",
        String(admin),
        "--xds-port",
        String(xds),
      ],
      ready: `http://127.0.0.1:${admin}/healthz`,
    }),
  },
  {
    name: "ext-authz",
    pkg: "ext-authz",
    // The example policy's OAuth provider names its client secret by environment variable.
    env: { PORTICO_SECRET_PARTNER_AS: "bench-secret" },
    start: ([grpc, metrics]) => ({
      args: [
        "--policy",
        path.join(REPO_ROOT, "ext-authz/examples/policy.yaml"),
        "--listen",
        `127.0.0.1:${grpc}`,
        "--metrics",
        `127.0.0.1:${metrics}`,
      ],
      ready: `http://127.0.0.1:${metrics}/readyz`,
    }),
  },
  {
    name: "ratelimit-service",
    pkg: "ratelimit-service",
    start: ([grpc, metrics]) => ({
      args: [
        "--config",
        path.join(REPO_ROOT, "ratelimit-service/config"),
        "--listen",
        `127.0.0.1:${grpc}`,
        "--metrics-listen",
        `127.0.0.1:${metrics}`,
      ],
      ready: `http://127.0.0.1:${metrics}/readyz`,
    }),
  },
  {
    name: "aggregator",
    pkg: "aggregator",
    start: ([http]) => ({
      args: [
        "--config",
        path.join(REPO_ROOT, "aggregator/examples/aggregator.yaml"),
        "--listen",
        `127.0.0.1:${http}`,
      ],
      ready: `http://127.0.0.1:${http}/readyz`,
    }),
  },
];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function measure(svc: Service, rt: Runtime, run: number): Promise<{ startMs: number; rssMiB: number }> {
  const ports = await freePorts(2);
  const { args, ready } = svc.start(ports, run);
  const t0 = performance.now();
  const child = spawn(rt.node, [...rt.argv(svc.pkg), ...args], {
    cwd: dir,
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, ...svc.env, LOG_LEVEL: "warn", NODE_OPTIONS: "" },
  });
  let output = "";
  child.stderr!.on("data", (b: Buffer) => (output += b.toString()));
  child.stdout!.on("data", (b: Buffer) => (output += b.toString()));
  const exited = new Promise<never>((_, reject) =>
    child.once("exit", (code) => reject(new Error(`${svc.name} (${rt.label}) exited ${code}: ${output}`))),
  );
  try {
    for (;;) {
      const ok = await Promise.race([
        fetch(ready)
          .then((r) => r.ok)
          .catch(() => false),
        exited,
      ]);
      if (ok) break;
      if (performance.now() - t0 > 30_000) throw new Error(`${svc.name} (${rt.label}) not ready in 30 s`);
      await sleep(5);
    }
    const startMs = performance.now() - t0;
    await sleep(1_000);
    return { startMs, rssMiB: processMemory(child.pid!).rssKiB / 1024 };
  } finally {
    child.removeAllListeners("exit");
    child.kill("SIGKILL");
    await new Promise((r) => (child.exitCode !== null ? r(undefined) : child.once("exit", r)));
  }
}

const samples = new Map<string, { startMs: number[]; rssMiB: number[] }>();
for (let run = 0; run < rounds; run++) {
  for (const svc of services) {
    for (const rt of run % 2 ? [...runtimes].reverse() : runtimes) {
      const key = `${svc.name}\t${rt.label}`;
      const m = await measure(svc, rt, run);
      const s = samples.get(key) ?? { startMs: [], rssMiB: [] };
      s.startMs.push(m.startMs);
      s.rssMiB.push(m.rssMiB);
      samples.set(key, s);
    }
  }
}
fs.rmSync(dir, { recursive: true, force: true });

console.log(`start-up and RSS, measured: median of ${rounds} interleaved rounds, ${os.cpus().length} cores`);
console.log(
  ["service".padEnd(18), "runtime".padEnd(22), "start-up".padStart(10), "RSS".padStart(10)].join(" "),
);
const rows: { service: string; runtime: string; startMs: number; rssMiB: number }[] = [];
for (const [key, s] of samples) {
  const [service, runtime] = key.split("\t") as [string, string];
  const row = { service, runtime, startMs: median(s.startMs), rssMiB: median(s.rssMiB) };
  rows.push(row);
  console.log(
    [
      service.padEnd(18),
      runtime.padEnd(22),
      `${row.startMs.toFixed(0)} ms`.padStart(10),
      `${row.rssMiB.toFixed(1)} MiB`.padStart(10),
    ].join(" "),
  );
}
if (values.out) {
  fs.writeFileSync(
    values.out,
    JSON.stringify({ kind: "measured", cores: os.cpus().length, rounds, rows }, null, 2),
  );
}
