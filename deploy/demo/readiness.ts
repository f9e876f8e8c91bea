import type { DemoProblem } from "./ports.js";

/** A service is ready when `url` answers 200 (`/readyz`, or Envoy's `/ready`). */
export interface ReadinessCheck {
  name: string;
  url: string;
}

export interface WaitOptions {
  timeoutMs?: number;
  intervalMs?: number;
  /** Called once per service, as it becomes ready. */
  onReady?: (name: string, afterMs: number) => void;
  /** Called every `progressMs` while some are not: each with what it last answered. */
  onWaiting?: (pending: readonly { name: string; last: string }[]) => void;
  progressMs?: number;
  /** A reason to give up at once (a service exited), checked on every round. */
  failed?: () => DemoProblem | undefined;
}

/** What one probe saw: ready, or what it answered instead (a status and body, or the error). */
async function probe(url: string): Promise<true | string> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(1_000) });
    const body = (await res.text()).trim().slice(0, 120);
    return res.status === 200 ? true : `${res.status}${body ? ` ${body}` : ""}`;
  } catch (err) {
    const cause = (err as { cause?: { code?: string } }).cause?.code;
    return cause === "ECONNREFUSED" ? "not listening yet" : (cause ?? (err as Error).message);
  }
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * Polls every check until all are ready. Resolves undefined then, or with the problem: a service
 * that exited (`failed`), or those still not ready at the deadline and what each answered.
 */
export async function waitUntilReady(
  checks: readonly ReadinessCheck[],
  opts: WaitOptions = {},
): Promise<DemoProblem | undefined> {
  const started = Date.now();
  const deadline = started + (opts.timeoutMs ?? 120_000);
  const progressMs = opts.progressMs ?? 5_000;
  let nextProgress = started + progressMs;
  const pending = new Map(checks.map((c) => [c.name, { check: c, last: "not asked yet" }]));
  for (;;) {
    const problem = opts.failed?.();
    if (problem) return problem;
    await Promise.all(
      [...pending.values()].map(async (p) => {
        const seen = await probe(p.check.url);
        if (seen === true) {
          pending.delete(p.check.name);
          opts.onReady?.(p.check.name, Date.now() - started);
        } else p.last = seen;
      }),
    );
    if (pending.size === 0) return undefined;
    const now = Date.now();
    const waiting = [...pending.values()].map((p) => ({ name: p.check.name, last: p.last }));
    if (now >= deadline)
      return {
        code: "not_ready",
        message: `not ready after ${Math.round((now - started) / 1000)} s: ${waiting
          .map((w) => `${w.name} (${w.last})`)
          .join(", ")}`,
      };
    if (now >= nextProgress) {
      opts.onWaiting?.(waiting);
      nextProgress = now + progressMs;
    }
    await sleep(opts.intervalMs ?? 150);
  }
}
