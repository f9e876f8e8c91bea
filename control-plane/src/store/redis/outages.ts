import type { Logger } from "@portico/common";

/**
 * Logs each outage of one of the store's connections once, not every reconnection attempt, and
 * only while the store is open (opening and closing report their own failures).
 */
export function logOutages(
  log: Logger,
  fields: { redis: string; connection: string },
  isOpen: () => boolean,
  follow: (lost: (err?: Error) => void, back: () => void) => void,
): void {
  let down = false;
  const lost = (err?: Error) => {
    if (down || !isOpen()) return;
    down = true;
    log.warn({ ...fields, err: err?.message }, "lost the connection to the Redis store");
  };
  follow(lost, () => {
    if (!down) return;
    down = false;
    log.info(fields, "reconnected to the Redis store");
  });
}
