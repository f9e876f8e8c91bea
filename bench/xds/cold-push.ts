// Section 3: what the 10k-route config costs to build, and how long a fresh Envoy takes to get it.
import http from "node:http";
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { buildSnapshots, parseYamlText, validateConfig } from "@portico/control-plane";
import type { EnvoyProcess } from "@portico/testing";
import { median } from "../lib/stats.js";
import { fleetConfig } from "./configs.js";
import type { BenchContext } from "./context.js";
import { ControlPlaneProcess } from "./control-plane.js";
import { startBenchEnvoy, timedGet } from "./envoy.js";
import { FOUR_TYPES } from "./fleet.js";
import { bytes, ms, protocolTag, round } from "./format.js";
import type { XdsBenchParams } from "./options.js";

/** Parse, validate and build the config in this process, `buildRuns` times; the last build's sizes. */
function buildInProcess(P: XdsBenchParams, text: string) {
  const parseMs: number[] = [];
  const validateMs: number[] = [];
  const buildMs: number[] = [];
  let snapshots!: ReturnType<typeof buildSnapshots>;
  for (let k = 0; k < P.buildRuns; k++) {
    let t = performance.now();
    const value = parseYamlText(text, "portico.yaml");
    parseMs.push(performance.now() - t);
    t = performance.now();
    const config = validateConfig(value);
    validateMs.push(performance.now() - t);
    t = performance.now();
    snapshots = buildSnapshots(config);
    buildMs.push(performance.now() - t);
  }
  const snap = snapshots.get("big")!;
  const perType: Record<string, { resources: number; bytes: number }> = {};
  for (const t of FOUR_TYPES) {
    const res = [...snap.get(t).resources.values()];
    perType[t.slice(t.lastIndexOf(".") + 1)] = {
      resources: res.length,
      bytes: res.reduce((n, r) => n + r.any.length, 0),
    };
  }
  return { parseMs, validateMs, buildMs, perType, totalBytes: snap.byteSize() };
}

/** What a fresh Envoy holds once ready, and that a request through it is answered. */
async function verifyBig(e: EnvoyProcess, port: number): Promise<Record<string, unknown>> {
  const routeConfigs = await e.routeConfigs();
  const routes = routeConfigs
    .flatMap((rc: any) => (rc?.virtual_hosts ?? []) as any[])
    .reduce((n: number, vh: any) => n + ((vh.routes ?? []) as unknown[]).length, 0);
  const clusters = (await e.stat("cluster_manager.active_clusters")) ?? NaN;
  const agent = new http.Agent({ keepAlive: false });
  const res = await timedGet(`http://127.0.0.1:${port}/svc-1234/x`, agent).catch(() => ({ status: 0 }));
  agent.destroy();
  return {
    routes,
    activeClusters: clusters,
    requestStatus: res.status,
    summary: `${routes} routes, ${clusters} active clusters (incl. xds_cluster), GET /svc-1234/ → ${res.status}`,
  };
}

/**
 * `text` is the big config, served on `bigPort` to group "big". Leaves the control plane serving it
 * running for section 4; `rssSmall` and
 * `rssFresh` are section 5's baselines, `rdsBytes` the size of the big RouteConfiguration.
 */
