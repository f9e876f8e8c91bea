import { EventEmitter } from "node:events";
import { Redis, type RedisOptions } from "ioredis";
import type { NodeAddress } from "./options.js";

export interface RoamingSubscriberOptions {
  /** Options of every node connection, apart from the address and reconnecting. */
  node: RedisOptions;
  /** The nodes to try, best first; asked again before each attempt, as the cluster changes. */
  candidates: () => NodeAddress[];
  /** The delay before the next attempt after the n-th lost connection in a row; no number gives up. */
  retryStrategy: (times: number) => number | void | null;
}

/**
 * A subscriber connection to one node of a Redis Cluster at a time (PUBLISH reaches every node).
 * Each attempt is a plain ioredis client that does not reconnect by itself: when it ends, the next
 * attempt goes to the next candidate, so a node that crashed or was replaced does not keep the
 * watcher deaf. Its clients' 'ready', 'close', 'error' and 'message' are re-emitted, so every
 * reconnection is heard of and can be followed by a catch-up; the Cluster client's own subscriber
 * moves between nodes the same way, but without telling.
 */
export class RoamingSubscriber extends EventEmitter {
  private client?: Redis;
  /** Attempts since the last 'ready': the next one takes the next candidate. */
  private attempts = 0;
  /** Connections lost since the last 'ready', for the retry delay. */
  private losses = 0;
  private retry?: NodeJS.Timeout;
  private stopped = false;

  constructor(private readonly opts: RoamingSubscriberOptions) {
    super();
  }

  connect(): Promise<void> {
    this.client ??= this.attempt();
    return this.client.connect();
  }

  subscribe(channel: string): Promise<unknown> {
    return this.client ? this.client.subscribe(channel) : Promise.reject(new Error("not connected"));
  }

  async quit(): Promise<void> {
    this.stop();
    await this.client?.quit();
  }

  disconnect(): void {
    this.stop();
    this.client?.disconnect();
  }

  private stop(): void {
    this.stopped = true;
    clearTimeout(this.retry);
    this.retry = undefined;
  }

  private attempt(): Redis {
    const candidates = this.opts.candidates();
    const { host, port } = candidates[this.attempts++ % candidates.length]!;
    const client = new Redis({ ...this.opts.node, host, port, retryStrategy: () => null });
    client.on("ready", () => {
      this.attempts = this.losses = 0;
      this.emit("ready");
    });
    client.on("close", () => this.emit("close"));
    client.on("error", (err: Error) => {
      if (this.listenerCount("error") > 0) this.emit("error", err);
    });
    client.on("message", (channel: string, message: string) => this.emit("message", channel, message));
    client.on("end", () => this.scheduleAttempt());
    return client;
  }

  private scheduleAttempt(): void {
    if (this.stopped) return;
    const delay = this.opts.retryStrategy(++this.losses);
    if (typeof delay !== "number") return;
    this.retry = setTimeout(() => {
      this.retry = undefined;
      this.client = this.attempt();
      // A failure is reported through 'error' and 'close', and ends in the next attempt.
      this.client.connect().catch(() => {});
    }, delay);
  }
}
