/**
 * The shared store: every replica of the control plane reads and writes the same Redis (one server,
 * Sentinel, or a Redis Cluster), and learns of the others' commits through pub/sub.
 *
 * Every command has a short timeout and nothing is queued while disconnected: when Redis is down,
 * calls fail with StoreUnavailableError within about two seconds instead of hanging.
 */
import type { Redis } from "ioredis";
import type { Logger } from "@portico/common";
import type { Config } from "../model/schema.js";
import {
  checkExpected,
  decodeRevision,
  encodeRevision,
  listLimit,
  newRevision,
  sealRevision,
  summaryOf,
} from "./revision.js";
import { openSealer, SecretsKeyError, type SecretSealer } from "./sealer.js";
import {
  StoreConflictError,
  StoreUnavailableError,
  type CommitMeta,
  type ConfigStore,
  type Revision,
  type RevisionSummary,
} from "./types.js";
import { awaitReplicas, warnIfVolatile } from "./redis/durability.js";
import { HeadFeed } from "./redis/head-feed.js";
import { revisionKey, storeKeys, type StoreKeys } from "./redis/keys.js";
import { createLink, whenReady, type Link } from "./redis/link.js";
import { storeSettings, type RedisStoreOptions, type StoreSettings } from "./redis/options.js";
import { logOutages } from "./redis/outages.js";
import { commitRevision, readHead } from "./redis/scripts.js";
import { redisFleetBoard, type FleetBoard } from "./redis/fleet-board.js";
import { redisUsageLedger } from "../quota/redis-ledger.js";
import type { UsageLedger } from "../quota/ledger.js";

export type { RedisStoreOptions } from "./redis/options.js";
export type { FleetBoard } from "./redis/fleet-board.js";

export class RedisStore implements ConfigStore {
  readonly kind = "redis" as const;
  readonly prefix: string;
  private readonly s: StoreSettings;
  private readonly log: Logger;
  private readonly keys: StoreKeys;
  private readonly link: Link;
  private readonly feed: HeadFeed;
  private state: "new" | "opening" | "open" | "closed" = "new";
  private closing?: Promise<void>;
  private readonly inflight = new Set<Promise<unknown>>();
  private readonly boardListeners = new Set<(replica: string) => void>();
  private readonly quotaListeners = new Set<() => void>();
  private readonly secrets: RedisStoreOptions["secrets"];
  private sealer?: SecretSealer;

  constructor(opts: RedisStoreOptions) {
    this.secrets = opts.secrets;
    this.s = storeSettings(opts);
    this.prefix = this.s.prefix;
    this.log = opts.log;
    this.keys = storeKeys(this.prefix);
    this.link = createLink(opts, this.s, this.keys.head);
    this.feed = new HeadFeed(this, this.log, { redis: this.s.where, prefix: this.prefix });
  }

  async open(): Promise<void> {
    if (this.state !== "new") throw new Error(`the Redis store at ${this.s.where} was already opened`);
    this.state = "opening";
    try {
      this.sealer = await openSealer(this.secrets ?? {}, ".portico/secrets.key", this.log);
    } catch (err) {
      this.state = "closed";
      throw err;
    }
    const { cmd, sub } = this.link;
    const isOpen = () => this.state === "open";
    // The command side coming back triggers a catch-up too: the watch side may have come back
    // first, when its catch-up could not read anything yet.
    logOutages(this.log, { redis: this.s.where, connection: "commands" }, isOpen, (lost, back) =>
      this.link.onCommands(lost, () => {
        back();
        if (isOpen()) this.feed.catchUp("head");
      }),
    );
    logOutages(this.log, { redis: this.s.where, connection: "watch" }, isOpen, (lost, back) => {
      sub.on("error", (err) => lost(err));
      sub.on("close", () => lost());
      sub.on("ready", back);
    });
    let head: number;
    try {
      // One after the other: on a Cluster, the watch connection goes to a node the command side
      // has just reached, rather than to a seed that may be down.
      await withTimeout(
        (async () => {
          await cmd.connect();
          // Timed out meanwhile: the store is closed, and must not connect behind the caller's back.
          if (this.state === "opening") await sub.connect();
        })(),
        this.s.connectTimeoutMs + this.s.commandTimeoutMs,
        "connecting",
      );
      sub.on("message", (channel, message) => {
        const n = Number(message);
        if (channel === this.keys.channel && Number.isSafeInteger(n) && n > 0) this.feed.catchUp(n);
        else if (channel === this.keys.fleet.channel) for (const l of this.boardListeners) l(message);
        else if (channel === this.keys.quota.channel) for (const l of this.quotaListeners) l();
      });
      // Subscribe before reading the head, so nothing committed in between goes unnoticed.
      await sub.subscribe(this.keys.channel);
      await sub.subscribe(this.keys.fleet.channel);
      await sub.subscribe(this.keys.quota.channel);
      const text = await cmd.get(this.keys.head);
      head = text === null ? 0 : Number(text);
    } catch (err) {
      this.state = "closed";
      cmd.disconnect();
      sub.disconnect();
      throw unavailable(`cannot open the Redis store at ${this.s.where}`, err);
    }
    // Later 'ready' events are reconnections: subscribe again and catch up on what was missed.
    sub.on("ready", () => {
      sub
        .subscribe(this.keys.channel)
        .then(() => sub.subscribe(this.keys.fleet.channel))
        .then(() => sub.subscribe(this.keys.quota.channel))
        .then(() => this.feed.catchUp("head"))
        .catch((err: Error) => this.log.warn({ err: err.message }, "could not resubscribe to store changes"));
    });
    this.state = "open";
    this.feed.start(head);
    if (head > 0) {
      // A key that does not open the stored secrets stops the start, rather than the first read.
      try {
        await this.head();
      } catch (err) {
        if (err instanceof SecretsKeyError) {
          await this.close();
          throw err;
        }
      }
    }
    await warnIfVolatile(this.link.home(), this.log, this.s.where);
    this.log.info({ redis: this.s.where, prefix: this.prefix, head }, "Redis store opened");
  }

