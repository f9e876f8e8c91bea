/**
 * What both Redis modes share: the connections, the up/down state with its one log line and
 * metric per change, the heartbeat that counts live instances (the N of each instance's share)
 * and doubles as the reconnection probe, and the batched sync of locally kept counts.
 */
import { randomUUID } from "node:crypto";
import os from "node:os";
import type { Registry } from "prom-client";
import { silentLogger, type Logger } from "@portico/common";
import { Planner, type KeyBuilder, type LimitPlan } from "../limiter/algorithms.js";
import { systemClock, type Clock } from "../limiter/clock.js";
import type { CheckResult, FailureMode, LimitCheck, RateLimiter } from "../limiter/types.js";
import {
  createRedisClient,
  describeRedis,
  type RedisClient,
  type RedisConnectionOptions,
} from "./connect.js";
import { RedisBackendMetrics } from "./metrics.js";
import { MEMBERS, runScript, SYNC } from "./scripts.js";

export interface RedisLimiterOptions {
  connection: RedisConnectionOptions;
  /** Time for windows and refills; the heartbeat and timers use the real clock. */
  clock?: Clock;
  log?: Logger;
  registry?: Registry;
  metrics?: RedisBackendMetrics;
  /** Prefix of every key (default `portico-rl:`). */
  prefix?: string;
  /**
   * How long a decision may wait on Redis: a strict round trip, or a local-first share refresh.
   * Default 10 ms, well under Envoy's 20 ms rate-limit filter timeout.
   */
  timeoutMs?: number;
  /** Timeout of sync batches and heartbeats (off the request path). Default 1 s. */
  syncTimeoutMs?: number;
  /** What decides while Redis is unreachable. Default `local`: each instance alone, at its share. */
  failureMode?: FailureMode;
  /** N for the shares: fixed, or `auto` (default), the instances heartbeating on this Redis. */
  instances?: number | "auto";
  instanceId?: string;
  /** Heartbeat period while Redis is up (default 1 s); members expire after three. */
  heartbeatMs?: number;
  /** Reconnection probe period while it is down (default 250 ms). */
  probeIntervalMs?: number;
  /** How long to wait for a connection (default 1 s). */
  connectTimeoutMs?: number;
  /** Per-key state kept at most, in each of the backend's stores (`DEFAULT_MAX_KEYS`). */
  maxKeys?: number;
}

/** One counter handed to Redis by the SYNC script. */
export interface SyncItem {
  readonly kind: "c" | "s" | "b";
  readonly keys: readonly string[];
  /** Groups items that may share one script call on a Cluster (same hash tag). */
  readonly tag: string;
  readonly hits: number;
  readonly p1: number;
  readonly p2: number;
  readonly p3: number;
}

export const DEFAULT_PREFIX = "portico-rl:";
const TIMEOUTS_BEFORE_DOWN = 3;

export abstract class RedisBackend implements RateLimiter {
  abstract readonly kind: string;
  readonly clock: Clock;
  readonly metrics: RedisBackendMetrics;
  readonly failureMode: FailureMode;
  readonly where: string;
  protected readonly log: Logger;
  protected readonly planner: Planner;
  /** `prefix{descriptor}suffix`: the descriptor part is the hash tag, so every key one decision touches lives in one Cluster slot. */
  protected readonly keyOf: KeyBuilder;
  protected readonly syncClient: RedisClient;
  protected readonly timeoutMs: number;
  private readonly cluster: boolean;
  private readonly membersKey: string;
  private readonly instanceId: string;
  private readonly heartbeatMs: number;
  private readonly probeMs: number;
  private health: "up" | "down" = "down";
  private announcedDown = false;
  private timeoutsInARow = 0;
  private liveInstances = 1;
  private heartbeatTimer?: NodeJS.Timeout;
  private ticking?: Promise<void>;
  private closed = false;
  private readonly upWaiters = new Set<() => void>();

