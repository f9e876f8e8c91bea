/**
 * The signing keys of every provider that publishes them (`jwksUri`), held by the control plane so
 * Envoy can verify tokens without a call out: fetched when a provider appears, refetched as the
 * issuer's Cache-Control says (within bounds), and handed to the translator; a change of keys
 * (a rotation) publishes the config again. A failed refetch keeps the keys held, as ext-authz does.
 */
import { createHash } from "node:crypto";
import type { Logger } from "@portico/common";
import type { FetchedKeys, FetchedKeySet } from "../model/jwks.js";
import type { Config, JwtProvider } from "../model/schema.js";
import { fetchJwks, type JwksFetcher } from "./fetch.js";

/** The least time between two refetches, whatever the issuer says (unless the provider's own bound is lower). */
export const MIN_REFRESH_SECONDS = 30;
/** After a failure the next try waits 1 s, then twice as long each time, at most this long. */
const MAX_RETRY_MS = 60_000;

export interface KeyFetchStatus {
  provider: string;
  uri: string;
  /** `fetched`: keys held and the last fetch worked; `failing`: the last fetch failed (keys held, if any, are kept). */
  state: "fetching" | "fetched" | "failing";
  keys?: number;
  fetchedAt?: string;
  /** The last failure, while the fetches fail. */
  error?: string;
  failures?: number;
  /** Keys of the last answer that were left out, with the reason. */
  skipped?: string[];
  nextFetchAt?: string;
}

export interface JwksKeeperOptions {
  log: Logger;
  /** Called once after the keys held for any provider changed (coalesced). */
  onChange: () => void;
  fetch?: JwksFetcher;
  /** CA certificates (PEM) trusted for JWKS endpoints besides the system's. */
  ca?: string;
}

/**
 * How long keys fetched from a provider stay fresh: what the answer's Cache-Control grants, no
 * longer than the provider's `jwksCacheSeconds`, no shorter than MIN_REFRESH_SECONDS (or the
 * provider's bound, when lower), so an issuer saying `no-cache` is not polled in a loop.
 */
export function refreshSeconds(maxAge: number | undefined, cacheSeconds: number): number {
  const floor = Math.min(MIN_REFRESH_SECONDS, cacheSeconds);
  return Math.min(cacheSeconds, Math.max(maxAge ?? cacheSeconds, floor));
}

interface Watch {
  provider: JwtProvider;
  held?: FetchedKeySet;
  fetchedAt?: number;
  timer?: NodeJS.Timeout;
  inflight: boolean;
  failures: number;
  error?: string;
  skipped: string[];
  nextAt?: number;
}

const settingsOf = (j: JwtProvider) =>
  JSON.stringify([j.allowInsecureLoopback, j.jwksTimeoutMs, j.jwksCacheSeconds]);

function digestOf(keys: readonly unknown[]): string {
  return createHash("sha256").update(JSON.stringify(keys)).digest("hex").slice(0, 16);
}

export class JwksKeeper {
  private readonly watches = new Map<string, Watch>();
  private held: FetchedKeys = new Map();
  private changePending = false;
  private stopped = false;
  private readonly fetcher: JwksFetcher;

  constructor(private readonly opts: JwksKeeperOptions) {
    this.fetcher = opts.fetch ?? fetchJwks;
  }

  /** The keys held, by provider; the same map until some provider's keys change. */
  keys(): FetchedKeys {
    return this.held;
  }

  /** Starts fetching for providers new in `config` (or whose `jwksUri` changed) and forgets removed ones. */
  track(config: Config): void {
    if (this.stopped) return;
    const wanted = new Map(config.jwtProviders.filter((j) => j.jwksUri).map((j) => [j.name, j]));
    let dropped = false;
    for (const [name, w] of this.watches) {
      const j = wanted.get(name);
      if (j && j.jwksUri === w.provider.jwksUri) {
        const changed = settingsOf(j) !== settingsOf(w.provider);
        w.provider = j;
        // A new bound applies from now on, not at the end of the old one.
        if (changed && !w.inflight && w.fetchedAt !== undefined) this.schedule(name, w, 0);
        continue;
      }
      clearTimeout(w.timer);
      this.watches.delete(name);
      dropped ||= w.held !== undefined;
    }
    for (const [name, j] of wanted) {
      if (this.watches.has(name)) continue;
      const w: Watch = { provider: j, inflight: false, failures: 0, skipped: [] };
      this.watches.set(name, w);
      void this.fetchNow(name, w);
    }
    if (dropped) this.rebuild();
  }

