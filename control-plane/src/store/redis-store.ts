/**
 * The shared store: every replica of the control plane reads and writes the same Redis, and learns
 * of the others' commits through pub/sub.
 *
 * Keys (all hash-tagged so that they share one Redis Cluster slot and one Lua script can touch
 * them together):
 *   {prefix}:head      the newest revision number
 *   {prefix}:rev:<n>   a revision, JSON
 *   {prefix}:revs      sorted set of the kept history: member = summary JSON, score = number
 *   {prefix}:changes   pub/sub channel carrying each new head number
 *
 * A commit is one Lua script, so the compare-and-set, the history trim and the notification are
 * atomic. Durability is Redis's own: a commit is acknowledged once Redis has applied it, which
 * survives a Redis restart only with AOF persistence (`appendonly yes`; `appendfsync always` for
 * no loss at all, `everysec` loses up to a second). With replicas, `waitReplicas` makes a commit
 * wait (WAIT) until that many replicas have it, so a failover does not lose it; without it, a
 * failover to a lagging replica can drop the newest revisions.
 *
 * Every command has a short timeout and nothing is queued while disconnected: when Redis is down,
 * calls fail with StoreUnavailableError within about two seconds instead of hanging, and a command
 * that was reported as failed is never sent later behind the caller's back.
 *
 * On a Redis Cluster the keyed commands go through ioredis's Cluster client, which sends them to
 * the node serving the store's slot; WAIT and CONFIG carry no key, so they are sent to that node's
 * connection directly. Notifications come over a plain connection to any one node (PUBLISH reaches
 * every node of a cluster), moving to the next node when it is lost: unlike the Cluster client's own
 * subscriber, it tells the store each time it is back, so the store can catch up on what it missed.
 */
import { createHash } from "node:crypto";
import net from "node:net";
import tls from "node:tls";
import { AbstractConnector, Cluster, Command, Redis, type ClusterOptions, type RedisOptions } from "ioredis";
import type { Logger } from "../../../common/src/log.js";
import type { Config } from "../model/schema.js";
import {
  checkExpected,
  checkKeep,
  decodeRevision,
  encodeRevision,
  listLimit,
  newRevision,
  summaryOf,
} from "./revision.js";
import {
  StoreConflictError,
  StoreUnavailableError,
  type CommitMeta,
  type ConfigStore,
  type Revision,
  type RevisionSummary,
} from "./types.js";

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
  cluster?: { nodes: ClusterNodeAddress[] };
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
  log: Logger;
}

const COMMIT_SCRIPT = `
local head = tonumber(redis.call('GET', KEYS[1]) or '0')
local expected = tonumber(ARGV[1])
if head ~= expected then return {0, head} end
local n = expected + 1
redis.call('SET', KEYS[3], ARGV[2])
redis.call('SET', KEYS[1], n)
redis.call('ZADD', KEYS[2], n, ARGV[3])
local keep = tonumber(ARGV[4])
local old = redis.call('ZRANGE', KEYS[2], 0, -(keep + 1), 'WITHSCORES')
for i = 2, #old, 2 do redis.call('DEL', ARGV[5] .. old[i]) end
if #old > 0 then redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -(keep + 1)) end
redis.call('PUBLISH', ARGV[6], n)
return {1, n}
`;

/** The head revision in one round trip, so a concurrent trim cannot delete it between two reads. */
const HEAD_SCRIPT = `
local n = redis.call('GET', KEYS[1])
if not n then return false end
return redis.call('GET', ARGV[1] .. n)
`;

interface Script {
  lua: string;
  sha: string;
}

function script(lua: string): Script {
  return { lua, sha: createHash("sha1").update(lua).digest("hex") };
}

const COMMIT = script(COMMIT_SCRIPT);
const HEAD = script(HEAD_SCRIPT);

export interface ClusterNodeAddress {
  host: string;
  port: number;
}

type Conn = Redis | Cluster;

