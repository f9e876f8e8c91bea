import type { Registry } from "prom-client";
import type { Logger } from "@portico/common";
import type { Clock } from "./limiter/clock.js";
import { MemoryLimiter } from "./limiter/memory.js";
import type { FailureMode, RateLimiter } from "./limiter/types.js";
import type { RedisConnectionOptions } from "./redis/connect.js";
import { LocalFirstRedisLimiter } from "./redis/local-first.js";
import { StrictRedisLimiter } from "./redis/strict.js";

export type RedisMode = "strict" | "local-first";

export type BackendOptions =
  | { kind: "memory"; clock?: Clock }
  | {
      kind: "redis";
      connection: RedisConnectionOptions;
      mode: RedisMode;
      clock?: Clock;
      log?: Logger;
      registry?: Registry;
      prefix?: string;
      timeoutMs?: number;
      failureMode?: FailureMode;
      instances?: number | "auto";
      syncPeriodMs?: number;
      syncHits?: number;
      /** Strict mode's over-limit cache, in descriptors; 0 turns it off. */
      overLimitCacheKeys?: number;
    };

/** The limiter a deployment asked for: memory (the default), or Redis strict or local-first. */
export function createLimiter(opts: BackendOptions): RateLimiter {
  if (opts.kind === "memory") return new MemoryLimiter({ clock: opts.clock });
  const { kind: _kind, mode, overLimitCacheKeys, ...rest } = opts;
  // Local-first decides a key over its limit from memory already: the cache is strict mode's.
  return mode === "strict"
    ? new StrictRedisLimiter({ ...rest, overLimitCacheKeys })
    : new LocalFirstRedisLimiter(rest);
}
