// Sections 3–5 on one 10k-route config: cold push, bytes per change, memory with a fleet.
import { freePorts, startHttpUpstream } from "@portico/testing";
import { bytesPerChange } from "./bytes-per-change.js";
import { coldPush } from "./cold-push.js";
import { bigConfig, type BigConfigState } from "./configs.js";
import type { BenchContext } from "./context.js";
import { memoryBaseline, memoryWithFleet } from "./memory.js";

/** Sections 3 and 4 always run (5's baselines come from them); 5's fleet runs when `withFleet`. */
export async function bigConfigSections(ctx: BenchContext, withFleet: boolean): Promise<void> {
  const { params: P, cleanups, report } = ctx;
  const upstream = await startHttpUpstream("big");
  cleanups.push(() => upstream.close());
  const [bigPort, onePort] = await freePorts(2);
  const state: BigConfigState = {
    bigPort,
    onePort,
    upstreamPort: upstream.port,
    routeTag: 0,
    endpointTag: 0,
  };

  const { cp, rssSmall, rssFresh, rdsBytes } = await coldPush(
    ctx,
    JSON.stringify(bigConfig(P, state)),
    bigPort,
  );
  await bytesPerChange(ctx, cp, state, rdsBytes);
  await memoryBaseline(ctx, cp, rssSmall, rssFresh);
  await cp.stop();

  if (withFleet) {
    report.results.memory = {};
    const text = JSON.stringify(bigConfig(P, state));
    for (const protocol of ctx.long ? (["sotw", "delta"] as const) : (["sotw"] as const))
      await memoryWithFleet(ctx, protocol, text);
  }
}
