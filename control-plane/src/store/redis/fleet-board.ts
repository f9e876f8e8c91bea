import type { Cluster, Redis } from "ioredis";

/**
 * Where control-plane replicas share what their connected nodes applied: one entry per replica,
 * which expires unless its replica keeps it alive, so a replica that dies takes its nodes with it.
 */
export interface FleetBoard {
  /** Writes this replica's entry; it expires after `ttlMs` unless written or touched again. */
  put(replica: string, entry: string, ttlMs: number): Promise<void>;
  /** Extends the entry's life; false when it had expired already (write it again). */
  touch(replica: string, ttlMs: number): Promise<boolean>;
  remove(replica: string): Promise<void>;
  /** Every live replica's entry. */
  read(): Promise<Map<string, string>>;
  /** Called with the replica that wrote its entry (not for expiries: read again for those). */
  watch(listener: (replica: string) => void): () => void;
}

export interface FleetBoardKeys {
  /** Sorted set: member = replica, score = when its entry expires (ms since the epoch). */
  index: string;
  /** `entryPrefix` + replica holds that replica's entry. */
  entryPrefix: string;
  /** Pub/sub channel carrying the replica that wrote. */
  channel: string;
}

/** The store's connection seen through the store's own timeouts and availability checks. */
export type RunCommand = <T>(what: string, fn: (cmd: Redis | Cluster) => Promise<T>) => Promise<T>;

/** A fleet board in the store's Redis; every key shares the store's hash tag (one Cluster slot). */
export function redisFleetBoard(
  keys: FleetBoardKeys,
  run: RunCommand,
  listeners: Set<(replica: string) => void>,
): FleetBoard {
  const entry = (replica: string) => `${keys.entryPrefix}${replica}`;
  return {
    async put(replica, text, ttlMs) {
      await run("publish the fleet state", (cmd) =>
        cmd
          .multi()
          .set(entry(replica), text, "PX", ttlMs)
          .zadd(keys.index, Date.now() + ttlMs, replica)
          .exec(),
      );
      await run("announce the fleet state", (cmd) => cmd.publish(keys.channel, replica));
    },
    async touch(replica, ttlMs) {
      const alive = await run("keep the fleet state alive", (cmd) => cmd.pexpire(entry(replica), ttlMs));
      if (alive !== 1) return false;
      await run("keep the fleet state alive", (cmd) => cmd.zadd(keys.index, Date.now() + ttlMs, replica));
      return true;
    },
    async remove(replica) {
      await run("remove the fleet state", (cmd) =>
        cmd.multi().del(entry(replica)).zrem(keys.index, replica).exec(),
      );
      await run("announce the fleet state", (cmd) => cmd.publish(keys.channel, replica));
    },
    async read() {
      const now = Date.now();
      const replicas = await run("read the fleet state", (cmd) => cmd.zrangebyscore(keys.index, now, "+inf"));
      const out = new Map<string, string>();
      if (replicas.length === 0) return out;
      const texts = await run("read the fleet state", (cmd) => cmd.mget(replicas.map(entry)));
      replicas.forEach((r, i) => {
        const t = texts[i];
        if (typeof t === "string") out.set(r, t);
      });
      // Replicas that died leave their index member behind; their entries expired on their own.
      await run("tidy the fleet state", (cmd) => cmd.zremrangebyscore(keys.index, "-inf", now - 1));
      return out;
    },
    watch(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
  };
}
