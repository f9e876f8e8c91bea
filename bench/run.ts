// `npm run bench`: every benchmark in turn, then one table where each figure stands next to the
// baseline measured in the same run, the results as JSON (bench/results/summary.json) and the
// latency percentiles as a chart (bench/results/latency.svg). Loopback only; never a pass/fail.
//   npm run bench [-- --quick]
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { REPO_ROOT } from "@portico/envoy";
import { RUN_FROM_SOURCE } from "@portico/testing";

const { values } = parseArgs({ options: { quick: { type: "boolean", default: false } } });
const QUICK = values.quick;
const RESULTS = path.join(REPO_ROOT, "bench", "results");

const STEPS: { name: string; script: string; args: string[] }[] = [
  { name: "xds", script: "bench/xds.ts", args: QUICK ? ["--quick"] : [] },
  { name: "admin", script: "bench/admin.ts", args: QUICK ? ["--quick"] : [] },
  { name: "ratelimit", script: "bench/ratelimit.ts", args: QUICK ? ["--quick"] : [] },
  {
    name: "auth-envoy",
    script: "bench/auth-envoy.ts",
    args: QUICK ? ["--seconds", "3", "--rounds", "1"] : [],
  },
];

function runStep(script: string, args: string[]): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [...RUN_FROM_SOURCE, path.join(REPO_ROOT, script), ...args], {
      stdio: "inherit",
    });
    child.on("exit", (code) => resolve(code ?? 1));
  });
}

function readJson(name: string): any {
  const file = path.join(RESULTS, `${name}.json`);
  return fs.existsSync(file) ? JSON.parse(fs.readFileSync(file, "utf8")) : undefined;
}

interface Row {
  area: string;
  figure: string;
  value: string;
  baseline: string;
  ratio: string;
}

const f1 = (n: number) => n.toFixed(1);
const f2 = (n: number) => n.toFixed(2);
const ratio = (a: number, b: number) => (b > 0 ? `${f2(a / b)}x` : "");

function rows(): Row[] {
  const out: Row[] = [];
  const admin = readJson("admin");
  if (admin) {
    out.push({
      area: "admin",
      figure: "PUT ?wait=applied → served by Envoy, p50 / p99",
      value: `${f1(admin.writeServed.p50)} / ${f1(admin.writeServed.p99)} ms`,
      baseline: `PUT, commit only: ${f1(admin.writeNoWait.p50)} / ${f1(admin.writeNoWait.p99)} ms`,
      ratio: ratio(admin.writeServed.p50, admin.writeNoWait.p50),
    });
  }
  const xds = readJson("xds");
  for (const r of xds?.table ?? []) {
    out.push({
      area: `xds ${r.section}`,
      figure: r.metric,
      value: String(r.value),
      baseline: r.aim ? `aim ${r.aim}` : "",
      ratio: "",
    });
  }
  const rl = readJson("ratelimit");
  if (rl) {
    const best = (backend: string) =>
      Math.max(0, ...rl.grpc.filter((p: any) => p.backend === backend).map((p: any) => p.perSecond));
    const ceiling = best("grpc-js echo (ceiling)");
    for (const backend of ["memory", "redis strict", "redis local-first"]) {
      const pts = rl.grpc.filter((p: any) => p.backend === backend);
      const top = pts.reduce((a: any, p: any) => (p.perSecond > (a?.perSecond ?? -1) ? p : a), undefined);
      if (!top) continue;
      out.push({
        area: "ratelimit",
        figure: `ShouldRateLimit over gRPC, ${backend} (best, c=${top.concurrency}), p50 / p99`,
        value: `${top.perSecond.toFixed(0)}/s, ${f2(top.p50)} / ${f2(top.p99)} ms`,
        baseline: `grpc-js echo ${ceiling.toFixed(0)}/s`,
        ratio: ratio(top.perSecond, ceiling),
      });
    }
    out.push({
      area: "ratelimit",
      figure: "local-first / strict over gRPC",
      value: `${f2(rl.localFirstOverStrictGrpc)}x`,
      baseline: "",
      ratio: "",
    });
    const alone = (backend: string) =>
      Math.max(0, ...rl.limiterAlone.filter((p: any) => p.backend === backend).map((p: any) => p.perSecond));
    out.push({
      area: "ratelimit",
      figure: "limiter alone: local-first vs strict decisions/s",
      value: `${alone("redis local-first").toFixed(0)}/s`,
      baseline: `strict ${alone("redis strict").toFixed(0)}/s`,
      ratio: ratio(alone("redis local-first"), alone("redis strict")),
    });
    for (const line of rl.redisBenchmark as string[]) {
      out.push({
        area: "ratelimit",
        figure: "redis-benchmark (ceiling)",
        value: line.trim(),
        baseline: "",
        ratio: "",
      });
    }
    for (const o of rl.overAdmission as any[]) {
      out.push({
        area: "ratelimit",
        figure: `over-admission, 2 local-first instances, L=${o.limit}, T=${o.syncPeriodMs} ms`,
        value: `+${o.extra}`,
        baseline: `bound +${o.bound}`,
        ratio: "",
      });
    }
  }
  const auth = readJson("auth-envoy");
  for (const load of auth?.report ?? []) {
    const [bare, ext, native, chain] = load.results;
    const line = (label: string, r: any, base: any, baseLabel: string) =>
      out.push({
        area: `envoy (${load.load}, wrk -c${load.connections})`,
        figure: `${label}: req/s, p50 / p99`,
        value: `${r.rps.toFixed(0)}/s, ${f2(r.p50Ms)} / ${f2(r.p99Ms)} ms`,
        baseline: `${baseLabel}: ${base.rps.toFixed(0)}/s, ${f2(base.p50Ms)} / ${f2(base.p99Ms)} ms`,
        ratio: `${ratio(r.rps, base.rps)} req/s, ${ratio(r.p99Ms, base.p99Ms)} p99`,
      });
    line("JWT via ext_authz", ext, native, "jwt_authn");
    line("full chain (ext_authz + ratelimit + route)", chain, bare, "bare route");
  }
  return out;
}

