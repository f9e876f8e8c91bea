// Section 5: the control plane's memory with the 10k config, alone and with a connected fleet.
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { TypeUrl, type ConfigInput } from "@portico/control-plane";
import type { XdsProtocol } from "@portico/envoy";
import { connectionsTo } from "../lib/proc.js";
import { percentile } from "../lib/stats.js";
import { bigNames } from "./configs.js";
import type { BenchContext } from "./context.js";
import { ControlPlaneProcess } from "./control-plane.js";
import { Fleet } from "./fleet.js";
import { bytes, heapText, mib, ms, protocolTag, round } from "./format.js";

/**
 * What sections 3–4 (two changes, a few Envoy syncs) leave behind in `cp` with no clients, beside
 * the runtime's baseline (`rssSmall`) and the same config freshly started (`rssFresh`).
 */
export async function memoryBaseline(
  ctx: BenchContext,
  cp: ControlPlaneProcess,
  rssSmall: number,
  rssFresh: number,
): Promise<void> {
  const { report } = ctx;
  const rssAfter34 = await cp.rss();
  const heapAfter34 = await cp.heap();
  report.row("5", "RSS with a 100-route config, no clients (same binary: runtime baseline)", mib(rssSmall));
  report.row("5", "RSS with the 10k config, no clients, fresh start", mib(rssFresh));
  report.row(
    "5",
    "  same process after sections 3-4 (6 Envoy syncs, 2 changes), no clients",
    `${mib(rssAfter34)}  ${heapText(heapAfter34)}`,
  );
  report.results.memoryBaseline = {
    rssSmallConfigKiB: rssSmall,
    rssFreshKiB: rssFresh,
    rssAfterSections34KiB: rssAfter34,
    heapAfter34,
  };
}

/** A fresh control plane on `text` (the 10k config), so the baseline is clean, then a fleet. */
export async function memoryWithFleet(ctx: BenchContext, protocol: XdsProtocol, text: string): Promise<void> {
  const { params: P, cleanups, report } = ctx;
  const tag = protocolTag(protocol);
  console.log(`\n[5] control-plane RSS with ${P.rssClients} connected ${tag} clients, 10k config`);
  const { cp } = await ControlPlaneProcess.start(ctx, `mem-${protocol}`, text);
  await sleep(3000);
  const rssNone = await cp.rss();
  const heapNone = await cp.heap();
  const peaks = cp.peakSampler();
  cleanups.push(() => peaks.stop());
  const fleet = new Fleet(cp.target, "big", protocol, bigNames(P), false);
  cleanups.push(() => fleet.close());
  try {
    const syncMs = await fleet.grow(P.rssClients, 50, 300_000);
    const connections = connectionsTo(cp.xdsPort);
    const rampPeak = peaks.take();
    await sleep(3000);
    const rssWith = await cp.rss();
    const heapWith = await cp.heap();
    // A one-route change on the 10k table, fanned out to the whole fleet.
    peaks.take();
    const config = JSON.parse(text) as ConfigInput;
    const r = config.routes!.find((x) => x.name === "r-05000")!;
    r.match = { pathPrefix: "/svc-5000-mem/" };
    const w = fleet.waitAllNew(TypeUrl.Route, 300_000);
    const t0 = performance.now();
    w.start(t0);
    cp.write(config);
    await w.done;
    const fanMs = percentile(w.arrivals, 100);
    const fanPeak = peaks.take();
    await sleep(2000);
    const rssAfterChange = await cp.rss();
    fleet.close();
    await cp.waitNoNodes().catch((err: Error) => report.note(`section 5: ${err.message}`));
    await sleep(2000);
    const rssAfterClose = await cp.rss();
    const heapAfterClose = await cp.heap();
    const grew = rssWith - rssNone;
    report.row(
      "5",
      `${tag}: RSS, 10k config, no clients (fresh process)`,
      `${mib(rssNone)}  ${heapText(heapNone)}`,
    );
    report.row(
      "5",
      `${tag}: RSS with ${P.rssClients} synced clients (${connections} TCP conn.)`,
      `${mib(rssWith)}  ${heapText(heapWith)}`,
      P.rssClients >= 1000 ? "≤ 300 MiB" : undefined,
    );
    report.row(
      "5",
      `${tag}:   growth with the clients (${mib(grew)}) per client`,
      `${(grew / P.rssClients).toFixed(0)} KiB`,
    );
    report.row(
      "5",
      `${tag}:   peak RSS while they connected (batches of 50), time to sync all`,
      `${mib(rampPeak)}, ${ms(syncMs)}`,
    );
    report.row(
      "5",
      `${tag}: one-route change → all ${P.rssClients} ACKed (${bytes(w.bytes())} received in total)`,
      ms(fanMs),
    );
    report.row(
      "5",
      `${tag}:   peak RSS during that fan-out / after it / after clients left`,
      `${mib(fanPeak)} / ${mib(rssAfterChange)} / ${mib(rssAfterClose)}`,
    );
    const memory = (report.results.memory ??= {}) as Record<string, unknown>;
    memory[protocol] = {
      clients: P.rssClients,
      tcpConnections: connections,
      rssNoClientsKiB: rssNone,
      heapNoClients: heapNone,
      rssWithClientsKiB: rssWith,
      heapWithClients: heapWith,
      rampPeakKiB: rampPeak,
      syncMs: round(syncMs),
      fanOut: {
        allAckedMs: round(fanMs),
        medianClientMs: round(percentile(w.arrivals, 50)),
        bytesReceived: w.bytes(),
        peakRssKiB: fanPeak,
      },
      rssAfterChangeKiB: rssAfterChange,
      rssAfterCloseKiB: rssAfterClose,
      heapAfterClose,
      clientErrors: fleet.errors,
    };
  } finally {
    peaks.stop();
    fleet.close();
    await cp.stop();
  }
}
