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
 */
import { createHash } from "node:crypto";
import { Cluster, Redis, type RedisOptions } from "ioredis";
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
  /** ioredis connection options (host, port, username, password, db, tls, or `sentinels` + `name` for Sentinel); the URL wins where both say. */
  redis?: RedisOptions;
  /**
   * Redis Cluster seed nodes. Every key of the store shares one hash slot ({prefix}), so the
   * commit script runs on the one node that owns it; pub/sub reaches every node.
   */
  cluster?: { nodes: { host: string; port: number }[] };
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
  private readonly cmd: Redis | Cluster;
  private readonly sub: Redis | Cluster;
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

    const base: RedisOptions = {
      retryStrategy: (times: number) => Math.min(times * 100, 1_000),
      ...opts.redis,
      lazyConnect: true,
      commandTimeout: this.commandTimeoutMs,
      connectTimeout: this.connectTimeoutMs,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      autoResendUnfulfilledCommands: false,
    };
    const cmdOptions: RedisOptions = {
      ...base,
      connectionName: `portico-store-${prefix}`,
      // After a Sentinel failover the old primary answers READONLY: reconnect to find the new one.
      reconnectOnError: (err) => (err.message.startsWith("READONLY") ? 1 : false),
    };
    const subOptions: RedisOptions = {
      ...base,
      connectionName: `portico-store-${prefix}-watch`,
      autoResubscribe: false,
    };
    if (opts.cluster) {
      if (opts.cluster.nodes.length === 0)
        throw new TypeError("a Redis Cluster needs at least one seed node");
      const clusterOf = (redisOptions: RedisOptions) =>
        new Cluster(opts.cluster!.nodes, {
          redisOptions,
          lazyConnect: true,
          enableOfflineQueue: false,
          clusterRetryStrategy: (times: number) => Math.min(times * 100, 1_000),
          slotsRefreshTimeout: this.connectTimeoutMs,
        });
      this.cmd = clusterOf(cmdOptions);
      this.sub = clusterOf(subOptions);
    } else {
      this.cmd = opts.url ? new Redis(opts.url, cmdOptions) : new Redis(cmdOptions);
      this.sub = opts.url ? new Redis(opts.url, subOptions) : new Redis(subOptions);
    }
    this.where = describeTarget(opts);
  }

  async open(): Promise<void> {
    if (this.state !== "new") throw new Error(`the Redis store at ${this.where} was already opened`);
    this.state = "opening";
    this.track(this.cmd, "commands");
    this.track(this.sub, "watch");
    try {
      await withTimeout(
        Promise.all([this.cmd.connect(), this.sub.connect()]),
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
    // Both connections trigger a catch-up, since either may come back last.
    this.sub.on("ready", () => {
      this.sub
        .subscribe(this.keys.channel)
        .then(() => this.enqueueSync("head"))
        .catch((err: Error) => this.log.warn({ err: err.message }, "could not resubscribe to store changes"));
    });
    this.cmd.on("ready", () => this.enqueueSync("head"));
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
          this.cmd.wait(this.waitReplicas, this.waitTimeoutMs),
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
      .catch((err: Error) => this.log.warn({ err: err.message, target }, "could not read a new store head"));
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

  private ready(): Promise<void> {
    if (this.cmd.status === "ready") return Promise.resolve();
    if (this.cmd.status === "end") return Promise.reject(new Error("the connection is closed"));
    return new Promise((resolve, reject) => {
      const onReady = () => {
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        this.cmd.off("ready", onReady);
        reject(new Error(`not connected (${this.cmd.status}) after ${this.commandTimeoutMs}ms`));
      }, this.commandTimeoutMs);
      this.cmd.once("ready", onReady);
    });
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
  private track(conn: Redis | Cluster, role: string): void {
    let down = false;
    const lost = (err?: Error) => {
      if (down || this.state !== "open") return;
      down = true;
      this.log.warn(
        { redis: this.where, connection: role, err: err?.message },
        "lost the connection to the Redis store",
      );
    };
    conn.on("error", (err: Error) => lost(err));
    conn.on("close", () => lost());
    conn.on("ready", () => {
      if (!down) return;
      down = false;
      this.log.info({ redis: this.where, connection: role }, "reconnected to the Redis store");
    });
  }

  private async warnIfVolatile(): Promise<void> {
    try {
      const reply = (await this.cmd.config("GET", "appendonly")) as unknown;
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
