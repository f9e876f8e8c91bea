import type { Redis } from "ioredis";
import type { Logger } from "@portico/common";
import { StoreUnavailableError } from "../types.js";

/**
 * A commit is acknowledged once Redis has applied it, which survives a Redis restart only with AOF
 * persistence (`appendonly yes`; `appendfsync always` for no loss at all, `everysec` loses up to a
 * second). With replicas, WAIT makes a commit wait until that many replicas have it, so a failover
 * does not lose it; without it, a failover to a lagging replica can drop the newest revisions.
 */

/**
 * Waits until `replicas` replicas have the writes made so far on `home`, the connection that made
 * the commit. Rejects when fewer acknowledged within `timeoutMs`: the revision is written all the
 * same, but a failover may lose it.
 */
export async function awaitReplicas(
  home: Redis,
  revision: number,
  replicas: number,
  timeoutMs: number,
): Promise<void> {
  const acked = await home.wait(replicas, timeoutMs);
  if (acked < replicas) {
    throw new StoreUnavailableError(
      `revision ${revision} was written but only ${acked} of ${replicas} replicas acknowledged it within ` +
        `${timeoutMs}ms; it may be lost if Redis fails over`,
    );
  }
}

/** Warns when the server holding the keys (when known yet) does not persist what it is sent. */
export async function warnIfVolatile(home: Redis | undefined, log: Logger, where: string): Promise<void> {
  if (!home) return;
  try {
    const reply = (await home.config("GET", "appendonly")) as unknown;
    const flat = Array.isArray(reply) ? reply.flat() : [];
    if (flat[1] === "no") {
      log.warn(
        { redis: where },
        "Redis runs without AOF persistence: committed revisions are lost if it restarts",
      );
    }
  } catch {
    // Managed Redis services often disable CONFIG; their persistence is theirs to document.
  }
}
