import type { Logger } from "@portico/common";
import type { Revision } from "./types.js";

/**
 * Hands every watcher its own copy of a new head (`text`, the revision's JSON), so none can change
 * what the others see; one that throws is logged and does not keep the rest from hearing of it.
 */
export function notifyWatchers(
  listeners: ReadonlySet<(rev: Revision) => void>,
  number: number,
  text: string,
  log: Logger,
): void {
  for (const listener of [...listeners]) {
    try {
      listener(JSON.parse(text) as Revision);
    } catch (err) {
      log.error({ revision: number, err: (err as Error).message }, "a store watcher failed");
    }
  }
}
