// Section 7: two control-plane replicas on one Redis, the simulated fleet split between them; a
// write with ?wait=applied on replica A answers only once the clients on B applied it too.
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { TypeUrl } from "@portico/control-plane";
import { startAdmin, startRedis, type AdminHandle, type RedisServer } from "@portico/testing";
import { median } from "../lib/stats.js";
import { fleetConfig, fleetNames } from "./configs.js";
import type { BenchContext } from "./context.js";
import { Fleet } from "./fleet.js";
import { ms } from "./format.js";

export async function replicasSection(ctx: BenchContext): Promise<void> {
  const { params: P, cleanups, report } = ctx;
  console.log(
    `\n[7] ?wait=applied across two replicas on Redis, ${P.replicaClients} clients split between them`,
  );
  let redis: RedisServer;
  try {
    redis = await startRedis();
  } catch (err) {
    report.note(`section 7 skipped: ${(err as Error).message.split("\n")[0]}`);
    return;
  }
  cleanups.push(() => redis.stop());
  const a: AdminHandle = await startAdmin({ store: redis.url });
  cleanups.push(() => a.stop());
  const b: AdminHandle = await startAdmin({ store: redis.url });
  cleanups.push(() => b.stop());
  const put = async (routeTag: number) => {
    const res = await a.call("PUT", "/api/v1/config?wait=applied&timeout=60s", {
      body: fleetConfig(P, 20_000, routeTag),
    });
    if (res.status !== 200)
      throw new Error(`PUT /api/v1/config answered ${res.status}: ${res.text.slice(0, 300)}`);
    return res.json as { rollout: { applied: boolean; nodes: { id: string; state: string }[] } };
  };
  await put(0);
  const half = Math.floor(P.replicaClients / 2);
  const onA = new Fleet(`127.0.0.1:${a.cp.xdsPort}`, "fleet", "sotw", fleetNames(P), false);
  const onB = new Fleet(`127.0.0.1:${b.cp.xdsPort}`, "fleet", "delta", fleetNames(P), false);
  cleanups.push(() => onA.close());
  cleanups.push(() => onB.close());
  await onA.grow(half, 25);
  await onB.grow(P.replicaClients - half, 25);
  // Until both replicas have published their nodes, the fleet view is still filling.
  await sleep(1500);

  const answers: number[] = [];
  let lateAtAnswer = 0;
  let covered = 0;
  let applied = 0;
  for (let k = 1; k <= P.replicaRounds; k++) {
    const waits = [onA.waitAllNew(TypeUrl.Route), onB.waitAllNew(TypeUrl.Route)];
    const t0 = performance.now();
    for (const w of waits) w.start(t0);
    const body = await put(k);
    answers.push(performance.now() - t0);
    // Every client must hold the change by the time the write answered.
    for (const w of waits) lateAtAnswer += w.arrivals.filter((x) => Number.isNaN(x)).length;
    covered += body.rollout.nodes.length;
    if (body.rollout.applied) applied++;
    await Promise.all(waits.map((w) => w.done));
  }
  onA.close();
  onB.close();
  report.row(
    "7",
    `PUT on replica A ?wait=applied → answer, ${P.replicaClients} clients (half on B), median, measured`,
    ms(median(answers)),
  );
  report.row(
    "7",
    `  nodes in each answer (of ${P.replicaClients}), answers 'applied', clients not yet applied at the answer`,
    `${covered / P.replicaRounds}, ${applied}/${P.replicaRounds}, ${lateAtAnswer}`,
    `${P.replicaClients}, all, 0`,
  );
  report.results.replicas = {
    clients: P.replicaClients,
    rounds: P.replicaRounds,
    answerMs: answers,
    nodesPerAnswer: covered / P.replicaRounds,
    appliedAnswers: applied,
    clientsLateAtAnswer: lateAtAnswer,
  };
}
