import { Cluster, Redis, type ClusterOptions, type RedisOptions } from "ioredis";
import { clusterSlot } from "./keys.js";
import type { NodeAddress, RedisStoreOptions, StoreSettings } from "./options.js";
import { RoamingSubscriber } from "./roaming-subscriber.js";

/** The watch connection: it says each time it is lost ('error', 'close') and back ('ready'). */
export interface Subscriber {
  connect(): Promise<void>;
  subscribe(channel: string): Promise<unknown>;
  on(event: "ready" | "close", listener: () => void): this;
  on(event: "error", listener: (err: Error) => void): this;
  on(event: "message", listener: (channel: string, message: string) => void): this;
  quit(): Promise<unknown>;
  disconnect(): void;
}

/**
 * The store's two connections, and the differences between one Redis (or Sentinel) and a Redis
 * Cluster that the store cares about. Nothing is queued while disconnected and nothing is sent
 * twice: a command that was reported as failed is never sent later behind the caller's back.
 */
export interface Link {
  /** Keyed commands; a Cluster routes each to the node serving the store's slot. */
  readonly cmd: Redis | Cluster;
  /** Notifications: one server at a time, reconnecting on its own and emitting 'ready' each time. */
  readonly sub: Subscriber;
  /**
   * The connection to the server that holds the store's keys, for key-less commands that must reach
   * it: WAIT counts the replicas of the writes made on this very connection. Undefined while a
   * Cluster does not know the slot's node yet.
   */
  home(): Redis | undefined;
  /** Reports the command side being lost (once per error or close) and back (each 'ready'). */
  onCommands(lost: (err?: Error) => void, back: () => void): void;
}

interface LinkSettings {
  /** For both connections: timeouts, credentials, TLS. */
  common: RedisOptions;
  retryStrategy: (times: number) => number | void | null;
  cmdName: string;
  subName: string;
  connectTimeoutMs: number;
}

/** `slotKey`: a key of the store, for the Cluster slot the store lives in. */
export function createLink(opts: RedisStoreOptions, s: StoreSettings, slotKey: string): Link {
  const settings: LinkSettings = {
    common: {
      ...opts.redis,
      commandTimeout: s.commandTimeoutMs,
      connectTimeout: s.connectTimeoutMs,
      maxRetriesPerRequest: 0,
      autoResendUnfulfilledCommands: false,
    },
    retryStrategy: opts.redis?.retryStrategy ?? ((times: number) => Math.min(times * 100, 1_000)),
    cmdName: `portico-store-${s.prefix}`,
    subName: `portico-store-${s.prefix}-watch`,
    connectTimeoutMs: s.connectTimeoutMs,
  };
  return opts.cluster
    ? clusterLink(opts.cluster.nodes, clusterSlot(slotKey), settings)
    : standaloneLink(opts.url, settings);
}

function standaloneLink(url: string | undefined, s: LinkSettings): Link {
  const base: RedisOptions = {
    ...s.common,
    retryStrategy: s.retryStrategy,
    lazyConnect: true,
    enableOfflineQueue: false,
  };
  const cmdOptions: RedisOptions = {
    ...base,
    connectionName: s.cmdName,
    // After a Sentinel failover the old primary answers READONLY: reconnect to find the new one.
    reconnectOnError: (err) => (err.message.startsWith("READONLY") ? 1 : false),
  };
  const subOptions: RedisOptions = { ...base, connectionName: s.subName, autoResubscribe: false };
  const cmd = url ? new Redis(url, cmdOptions) : new Redis(cmdOptions);
  return {
    cmd,
    sub: url ? new Redis(url, subOptions) : new Redis(subOptions),
    home: () => cmd,
    onCommands: (lost, back) => followConnection(cmd, lost, back),
  };
}

/**
 * Keyed commands go through ioredis's Cluster client; WAIT and CONFIG carry no key, so they go to
 * the connection of the node serving the store's slot. Notifications come over a connection to
 * any one node, moving to the next node when it is lost.
 */
