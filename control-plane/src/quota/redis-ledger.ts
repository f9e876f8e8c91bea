/**
 * The ledger of control planes on the Redis store: every replica adds the usage its Envoys report
 * to the same counts (INCRBY, expiring at the period's end) and records denies in one sorted set
 * (score: when the deny lifts), announced on a channel so every replica pushes them to its Envoys.
 * Nothing is lost when a replica crashes but the usage its Envoys had not flushed yet, and what
 * Redis itself would lose (its persistence settings).
 */
import type { Cluster, Redis } from "ioredis";
import { denyFromMember, denyMember, type UsageIncrement, type UsageLedger } from "./ledger.js";
import type { QuotaDeny } from "../model/usage-quota.js";

export interface UsageLedgerKeys {
  /** `counterPrefix` + increment key holds a count. */
  counterPrefix: string;
  /** Sorted set: member = a deny (JSON), score = when it lifts (ms since the epoch). */
  denies: string;
  /** Pub/sub channel: a deny was recorded. */
  channel: string;
}

/** The store's connection seen through the store's own timeouts and availability checks. */
export type RunCommand = <T>(what: string, fn: (cmd: Redis | Cluster) => Promise<T>) => Promise<T>;

/** A count outlives its period by this much, so that a replica whose clock lags reads it whole. */
const EXPIRY_MARGIN_MS = 60_000;

export function redisUsageLedger(
  keys: UsageLedgerKeys,
  run: RunCommand,
  listeners: Set<() => void>,
): UsageLedger {
  return {
    kind: "redis",
    async add(increments) {
      if (increments.length === 0) return [];
      // One round trip per batch; the keys share the store's hash tag, so one MULTI holds them.
      const replies = await run("count quota usage", (cmd) => {
        const m = cmd.multi();
        for (const inc of increments) {
          const key = keys.counterPrefix + inc.key;
          m.incrby(key, inc.n).pexpireat(key, inc.expireAt + EXPIRY_MARGIN_MS);
        }
        return m.exec();
      });
      return increments.map((_: UsageIncrement, i) => {
        const [err, value] = replies?.[i * 2] ?? [new Error("no reply"), 0];
        if (err) throw err;
        return Number(value);
      });
    },
    async deny(denies) {
      if (denies.length === 0) return;
      await run("record quota denies", (cmd) => {
        const m = cmd.multi();
        // GT: a later period's deny of the same quota replaces an earlier one, never the reverse.
        for (const d of denies) m.zadd(keys.denies, "GT", d.until, denyMember(d));
        return m.exec();
      });
      await run("announce quota denies", (cmd) => cmd.publish(keys.channel, "deny"));
    },
    async denies(now) {
      const members = await run("read quota denies", (cmd) =>
        cmd.zrangebyscore(keys.denies, `(${now}`, "+inf", "WITHSCORES"),
      );
      const out: QuotaDeny[] = [];
      for (let i = 0; i + 1 < members.length; i += 2) {
        const d = denyFromMember(members[i]!, Number(members[i + 1]));
        if (d) out.push(d);
      }
      // Lifted denies are kept only until someone reads past them.
      await run("tidy quota denies", (cmd) => cmd.zremrangebyscore(keys.denies, "-inf", now));
      return out;
    },
    watch(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    async close() {
      // The store owns the connection.
    },
  };
}