/** Grouped bars (p50, p99) per scenario, log scale: one picture of where the milliseconds go. */
function latencySvg(): string | undefined {
  const bars: { label: string; p50: number; p99: number }[] = [];
  const admin = readJson("admin");
  if (admin)
    bars.push({ label: "admin write → served", p50: admin.writeServed.p50, p99: admin.writeServed.p99 });
  for (const load of readJson("auth-envoy")?.report ?? []) {
    for (const r of load.results)
      bars.push({ label: `${r.scenario} (${load.load})`, p50: r.p50Ms, p99: r.p99Ms });
  }
  const rl = readJson("ratelimit");
  for (const p of rl?.grpc ?? []) {
    if (p.concurrency === 1 && p.backend !== "grpc-js echo (ceiling)")
      bars.push({ label: `ShouldRateLimit ${p.backend} c=1`, p50: p.p50, p99: p.p99 });
  }
  if (bars.length === 0) return undefined;
  const W = 900;
  const left = 330;
  const rowH = 26;
  const top = 40;
  const H = top + bars.length * rowH + 40;
  const max = Math.max(...bars.map((b) => b.p99), 1);
  const min = 0.01;
  const x = (v: number) =>
    left +
    ((Math.log10(Math.max(v, min)) - Math.log10(min)) / (Math.log10(max) - Math.log10(min))) *
      (W - left - 20);
  const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;");
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<text x="10" y="20" font-size="14">Latency percentiles, ms (log scale): p50 dark, p99 light — ${esc(os.cpus().length + " CPUs, " + new Date().toISOString().slice(0, 10))}</text>`,
  ];
  bars.forEach((b, i) => {
    const y = top + i * rowH;
    parts.push(`<text x="10" y="${y + 15}">${esc(b.label)}</text>`);
    parts.push(`<rect x="${left}" y="${y + 3}" width="${x(b.p99) - left}" height="16" fill="#9ecae1"/>`);
    parts.push(`<rect x="${left}" y="${y + 7}" width="${x(b.p50) - left}" height="8" fill="#08519c"/>`);
    parts.push(`<text x="${x(b.p99) + 4}" y="${y + 15}">${f2(b.p50)} / ${f2(b.p99)}</text>`);
  });
  for (const tick of [0.01, 0.1, 1, 10, 100, 1000].filter((t) => t <= max * 1.01)) {
    parts.push(`<line x1="${x(tick)}" x2="${x(tick)}" y1="${top}" y2="${H - 30}" stroke="#ccc"/>`);
    parts.push(`<text x="${x(tick) - 8}" y="${H - 15}">${tick}</text>`);
  }
  parts.push("</svg>");
  return parts.join("\n");
}

const failed: string[] = [];
const started = Date.now();
for (const step of STEPS) {
  console.log(
    `\n${"#".repeat(100)}\n# ${step.name}: npx tsx ${step.script} ${step.args.join(" ")}\n${"#".repeat(100)}`,
  );
  // Stale results from an earlier run must not pass for this run's.
  fs.rmSync(path.join(RESULTS, `${step.name}.json`), { force: true });
  const code = await runStep(step.script, step.args);
  if (code !== 0) failed.push(`${step.name} (exit ${code})`);
}

const table = rows();
const widths = [24, 58, 34, 44];
console.log(
  `\n${"=".repeat(170)}\nPortico benchmarks, ${os.cpus().length} CPUs, ${os.cpus()[0]?.model ?? "?"}; every baseline measured in this run`,
);
console.log(
  ["area", "figure", "value", "baseline (same run)"].map((h, i) => h.padEnd(widths[i]!)).join(" ") + " ratio",
);
for (const r of table) {
  console.log(
    [r.area, r.figure, r.value, r.baseline].map((c, i) => c.padEnd(widths[i]!)).join(" ") + ` ${r.ratio}`,
  );
}
if (failed.length) console.log(`\nsteps that failed: ${failed.join(", ")}`);
fs.mkdirSync(RESULTS, { recursive: true });
fs.writeFileSync(
  path.join(RESULTS, "summary.json"),
  JSON.stringify(
    { at: new Date().toISOString(), quick: QUICK, cpus: os.cpus().length, failed, rows: table },
    null,
    2,
  ),
);
const svg = latencySvg();
if (svg) fs.writeFileSync(path.join(RESULTS, "latency.svg"), svg);
console.log(
  `\nwrote bench/results/summary.json${svg ? " and bench/results/latency.svg" : ""} (${((Date.now() - started) / 1000).toFixed(0)} s)`,
);
process.exit(failed.length ? 1 : 0);
