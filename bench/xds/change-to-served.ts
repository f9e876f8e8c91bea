// Section 1: a config change → the first 200 through a real Envoy.
import http from "node:http";
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { TypeUrl } from "@portico/control-plane";
import { freePort, startHttpUpstream, waitFor } from "@portico/testing";
import { percentile } from "../lib/stats.js";
import { AdsLoadClient } from "./ads-load-client.js";
import { changeConfig } from "./configs.js";
import type { BenchContext } from "./context.js";
import { ControlPlaneProcess } from "./control-plane.js";
import { startBenchEnvoy, timedGet } from "./envoy.js";
import { ms, protocolTag, round } from "./format.js";

export async function changeToServed(ctx: BenchContext): Promise<void> {
  const { params: P, cleanups, report } = ctx;
  console.log("\n[1] config change → first 200 through a real Envoy");
  const upstream = await startHttpUpstream("probe");
  cleanups.push(() => upstream.close());
  const listenPort = await freePort();
  const { cp } = await ControlPlaneProcess.start(
    ctx,
    "s1",
    JSON.stringify(changeConfig(listenPort, upstream.port, undefined)),
  );
  const base = `http://127.0.0.1:${listenPort}`;
  const out: Record<string, unknown> = { changes: P.changes, warmup: P.warmupChanges };
  let seq = 0;

  for (const protocol of P.s1Protocols) {
    const { e, stop } = await startBenchEnvoy(cleanups, {
      nodeId: `bench-${protocol}`,
      group: "bench",
      xdsPort: cp.xdsPort,
      protocol,
    });
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    // A second ADS client beside Envoy: when the push left the control plane, as opposed to when
    // Envoy served it.
    const observer = new AdsLoadClient({
      target: cp.target,
      node: { id: `observer-${protocol}`, cluster: "bench" },
      protocol: "delta",
    });
    observer.on("error", () => {});
    let lastRoutePush = 0;
    observer.on("update", (u) => {
      if (u.typeUrl === TypeUrl.Route) lastRoutePush = performance.now();
    });
    observer.subscribe(TypeUrl.Route);
    try {
      await e.waitReady({ timeoutMs: 30_000, intervalMs: 20 });
      await waitFor(async () => (await timedGet(`${base}/base`, agent)).status === 200, {
        what: "GET /base through Envoy",
        timeoutMs: 10_000,
        intervalMs: 20,
      });
      await waitFor(() => lastRoutePush > 0, { what: "observer RDS", timeoutMs: 10_000, intervalMs: 10 });

      const floor: number[] = [];
      for (let k = 0; k < 50 + P.baselineRequests; k++) {
        const t = performance.now();
        const r = await timedGet(`${base}/base`, agent);
        if (k >= 50 && r.status === 200) floor.push(r.at - t);
      }

      const served: number[] = [];
      const pushed: number[] = [];
      let polls = 0;
      let failures = 0;
      for (let k = 0; k < P.warmupChanges + P.changes; k++) {
        const i = ++seq;
        const text = JSON.stringify(changeConfig(listenPort, upstream.port, i));
        const url = `${base}/probe-${i}`;
        const t0 = performance.now();
        cp.write(text);
        let at = NaN;
        const deadline = t0 + 10_000;
        for (;;) {
          polls++;
          const r = await timedGet(url, agent).catch(() => undefined);
          if (r?.status === 200) {
            at = r.at;
            break;
          }
          if (performance.now() > deadline) break;
          await sleep(1);
        }
        if (Number.isNaN(at)) failures++;
        if (lastRoutePush <= t0) await sleep(200);
        if (k >= P.warmupChanges) {
          served.push(at - t0);
          pushed.push(lastRoutePush > t0 ? lastRoutePush - t0 : NaN);
        }
        await sleep(20);
      }
      const r = {
        floorP50: percentile(floor, 50),
        floorP99: percentile(floor, 99),
        servedP50: percentile(served, 50),
        servedP90: percentile(served, 90),
        servedP99: percentile(served, 99),
        servedMax: percentile(served, 100),
        pushP50: percentile(pushed, 50),
        pushP99: percentile(pushed, 99),
        failures,
        pollsPerChange: polls / (P.warmupChanges + P.changes),
      };
      out[protocol] = { ...r, servedMs: served.map((v) => round(v)) };
      const tag = protocolTag(protocol);
      report.row(
        "1",
        `${tag} Envoy: plain request through Envoy (floor) p50 / p99`,
        `${ms(r.floorP50)} / ${ms(r.floorP99)}`,
      );
      report.row("1", `${tag} Envoy: file write → first 200 on /probe-<i>, p50`, ms(r.servedP50));
      report.row(
        "1",
        `${tag} Envoy: file write → first 200 on /probe-<i>, p99 (max)`,
        `${ms(r.servedP99)} (${ms(r.servedMax)})`,
        "≤ 150 ms",
      );
      report.row(
        "1",
        `${tag} Envoy: file write → RDS push at an ADS observer, p50 / p99`,
        `${ms(r.pushP50)} / ${ms(r.pushP99)}`,
      );
      if (failures) report.row("1", `${tag} Envoy: changes never served within 10 s`, String(failures));
    } finally {
      observer.close();
      agent.destroy();
      await stop();
    }
  }
  report.results.changeToServed = out;
  await cp.stop();
}
