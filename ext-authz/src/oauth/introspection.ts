import { createHash } from "node:crypto";
import { TtlCache } from "../cache.js";
import type { Clock } from "../clock.js";
import { readCapped } from "../http-body.js";
import { DEFAULT_PLAN, linkConsumer, type ConsumerRefusal, type Identity } from "../identity.js";
import type { Consumer, OauthProvider } from "@portico/contract";

export type IntrospectionFailure =
  /** The server said `active: false`, or the answer failed a local check (expired, audience, issuer). */
  "inactive" | "too_large" | ConsumerRefusal;

export type IntrospectionOutcome =
  | { ok: true; identity: Identity; cached: boolean }
  | { ok: false; reason: IntrospectionFailure; cached: boolean }
  /** The endpoint could not answer (timeout, connection refused, 5xx, not JSON); the provider's failure mode applies. */
  | { ok: false; reason: "unavailable"; detail: string };

interface Active {
  active: true;
  consumer: string;
  planField: string | undefined;
  scopes: string[];
  claims: Readonly<Record<string, unknown>>;
}
type CacheEntry = Active | { active: false };

export interface IntrospectorOptions {
  clock: Clock;
  consumers: () => ReadonlyMap<string, Consumer>;
  fetch?: typeof fetch;
  /** The client secret when the provider names an environment variable; read once at start. */
  env?: NodeJS.ProcessEnv;
  onCall?: (result: "active" | "inactive" | "error", durationMs: number) => void;
  onCache?: (hit: boolean) => void;
  onEvict?: () => void;
}

/** After a failed call, uncached tokens fail fast for this long instead of each waiting for the timeout. */
const DOWN_HOLD_MS = 1_000;
const MAX_ANSWER_BYTES = 65_536;

/**
 * RFC 7662 token introspection for opaque OAuth2 access tokens, authenticated with the client's
 * credentials (client_secret_basic, RFC 6749 §2.3.1). Answers are cached by a digest of the
 * token: active ones until the token's `exp` (never longer than `cacheMaxSeconds`), inactive
 * ones for `negativeCacheSeconds`. Concurrent requests with the same token share one call.
 */
export class Introspector {
  private readonly cache: TtlCache<string, CacheEntry>;
  private readonly inflight = new Map<string, Promise<IntrospectionOutcome>>();
  private readonly authorization: string;
  private readonly fetchImpl: typeof fetch;
  private downUntil = -Infinity;
  private lastError = "";

  constructor(
    readonly provider: OauthProvider,
    private readonly opts: IntrospectorOptions,
  ) {
    this.cache = new TtlCache(provider.cacheSize, opts.onEvict);
    this.fetchImpl = opts.fetch ?? fetch;
    const secret = provider.clientSecret ?? (opts.env ?? process.env)[provider.clientSecretEnv ?? ""];
    if (!secret) throw new Error(`OAuth provider ${provider.name}: ${provider.clientSecretEnv} is not set`);
    const form = (s: string) => encodeURIComponent(s).replace(/%20/g, "+");
    this.authorization = `Basic ${Buffer.from(`${form(provider.clientId)}:${form(secret)}`).toString("base64")}`;
  }

  async introspect(token: string): Promise<IntrospectionOutcome> {
    if (token.length > this.provider.maxTokenBytes) return { ok: false, reason: "too_large", cached: false };
    const key = createHash("sha256").update(token).digest("base64url");
    const now = this.opts.clock();
    const hit = this.cache.get(key, now);
    if (hit !== undefined) {
      this.opts.onCache?.(true);
      return this.answer(hit, true);
    }
    this.opts.onCache?.(false);
    const pending = this.inflight.get(key);
    if (pending) return pending;
    if (now < this.downUntil) return { ok: false, reason: "unavailable", detail: this.lastError };
    const call = this.call(token, key).finally(() => this.inflight.delete(key));
    this.inflight.set(key, call);
    return call;
  }

