// Section 2: one change, fanned out to a simulated fleet of ADS clients, until all have ACKed.
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { buildSnapshots, TypeUrl, validateConfig, type ConfigInput } from "@portico/control-plane";
import type { XdsProtocol } from "@portico/envoy";
import { waitFor } from "@portico/testing";
import { connectionsTo } from "../lib/proc.js";
import { median, percentile } from "../lib/stats.js";
import { fleetConfig, fleetNames } from "./configs.js";
import type { BenchContext } from "./context.js";
import { ControlPlaneProcess } from "./control-plane.js";
import { Fleet } from "./fleet.js";
import { bytes, ms, protocolTag, round } from "./format.js";

export async function fanOut(ctx: BenchContext): Promise<void> {
  const { params: P, cleanups, report } = ctx;
  console.log("\n[2] one change fanned out to simulated ADS clients");
  let edsPort = 20_000;
  let routeTag = 0;
  const { cp } = await ControlPlaneProcess.start(
    ctx,
    "s2",
    JSON.stringify(fleetConfig(P, edsPort, routeTag)),
  );
  const names = fleetNames(P);
  const sizes = buildSnapshots(validateConfig(fleetConfig(P, edsPort, routeTag))).get("fleet")!;
  const rdsBytes = [...sizes.get(TypeUrl.Route).resources.values()].reduce((n, r) => n + r.any.length, 0);
  const runs: unknown[] = [];
  const variants: { n: number; protocol: XdsProtocol; shared: boolean }[] = [];
  for (const n of P.fleetSizes)
    for (const protocol of P.fleetProtocols) variants.push({ n, protocol, shared: false });
  // One run on a single shared connection, to show what the default grpc-js pooling measures.
  variants.push({ n: ctx.long ? Math.max(...P.fleetSizes) : 100, protocol: "delta", shared: true });

  for (const v of variants) {
    const fleet = new Fleet(cp.target, "fleet", v.protocol, names, v.shared);
    cleanups.push(() => fleet.close());
    try {
      const syncMs = await fleet.grow(v.n, P.connectBatch);
      const connections = connectionsTo(cp.xdsPort);
      const eds: number[] = [];
      const rds: number[] = [];
      const edsMedianClient: number[] = [];
      const rdsMedianClient: number[] = [];
      let acksConfirmed = true;
      const serverAcked: number[] = [];
      const change = async (typeUrl: string, next: () => ConfigInput, into: number[], mid: number[]) => {
        const type = typeUrl === TypeUrl.Route ? "RouteConfiguration" : "ClusterLoadAssignment";
        const acksBefore = await cp.metric("portico_xds_acks_total", { type });
        const text = JSON.stringify(next());
        const w = fleet.waitAllNew(typeUrl);
        const t0 = performance.now();
        w.start(t0);
        cp.write(text);
        await w.done;
        into.push(percentile(w.arrivals, 100));
        mid.push(percentile(w.arrivals, 50));
        // When the control plane has recorded every ACK: its /metrics is answered by the same event
        // loop that handles the ACKs, so this also shows how long ACK processing holds that loop.
        const ok = await waitFor(
          async () => (await cp.metric("portico_xds_acks_total", { type })) >= acksBefore + v.n,
          { what: "ACK count", timeoutMs: 60_000, intervalMs: 10 },
        ).catch(() => false);
        if (!ok) acksConfirmed = false;
        serverAcked.push(ok ? performance.now() - t0 : NaN);
        await sleep(100);
      };
      for (let rep = 0; rep < P.fleetReps(v.n); rep++) {
        await change(TypeUrl.Endpoint, () => fleetConfig(P, ++edsPort, routeTag), eds, edsMedianClient);
        await change(TypeUrl.Route, () => fleetConfig(P, edsPort, ++routeTag), rds, rdsMedianClient);
      }
      runs.push({
        clients: v.n,
        reps: P.fleetReps(v.n),
        protocol: v.protocol,
        sharedConnection: v.shared,
        tcpConnections: connections,
        syncMs: round(syncMs),
        edsAllMedianMs: round(median(eds)),
        edsAllMaxMs: round(Math.max(...eds)),
        edsMedianClientMs: round(median(edsMedianClient)),
        rdsAllMedianMs: round(median(rds)),
        rdsAllMaxMs: round(Math.max(...rds)),
        rdsMedianClientMs: round(median(rdsMedianClient)),
        acksConfirmedByServer: acksConfirmed,
        serverRecordedAllAcksMedianMs: round(median(serverAcked)),
        serverRecordedAllAcksMaxMs: round(Math.max(...serverAcked)),
        clientErrors: fleet.errors,
        edsRunsMs: eds.map((x) => round(x)),
        rdsRunsMs: rds.map((x) => round(x)),
      });
      const label = `${v.n} ${protocolTag(v.protocol)} clients / ${connections} TCP conn${v.shared ? " (shared pool)" : ""}`;
      report.row(
        "2",
        `${label}: endpoint change, all ACKed, median (max)`,
        `${ms(median(eds))} (${ms(Math.max(...eds))})`,
        v.n >= 1000 ? "≤ 1 s" : undefined,
      );
      report.row(
        "2",
        `${label}: one-route change, all ACKed, median (max)`,
        `${ms(median(rds))} (${ms(Math.max(...rds))})`,
      );
      report.row(
        "2",
        `${label}:   control plane has recorded every ACK, median (max)`,
        `${ms(median(serverAcked))} (${ms(Math.max(...serverAcked))})`,
      );
      report.row(
        "2",
        `${label}: initial sync of all clients`,
        `${ms(syncMs)}${acksConfirmed ? "" : "  [server ACK count short]"}${fleet.errors ? `  [${fleet.errors} client errors]` : ""}`,
      );
    } finally {
      fleet.close();
      await cp.waitNoNodes().catch((err: Error) => report.note(`section 2: ${err.message}`));
    }
  }
  report.results.fanOut = {
    config: { routes: P.fleetRoutes, clusters: P.fleetUpstreams, routeConfigurationBytes: rdsBytes },
    runs,
  };
  report.row(
    "2",
    `(RouteConfiguration of this ${P.fleetRoutes}-route config, re-sent whole on a route change)`,
    bytes(rdsBytes),
  );
  await cp.stop();
}