/** The differences between one Redis (or Sentinel) and a Redis Cluster that the store cares about. */
interface Link {
  /** Keyed commands; a Cluster routes each to the node serving the store's slot. */
  readonly cmd: Conn;
  /** Notifications: one server at a time, reconnecting on its own and emitting 'ready' each time. */
  readonly sub: Redis;
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
  /** A key of the store, for the slot the store lives in. */
  key: string;
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
    onCommands: (lost, back) => {
      cmd.on("error", (err: Error) => lost(err));
      cmd.on("close", () => lost());
      cmd.on("ready", back);
    },
  };
}

function clusterLink(seeds: ClusterNodeAddress[], s: LinkSettings): Link {
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
  const slot = new Command("exists", [s.key]).getSlot();
  const address = (r: Redis) => `${r.options.host}:${r.options.port}`;
  const isHome = (r: Redis) => cmd.slots[slot]?.[0] === address(r);
  const home = () => cmd.nodes("master").find(isHome);

  // Nodes the Cluster client is connected to first, then the rest it knows of, then the seeds: a
  // node that was replaced is found through the others. Each failed attempt moves one further.
  let failed = 0;
  const nextNode = (): ClusterNodeAddress => {
    const known = cmd.nodes("all");
    const candidates = new Map<string, ClusterNodeAddress>();
    const add = (host: string | undefined, port: number | undefined) => {
      if (host !== undefined && port !== undefined && !candidates.has(`${host}:${port}`)) {
        candidates.set(`${host}:${port}`, { host, port });
      }
    };
    for (const r of known) if (r.status === "ready") add(r.options.host, r.options.port);
    for (const r of known) add(r.options.host, r.options.port);
    for (const n of seeds) add(n.host, n.port);
    const list = [...candidates.values()];
    return list[failed++ % list.length]!;
  };
  const sub = new Redis({
    ...perNode,
    host: seeds[0]!.host,
    port: seeds[0]!.port,
    Connector: rotatingConnector(nextNode),
    retryStrategy: s.retryStrategy,
    lazyConnect: true,
    enableOfflineQueue: false,
    connectionName: s.subName,
    autoResubscribe: false,
  });
  sub.on("ready", () => (failed = 0));

  return {
    cmd,
    sub,
    home,
    onCommands: (lost, back) => {
      cmd.on("error", (err: Error) => lost(err));
      cmd.on("close", () => lost());
      cmd.on("ready", back);
      // The Cluster stays 'ready' while one node is away: follow the node holding the store.
      cmd.on("+node", (r: Redis) => {
        r.on("error", (err: Error) => {
          if (isHome(r)) lost(err);
        });
        r.on("close", () => {
          if (isHome(r)) lost();
        });
        r.on("ready", () => {
          if (isHome(r)) back();
        });
      });
    },
  };
}

/** An ioredis connector that connects to a different node on each (re)connection. */
function rotatingConnector(next: () => ClusterNodeAddress): NonNullable<RedisOptions["Connector"]> {
  return class extends AbstractConnector {
    private readonly tlsOptions: tls.ConnectionOptions | undefined;

    constructor(options: unknown) {
      const o = options as RedisOptions;
      super(o.disconnectTimeout ?? 2_000);
      this.tlsOptions = o.tls;
    }

    connect(): ReturnType<AbstractConnector["connect"]> {
      this.connecting = true;
      const { host, port } = next();
      // ioredis expects the stream a tick later, after it has set up its own handlers.
      return new Promise((resolve, reject) => {
        process.nextTick(() => {
          if (!this.connecting) {
            reject(new Error("Connection is closed."));
            return;
          }
          try {
            this.stream = this.tlsOptions
              ? tls.connect({ ...this.tlsOptions, host, port })
              : net.createConnection({ host, port });
          } catch (err) {
            reject(err as Error);
            return;
          }
          this.stream.once("error", (err: Error) => {
            this.firstError = err;
          });
          resolve(this.stream);
        });
      });
    }
  };
}

