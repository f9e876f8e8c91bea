import { createHash } from "node:crypto";
import type { Redis } from "ioredis";

/** A part's last good answer, standing in for a call that failed. */
export interface StaleEntry {
  value: unknown;
  storedAtMs: number;
}

/**
 * Where last good answers are kept. Reads happen only when a part has failed and must be quick
 * (they spend the part's remaining deadline); writes never hold up an answer.
 */
export interface StaleStore {
  get(key: string, maxAgeMs: number): Promise<StaleEntry | undefined>;
  put(key: string, value: unknown, maxAgeMs: number): void;
  close(): Promise<void>;
}

/**
 * The key of a part's answer: the route, the part, the path called and the caller's identity.
 * Upstreams answer per caller (identity headers reach them), so one caller's answer must never
 * stand in for another's, even where the path is the same.
 */
export function staleKey(route: string, part: string, path: string, identity: readonly string[]): string {
  const h = createHash("sha256")
    .update(JSON.stringify([path, ...identity]))
    .digest("base64url");
  return `${route}/${part}/${h}`;
}

/** In this process, bounded: the least recently stored entries go first. */
export class MemoryStaleStore implements StaleStore {
  private readonly entries = new Map<string, StaleEntry & { expiresAtMs: number }>();
  private readonly maxEntries: number;
  private readonly now: () => number;

  constructor(opts: { maxEntries?: number; now?: () => number } = {}) {
    this.maxEntries = opts.maxEntries ?? 10_000;
    this.now = opts.now ?? Date.now;
  }

  get size(): number {
    return this.entries.size;
  }

  async get(key: string, maxAgeMs: number): Promise<StaleEntry | undefined> {
    const e = this.entries.get(key);
    if (!e) return undefined;
    const now = this.now();
    if (now >= e.expiresAtMs) {
      this.entries.delete(key);
      return undefined;
    }
    if (now - e.storedAtMs > maxAgeMs) return undefined;
    return { value: e.value, storedAtMs: e.storedAtMs };
  }

  put(key: string, value: unknown, maxAgeMs: number): void {
    const now = this.now();
    this.entries.delete(key);
    this.entries.set(key, { value, storedAtMs: now, expiresAtMs: now + maxAgeMs });
    while (this.entries.size > this.maxEntries) this.entries.delete(this.entries.keys().next().value!);
  }

  async close(): Promise<void> {
    this.entries.clear();
  }
}

export interface RedisStaleStoreOptions {
  redis: Redis;
  prefix?: string;
  /** A read slower than this is a miss; default 50 ms. */
  timeoutMs?: number;
  /** Called for each failed or timed-out Redis call (the answer goes on without it). */
  onError?: (op: "get" | "put", err: Error) => void;
  now?: () => number;
}

/** Shared by every aggregator replica, so a fallback survives restarts and load balancing. */
export class RedisStaleStore implements StaleStore {
  private readonly prefix: string;
  private readonly timeoutMs: number;
  private readonly now: () => number;

  constructor(private readonly opts: RedisStaleStoreOptions) {
    this.prefix = opts.prefix ?? "portico-agg:";
    this.timeoutMs = opts.timeoutMs ?? 50;
    this.now = opts.now ?? Date.now;
  }

  async get(key: string, maxAgeMs: number): Promise<StaleEntry | undefined> {
    let timer: NodeJS.Timeout | undefined;
    try {
      const text = await Promise.race([
        this.opts.redis.get(this.prefix + key),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`no answer in ${this.timeoutMs} ms`)), this.timeoutMs);
        }),
      ]);
      if (text === null) return undefined;
      const e = JSON.parse(text) as { v: unknown; t: number };
      if (this.now() - e.t > maxAgeMs) return undefined;
      return { value: e.v, storedAtMs: e.t };
    } catch (err) {
      this.opts.onError?.("get", err as Error);
      return undefined;
    } finally {
      clearTimeout(timer);
    }
  }

  put(key: string, value: unknown, maxAgeMs: number): void {
    const text = JSON.stringify({ v: value, t: this.now() });
    this.opts.redis
      .set(this.prefix + key, text, "PX", maxAgeMs)
      .catch((err: Error) => this.opts.onError?.("put", err));
  }

  async close(): Promise<void> {
    this.opts.redis.disconnect();
  }
}
