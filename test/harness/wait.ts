import { inspect } from "node:util";

export interface WaitForOptions {
  /** Default 10 000 ms. */
  timeoutMs?: number;
  /** Pause between attempts; default 100 ms. */
  intervalMs?: number;
  /** Names the awaited condition in the timeout error, e.g. "listener http_8080 in LDS". */
  what: string;
}

type Pending = undefined | null | false;

const TIMED_OUT: unique symbol = Symbol("timed out");

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

function show(value: unknown): string {
  return inspect(value, { depth: 3, breakLength: Infinity, maxStringLength: 500 });
}

/**
 * Polls `fn` until it yields something other than undefined, null or false, and returns that.
 * A throw counts as "not yet". On timeout the error names `what` and the last throw or value,
 * which is usually the fastest clue to why a condition never held.
 */
export async function waitFor<T>(
  fn: () => Promise<T | Pending> | T | Pending,
  opts: WaitForOptions,
): Promise<T> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const intervalMs = opts.intervalMs ?? 100;
  // Captured now, while the caller is still on the stack, so a timeout points at the test line
  // rather than at this file.
  const site: { stack?: string } = {};
  Error.captureStackTrace(site, waitFor);
  const started = Date.now();
  const deadline = started + timeoutMs;
  let attempts = 0;
  let last: { error: unknown } | { value: unknown } | undefined;

  for (;;) {
    attempts++;
    let timer: NodeJS.Timeout | undefined;
    try {
      const attempt = Promise.resolve().then(fn);
      // A hung attempt must not stretch the wait past its deadline; its late rejection is moot.
      attempt.catch(() => {});
      const result = await Promise.race([
        attempt,
        new Promise<typeof TIMED_OUT>((resolve) => {
          timer = setTimeout(() => resolve(TIMED_OUT), Math.max(deadline - Date.now(), 0));
        }),
      ]);
      if (result === TIMED_OUT) {
        last ??= { error: new Error("the only attempt was still running at the deadline") };
      } else if (result !== undefined && result !== null && result !== false) {
        return result;
      } else {
        last = { value: result };
      }
    } catch (error) {
      last = { error };
    } finally {
      clearTimeout(timer);
    }
    const now = Date.now();
    if (now >= deadline) break;
    // The attempt after the final sleep runs at the deadline, so a condition that became true
    // during the last interval is still seen.
    await sleep(Math.min(intervalMs, deadline - now));
  }

  let detail: string;
  if (last === undefined) detail = "no attempt completed";
  else if ("error" in last) {
    detail = `last error: ${last.error instanceof Error ? last.error.message : show(last.error)}`;
  } else detail = `last value: ${show(last.value)}`;
  const message = `timed out after ${Date.now() - started}ms (${attempts} attempts) waiting for ${opts.what}; ${detail}`;
  const err = new Error(message, last && "error" in last ? { cause: last.error } : undefined);
  const frames = site.stack?.split("\n").slice(1).join("\n");
  if (frames) err.stack = `Error: ${message}\n${frames}`;
  throw err;
}