export class RedisStore implements ConfigStore {
  readonly kind = "redis" as const;
  readonly prefix: string;
  private readonly keep: number;
  private readonly log: Logger;
  private readonly waitReplicas: number;
  private readonly waitTimeoutMs: number;
  private readonly commandTimeoutMs: number;
  private readonly connectTimeoutMs: number;
  private readonly where: string;
  private readonly keys: { head: string; revs: string; revPrefix: string; channel: string };
  private readonly link: Link;
  private readonly cmd: Conn;
  private readonly sub: Redis;
  private state: "new" | "opening" | "open" | "closed" = "new";
  private closing?: Promise<void>;
  private readonly listeners = new Set<(rev: Revision) => void>();
  /** Highest number already delivered or about to be by the commit that made it. */
  private claimed = 0;
  private delivered = 0;
  /** Numbers this instance's in-flight commits will get if they win; their delivery is the commit's. */
  private readonly pending = new Map<number, number>();
  private readonly inflight = new Set<Promise<unknown>>();
  private syncChain: Promise<void> = Promise.resolve();
  /** Set while a failed catch-up waits to be tried again. */
  private syncRetry?: NodeJS.Timeout;
  private syncFailures = 0;

  constructor(opts: RedisStoreOptions) {
    const prefix = opts.prefix ?? "portico";
    if (prefix === "" || /[{}]/.test(prefix)) {
      throw new TypeError(`prefix must be non-empty without braces, got '${prefix}'`);
    }
    this.prefix = prefix;
    this.keep = checkKeep(opts.keep ?? 50);
    this.log = opts.log;
    this.commandTimeoutMs = opts.commandTimeoutMs ?? 1_000;
    this.connectTimeoutMs = opts.connectTimeoutMs ?? opts.redis?.connectTimeout ?? 2_000;
    this.waitReplicas = opts.waitReplicas ?? 0;
    if (!Number.isSafeInteger(this.waitReplicas) || this.waitReplicas < 0) {
      throw new TypeError(`waitReplicas must be a non-negative integer, got ${String(opts.waitReplicas)}`);
    }
    this.waitTimeoutMs = Math.max(1, Math.min(opts.waitTimeoutMs ?? 500, this.commandTimeoutMs - 200));
    const tag = `{${prefix}}`;
    this.keys = {
      head: `${tag}:head`,
      revs: `${tag}:revs`,
      revPrefix: `${tag}:rev:`,
      channel: `${tag}:changes`,
    };

    if (opts.cluster && (opts.url || opts.redis?.sentinels)) {
      throw new TypeError("give either Redis Cluster nodes or a Redis URL / Sentinels, not both");
    }
    const settings: LinkSettings = {
      common: {
        ...opts.redis,
        commandTimeout: this.commandTimeoutMs,
        connectTimeout: this.connectTimeoutMs,
        maxRetriesPerRequest: 0,
        autoResendUnfulfilledCommands: false,
      },
      retryStrategy: opts.redis?.retryStrategy ?? ((times: number) => Math.min(times * 100, 1_000)),
      cmdName: `portico-store-${prefix}`,
      subName: `portico-store-${prefix}-watch`,
      connectTimeoutMs: this.connectTimeoutMs,
      key: this.keys.head,
    };
    if (opts.cluster) {
      if (opts.cluster.nodes.length === 0)
        throw new TypeError("a Redis Cluster needs at least one seed node");
      this.link = clusterLink(opts.cluster.nodes, settings);
    } else {
      this.link = standaloneLink(opts.url, settings);
    }
    this.cmd = this.link.cmd;
    this.sub = this.link.sub;
    this.where = describeTarget(opts);
  }

