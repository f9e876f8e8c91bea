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

/** The bytes of an answer as stored: its JSON, which is what Redis holds and about what memory does. */
function storedBytes(value: unknown): number {
  return Buffer.byteLength(JSON.stringify(value) ?? "");
}

/** Answers larger than this are not kept: one would push out hundreds of others. */
export const DEFAULT_MAX_ENTRY_BYTES = 1024 * 1024;

export interface MemoryStaleStoreOptions {
  /** Entries kept at most (default 10,000). */
  maxEntries?: number;
  /** Bytes of answers kept at most (default 64 MiB), whatever their number. */
  maxBytes?: number;
  /** A larger answer is not kept (default 1 MiB). */
  maxEntryBytes?: number;
  /** Told of each entry dropped for room, for a metric. */
  onEvict?: () => void;
  now?: () => number;
}

type MemoryEntry = StaleEntry & { expiresAtMs: number; bytes: number };

/**
 * In this process, bounded in entries and in bytes: keys follow callers and paths, so without
 * both caps a caller could fill memory with many answers or a few huge ones. The least recently
 * stored entries go first.
 */
export class MemoryStaleStore implements StaleStore {
  private readonly entries = new Map<string, MemoryEntry>();
  private readonly maxEntries: number;
  private readonly maxBytes: number;
  private readonly maxEntryBytes: number;
  private readonly now: () => number;
  private bytesHeld = 0;
  /** Entries dropped for room since the start. */
  evictions = 0;

  constructor(private readonly opts: MemoryStaleStoreOptions = {}) {
    this.maxEntries = opts.maxEntries ?? 10_000;
    this.maxBytes = opts.maxBytes ?? 64 * 1024 * 1024;
    this.maxEntryBytes = Math.min(opts.maxEntryBytes ?? DEFAULT_MAX_ENTRY_BYTES, this.maxBytes);
    this.now = opts.now ?? Date.now;
  }

  get size(): number {
    return this.entries.size;
  }

  /** Bytes of the answers held. */
  get bytes(): number {
    return this.bytesHeld;
  }

  async get(key: string, maxAgeMs: number): Promise<StaleEntry | undefined> {
    const e = this.entries.get(key);
    if (!e) return undefined;
    const now = this.now();
    if (now >= e.expiresAtMs) {
      this.remove(key, e);
      return undefined;
    }
    if (now - e.storedAtMs > maxAgeMs) return undefined;
    return { value: e.value, storedAtMs: e.storedAtMs };
  }

  put(key: string, value: unknown, maxAgeMs: number): void {
    const now = this.now();
    const old = this.entries.get(key);
    if (old) this.remove(key, old);
    const bytes = storedBytes(value);
    if (bytes > this.maxEntryBytes) return;
    this.entries.set(key, { value, storedAtMs: now, expiresAtMs: now + maxAgeMs, bytes });
    this.bytesHeld += bytes;
    while (this.entries.size > this.maxEntries || this.bytesHeld > this.maxBytes) {
      const [oldestKey, oldest] = this.entries.entries().next().value!;
      this.remove(oldestKey, oldest);
      this.evictions++;
      this.opts.onEvict?.();
    }
  }

  async close(): Promise<void> {
    this.entries.clear();
    this.bytesHeld = 0;
  }

  private remove(key: string, e: MemoryEntry): void {
    this.entries.delete(key);
    this.bytesHeld -= e.bytes;
  }
}

export interface RedisStaleStoreOptions {
  redis: Redis;
  prefix?: string;
  /** A read slower than this is a miss; default 50 ms. */
  timeoutMs?: number;
  /** Called for each failed or timed-out Redis call (the answer goes on without it). */
  onError?: (op: "get" | "put", err: Error) => void;
  /** A larger answer is not kept (default 1 MiB). */
  maxEntryBytes?: number;
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
    if (Buffer.byteLength(text) > (this.opts.maxEntryBytes ?? DEFAULT_MAX_ENTRY_BYTES)) return;
    this.opts.redis
      .set(this.prefix + key, text, "PX", maxAgeMs)
      .catch((err: Error) => this.opts.onError?.("put", err));
  }

  async close(): Promise<void> {
    this.opts.redis.disconnect();
  }
}
