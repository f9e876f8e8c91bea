import type { Clock } from "../clock.js";
import { readPublishedJwks, type Jwk, type JwsAlgorithm } from "@portico/contract";
import { readCapped } from "../http-body.js";
import { KeySet, type KeyEntry } from "./keys.js";

export type KeyLookup =
  | { ok: true; keys: KeyEntry[]; keySet: KeySet }
  /** `unknown_kid`: the key set (fresh, or re-fetched within the cooldown) has no such key. */
  | { ok: false; reason: "unknown_kid" | "no_usable_key" }
  /** The keys could not be fetched at all, so nothing can be said about the token. */
  | { ok: false; reason: "jwks_unavailable" };

/** Where a provider's keys come from. */
export interface JwksSource {
  /** Keys for a token; may fetch (once, shared, rate-limited), never more than the cooldown allows. */
  lookup(kid: string | undefined, alg: JwsAlgorithm): Promise<KeyLookup>;
  /** The current set, if any, without I/O: cached tokens are checked against it. */
  current(): KeySet | undefined;
  /** Fetches now (start-up), so the first request does not wait. Never throws. */
  warm(): Promise<void>;
}

export class InlineJwks implements JwksSource {
  private readonly set: KeySet;

  constructor(keys: readonly Jwk[]) {
    this.set = new KeySet(keys);
  }

  async lookup(kid: string | undefined, alg: JwsAlgorithm): Promise<KeyLookup> {
    return lookupIn(this.set, kid, alg);
  }

  current(): KeySet {
    return this.set;
  }

  async warm(): Promise<void> {}
}

function lookupIn(set: KeySet, kid: string | undefined, alg: JwsAlgorithm): KeyLookup {
  const keys = set.candidates(kid, alg);
  if (keys.length > 0) return { ok: true, keys, keySet: set };
  return { ok: false, reason: kid !== undefined && !set.hasKid(kid) ? "unknown_kid" : "no_usable_key" };
}

export type FetchTrigger = "startup" | "expiry" | "unknown_kid" | "retry";

export interface JwksFetchEvent {
  trigger: FetchTrigger;
  ok: boolean;
  /** Keys accepted from the answer. */
  keys: number;
  /** Keys left out (wrong type, private material, too short), with the reason for each. */
  skipped: string[];
  error?: string;
  durationMs: number;
}

export interface RemoteJwksOptions {
  uri: string;
  clock: Clock;
  /** How long a fetched set is fresh; after that it is refreshed in the background while still used. */
  cacheMs: number;
  /** The least time between two fetches caused by unknown `kid`s. */
  cooldownMs: number;
  timeoutMs: number;
  /** Larger answers are refused: a JWKS is a few kilobytes. */
  maxBytes?: number;
  fetch?: typeof fetch;
  onFetch?: (event: JwksFetchEvent) => void;
}

/** After a failed fetch, the next attempt waits at least this long (or the cooldown, if shorter). */
const FAILURE_BACKOFF_MS = 5_000;

/**
 * A JWKS fetched from the issuer. Requests never wait for a refresh once a set is held: an expired
 * set keeps serving while one background fetch replaces it. A token with an unknown `kid` waits
 * for one fetch (shared by every request that arrives meanwhile), at most once per cooldown, so
 * a key the issuer has just started using is found without a failed request, and a flood of
 * made-up kids costs the issuer one fetch per cooldown. The price: a key first used within the
 * cooldown after such a flood is refused until the cooldown ends, unless the issuer published it
 * at least `cacheMs` before using it (the usual practice), when the background refresh has it.
 */
export class RemoteJwks implements JwksSource {
  private set: KeySet | undefined;
  private fetchedAt = -Infinity;
  private lastAttemptAt = -Infinity;
  /** Only fetches caused by unknown kids count against the cooldown, so a key first used right after start-up is still found. */
  private lastUnknownKidFetchAt = -Infinity;
  private lastFailed = false;
  private inflight: Promise<void> | undefined;
  private readonly fetchImpl: typeof fetch;
  private readonly maxBytes: number;

  constructor(private readonly opts: RemoteJwksOptions) {
    this.fetchImpl = opts.fetch ?? fetch;
    this.maxBytes = opts.maxBytes ?? 1_048_576;
  }

  current(): KeySet | undefined {
    return this.set;
  }

  async warm(): Promise<void> {
    await this.refresh("startup");
  }

  async lookup(kid: string | undefined, alg: JwsAlgorithm): Promise<KeyLookup> {
    const now = this.opts.clock();
    if (this.set === undefined) {
      if (this.inflight) await this.inflight;
      else if (this.mayAttempt(now, false)) await this.refresh(this.lastFailed ? "retry" : "startup");
      if (this.set === undefined) return { ok: false, reason: "jwks_unavailable" };
    } else if (now - this.fetchedAt >= this.opts.cacheMs && !this.inflight && this.mayAttempt(now, false)) {
      void this.refresh("expiry");
    }
    const set: KeySet = this.set;
    const found = lookupIn(set, kid, alg);
    if (found.ok || found.reason !== "unknown_kid") return found;
    if (this.inflight) {
      await this.inflight;
    } else if (this.mayAttempt(this.opts.clock(), true)) {
      this.lastUnknownKidFetchAt = this.opts.clock();
      await this.refresh("unknown_kid");
    } else {
      return found;
    }
    return this.set === set ? found : lookupIn(this.set, kid, alg);
  }

  private mayAttempt(now: number, unknownKid: boolean): boolean {
    const since = now - this.lastAttemptAt;
    if (this.lastFailed) return since >= Math.min(FAILURE_BACKOFF_MS, Math.max(this.opts.cooldownMs, 1));
    return unknownKid ? now - this.lastUnknownKidFetchAt >= this.opts.cooldownMs : true;
  }

  /** One fetch at a time; callers that arrive meanwhile share it. */
  private refresh(trigger: FetchTrigger): Promise<void> {
    if (this.inflight) return this.inflight;
    this.lastAttemptAt = this.opts.clock();
    this.inflight = this.fetchOnce(trigger).finally(() => {
      this.inflight = undefined;
    });
    return this.inflight;
  }

  private async fetchOnce(trigger: FetchTrigger): Promise<void> {
    const started = performance.now();
    const skipped: string[] = [];
    try {
      const res = await this.fetchImpl(this.opts.uri, {
        headers: { accept: "application/jwk-set+json, application/json" },
        signal: AbortSignal.timeout(this.opts.timeoutMs),
        // A redirect could move key discovery to a host nobody configured.
        redirect: "error",
      });
      if (!res.ok) throw new Error(`JWKS endpoint answered HTTP ${res.status}`);
      const text = await readCapped(res, this.maxBytes);
      const read = readPublishedJwks(JSON.parse(text));
      skipped.push(...read.skipped);
      if (read.error) throw new Error(read.error);
      const keys = read.keys;
      this.set = new KeySet(keys);
      this.fetchedAt = this.opts.clock();
      this.lastFailed = false;
      this.opts.onFetch?.({
        trigger,
        ok: true,
        keys: keys.length,
        skipped,
        durationMs: performance.now() - started,
      });
    } catch (err) {
      this.lastFailed = true;
      this.opts.onFetch?.({
        trigger,
        ok: false,
        keys: 0,
        skipped,
        error: (err as Error).message,
        durationMs: performance.now() - started,
      });
    }
  }
}
