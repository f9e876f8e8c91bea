// Section 6: one gateway group of 10,000 routes and 2,000 EDS clusters served to a large simulated
// fleet: per-change latency percentiles over several one-route changes, SotW beside delta in the
// same run, and the control plane's RSS with the fleet connected.
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { TypeUrl, type ConfigInput } from "@portico/control-plane";
import type { XdsProtocol } from "@portico/envoy";
import { freePorts } from "@portico/testing";
import { percentile, median } from "../lib/stats.js";
import { bigConfig, bigNames, type BigConfigState } from "./configs.js";
import type { BenchContext } from "./context.js";
import { ControlPlaneProcess } from "./control-plane.js";
import { Fleet } from "./fleet.js";
import { bytes, mib, ms, protocolTag, round } from "./format.js";
import { loopbackFloor } from "./loopback-floor.js";

/** What one fleet run measured. */
export interface ScaleRun {
  protocol: XdsProtocol;
  clients: number;
  rounds: number;
  /** Per round: the 50th and 99th percentile over clients of change → ACKed, ms. */
  p50: number[];
  p99: number[];
  /** Clients that never got a round's change, summed over rounds. */
  missed: number;
  rssSyncedKiB: number;
  rssPeakKiB: number;
  syncMs: number;
  bytesPerRound: number;
  clientErrors: number;
  firstClientError?: string;
}

/** Runs the fleet of `clients` against a fresh control plane and changes one route `rounds` times. */
export async function scaleRun(
  ctx: BenchContext,
  protocol: XdsProtocol,
  clients: number,
  rounds: number,
): Promise<ScaleRun> {
  const { params: P, cleanups } = ctx;
  const [bigPort, onePort] = await freePorts(2);
  const state: BigConfigState = { bigPort, onePort, upstreamPort: 9, routeTag: 0, endpointTag: 0 };
  const { cp } = await ControlPlaneProcess.start(
    ctx,
    `scale-${protocol}-${clients}`,
    JSON.stringify(bigConfig(P, state)),
  );
  const peaks = cp.peakSampler();
  cleanups.push(() => peaks.stop());
  const fleet = new Fleet(cp.target, "big", protocol, bigNames(P), false);
  cleanups.push(() => fleet.close());
  try {
    const syncMs = await fleet.grow(clients, P.connectBatch, 600_000);
    await sleep(2000);
    const rssSynced = await cp.rss(3);
    peaks.take();
    const run: ScaleRun = {
      protocol,
      clients,
      rounds,
      p50: [],
      p99: [],
      missed: 0,
      rssSyncedKiB: rssSynced,
      rssPeakKiB: 0,
      syncMs: round(syncMs, 0)!,
      bytesPerRound: 0,
      clientErrors: 0,
    };
    const received: number[] = [];
    for (let k = 0; k < rounds; k++) {
      state.routeTag++;
      const config = bigConfig(P, state) as ConfigInput;
      const w = fleet.waitAllNew(TypeUrl.Route, 60_000);
      const t0 = performance.now();
      w.start(t0);
      cp.write(config);
      await w.done.catch(() => undefined);
      run.missed += w.arrivals.filter((a) => Number.isNaN(a)).length;
      run.p50.push(percentile(w.arrivals, 50));
      run.p99.push(percentile(w.arrivals, 99));
      received.push(w.bytes());
      await sleep(500);
    }
    run.rssPeakKiB = peaks.take();
    run.bytesPerRound = median(received);
    run.clientErrors = fleet.errors;
    run.firstClientError = fleet.firstError;
    return run;
  } finally {
    peaks.stop();
    fleet.close();
    await cp.stop();
  }
}

function reportRun(ctx: BenchContext, run: ScaleRun, aims: { p99?: string; rss?: string }): void {
  const { report } = ctx;
  const tag = `${protocolTag(run.protocol)} ×${run.clients}`;
  report.row(
    "6",
    `${tag}: one-route change → ACKed, p50 / p99 (median of ${run.rounds} rounds), measured`,
    `${ms(median(run.p50))} / ${ms(median(run.p99))}`,
    aims.p99,
  );
  report.row(
    "6",
    `${tag}:   worst round p99, clients that missed a change, client errors`,
    `${ms(Math.max(...run.p99))}, ${run.missed}, ${run.clientErrors}${run.firstClientError ? ` (first: ${run.firstClientError.slice(0, 80)})` : ""}`,
  );
  report.row(
    "6",
    `${tag}: control-plane RSS with the fleet synced (after GC), measured`,
    mib(run.rssSyncedKiB),
    aims.rss,
  );
  report.row(
    "6",
    `${tag}:   peak RSS during the changes, sync time, bytes received per change`,
    `${mib(run.rssPeakKiB)}, ${ms(run.syncMs)}, ${bytes(run.bytesPerRound)}`,
  );
}

/** SotW and delta with `scaleClients` each, in the same run, then the larger delta fleet (not with `--quick`). */
export async function scaleSection(ctx: BenchContext): Promise<void> {
  const { params: P, report } = ctx;
  const runs: Record<string, ScaleRun> = {};
  console.log(
    `\n[6] one route changed on 10k routes / 2k EDS clusters, ${P.scaleClients} clients per protocol`,
  );
  const sotw = await scaleRun(ctx, "sotw", P.scaleClients, P.scaleRounds);
  runs.sotw = sotw;
  reportRun(ctx, sotw, {});
  // The same bytes through loopback with nothing but a socket on either side: no fan-out of this
  // size can finish sooner on this machine.
  const floor = await loopbackFloor(P.scaleClients, Math.round(sotw.bytesPerRound / P.scaleClients));
  report.row(
    "6",
    `loopback floor: trivial Node writer → ${floor.clients} sockets × ${bytes(floor.bytesEach)}, all received, measured`,
    `${ms(floor.ms)} (${floor.mibPerSecond.toFixed(0)} MiB/s)`,
  );
  const delta = await scaleRun(ctx, "delta", P.scaleClients, P.scaleRounds);
  runs.delta = delta;
  reportRun(ctx, delta, {
    p99: `≤ SotW's p99 in this run (${ms(median(sotw.p99))}) and ≤ 1 s`,
    rss: P.scaleClients >= 1000 ? "≤ 200 MiB" : undefined,
  });
  if (P.scaleClients >= 1000) {
    const big = await scaleRun(ctx, "delta", P.scaleLongClients, Math.min(3, P.scaleRounds));
    runs.deltaLong = big;
    reportRun(ctx, big, { rss: "≤ 300 MiB, no client missed" });
  }
  report.results.scale = {
    ...Object.fromEntries(
      Object.entries(runs).map(([k, r]) => [
        k,
        { ...r, p50Median: round(median(r.p50)), p99Median: round(median(r.p99)) },
      ]),
    ),
    loopbackFloor: { ...floor, ms: round(floor.ms), mibPerSecond: round(floor.mibPerSecond) },
  };
}
