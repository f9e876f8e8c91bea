import { afterEach, beforeEach, type TestContext } from "vitest";
import type { EnvoyProcess } from "./envoy.js";

const FAILURE_TAIL_LINES = 200;

type EnvoySource = EnvoyProcess | EnvoyProcess[] | (() => Iterable<EnvoyProcess | undefined>);

function resolveSource(src: EnvoySource): EnvoyProcess[] {
  const items = typeof src === "function" ? [...src()] : Array.isArray(src) ? src : [src];
  return items.filter((p): p is EnvoyProcess => p !== undefined);
}

function testFailed(ctx: TestContext): boolean {
  return ctx.task.result?.state === "fail";
}

/** Prints each Envoy's log tail when the test behind `ctx` failed. Call from your own afterEach. */
export function printEnvoyLogsIfFailed(ctx: TestContext, envoys: Iterable<EnvoyProcess>): void {
  if (!testFailed(ctx)) return;
  for (const p of envoys) {
    const state = p.exit ? `exited with ${p.exit.signal ?? `code ${p.exit.code}`}` : "running";
    console.error(
      `--- Envoy ${p.nodeId} (pid ${p.pid}, admin ${p.adminUrl}, ${state}) after failed test "${ctx.task.name}"; ` +
        `last ${FAILURE_TAIL_LINES} lines; full log: ${p.logFile} ---\n${p.logs(FAILURE_TAIL_LINES)}\n--- end of Envoy ${p.nodeId} ---`,
    );
  }
}

/**
 * Registers an afterEach that prints the Envoys' log tails when a test fails. `src` may be a
 * function so Envoys started later in beforeAll/beforeEach are picked up.
 */
export function attachLogsOnFailure(src: EnvoySource): void {
  afterEach((ctx) => printEnvoyLogsIfFailed(ctx, resolveSource(src)));
}

/**
 * Registers the failure hook and returns `track`, which wraps startEnvoy's result:
 * `const envoy = track(await startEnvoy(...))`. Only Envoys that were alive at some point
 * during the failed test are printed, so one started and stopped by an earlier test stays quiet.
 */
export function useEnvoyLogs(): <P extends EnvoyProcess>(p: P) => P {
  const tracked = new Set<EnvoyProcess>();
  // Test counter rather than timestamps: a stop in one test and the next test's start often
  // share a millisecond.
  const exitedDuring = new Map<EnvoyProcess, number>();
  let testNo = 0;
  beforeEach(() => {
    testNo++;
  });
  afterEach((ctx) => {
    const relevant = [...tracked].filter((p) => {
      const n = exitedDuring.get(p);
      return n === undefined || n === testNo;
    });
    printEnvoyLogsIfFailed(ctx, relevant);
  });
  return (p) => {
    tracked.add(p);
    void p.exited.then(() => exitedDuring.set(p, testNo));
    return p;
  };
}
