import type { SecretsKeyOptions } from "../sealer.js";
import type { RedisOptions } from "ioredis";
import type { Logger } from "@portico/common";
import { checkKeep } from "../revision.js";

export interface RedisStoreOptions {
  /** `redis://[user:password@]host:port[/db]` or `rediss://…` for TLS. */
  url?: string;
  /**
   * ioredis connection options (host, port, username, password, db, tls, or `sentinels` + `name` for
   * Sentinel); the URL wins where both say. With `cluster`, only what applies to every node is used
   * (username, password, tls, retryStrategy, …), not host, port, db or sentinels.
   */
  redis?: RedisOptions;
  /**
   * Redis Cluster seed nodes, instead of `url` or `redis.host`. Every key of the store shares one
   * hash slot ({prefix}), so the commit script runs on the one node that owns it.
   */
  cluster?: { nodes: NodeAddress[] };
  /** Namespace of the keys, so several control planes can share one Redis. */
  prefix?: string;
  /** Revisions kept in the history. */
  keep?: number;
  /** Replicas that must acknowledge a commit before it resolves; 0 does not wait. */
  waitReplicas?: number;
  /** How long a commit waits for `waitReplicas`; kept below the command timeout. */
  waitTimeoutMs?: number;
  /** Per-command timeout, and how long a call waits for a reconnection before giving up. */
  commandTimeoutMs?: number;
  connectTimeoutMs?: number;
  /**
   * The key that seals secrets at rest, the same for every replica; `.portico/secrets.key` under
   * the working directory (made when absent) by default.
   */
  secrets?: SecretsKeyOptions;
  log: Logger;
}

export interface NodeAddress {
  host: string;
  port: number;
}

/** A RedisStore's options, checked, with the defaults filled in. */
export interface StoreSettings {
  prefix: string;
  keep: number;
  waitReplicas: number;
  waitTimeoutMs: number;
  commandTimeoutMs: number;
  connectTimeoutMs: number;
  /** Where the store is, for logs and errors, without the password. */
  where: string;
}

export function storeSettings(opts: RedisStoreOptions): StoreSettings {
  const prefix = opts.prefix ?? "portico";
  if (prefix === "" || /[{}]/.test(prefix)) {
    throw new TypeError(`prefix must be non-empty without braces, got '${prefix}'`);
  }
  const keep = checkKeep(opts.keep ?? 50);
  const commandTimeoutMs = opts.commandTimeoutMs ?? 1_000;
  const waitReplicas = opts.waitReplicas ?? 0;
  if (!Number.isSafeInteger(waitReplicas) || waitReplicas < 0) {
    throw new TypeError(`waitReplicas must be a non-negative integer, got ${String(opts.waitReplicas)}`);
  }
  if (opts.cluster && (opts.url || opts.redis?.sentinels)) {
    throw new TypeError("give either Redis Cluster nodes or a Redis URL / Sentinels, not both");
  }
  if (opts.cluster?.nodes.length === 0) throw new TypeError("a Redis Cluster needs at least one seed node");
  return {
    prefix,
    keep,
    waitReplicas,
    waitTimeoutMs: Math.max(1, Math.min(opts.waitTimeoutMs ?? 500, commandTimeoutMs - 200)),
    commandTimeoutMs,
    connectTimeoutMs: opts.connectTimeoutMs ?? opts.redis?.connectTimeout ?? 2_000,
    where: describeTarget(opts),
  };
}

function describeTarget(opts: RedisStoreOptions): string {
  if (opts.cluster) return `cluster ${opts.cluster.nodes.map((n) => `${n.host}:${n.port}`).join(",")}`;
  if (opts.url) {
    try {
      const u = new URL(opts.url);
      if (u.password) u.password = "***";
      return u.toString();
    } catch {
      return "(unparsable URL)";
    }
  }
  const r = opts.redis ?? {};
  if (r.sentinels?.length) {
    return `sentinel ${r.name ?? "mymaster"} via ${r.sentinels.map((s) => `${s.host ?? "localhost"}:${s.port ?? 26379}`).join(",")}`;
  }
  return `${r.tls ? "rediss" : "redis"}://${r.host ?? "localhost"}:${r.port ?? 6379}`;
}