  async open(): Promise<void> {
    if (this.state !== "new") throw new Error(`the Redis store at ${this.where} was already opened`);
    this.state = "opening";
    // The command side coming back triggers a catch-up too: the watch side may have come back
    // first, when its catch-up could not read anything yet.
    this.track("commands", (lost, back) =>
      this.link.onCommands(lost, () => {
        back();
        if (this.state === "open") this.enqueueSync("head");
      }),
    );
    this.track("watch", (lost, back) => {
      this.sub.on("error", (err: Error) => lost(err));
      this.sub.on("close", () => lost());
      this.sub.on("ready", back);
    });
    try {
      // One after the other: on a Cluster, the watch connection goes to a node the command side
      // has just reached, rather than to a seed that may be down.
      await withTimeout(
        (async () => {
          await this.cmd.connect();
          // Timed out meanwhile: the store is closed, and must not connect behind the caller's back.
          if (this.state === "opening") await this.sub.connect();
        })(),
        this.connectTimeoutMs + this.commandTimeoutMs,
        "connecting",
      );
      this.sub.on("message", (channel: string, message: string) => {
        const n = Number(message);
        if (channel === this.keys.channel && Number.isSafeInteger(n) && n > 0) this.enqueueSync(n);
      });
      // Subscribe before reading the head, so nothing committed in between goes unnoticed.
      await this.sub.subscribe(this.keys.channel);
      const head = await this.cmd.get(this.keys.head);
      this.claimed = this.delivered = head === null ? 0 : Number(head);
    } catch (err) {
      this.state = "closed";
      this.cmd.disconnect();
      this.sub.disconnect();
      throw unavailable(`cannot open the Redis store at ${this.where}`, err);
    }
    // Later 'ready' events are reconnections: subscribe again and catch up on what was missed.
    this.sub.on("ready", () => {
      this.sub
        .subscribe(this.keys.channel)
        .then(() => this.enqueueSync("head"))
        .catch((err: Error) => this.log.warn({ err: err.message }, "could not resubscribe to store changes"));
    });
    this.state = "open";
    await this.warnIfVolatile();
    this.log.info({ redis: this.where, prefix: this.prefix, head: this.claimed }, "Redis store opened");
  }

  async head(): Promise<Revision | undefined> {
    const text = await this.run("read the head", () =>
      this.eval(HEAD, [this.keys.head], [this.keys.revPrefix]),
    );
    return typeof text === "string" ? this.decode(text) : undefined;
  }

  async get(number: number): Promise<Revision | undefined> {
    if (!Number.isSafeInteger(number) || number < 1) {
      this.assertOpen();
      return undefined;
    }
    const text = await this.run(`read revision ${number}`, () => this.cmd.get(this.revKey(number)));
    return text === null ? undefined : this.decode(text, number);
  }

  async list(limit?: number): Promise<RevisionSummary[]> {
    const n = listLimit(limit, this.keep);
    if (n === 0) {
      this.assertOpen();
      return [];
    }
    const members = await this.run("list revisions", () => this.cmd.zrevrange(this.keys.revs, 0, n - 1));
    return members.map((m) => summaryOf(JSON.parse(m) as RevisionSummary));
  }

  async commit(expected: number, config: Config, meta?: CommitMeta): Promise<Revision> {
    checkExpected(expected);
    this.assertOpen();
    const p = this.doCommit(expected, config, meta);
    this.inflight.add(p);
    try {
      return await p;
    } finally {
      this.inflight.delete(p);
    }
  }

