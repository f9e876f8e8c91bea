import type { Logger } from "./log.js";

/** Whether the service has begun to stop (it then reports not ready and takes no new work). */
export interface Stopping {
  readonly stopping: boolean;
}

/**
 * Stops the service once, on SIGTERM or SIGINT: runs `steps` in order, each awaited; a step that
 * fails is logged and the rest still run, so buffered spans and open streams are closed whatever
 * went wrong before. Then the process exits 0. A second signal while stopping changes nothing.
 */
export function stopOnSignals(
  log: Logger,
  steps: readonly (() => unknown)[],
  message = "shutting down",
): Stopping {
  const state = { stopping: false };
  const stop = async (signal: string) => {
    if (state.stopping) return;
    state.stopping = true;
    log.info({ signal }, message);
    for (const step of steps) {
      try {
        await step();
      } catch (err) {
        log.warn({ err: (err as Error).message }, "shutdown step failed");
      }
    }
    process.exit(0);
  };
  process.on("SIGTERM", () => void stop("SIGTERM"));
  process.on("SIGINT", () => void stop("SIGINT"));
  return state;
}
