/**
 * Gives memory back to the system once a busy spell is over, as Go's scavenger does.
 *
 * A push to a large fleet makes hundreds of MiB of short-lived objects. V8 frees them, but keeps the
 * pages they lived on: with 10,000 routes and 1,000 delta Envoys synced, about 40 MiB of resident
 * memory, most of which no heap statistic counts (`bench/xds.ts` section 6). Only a last-resort collection
 * (every reachable object compacted, pooled pages returned) hands them back. It takes 100–200 ms
 * of the main thread at that size (measured), so it runs only when the event loop has been nearly
 * idle for two whole samples (a second) after a busy one, and at most once per busy spell: changes
 * that follow each other within a second never wait for it, and one that arrives during it waits
 * that long, once.
 */
import { performance, type EventLoopUtilization } from "node:perf_hooks";
import v8 from "node:v8";
import vm from "node:vm";

export interface IdleReleaseOptions {
  /** How often the event loop's utilization is sampled, ms. */
  sampleMs?: number;
  /** A sample at or above this utilization marks a busy spell. */
  busyAt?: number;
  /** Samples below this utilization, after a busy spell, count as quiet. */
  idleBelow?: number;
  /** Quiet samples in a row that release. */
  quietSamples?: number;
}

/** The decision alone, one sample of the event loop's utilization at a time: true when this one should release. */
export class IdleReleasePolicy {
  private busy = false;
  private quiet = 0;

  constructor(
    private readonly busyAt: number,
    private readonly idleBelow: number,
    private readonly quietSamples: number,
  ) {
    if (!(idleBelow > 0 && idleBelow <= busyAt && busyAt <= 1))
      throw new Error(`idle release: need 0 < idleBelow (${idleBelow}) ≤ busyAt (${busyAt}) ≤ 1`);
    if (!(Number.isInteger(quietSamples) && quietSamples >= 1))
      throw new Error(`idle release: quietSamples must be a positive integer, got ${quietSamples}`);
  }

  next(utilization: number): boolean {
    if (utilization >= this.busyAt) {
      this.busy = true;
      this.quiet = 0;
      return false;
    }
    if (!this.busy) return false;
    this.quiet = utilization < this.idleBelow ? this.quiet + 1 : 0;
    if (this.quiet < this.quietSamples) return false;
    this.busy = false;
    this.quiet = 0;
    return true;
  }
}

type GcFunction = (options?: { type: string; execution: string; flavor: string }) => void;

let gcFunction: GcFunction | undefined;

/** V8's collector, fetched once through a fresh context, since the process need not start with `--expose-gc`. */
function collector(): GcFunction {
  if (gcFunction) return gcFunction;
  v8.setFlagsFromString("--expose-gc");
  const gc = vm.runInNewContext("gc") as unknown;
  if (typeof gc !== "function") throw new Error("V8 did not expose its collector");
  gcFunction = gc as GcFunction;
  return gcFunction;
}

export interface Release {
  /** Resident memory before and after, bytes. */
  rssBefore: number;
  rssAfter: number;
  ms: number;
}

/** One last-resort collection, now. */
export function releaseNow(): Release {
  const gc = collector();
  const rssBefore = process.memoryUsage.rss();
  const t0 = performance.now();
  gc({ type: "major", execution: "sync", flavor: "last-resort" });
  return { rssBefore, rssAfter: process.memoryUsage.rss(), ms: performance.now() - t0 };
}

/**
 * Samples the event loop every `sampleMs` (an unref'd timer: it keeps nothing alive) and releases
 * after each busy spell. `onRelease` hears what each release did; `stop` ends the sampling.
 */
export function startIdleRelease(
  onRelease: (r: Release) => void,
  opts: IdleReleaseOptions = {},
): { stop(): void } {
  const policy = new IdleReleasePolicy(opts.busyAt ?? 0.25, opts.idleBelow ?? 0.05, opts.quietSamples ?? 2);
  collector();
  let last: EventLoopUtilization = performance.eventLoopUtilization();
  const timer = setInterval(() => {
    const now = performance.eventLoopUtilization();
    const utilization = performance.eventLoopUtilization(now, last).utilization;
    last = now;
    if (policy.next(utilization)) {
      onRelease(releaseNow());
      // The collection's own time is not the next sample's load.
      last = performance.eventLoopUtilization();
    }
  }, opts.sampleMs ?? 500);
  timer.unref();
  return { stop: () => clearInterval(timer) };
}
