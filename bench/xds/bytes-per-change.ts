// Section 4: bytes on the wire for one change to the 10k config, delta vs SotW.
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { TypeUrl } from "@portico/control-plane";
import { bigConfig, bigNames, type BigConfigState } from "./configs.js";
import type { BenchContext } from "./context.js";
import type { ControlPlaneProcess } from "./control-plane.js";
import { Fleet } from "./fleet.js";
import { bytes, ms, round } from "./format.js";

/** `state` is the config `cp` serves; a one-route and a one-endpoint change are made to it. */
export async function bytesPerChange(
  ctx: BenchContext,
  cp: ControlPlaneProcess,
  state: BigConfigState,
  rdsBytes: number,
): Promise<void> {
  const { params: P, cleanups, report } = ctx;
  console.log("\n[4] bytes on the wire for one change, 10k config");
  const names = bigNames(P);
  const pair = {
    delta: new Fleet(cp.target, "big", "delta", names, false),
    sotw: new Fleet(cp.target, "big", "sotw", names, false),
  };
  cleanups.push(() => {
    pair.delta.close();
    pair.sotw.close();
  });
  await Promise.all([pair.delta.grow(1, P.connectBatch), pair.sotw.grow(1, P.connectBatch)]);
  const initial = { delta: pair.delta.totalBytes, sotw: pair.sotw.totalBytes };
  const measureBytes = async (typeUrl: string, kind: "route" | "endpoint") => {
    if (kind === "route") state.routeTag++;
    else state.endpointTag++;
    const next = JSON.stringify(bigConfig(P, state));
    const buildBefore = await cp.metric("portico_snapshot_build_seconds_sum");
    const wd = pair.delta.waitAllNew(typeUrl);
    const ws = pair.sotw.waitAllNew(typeUrl);
    const t0 = performance.now();
    wd.start(t0);
    ws.start(t0);
    cp.write(next);
    await Promise.all([wd.done, ws.done]);
    // Anything else the change causes (it should be nothing) arrives within this quiet period.
    await sleep(500);
    const buildS = (await cp.metric("portico_snapshot_build_seconds_sum")) - buildBefore;
    return {
      controlPlaneBuildMs: round(buildS * 1000),
      deltaBytes: wd.bytes(),
      sotwBytes: ws.bytes(),
      deltaLatencyMs: round(wd.arrivals[0]!),
      sotwLatencyMs: round(ws.arrivals[0]!),
    };
  };
  const routeChange = await measureBytes(TypeUrl.Route, "route");
  const endpointChange = await measureBytes(TypeUrl.Endpoint, "endpoint");
  pair.delta.close();
  pair.sotw.close();
  report.row(
    "4",
    "initial sync, bytes received: delta / SotW",
    `${bytes(initial.delta)} / ${bytes(initial.sotw)}`,
  );
  report.row(
    "4",
    "one-route change, bytes received: delta / SotW",
    `${bytes(routeChange.deltaBytes)} / ${bytes(routeChange.sotwBytes)}`,
  );
  report.row(
    "4",
    "one-endpoint change, bytes received: delta / SotW",
    `${bytes(endpointChange.deltaBytes)} / ${bytes(endpointChange.sotwBytes)}`,
  );
  report.row(
    "4",
    "file write → update at the client, route / endpoint change",
    `${ms(routeChange.deltaLatencyMs ?? NaN)} / ${ms(endpointChange.deltaLatencyMs ?? NaN)}`,
  );
  report.row(
    "4",
    "  of which translate + encode in the control plane (its own histogram)",
    `${ms(routeChange.controlPlaneBuildMs ?? NaN)} / ${ms(endpointChange.controlPlaneBuildMs ?? NaN)}`,
  );
  report.row(
    "4",
    "  note: one RouteConfiguration per listener → a route change re-sends the whole table",
    `(${bytes(rdsBytes)}) under both protocols`,
  );
  report.results.bytesPerChange = {
    initialSync: initial,
    routeChange,
    endpointChange,
    routeConfigurationBytes: rdsBytes,
  };
  await cp.waitNoNodes().catch((err: Error) => report.note(`section 4: ${err.message}`));
}