  constructor(protected readonly opts: RedisLimiterOptions) {
    this.clock = opts.clock ?? systemClock;
    this.log = opts.log ?? silentLogger();
    this.metrics = opts.metrics ?? new RedisBackendMetrics(opts.registry);
    this.failureMode = opts.failureMode ?? "local";
    this.timeoutMs = opts.timeoutMs ?? 10;
    this.heartbeatMs = opts.heartbeatMs ?? 1_000;
    this.probeMs = opts.probeIntervalMs ?? 250;
    this.instanceId = opts.instanceId ?? `${os.hostname()}-${process.pid}-${randomUUID().slice(0, 8)}`;
    const prefix = opts.prefix ?? DEFAULT_PREFIX;
    if (/[{}]/.test(prefix)) throw new TypeError(`the key prefix must not contain braces, got '${prefix}'`);
    this.cluster = !!opts.connection.cluster;
    this.membersKey = `${prefix}{members}`;
    this.keyOf = (base, suffix) => `${prefix}{${base}}${suffix}`;
    this.planner = new Planner(this.keyOf);
    this.where = describeRedis(opts.connection);
    this.syncClient = createRedisClient(opts.connection, {
      commandTimeoutMs: opts.syncTimeoutMs ?? 1_000,
      connectTimeoutMs: opts.connectTimeoutMs,
      connectionName: "portico-ratelimit-sync",
    });
    this.watch(this.syncClient);
    this.metrics.up.set(0);
    this.metrics.instances.set(this.instances());
  }

  abstract check(checks: readonly LimitCheck[]): Promise<CheckResult[]>;

  /** Hands what was decided locally to Redis before decisions are shared again. */
  protected abstract resync(): Promise<void>;

  /**
   * Starts the heartbeat: at once when the connection is ready, or after the connect timeout if
   * it never is (then Redis is reported unreachable, once).
   */
  protected start(): void {
    this.scheduleTick(this.opts.connectTimeoutMs ?? 1_000);
  }

  isUp(): boolean {
    return this.health === "up";
  }

  /** The N of each instance's share. */
  instances(): number {
    const fixed = this.opts.instances;
    return typeof fixed === "number" ? Math.max(1, fixed) : Math.max(1, this.liveInstances);
  }

