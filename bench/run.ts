// `npm run bench`: every benchmark in turn, then one table where each figure stands next to what
// it is compared with, labelled: `measured` (a baseline measured in the same run), `aim` (a design
// target) or `formula` (a stated bound). The results go to bench/results/summary.json (every run)
// and, for a full run where every step passed, to bench/results/<date>-<cores>cpu.json: the rows,
// each step's own results, the machine and the commit, the record a figure in the README is quoted
// from. Latency percentiles are drawn in bench/results/latency.svg. Loopback only; never a pass/fail.
//   npm run bench [-- --quick]
import { execFileSync, spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { findEnvoy, REPO_ROOT } from "@portico/envoy";
import { RUN_FROM_SOURCE } from "@portico/testing";

const { values } = parseArgs({ options: { quick: { type: "boolean", default: false } } });
const QUICK = values.quick;
const RESULTS = path.join(REPO_ROOT, "bench", "results");

function xdsArgs(sections: string, name: string): string[] {
  const out = path.join(RESULTS, `${name}.json`);
  return ["--cp-compiled", "--sections", sections, "--out", out, ...(QUICK ? ["--quick"] : [])];
}

const STEPS: { name: string; script: string; args: string[] }[] = [
  // The control plane as production runs it: compiled (ensure-deps builds it), with its runtime
  // settings. The fleet (section 6) and the replicas (section 7) each get a load-generating process
  // of their own: its simulated Envoys read on the same two cores, and a process that carried the
  // earlier sections' heap read the loopback floor itself 50% slower (717 ms against 381-472 ms).
  { name: "xds", script: "bench/xds.ts", args: xdsArgs("1,2,3,4,5", "xds") },
  { name: "xds-scale", script: "bench/xds.ts", args: xdsArgs("6", "xds-scale") },
  { name: "xds-replicas", script: "bench/xds.ts", args: xdsArgs("7", "xds-replicas") },
  { name: "admin", script: "bench/admin.ts", args: QUICK ? ["--quick"] : [] },
  // The services as production runs them: compiled (ensure-deps builds them).
  { name: "ratelimit", script: "bench/ratelimit.ts", args: ["--compiled", ...(QUICK ? ["--quick"] : [])] },
  {
    name: "ext-authz-check",
    script: "bench/ext-authz-check.ts",
    args: ["--compiled", ...(QUICK ? ["--quick"] : [])],
  },
  {
    name: "auth-envoy",
    script: "bench/auth-envoy.ts",
    args: ["--compiled", ...(QUICK ? ["--seconds", "3", "--rounds", "1"] : [])],
  },
  {
    name: "native-jwt",
    script: "bench/native-jwt.ts",
    args: QUICK ? ["--seconds", "3", "--rounds", "1"] : [],
  },
  { name: "native-ratelimit", script: "bench/native-ratelimit.ts", args: QUICK ? ["--seconds", "2"] : [] },
  { name: "quota", script: "bench/quota.ts", args: QUICK ? ["--rates", "300", "--envoys", "1"] : [] },
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

/**
 * What a figure is compared with. `measured`: a baseline measured in this run; `aim`: the figure
 * the design aims for; `formula`: a bound stated by a formula. Only `measured` is a measurement.
 */
interface Reference {
  kind: "measured" | "aim" | "formula";
  text: string;
}

interface Row {
  area: string;
  figure: string;
  value: string;
  reference?: Reference;
  /** figure / measured baseline, only beside a measured one. */
  ratio: string;
}

const measured = (text: string): Reference => ({ kind: "measured", text });
const f1 = (n: number) => n.toFixed(1);
const f2 = (n: number) => n.toFixed(2);
const ratio = (a: number, b: number) => (b > 0 ? `${f2(a / b)}x` : "");
const cell = (r?: Reference) => (r ? `${r.kind}: ${r.text}` : "");

function adminRows(admin: any): Row[] {
  const out: Row[] = [
    {
      area: "admin",
      figure: "PUT ?wait=applied → served by Envoy, p50 / p99",
      value: `${f1(admin.writeServed.p50)} / ${f1(admin.writeServed.p99)} ms`,
      reference: measured(`PUT, commit only: ${f1(admin.writeNoWait.p50)} / ${f1(admin.writeNoWait.p99)} ms`),
      ratio: ratio(admin.writeServed.p50, admin.writeNoWait.p50),
    },
  ];
  const edits = admin.fileEditServed;
  for (const [r, which] of [
    [edits?.defaultDebounce, "default"],
    [edits?.noDebounce, "none"],
  ] as const) {
    if (!r) continue;
    out.push({
      area: "admin",
      figure: `config file edit → served by Envoy, --debounce-ms ${r.debounceMs} (${which}), p50 / p99`,
      value: `${f1(r.served.p50)} / ${f1(r.served.p99)} ms`,
      reference: measured(
        `a plain request through Envoy: ${f2(r.plainRequest.p50)} / ${f2(r.plainRequest.p99)} ms`,
      ),
      ratio: ratio(r.served.p50, r.plainRequest.p50),
    });
  }
  return out;
}

function xdsRows(xds: any): Row[] {
  return (xds?.table ?? []).map((r: any) => ({
    area: `xds ${r.section}`,
    figure: r.metric,
    value: String(r.value),
    reference: r.aim ? { kind: "aim", text: r.aim } : undefined,
    ratio: "",
  }));
}

function ratelimitRows(rl: any): Row[] {
  const out: Row[] = [];
  const best = (points: any[], backend: string) =>
    points
      .filter((p) => p.backend === backend)
      .reduce((a: any, p: any) => (p.perSecond > (a?.perSecond ?? -1) ? p : a), undefined);
  const ceiling = best(rl.grpc, "grpc-js echo (ceiling)");
  for (const backend of ["memory", "redis strict", "redis local-first"]) {
    const top = best(rl.grpc, backend);
    if (!top) continue;
    out.push({
      area: "ratelimit",
      figure: `ShouldRateLimit over gRPC, ${backend} (best, c=${top.concurrency}), p50 / p99`,
      value: `${top.perSecond.toFixed(0)}/s, ${f2(top.p50)} / ${f2(top.p99)} ms`,
      reference: ceiling
        ? measured(
            `grpc-js fixed answer, channelz off (c=${ceiling.concurrency}): ${ceiling.perSecond.toFixed(0)}/s`,
          )
        : undefined,
      ratio: ceiling ? ratio(top.perSecond, ceiling.perSecond) : "",
    });
  }
  out.push({
    area: "ratelimit",
    figure: "local-first / strict over gRPC",
    value: `${f2(rl.localFirstOverStrictGrpc)}x`,
    ratio: "",
  });
  const alone = (backend: string) => best(rl.limiterAlone, backend)?.perSecond ?? 0;
  out.push({
    area: "ratelimit",
    figure: "limiter alone, redis local-first decisions/s",
    value: `${alone("redis local-first").toFixed(0)}/s`,
    reference: measured(`redis strict: ${alone("redis strict").toFixed(0)}/s`),
    ratio: ratio(alone("redis local-first"), alone("redis strict")),
  });
  for (const line of rl.redisBenchmark as string[]) {
    out.push({ area: "ratelimit", figure: "redis-benchmark (ceiling)", value: line.trim(), ratio: "" });
  }
  for (const o of rl.overAdmission as any[]) {
    out.push({
      area: "ratelimit",
      figure: `over-admission, 2 local-first instances, L=${o.limit}, T=${o.syncPeriodMs} ms`,
      value: `+${o.extra}`,
      reference: { kind: "formula", text: `${o.worstCaseBound.formula} = +${o.worstCaseBound.value}` },
      ratio: "",
    });
  }
  return out;
}

function authRows(auth: any): Row[] {
  const out: Row[] = [];
  // A run that saw answers other than 2xx measured errors, not authentication: said on every row.
  const invalid = auth?.invalid?.length ? " [NOT VALID: answers other than 2xx]" : "";
  for (const load of auth?.report ?? []) {
    const byKey = new Map((load.results as any[]).map((r) => [r.key, r]));
    const text = (r: any) => `${r.rps.toFixed(0)}/s, ${f2(r.p50Ms)} / ${f2(r.p99Ms)} ms`;
    for (const r of load.results as any[]) {
      const base = r.baseline ? byKey.get(r.baseline) : undefined;
      const hits = r.tokenCache ? `, ${(100 * r.tokenCache.hitRatio).toFixed(0)}% token cache hits` : "";
      out.push({
        area: `envoy (${load.load}, wrk -c${load.connections})`,
        figure: `${r.scenario}: req/s, p50 / p99${hits}${invalid}`,
        value: text(r),
        reference: base ? measured(`${base.scenario}: ${text(base)}`) : undefined,
        ratio: base ? `${ratio(r.rps, base.rps)} req/s, ${ratio(r.p99Ms, base.p99Ms)} p99` : "",
      });
    }
  }
  return out;
}

function rows(steps: Record<string, any>): Row[] {
  return [
    ...(steps.admin ? adminRows(steps.admin) : []),
    ...xdsRows(steps.xds),
    ...xdsRows(steps["xds-scale"]),
    ...xdsRows(steps["xds-replicas"]),
    ...(steps.ratelimit ? ratelimitRows(steps.ratelimit) : []),
    ...authRows(steps["auth-envoy"]),
    ...aimRows("hot path", [steps["ext-authz-check"], steps.ratelimit, steps["auth-envoy"]]),
    ...nativeJwtRows(steps["native-jwt"]),
    ...nativeLimitRows(steps["native-ratelimit"]),
    ...quotaRows(steps.quota),
  ];
}

/** The rows a step states itself, each measured figure beside its aim. */
function aimRows(area: string, results: any[]): Row[] {
  return results
    .flatMap((r) => (r?.rows ?? []) as { measure: string; aim: string; measured: string }[])
    .map((r) => ({
      area,
      figure: r.measure,
      value: r.measured,
      reference: { kind: "aim", text: r.aim },
      ratio: "",
    }));
}

/**
 * JWT routes Envoy verifies itself, each against the bare route of the same Envoy: Portico's, or
 * the hand-written static Envoy of the floors (`baseline` names it; older records have none).
 */
function nativeJwtRows(jwt: any): Row[] {
  const results: any[] = jwt?.results ?? [];
  const byKey = new Map(results.map((r) => [r.key, r]));
  const baseOf = (r: any) => byKey.get(r.baseline ?? "bare");
  const cpu = (r: any) =>
    r.envoyCpuUsPerRequest === undefined ? "" : `, Envoy CPU ${r.envoyCpuUsPerRequest.toFixed(0)} µs/req`;
  return results
    .filter((r) => baseOf(r) && baseOf(r) !== r)
    .map((r) => {
      const bare = baseOf(r);
      return {
        area: "native jwt",
        figure: `${r.scenario}, wrk -c${jwt.connections}: req/s, p99${
          bare.key === "bare" ? " (aim ≥ 0.80x bare, p99 ≤ 1.3x)" : " (what a design's least costs)"
        }`,
        value: `${r.rps.toFixed(0)}/s, ${f2(r.p99Ms)} ms${cpu(r)}`,
        reference: measured(`${bare.scenario}: ${bare.rps.toFixed(0)}/s, ${f2(bare.p99Ms)} ms${cpu(bare)}`),
        ratio: `${ratio(r.rps, bare.rps)}, p99 ${ratio(r.p99Ms, bare.p99Ms)}${
          r.envoyCpuUsPerRequest === undefined
            ? ""
            : `, CPU ${ratio(r.envoyCpuUsPerRequest, bare.envoyCpuUsPerRequest)}`
        }`,
      };
    });
}

/** Limits each Envoy counts: admitted against what one exact counter would admit. */
function nativeLimitRows(nl: any): Row[] {
  return (nl?.rows ?? []).map((r: any) => ({
    area: "native limits",
    figure: `${r.scenario}, ${r.envoys} Envoys, ${r.traffic}: admitted of ${r.offered}`,
    value: String(r.admitted),
    reference: { kind: "formula", text: `one exact counter ${r.exact}; divided buckets ${r.bound}` },
    ratio: ratio(r.admitted, r.exact),
  }));
}

/** Calendar quotas counted from access logs: requests admitted past the quota. */
function quotaRows(q: any): Row[] {
  return (q?.rows ?? []).map((r: any) => ({
    area: "quota (async)",
    figure: `${r.store} store, ${r.envoys} Envoy(s), ${r.achieved.toFixed?.(0) ?? r.achieved}/s: over the quota of ${r.quota}`,
    value: `${r.over} (first 429 ${r.exhaustToDenyMs.toFixed?.(0) ?? r.exhaustToDenyMs} ms after)`,
    reference: { kind: "formula", text: `bound R × (flush + ledger + push) = ${r.bound}` },
    ratio: "",
  }));
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

/** The commit the run measured, and whether the tree had changes beside it. */
function commit(): { commit: string; dirty: boolean } | undefined {
  try {
    const run = (args: string[]) => execFileSync("git", args, { cwd: REPO_ROOT, encoding: "utf8" }).trim();
    return { commit: run(["rev-parse", "HEAD"]), dirty: run(["status", "--porcelain"]) !== "" };
  } catch {
    return undefined;
  }
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

const steps = Object.fromEntries(STEPS.map((s) => [s.name, readJson(s.name)]).filter(([, v]) => v));
const table = rows(steps);
const widths = [32, 80, 30, 62];
const cpus = os.cpus();
console.log(
  `\n${"=".repeat(190)}\nPortico benchmarks${QUICK ? " (--quick)" : ""}, ${cpus.length} CPUs, ${cpus[0]?.model ?? "?"}\n` +
    "compared with — measured: a baseline measured in this run; aim: a design target; formula: a stated bound",
);
console.log(
  ["area", "figure", "value", "compared with"].map((h, i) => h.padEnd(widths[i]!)).join(" ") + " ratio",
);
for (const r of table) {
  console.log(
    [r.area, r.figure, r.value, cell(r.reference)].map((c, i) => c.padEnd(widths[i]!)).join(" ") +
      ` ${r.ratio}`,
  );
}
if (failed.length) console.log(`\nsteps that failed: ${failed.join(", ")}`);
const at = new Date();
const record = {
  at: at.toISOString(),
  quick: QUICK,
  machine: {
    cpus: cpus.length,
    cpu: cpus[0]?.model ?? "unknown",
    memGiB: Math.round(os.totalmem() / 1024 ** 3),
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    envoy: (await findEnvoy({ install: false }).catch(() => undefined))?.version,
  },
  git: commit(),
  durationSeconds: Math.round((Date.now() - started) / 1000),
  failed,
  rows: table,
  steps,
};
fs.mkdirSync(RESULTS, { recursive: true });
const written = ["bench/results/summary.json"];
fs.writeFileSync(path.join(RESULTS, "summary.json"), JSON.stringify(record, null, 2));
if (!QUICK && failed.length === 0) {
  const name = `${at.toISOString().slice(0, 10)}-${cpus.length}cpu.json`;
  fs.writeFileSync(path.join(RESULTS, name), `${JSON.stringify(record, null, 2)}\n`);
  written.push(`bench/results/${name}`);
}
const svg = latencySvg();
if (svg) {
  fs.writeFileSync(path.join(RESULTS, "latency.svg"), svg);
  written.push("bench/results/latency.svg");
}
console.log(`\nwrote ${written.join(", ")} (${record.durationSeconds} s)`);
if (QUICK) console.log("a --quick run is not recorded under a date: run without --quick for figures to keep");
process.exit(failed.length ? 1 : 0);