  async head(): Promise<Revision | undefined> {
    const text = await this.run("read the head", () => readHead(this.link.cmd, this.keys));
    return text === undefined ? undefined : this.decode(text);
  }

  async get(number: number): Promise<Revision | undefined> {
    if (!Number.isSafeInteger(number) || number < 1) {
      this.assertOpen();
      return undefined;
    }
    const text = await this.run(`read revision ${number}`, () =>
      this.link.cmd.get(revisionKey(this.keys, number)),
    );
    return text === null ? undefined : this.decode(text, number);
  }

  async list(limit?: number): Promise<RevisionSummary[]> {
    const n = listLimit(limit, this.s.keep);
    if (n === 0) {
      this.assertOpen();
      return [];
    }
    const members = await this.run("list revisions", () => this.link.cmd.zrevrange(this.keys.revs, 0, n - 1));
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
    return this.feed.watch(listener);
  }

  /** Where the replicas sharing this store publish the state of the nodes connected to them. */
  fleetBoard(): FleetBoard {
    return redisFleetBoard(
      this.keys.fleet,
      (what, fn) => this.run(`${what}`, () => fn(this.link.cmd)),
      this.boardListeners,
    );
  }

  /** Where the replicas count calendar quotas from access logs and share who ran out. */
  usageLedger(): UsageLedger {
    return redisUsageLedger(
      this.keys.quota,
      (what, fn) => this.run(what, () => fn(this.link.cmd)),
      this.quotaListeners,
    );
  }

  close(): Promise<void> {
    if (this.state === "new") this.state = "closed";
    if (this.state === "closed" && !this.closing) return Promise.resolve();
    this.closing ??= (async () => {
      this.state = "closed";
      this.feed.stop();
      await Promise.allSettled([...this.inflight]);
      const { cmd, sub } = this.link;
      await Promise.allSettled([cmd.quit(), sub.quit()]);
      cmd.disconnect();
      sub.disconnect();
    })();
    return this.closing;
  }

  secretCreatedAt(fp: string): string | undefined {
    return this.sealer?.createdAt(fp);
  }

  private async doCommit(expected: number, config: Config, meta?: CommitMeta): Promise<Revision> {
    const number = expected + 1;
    const rev = newRevision(number, config, meta);
    const text = encodeRevision(rev);
    const sealed = sealRevision(rev, this.sealer!);
    this.feed.pend(number);
    let result: { won: boolean; head: number };
    try {
      result = await this.run("commit", () =>
        commitRevision(this.link.cmd, this.keys, {
          expected,
          text: sealed,
          summary: JSON.stringify(summaryOf(rev)),
          keep: this.s.keep,
        }),
      );
    } catch (err) {
      this.feed.settle(number, false);
      // It may have been applied before the connection broke; if so, watchers must still hear of it.
      this.feed.catchUp("head");
      throw err;
    }
    this.feed.settle(number, result.won);
    if (!result.won) {
      // The winner's notification may have been skipped while this commit was pending.
      this.feed.catchUp("head");
      throw new StoreConflictError(expected, result.head);
    }
    try {
      const { waitReplicas, waitTimeoutMs } = this.s;
      if (waitReplicas > 0) {
        await this.run("wait for replicas", () =>
          awaitReplicas(this.home(), number, waitReplicas, waitTimeoutMs),
        );
      }
    } finally {
      // Written either way: watchers hear of it like of any head.
      this.feed.deliverOwn(number, text);
    }
    // The committer built `config`; the store keeps its own text, so no copy is needed.
    return rev;
  }

  /** Runs a command once the connection is ready (waiting up to the command timeout for a reconnection). */
  private async run<T>(what: string, fn: () => Promise<T>): Promise<T> {
    this.assertOpen();
    try {
      await whenReady(this.link, this.s.commandTimeoutMs);
      return await fn();
    } catch (err) {
      throw unavailable(`could not ${what} in the Redis store at ${this.s.where}`, err);
    }
  }

  private home(): Redis {
    const home = this.link.home();
    if (!home) throw new Error("no connection to the node that holds the store's keys");
    return home;
  }

  private decode(text: string, number?: number): Revision {
    try {
      return decodeRevision(text, this.sealer!, number);
    } catch (err) {
      if (err instanceof SecretsKeyError) throw err;
      throw new StoreUnavailableError(
        `the Redis store at ${this.s.where} holds a damaged revision${number ? ` ${number}` : ""}: ${(err as Error).message}`,
      );
    }
  }

  private assertOpen(): void {
    if (this.state !== "open") {
      throw new StoreUnavailableError(
        this.state === "closed"
          ? `the Redis store at ${this.s.where} is closed`
          : `the Redis store at ${this.s.where} is not open yet`,
      );
    }
  }
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