  /** Resolves once Redis answers and decisions are shared (tests, start-up checks). */
  waitUntilUp(timeoutMs = 5_000): Promise<void> {
    if (this.health === "up") return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.upWaiters.delete(done);
        reject(new Error(`Redis at ${this.where} did not become reachable within ${timeoutMs} ms`));
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        resolve();
      };
      this.upWaiters.add(done);
    });
  }

  /** Runs one heartbeat now (tests use it to see membership without waiting). */
  heartbeat(): Promise<void> {
    this.ticking ??= this.tick().finally(() => (this.ticking = undefined));
    return this.ticking;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.heartbeatTimer);
    await this.ticking?.catch(() => undefined);
    if (this.health === "up") {
      await runScript(this.syncClient, MEMBERS, [this.membersKey], [Date.now(), this.instanceId, 1, 1]).catch(
        () => undefined,
      );
    }
    this.syncClient.disconnect();
  }

  /** Called after a Redis call that worked: timeouts only count when they come in a row. */
  protected reportSuccess(): void {
    this.timeoutsInARow = 0;
  }

  /**
   * Called with every failed Redis call. A lost connection is a change of state at once; a
   * timeout only when it is the third in a row (the request that timed out has already been
   * decided without Redis, so one slow reply under load does not switch the instance over).
   */
  protected reportFailure(err: unknown): void {
    if (this.closed) return;
    const message = (err as Error)?.message ?? String(err);
    if (this.health === "up" && /timed out/i.test(message) && ++this.timeoutsInARow < TIMEOUTS_BEFORE_DOWN)
      return;
    this.timeoutsInARow = 0;
    if (this.health === "up") {
      this.health = "down";
      this.announcedDown = true;
      this.metrics.up.set(0);
      this.metrics.stateChanges.inc({ state: "down" });
      this.log.warn(
        { redis: this.where, err: message, failureMode: this.failureMode, instances: this.instances() },
        "Redis unreachable: deciding without it until it answers again",
      );
      this.scheduleTick(this.probeMs);
    } else if (!this.announcedDown) {
      this.announcedDown = true;
      this.metrics.stateChanges.inc({ state: "down" });
      this.log.warn(
        { redis: this.where, err: message, failureMode: this.failureMode },
        "Redis unreachable at start: deciding without it until it answers",
      );
    }
  }

  /** Sends sync items in as few script calls as the topology allows; values in item order. */
  protected async sync(items: readonly SyncItem[], now: number): Promise<number[][]> {
    const groups = new Map<string, number[]>();
    items.forEach((it, i) => {
      const g = this.cluster ? it.tag : "";
      let list = groups.get(g);
      if (!list) groups.set(g, (list = []));
      list.push(i);
    });
    const out: number[][] = new Array(items.length);
    // All groups go out in one turn of the event loop: one pipelined write per node.
    await Promise.all(
      [...groups.values()].map(async (idx) => {
        const keys: string[] = [];
        const args: (string | number)[] = [now, idx.length];
        for (const i of idx) {
          const it = items[i]!;
          keys.push(...it.keys);
          args.push(it.kind, it.hits, it.p1, it.p2, it.p3);
        }
        const reply = (await runScript(this.syncClient, SYNC, keys, args)) as string[];
        let r = 0;
        for (const i of idx) {
          const width = items[i]!.kind === "s" ? 2 : 1;
          out[i] = reply.slice(r, r + width).map(Number);
          r += width;
        }
      }),
    );
    this.metrics.syncKeys.inc(items.length);
    return out;
  }

  private watch(client: RedisClient): void {
    // A dropped connection is noticed at once, not at the next decision or heartbeat.
    client.on("close", () => {
      if (this.health === "up") this.reportFailure(new Error("connection closed"));
    });
    client.on("ready", () => {
      if (this.health === "down") this.scheduleTick(0);
    });
  }

  private scheduleTick(delayMs: number): void {
    if (this.closed) return;
    clearTimeout(this.heartbeatTimer);
    this.heartbeatTimer = setTimeout(() => void this.heartbeat(), delayMs);
    this.heartbeatTimer.unref();
  }

  private async tick(): Promise<void> {
    try {
      const ttl = this.heartbeatMs * 3;
      const count = await runScript(
        this.syncClient,
        MEMBERS,
        [this.membersKey],
        [Date.now(), this.instanceId, ttl, 0],
      );
      this.liveInstances = Math.max(1, Number(count));
      this.metrics.instances.set(this.instances());
      if (this.health === "down") {
        await this.resync();
        if (this.closed) return;
        this.health = "up";
        this.announcedDown = false;
        this.metrics.up.set(1);
        this.metrics.stateChanges.inc({ state: "up" });
        this.log.info(
          { redis: this.where, instances: this.instances() },
          "Redis reachable: decisions are shared",
        );
        for (const w of this.upWaiters) w();
        this.upWaiters.clear();
      }
    } catch (err) {
      this.reportFailure(err);
    } finally {
      this.scheduleTick(this.health === "up" ? this.heartbeatMs : this.probeMs);
    }
  }
}

/** The SYNC item for a counter or sliding window plan carrying `hits`. */
export function counterItem(plan: LimitPlan, hits: number): SyncItem {
  if (plan.kind === "bucket") throw new TypeError("a bucket needs bucketItem");
  const keys = plan.kind === "sliding" ? [plan.key, plan.prevKey] : [plan.key];
  return {
    kind: plan.kind === "sliding" ? "s" : "c",
    keys,
    tag: plan.base,
    hits,
    p1: plan.expireAt,
    p2: 0,
    p3: 0,
  };
}
