// xDS benchmark: how fast a config change reaches a real Envoy, how a change fans out to a
// simulated fleet, what a cold push of a large config costs, delta vs SotW bytes, and the control
// plane's memory with a large fleet. Prints figures; never fails on a time.
//
//   npx tsx --conditions=source bench/xds.ts [--quick | --long] [--sections 1,2,3,4,5,6,7] [--cp-root DIR]
//     [--cp-compiled] [--cp-runtime shipped|none] [--cp-node-arg FLAG]... [--cp-env NAME=VALUE]... [--cp-prof DIR] [--out FILE]
//
// `--quick`: 20 changes, 100 clients, well under a minute. `--long` adds the memory run with
// delta clients and the 1,000-client run on one shared connection.
// `--cp-prof DIR`: every control plane started as a child writes a CPU profile there on exit.
// `--cp-root` runs the control plane from another checkout (same layout), e.g. a `git archive`
// of a known-good commit while the working tree is mid-change. `--cp-compiled` runs the control
// plane's build (control-plane/dist/main.js, after `npm run build`) as production does, not under tsx.
// The control plane starts with the runtime settings it ships with (control-plane/src/runtime.ts);
// `--cp-runtime none` leaves them out, and `--cp-node-arg` and `--cp-env` add a setting to try
// (e.g. `--max-semi-space-size=4`, `MALLOC_ARENA_MAX=4`), leaving this process as it is.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { findEnvoy, REPO_ROOT } from "@portico/envoy";
import { bigConfigSections } from "./xds/big-config.js";
import { changeToServed } from "./xds/change-to-served.js";
import { Cleanups } from "./xds/cleanups.js";
import type { BenchContext } from "./xds/context.js";
import { fanOut } from "./xds/fan-out.js";
import { round } from "./xds/format.js";
import { benchParams, parseOptions } from "./xds/options.js";
import { replicasSection } from "./xds/replicas.js";
import { Report } from "./xds/report.js";
import { scaleSection } from "./xds/scale.js";

const opts = parseOptions(process.argv.slice(2), REPO_ROOT);
const cleanups = new Cleanups();
cleanups.install();
const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), "portico-bench-xds-"));
cleanups.push(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));
const ctx: BenchContext = {
  params: benchParams(opts.quick),
  long: opts.long,
  cpRoot: opts.cpRoot,
  cpMain: opts.cpMain,
  cpProfileDir: opts.cpProfileDir,
  cpNodeArgs: opts.cpNodeArgs,
  cpEnv: opts.cpEnv,
  tmpRoot,
  cleanups,
  report: new Report(),
};

async function main(): Promise<void> {
  const { report } = ctx;
  const started = performance.now();
  const found = await findEnvoy({ log: (m) => process.stderr.write(`[find-envoy] ${m}\n`) });
  const cpus = os.cpus();
  const extra = [...opts.cpNodeArgs, ...Object.entries(opts.cpEnv).map(([k, v]) => `${k}=${v}`)];
  const machine = {
    cores: cpus.length,
    cpu: cpus[0]?.model ?? "unknown",
    memGiB: round(os.totalmem() / 1024 ** 3, 1),
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    envoy: found.version,
    envoyBuild: found.versionLine,
    controlPlane: path.relative(REPO_ROOT, opts.cpMain) || opts.cpMain,
    controlPlaneRuntime: extra,
  };
  console.log(`Portico xDS benchmark${opts.quick ? " (--quick)" : opts.long ? " (--long)" : ""}`);
  console.log(
    `machine: ${machine.cores} cores (${machine.cpu}), ${machine.memGiB} GiB, ${machine.kernel}; node ${machine.node}; envoy ${machine.envoy}`,
  );
  console.log(
    `control plane: ${opts.cpMain} (child process, --debounce-ms 0, LOG_LEVEL=warn${extra.length ? `, ${extra.join(" ")}` : ""})`,
  );
  console.log(
    "figures are medians/percentiles over repeated runs on a noisy machine; treat ratios as the signal",
  );

  report.note(
    "simulated clients (sections 2, 4-7) are minimal ADS clients in this process (bench/xds/ads-load-client.ts: node:http2, each response read only for the version, type and nonce its ACK needs, its resources skipped uncopied), so they share the 2 cores with the control plane; SotW and delta ones ask for CDS/LDS by wildcard and for EDS/RDS by name, as Envoy does",
  );
  report.note(
    "each simulated client gets its own TCP connection (grpc-js would otherwise multiplex them all onto one, see the 'shared pool' run); the connection count is read from /proc/net/tcp",
  );
  const has = (n: number) => opts.sections.has(n);
  let failed: Error | undefined;
  try {
    if (has(1)) await report.timed("1", () => changeToServed(ctx));
    if (has(2)) await report.timed("2", () => fanOut(ctx));
    if (has(3) || has(4) || has(5)) await report.timed("3-5", () => bigConfigSections(ctx, has(5)));
    if (has(6)) await report.timed("6", () => scaleSection(ctx));
    if (has(7)) await report.timed("7", () => replicasSection(ctx));
  } catch (err) {
    failed = err as Error;
  } finally {
    await cleanups.run();
  }

  const totalSeconds = (performance.now() - started) / 1000;
  report.printTable(totalSeconds);
  fs.mkdirSync(path.dirname(opts.out), { recursive: true });
  fs.writeFileSync(
    opts.out,
    report.json({ quick: opts.quick, machine, params: ctx.params, error: failed, totalSeconds }),
  );
  console.log(`wrote ${path.relative(process.cwd(), opts.out)}`);
  if (failed) {
    console.error(`\nbenchmark aborted: ${failed.stack ?? failed.message}`);
    process.exitCode = 1;
  }
}

await main();