function clusterLink(seeds: NodeAddress[], slot: number, s: LinkSettings): Link {
  // What names one server, or how to reconnect to it, is the Cluster's to set per node (and a
  // cluster has only database 0).
  const {
    host: _host,
    port: _port,
    path: _path,
    db: _db,
    sentinels: _sentinels,
    name: _name,
    retryStrategy: _retry,
    enableOfflineQueue: _queue,
    readOnly: _readOnly,
    ...perNode
  } = s.common;
  const redisOptions: ClusterOptions["redisOptions"] = { ...perNode, connectionName: s.cmdName };
  const cmd = new Cluster(seeds, {
    redisOptions,
    lazyConnect: true,
    enableOfflineQueue: false,
    clusterRetryStrategy: s.retryStrategy,
    // A node connection comes back on its own and says so with 'ready', like a single Redis does.
    clusterNodeRetryStrategy: s.retryStrategy,
    // A command whose connection closed under it may have been applied: sending it again would
    // make a commit fail as a conflict with itself.
    retryDelayOnFailover: 0,
    slotsRefreshTimeout: s.connectTimeoutMs,
  });
  const isHome = (r: Redis) => cmd.slots[slot]?.[0] === `${r.options.host}:${r.options.port}`;

  // Nodes the Cluster client is connected to first, then the rest it knows of, then the seeds: a
  // node that was replaced is found through the others.
  const candidates = (): NodeAddress[] => {
    const known = cmd.nodes("all");
    const found = new Map<string, NodeAddress>();
    const add = (host: string | undefined, port: number | undefined) => {
      if (host !== undefined && port !== undefined && !found.has(`${host}:${port}`)) {
        found.set(`${host}:${port}`, { host, port });
      }
    };
    for (const r of known) if (r.status === "ready") add(r.options.host, r.options.port);
    for (const r of known) add(r.options.host, r.options.port);
    for (const n of seeds) add(n.host, n.port);
    return [...found.values()];
  };
  const sub = new RoamingSubscriber({
    node: {
      ...perNode,
      lazyConnect: true,
      enableOfflineQueue: false,
      connectionName: s.subName,
      autoResubscribe: false,
    },
    candidates,
    retryStrategy: s.retryStrategy,
  });

  return {
    cmd,
    sub,
    home: () => cmd.nodes("master").find(isHome),
    onCommands: (lost, back) => {
      followConnection(cmd, lost, back);
      // The Cluster stays 'ready' while one node is away: follow the node holding the store.
      cmd.on("+node", (r: Redis) =>
        followConnection(
          r,
          (err) => isHome(r) && lost(err),
          () => isHome(r) && back(),
        ),
      );
    },
  };
}

function followConnection(conn: Redis | Cluster, lost: (err?: Error) => void, back: () => void): void {
  conn.on("error", (err: Error) => lost(err));
  conn.on("close", () => lost());
  conn.on("ready", back);
}

/**
 * Resolves once the link can take a command, waiting up to `timeoutMs` for a reconnection. A
 * Cluster stays ready while the node holding the store reconnects, and would refuse the command at
 * once: that node is waited for as a single Redis is. One never used yet connects on demand.
 */
export async function whenReady(link: Link, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  await readyBy(link.cmd, deadline, true);
  const home = link.home();
  if (home && home !== link.cmd) await readyBy(home, deadline, false);
}

/** Resolves once the connection is ready, or (for a connection not in use) is not trying to be. */
function readyBy(conn: Redis | Cluster, deadline: number, required: boolean): Promise<void> {
  if (conn.status === "ready") return Promise.resolve();
  if (conn.status === "end") {
    return required ? Promise.reject(new Error("the connection is closed")) : Promise.resolve();
  }
  if (!required && conn.status === "wait") return Promise.resolve();
  return new Promise((resolve, reject) => {
    const onReady = () => {
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(
      () => {
        conn.off("ready", onReady);
        reject(new Error(`not connected (${conn.status}) after waiting for a reconnection`));
      },
      Math.max(0, deadline - Date.now()),
    );
    conn.once("ready", onReady);
  });
}
