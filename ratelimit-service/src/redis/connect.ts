import fs from "node:fs";
import { Cluster, Redis, type ClusterOptions, type RedisOptions } from "ioredis";

export interface RedisAddress {
  host: string;
  port: number;
}

export interface RedisTlsOptions {
  /** PEM text or a file path of the CA that signed the server's certificate. */
  ca?: string;
  /** Client certificate and key (PEM text or file paths), for mutual TLS. */
  cert?: string;
  key?: string;
  /** Check the server's certificate (default true). */
  rejectUnauthorized?: boolean;
  servername?: string;
}

export interface RedisConnectionOptions {
  /** Standalone server: host and port. */
  host?: string;
  port?: number;
  db?: number;
  username?: string;
  password?: string;
  /** TLS to Redis; `rediss://` URLs turn it on. */
  tls?: RedisTlsOptions;
  /** Sentinel: the sentinels and the primary's name. */
  sentinels?: RedisAddress[];
  sentinelName?: string;
  sentinelPassword?: string;
  /** Cluster: seed nodes. Keys are hash-tagged so each decision's keys share one slot. */
  cluster?: RedisAddress[];
}

/**
 * Reads a Redis spec:
 * - `redis://[user:password@]host:port[/db]` (`rediss://` for TLS)
 * - `redis+sentinel://[user:password@]host:port,host:port/primary-name[/db]`
 * - `redis+cluster://[user:password@]host:port,host:port`
 */
export function parseRedisSpec(spec: string): RedisConnectionOptions {
  const m =
    /^(rediss?)(?:\+(sentinel|cluster))?:\/\/(?:([^:@/]*)(?::([^@/]*))?@)?([^/?#]+)(?:\/([^?#]*))?$/i.exec(
      spec.trim(),
    );
  if (!m)
    throw new Error(
      `'${redact(spec)}' is not a Redis URL (redis://host:port, rediss://, redis+sentinel://, redis+cluster://)`,
    );
  const [, scheme, topology, user, pass, hosts, rest] = m;
  const out: RedisConnectionOptions = {};
  if (user) out.username = decodeURIComponent(user);
  if (pass) out.password = decodeURIComponent(pass);
  if (scheme!.toLowerCase() === "rediss") out.tls = {};
  const addrs = hosts!.split(",").map((h) => parseAddress(h, spec));
  const path = (rest ?? "").split("/").filter(Boolean);
  const db = (text: string | undefined) => {
    if (text === undefined) return undefined;
    const n = Number(text);
    if (!Number.isSafeInteger(n) || n < 0)
      throw new Error(`'${redact(spec)}': '${text}' is not a database number`);
    return n;
  };
  switch (topology?.toLowerCase()) {
    case "sentinel":
      if (!path[0])
        throw new Error(`'${redact(spec)}': name the primary after the sentinels, e.g. /mymaster`);
      out.sentinels = addrs;
      out.sentinelName = decodeURIComponent(path[0]);
      out.db = db(path[1]);
      break;
    case "cluster":
      if (path.length > 0) throw new Error(`'${redact(spec)}': a Redis Cluster has no databases`);
      out.cluster = addrs;
      break;
    default:
      if (addrs.length !== 1) throw new Error(`'${redact(spec)}': one host for a standalone Redis`);
      out.host = addrs[0]!.host;
      out.port = addrs[0]!.port;
      out.db = db(path[0]);
  }
  return out;
}

function parseAddress(text: string, spec: string): RedisAddress {
  const m = /^\[?([^\]]+?)\]?(?::(\d+))?$/.exec(text);
  if (!m) throw new Error(`'${redact(spec)}': '${text}' is not host:port`);
  return { host: m[1]!, port: m[2] ? Number(m[2]) : 6379 };
}

export type RedisClient = Redis | Cluster;

export interface ClientTuning {
  /** Commands not answered within this time fail (and the decision falls back). */
  commandTimeoutMs: number;
  connectTimeoutMs?: number;
  connectionName: string;
}

/**
 * A client that never queues or retries commands while disconnected: a decision must fall back
 * at once rather than wait on a dead Redis (envoyproxy/ratelimit #462). It reconnects by itself,
 * with a backoff capped at one second.
 */
export function createRedisClient(conn: RedisConnectionOptions, tuning: ClientTuning): RedisClient {
  const base: RedisOptions = {
    username: conn.username,
    password: conn.password,
    db: conn.db,
    tls: conn.tls ? tlsOptions(conn.tls) : undefined,
    connectionName: tuning.connectionName,
    commandTimeout: tuning.commandTimeoutMs,
    connectTimeout: tuning.connectTimeoutMs ?? 1_000,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    autoResendUnfulfilledCommands: false,
    // Commands issued in one turn of the event loop go out in one write: concurrent decisions
    // share a round trip.
    enableAutoPipelining: true,
    retryStrategy: (times: number) => Math.min(times * 50, 1_000),
    // After a Sentinel failover the old primary answers READONLY: reconnect to find the new one.
    reconnectOnError: (err: Error) => (err.message.startsWith("READONLY") ? 1 : false),
  };
  let client: RedisClient;
  if (conn.cluster) {
    if (conn.cluster.length === 0) throw new Error("a Redis Cluster needs at least one seed node");
    const { enableAutoPipelining, retryStrategy: _nodeRetry, enableOfflineQueue: _q, ...redisOptions } = base;
    const options: ClusterOptions = {
      redisOptions,
      enableAutoPipelining,
      enableOfflineQueue: false,
      maxRedirections: 4,
      clusterRetryStrategy: (times: number) => Math.min(times * 50, 1_000),
      slotsRefreshTimeout: tuning.connectTimeoutMs ?? 1_000,
    };
    client = new Cluster(conn.cluster, options);
  } else if (conn.sentinels) {
    client = new Redis({
      ...base,
      sentinels: conn.sentinels,
      name: conn.sentinelName,
      sentinelPassword: conn.sentinelPassword,
      sentinelTLS: conn.tls ? tlsOptions(conn.tls) : undefined,
      enableTLSForSentinelMode: !!conn.tls,
    });
  } else {
    client = new Redis({ ...base, host: conn.host ?? "127.0.0.1", port: conn.port ?? 6379 });
  }
  // Connection errors are reported through the backend's health, once per outage; without a
  // listener an 'error' event would end the process.
  client.on("error", () => undefined);
  return client;
}

function tlsOptions(t: RedisTlsOptions): NonNullable<RedisOptions["tls"]> {
  return {
    ca: t.ca ? pem(t.ca) : undefined,
    cert: t.cert ? pem(t.cert) : undefined,
    key: t.key ? pem(t.key) : undefined,
    rejectUnauthorized: t.rejectUnauthorized ?? true,
    servername: t.servername,
  };
}

function pem(textOrPath: string): string {
  return textOrPath.includes("-----BEGIN") ? textOrPath : fs.readFileSync(textOrPath, "utf8");
}

/** Where Redis is, for logs, without credentials. */
export function describeRedis(conn: RedisConnectionOptions): string {
  const s = conn.tls ? "rediss" : "redis";
  const list = (a: RedisAddress[]) => a.map((x) => `${x.host}:${x.port}`).join(",");
  if (conn.cluster) return `${s}+cluster://${list(conn.cluster)}`;
  if (conn.sentinels) return `${s}+sentinel://${list(conn.sentinels)}/${conn.sentinelName ?? ""}`;
  return `${s}://${conn.host ?? "127.0.0.1"}:${conn.port ?? 6379}${conn.db ? `/${conn.db}` : ""}`;
}

function redact(spec: string): string {
  return spec.replace(/\/\/[^@/]*@/, "//***@");
}