export async function coldPush(
  ctx: BenchContext,
  text: string,
  bigPort: number,
): Promise<{ cp: ControlPlaneProcess; rssSmall: number; rssFresh: number; rdsBytes: number }> {
  const { params: P, cleanups, report } = ctx;
  console.log(`\n[3] ${P.bigRoutes} routes / ${P.bigUpstreams} clusters`);
  // In process first, while nothing else competes for the CPU.
  const built = buildInProcess(P, text);
  const rdsBytes = built.perType.RouteConfiguration!.bytes;
  report.row("3", "config file (JSON, which is YAML) size", bytes(Buffer.byteLength(text)));
  report.row(
    "3",
    "in-process YAML parse / validate (what every file change costs first)",
    `${ms(median(built.parseMs))} / ${ms(median(built.validateMs))}`,
  );
  report.row("3", "in-process translate + encode (buildSnapshots), median", ms(median(built.buildMs)));
  report.row(
    "3",
    "encoded: Cluster / CLA / Listener / RouteConfiguration",
    Object.values(built.perType)
      .map((x) => `${x.resources}×=${bytes(x.bytes)}`)
      .join(" / "),
  );
  report.row("3", "encoded total (one copy of the group's snapshot)", bytes(built.totalBytes));

  // The same binary idle with a small config: what the runtime itself costs, before any config.
  const { cp: small } = await ControlPlaneProcess.start(
    ctx,
    "small",
    JSON.stringify(fleetConfig(P, 20_000, 0)),
  );
  await sleep(2000);
  const rssSmall = await small.rss();
  await small.stop();

  const { cp, readyMs } = await ControlPlaneProcess.start(ctx, "big", text);
  report.row("3", "control plane child: spawn → /readyz with this config", ms(readyMs));
  await sleep(2000);
  const rssFresh = await cp.rss();

  // Cold start: spawn → /ready (Envoy's init manager holds /ready until CDS, every cluster's EDS,
  // LDS and the listener's RDS are in), the 1-route group and the 10k group alternately.
  type Cold = Record<"one" | "big", number[]>;
  const cold: Record<"sotw" | "delta", Cold> = { sotw: { one: [], big: [] }, delta: { one: [], big: [] } };
  const verified: Record<string, Record<string, unknown>> = {};
  for (let run = 0; run < P.coldRuns; run++) {
    for (const protocol of ["sotw", "delta"] as const) {
      const order: ("one" | "big")[] = run % 2 === 0 ? ["one", "big"] : ["big", "one"];
      for (const group of order) {
        const t0 = performance.now();
        const { e, stop } = await startBenchEnvoy(cleanups, {
          nodeId: `cold-${group}-${protocol}-${run}`,
          group,
          xdsPort: cp.xdsPort,
          protocol,
        });
        try {
          await e.waitReady({ timeoutMs: 60_000, intervalMs: 5 });
          cold[protocol][group].push(performance.now() - t0);
          if (group === "big" && run === 0) verified[protocol] = await verifyBig(e, bigPort);
        } finally {
          await stop();
        }
      }
    }
  }
  const coldOut: Record<string, unknown> = {};
  for (const protocol of ["sotw", "delta"] as const) {
    const c = cold[protocol];
    const tag = protocolTag(protocol);
    const ratio = median(c.big) / median(c.one);
    report.row("3", `fresh ${tag} Envoy, spawn → ready: 1-route group, median`, ms(median(c.one)));
    report.row(
      "3",
      `fresh ${tag} Envoy, spawn → ready: ${P.bigRoutes}-route group, median (ratio)`,
      `${ms(median(c.big))} (${ratio.toFixed(1)}×)`,
      "≤ 2 s",
    );
    report.row("3", `  verified after ready (${tag})`, String(verified[protocol]?.summary));
    coldOut[protocol] = {
      oneMs: c.one.map((x) => round(x)),
      bigMs: c.big.map((x) => round(x)),
      ratio: round(ratio),
      verified: verified[protocol],
    };
  }
  report.results.coldPush = {
    routes: P.bigRoutes,
    clusters: P.bigUpstreams,
    configFileBytes: Buffer.byteLength(text),
    parseMs: built.parseMs.map((x) => round(x)),
    validateMs: built.validateMs.map((x) => round(x)),
    buildSnapshotsMs: built.buildMs.map((x) => round(x)),
    encoded: built.perType,
    encodedTotalBytes: built.totalBytes,
    controlPlaneReadyMs: round(readyMs),
    coldStart: coldOut,
  };
  return { cp, rssSmall, rssFresh, rdsBytes };
}
