/**
 * Per-key state whose keys come from requests (API keys, addresses, paths): without a cap, a
 * caller inventing a new key per request grows memory without end. Keys live in two generations
 * of at most half the cap each: a key read or written goes to the young one, and when the young
 * one is full the old one is dropped whole (`onEvict` is told of each key, for a metric). So the
 * keys dropped are those not used in the last half-cap of distinct keys, and each operation costs
 * O(1), even under a flood of new keys.
 */
export class BoundedMap<K, V> {
  private young = new Map<K, V>();
  private old = new Map<K, V>();
  private readonly generation: number;

  constructor(
    readonly maxEntries: number,
    private readonly onEvict?: (key: K, value: V) => void,
  ) {
    if (!Number.isInteger(maxEntries) || maxEntries < 2) {
      throw new RangeError(`a key limit must be an integer of at least 2, got ${maxEntries}`);
    }
    this.generation = Math.floor(maxEntries / 2);
  }

  /** The value, marked as just used. */
  get(key: K): V | undefined {
    const value = this.young.get(key);
    if (value !== undefined) return value;
    const older = this.old.get(key);
    if (older !== undefined) {
      this.old.delete(key);
      this.keep(key, older);
    }
    return older;
  }

  /** The value, without marking it used (reads that are not a request's). */
  peek(key: K): V | undefined {
    return this.young.get(key) ?? this.old.get(key);
  }

  set(key: K, value: V): void {
    if (this.young.has(key)) {
      this.young.set(key, value);
      return;
    }
    this.old.delete(key);
    this.keep(key, value);
  }

  delete(key: K): boolean {
    return this.young.delete(key) || this.old.delete(key);
  }

  clear(): void {
    this.young.clear();
    this.old.clear();
  }

  get size(): number {
    return this.young.size + this.old.size;
  }

  /** Least recently used generation first. */
  *[Symbol.iterator](): IterableIterator<[K, V]> {
    yield* this.old;
    yield* this.young;
  }

  *values(): IterableIterator<V> {
    yield* this.old.values();
    yield* this.young.values();
  }

  private keep(key: K, value: V): void {
    this.young.set(key, value);
    if (this.young.size < this.generation) return;
    const dropped = this.old;
    this.old = this.young;
    this.young = new Map();
    if (this.onEvict) for (const [k, v] of dropped) this.onEvict(k, v);
  }
}

/** Keys of per-key state a limiter keeps by default: some 350 bytes each (measured), so about 70 MB at most. */
export const DEFAULT_MAX_KEYS = 200_000;