  watch(listener: (rev: Revision) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  close(): Promise<void> {
    if (this.state === "new") this.state = "closed";
    if (this.state === "closed" && !this.closing) return Promise.resolve();
    this.closing ??= (async () => {
      this.state = "closed";
      await Promise.allSettled([...this.inflight]);
      this.listeners.clear();
      clearTimeout(this.syncRetry);
      await Promise.allSettled([this.cmd.quit(), this.sub.quit()]);
      this.cmd.disconnect();
      this.sub.disconnect();
    })();
    return this.closing;
  }

  private async doCommit(expected: number, config: Config, meta?: CommitMeta): Promise<Revision> {
    const number = expected + 1;
    const rev = newRevision(number, config, meta);
    const text = encodeRevision(rev);
    const summary = JSON.stringify(summaryOf(rev));
    this.pending.set(number, (this.pending.get(number) ?? 0) + 1);
    let reply: unknown;
    try {
      reply = await this.run("commit", () =>
        this.eval(
          COMMIT,
          [this.keys.head, this.keys.revs, this.revKey(number)],
          [expected, text, summary, this.keep, this.keys.revPrefix, this.keys.channel],
        ),
      );
    } catch (err) {
      this.unpend(number);
      // It may have been applied before the connection broke; if so, watchers must still hear of it.
      this.enqueueSync("head");
      throw err;
    }
    const [ok, actual] = parseCommitReply(reply);
    if (!ok) {
      this.unpend(number);
      // The winner's notification may have been skipped while this commit was pending.
      this.enqueueSync("head");
      throw new StoreConflictError(expected, actual);
    }
    this.claimed = Math.max(this.claimed, number);
    this.unpend(number);
    const deliver = () => setImmediate(() => this.deliver(number, text));
    if (this.waitReplicas > 0) {
      let acked: number;
      try {
        acked = await this.run("wait for replicas", () =>
          this.home().wait(this.waitReplicas, this.waitTimeoutMs),
        );
      } catch (err) {
        deliver();
        throw err;
      }
      if (acked < this.waitReplicas) {
        deliver();
        throw new StoreUnavailableError(
          `revision ${number} was written but only ${acked} of ${this.waitReplicas} replicas acknowledged it within ` +
            `${this.waitTimeoutMs}ms; it may be lost if Redis fails over`,
        );
      }
    }
    deliver();
    return JSON.parse(text) as Revision;
  }

  private unpend(number: number): void {
    const count = (this.pending.get(number) ?? 1) - 1;
    if (count <= 0) this.pending.delete(number);
    else this.pending.set(number, count);
  }

  /** Sync requests run one at a time, in arrival order, so deliveries never overtake each other. */
  private enqueueSync(target: number | "head"): void {
    this.syncChain = this.syncChain
      .then(() => this.syncTo(target))
      .then(
        () => {
          this.syncFailures = 0;
        },
        (err: Error) => this.syncFailed(err, target),
      );
  }

  /**
   * A catch-up that failed is tried again until one succeeds: the event that asked for it (a
   * reconnection, a notification) does not come again, and a node back from a crash can refuse
   * commands for a while after it accepts connections.
   */
  private syncFailed(err: Error, target: number | "head"): void {
    const first = this.syncFailures++ === 0;
    this.log[first ? "warn" : "debug"]({ err: err.message, target }, "could not read a new store head");
    if (this.syncRetry || this.state !== "open") return;
    this.syncRetry = setTimeout(
      () => {
        this.syncRetry = undefined;
        this.enqueueSync("head");
      },
      Math.min(this.syncFailures * 250, 2_000),
    );
  }

  private async syncTo(target: number | "head"): Promise<void> {
    if (this.state !== "open") return;
    if (target !== "head" && (target <= this.claimed || this.pending.has(target))) return;
    let rev = target === "head" ? await this.head() : await this.get(target);
    // Trimmed already: a later head exists, and its own notification follows.
    if (!rev && target !== "head") return;
    if (target === "head" && (rev?.number ?? 0) < this.claimed) {
      // A read sent just before one of our commits landed can be overtaken by it; only a second
      // read, sent after, tells a stale answer from a Redis that really lost revisions.
      rev = await this.head();
      const now = rev?.number ?? 0;
      if (now < this.claimed) {
        this.log.error(
          { redis: this.where, prefix: this.prefix, had: this.claimed, now },
          "the Redis store went back to an older revision (data lost in a restart or failover); " +
            "following it from here, the config in service stays as it is until the next commit",
        );
        this.claimed = this.delivered = now;
        return;
      }
    }
    if (!rev || rev.number <= this.claimed || this.pending.has(rev.number)) return;
    this.claimed = rev.number;
    this.deliver(rev.number, encodeRevision(rev));
  }

  private deliver(number: number, text: string): void {
    if (this.state !== "open" || number <= this.delivered) return;
    this.delivered = number;
    for (const listener of [...this.listeners]) {
      try {
        listener(JSON.parse(text) as Revision);
      } catch (err) {
        this.log.error({ revision: number, err: (err as Error).message }, "a store watcher failed");
      }
    }
  }

  private async eval(s: Script, keys: string[], args: (string | number)[]): Promise<unknown> {
    try {
      return await this.cmd.evalsha(s.sha, keys.length, ...keys, ...args);
    } catch (err) {
      // Scripts are not persisted: a restarted or failed-over Redis has forgotten it.
      if (!(err as Error).message?.startsWith("NOSCRIPT")) throw err;
      return await this.cmd.eval(s.lua, keys.length, ...keys, ...args);
    }
  }

  /** Runs a command once the connection is ready (waiting up to the command timeout for a reconnection). */
  private async run<T>(what: string, fn: () => Promise<T>): Promise<T> {
    this.assertOpen();
    try {
      await this.ready();
      return await fn();
    } catch (err) {
      throw unavailable(`could not ${what} in the Redis store at ${this.where}`, err);
    }
  }

  private async ready(): Promise<void> {
    const deadline = Date.now() + this.commandTimeoutMs;
    await readyBy(this.cmd, deadline, true);
    // A Cluster stays ready while the node holding the store reconnects, and would refuse the
    // command at once: wait for that node as for a single Redis. One never used yet connects on demand.
    const home = this.link.home();
    if (home && home !== this.cmd) await readyBy(home, deadline, false);
  }

  private home(): Redis {
    const home = this.link.home();
    if (!home) throw new Error("no connection to the node that holds the store's keys");
    return home;
  }

  private decode(text: string, number?: number): Revision {
    try {
      return decodeRevision(text, number);
    } catch (err) {
      throw new StoreUnavailableError(
        `the Redis store at ${this.where} holds a damaged revision${number ? ` ${number}` : ""}: ${(err as Error).message}`,
      );
    }
  }

  private revKey(n: number): string {
    return `${this.keys.revPrefix}${n}`;
  }

  private assertOpen(): void {
    if (this.state !== "open") {
      throw new StoreUnavailableError(
        this.state === "closed"
          ? `the Redis store at ${this.where} is closed`
          : `the Redis store at ${this.where} is not open yet`,
      );
    }
  }

  /** Logs each outage once, not every reconnection attempt. */
  private track(role: string, on: (lost: (err?: Error) => void, back: () => void) => void): void {
    let down = false;
    const lost = (err?: Error) => {
      if (down || this.state !== "open") return;
      down = true;
      this.log.warn(
        { redis: this.where, connection: role, err: err?.message },
        "lost the connection to the Redis store",
      );
    };
    on(lost, () => {
      if (!down) return;
      down = false;
      this.log.info({ redis: this.where, connection: role }, "reconnected to the Redis store");
    });
  }

  private async warnIfVolatile(): Promise<void> {
    try {
      // The server holding the keys, not whichever node a Cluster would pick for a key-less command.
      const reply = (await this.home().config("GET", "appendonly")) as unknown;
      const flat = Array.isArray(reply) ? reply.flat() : [];
      if (flat[1] === "no") {
        this.log.warn(
          { redis: this.where },
          "Redis runs without AOF persistence: committed revisions are lost if it restarts",
        );
      }
    } catch {
      // Managed Redis services often disable CONFIG; their persistence is theirs to document.
    }
  }
}

function parseCommitReply(reply: unknown): [boolean, number] {
  if (Array.isArray(reply) && reply.length === 2) {
    const ok = Number(reply[0]);
    const n = Number(reply[1]);
    if ((ok === 0 || ok === 1) && Number.isSafeInteger(n)) return [ok === 1, n];
  }
  throw new StoreUnavailableError(`unexpected reply from the commit script: ${JSON.stringify(reply)}`);
}

function unavailable(message: string, err: unknown): Error {
  if (err instanceof StoreUnavailableError || err instanceof StoreConflictError) return err;
  return new StoreUnavailableError(`${message}: ${(err as Error)?.message ?? String(err)}`, { cause: err });
}

/** Resolves once the connection is ready, or (for a connection not in use) is not trying to be. */
function readyBy(conn: Conn, deadline: number, required: boolean): Promise<void> {
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

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} took longer than ${ms}ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** Where the store is, for logs and errors, without the password. */
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