  private async call(token: string, key: string): Promise<IntrospectionOutcome> {
    const started = performance.now();
    let body: unknown;
    try {
      const res = await this.fetchImpl(this.provider.introspectionUrl, {
        method: "POST",
        headers: {
          authorization: this.authorization,
          "content-type": "application/x-www-form-urlencoded",
          accept: "application/json",
        },
        body: new URLSearchParams({ token, token_type_hint: "access_token" }).toString(),
        signal: AbortSignal.timeout(this.provider.timeoutMs),
        redirect: "error",
      });
      if (!res.ok) throw new Error(`introspection endpoint answered HTTP ${res.status}`);
      body = JSON.parse(await readCapped(res, MAX_ANSWER_BYTES));
      if (
        typeof body !== "object" ||
        body === null ||
        typeof (body as { active?: unknown }).active !== "boolean"
      ) {
        throw new Error("the answer has no boolean `active` member");
      }
    } catch (err) {
      const e = err as Error;
      this.lastError =
        e.name === "TimeoutError" ? `no answer within ${this.provider.timeoutMs} ms` : e.message;
      this.downUntil = this.opts.clock() + DOWN_HOLD_MS;
      this.opts.onCall?.("error", performance.now() - started);
      return { ok: false, reason: "unavailable", detail: this.lastError };
    }
    const now = this.opts.clock();
    const entry = this.interpret(body as Record<string, unknown>, now);
    this.opts.onCall?.(entry.active ? "active" : "inactive", performance.now() - started);
    if (entry.active) {
      const exp = (body as { exp?: unknown }).exp;
      const limit = now + this.provider.cacheMaxSeconds * 1000;
      const until = typeof exp === "number" ? Math.min(exp * 1000, limit) : limit;
      if (until > now) this.cache.set(key, entry, until);
    } else if (this.provider.negativeCacheSeconds > 0) {
      this.cache.set(key, entry, now + this.provider.negativeCacheSeconds * 1000);
    }
    return this.answer(entry, false);
  }

  /** RFC 7662 §4: the resource server checks what the answer says, not only `active`. */
  private interpret(body: Record<string, unknown>, now: number): CacheEntry {
    if (body.active !== true) return { active: false };
    const p = this.provider;
    if (typeof body.exp === "number" && body.exp * 1000 <= now) return { active: false };
    if (typeof body.nbf === "number" && body.nbf * 1000 > now) return { active: false };
    if (p.issuer !== undefined && body.iss !== p.issuer) return { active: false };
    if (p.audiences !== undefined) {
      const aud = typeof body.aud === "string" ? [body.aud] : Array.isArray(body.aud) ? body.aud : [];
      if (!aud.some((a) => p.audiences!.includes(a as string))) return { active: false };
    }
    const fields = p.consumerField !== undefined ? [p.consumerField] : ["sub", "client_id", "username"];
    const consumer = fields
      .map((f) => body[f])
      .find((v): v is string => typeof v === "string" && v.length > 0);
    if (consumer === undefined) return { active: false };
    const plan = p.planField === undefined ? undefined : body[p.planField];
    return {
      active: true,
      consumer,
      planField: typeof plan === "string" && plan.length > 0 ? plan : undefined,
      scopes: typeof body.scope === "string" ? body.scope.split(" ").filter((s) => s.length > 0) : [],
      claims: Object.freeze({ ...body }),
    };
  }

  private answer(entry: CacheEntry, cached: boolean): IntrospectionOutcome {
    if (!entry.active) return { ok: false, reason: "inactive", cached };
    const link = linkConsumer(entry.consumer, this.provider.consumers, this.opts.consumers());
    if (!link.ok) return { ok: false, reason: link.reason, cached };
    const record = link.record;
    return {
      ok: true,
      cached,
      identity: {
        kind: "oauth",
        provider: this.provider.name,
        consumer: entry.consumer,
        plan: record?.plan ?? entry.planField ?? DEFAULT_PLAN,
        scopes: entry.scopes,
        claims: entry.claims,
      },
    };
  }

  clearCache(): void {
    this.cache.clear();
  }
}