  /** Every watched provider, for the status. */
  status(): KeyFetchStatus[] {
    return [...this.watches.entries()]
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([name, w]) => ({
        provider: name,
        uri: w.provider.jwksUri!,
        state: w.error !== undefined ? "failing" : w.held ? "fetched" : "fetching",
        ...(w.held ? { keys: w.held.keys.length } : {}),
        ...(w.fetchedAt !== undefined ? { fetchedAt: new Date(w.fetchedAt).toISOString() } : {}),
        ...(w.error !== undefined ? { error: w.error, failures: w.failures } : {}),
        ...(w.skipped.length ? { skipped: w.skipped } : {}),
        ...(w.nextAt !== undefined ? { nextFetchAt: new Date(w.nextAt).toISOString() } : {}),
      }));
  }

  /** Fetches every watched provider now (an operator's refresh, a test); resolves when all are done. */
  async refreshAll(): Promise<void> {
    await Promise.all([...this.watches].map(([name, w]) => this.fetchNow(name, w)));
  }

  stop(): void {
    this.stopped = true;
    for (const w of this.watches.values()) clearTimeout(w.timer);
  }

  private schedule(name: string, w: Watch, delayMs: number): void {
    clearTimeout(w.timer);
    if (this.stopped) return;
    w.nextAt = Date.now() + delayMs;
    w.timer = setTimeout(() => void this.fetchNow(name, w), delayMs);
    w.timer.unref();
  }

  private async fetchNow(name: string, w: Watch): Promise<void> {
    if (w.inflight || this.stopped) return;
    w.inflight = true;
    clearTimeout(w.timer);
    const j = w.provider;
    const result = await this.fetcher(j.jwksUri!, {
      timeoutMs: j.jwksTimeoutMs,
      allowInsecureLoopback: j.allowInsecureLoopback,
      ca: this.opts.ca,
    });
    w.inflight = false;
    // Removed or replaced while the fetch was out: its answer belongs to nobody.
    if (this.stopped || this.watches.get(name) !== w) return;
    if (!result.ok) {
      w.failures += 1;
      w.error = result.error;
      const retry = Math.min(1_000 * 2 ** (w.failures - 1), MAX_RETRY_MS, j.jwksCacheSeconds * 1000);
      this.opts.log.warn(
        { provider: name, uri: j.jwksUri, err: result.error, failures: w.failures, retryInMs: retry },
        w.held
          ? "JWKS refetch failed; the keys held are kept"
          : "JWKS fetch failed; the provider's routes stay with ext-authz",
      );
      this.schedule(name, w, retry);
      return;
    }
    const digest = digestOf(result.keys);
    const changed = w.held?.digest !== digest;
    w.held = { uri: j.jwksUri!, keys: result.keys, digest };
    w.fetchedAt = Date.now();
    w.failures = 0;
    w.error = undefined;
    w.skipped = result.skipped;
    if (result.skipped.length)
      this.opts.log.warn({ provider: name, skipped: result.skipped }, "JWKS keys left out");
    if (changed) {
      this.opts.log.info({ provider: name, uri: j.jwksUri, keys: result.keys.length }, "JWKS keys changed");
      this.rebuild();
    }
    this.schedule(name, w, refreshSeconds(result.maxAgeSeconds, j.jwksCacheSeconds) * 1000);
  }

  private rebuild(): void {
    const held = new Map<string, FetchedKeySet>();
    for (const [name, w] of [...this.watches].sort(([a], [b]) => a.localeCompare(b)))
      if (w.held) held.set(name, w.held);
    this.held = held;
    if (this.changePending) return;
    this.changePending = true;
    setImmediate(() => {
      this.changePending = false;
      if (!this.stopped) this.opts.onChange();
    });
  }
}
