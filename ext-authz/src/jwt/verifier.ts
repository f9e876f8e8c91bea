import { createHash } from "node:crypto";
import { jwtVerify, type JWTPayload, type JWTVerifyOptions } from "jose";
import { TtlCache } from "../cache.js";
import type { Clock } from "../clock.js";
import { DEFAULT_PLAN, linkConsumer, type ConsumerRefusal, type Identity } from "../identity.js";
import type { Consumer, JwsAlgorithm, JwtProvider } from "@portico/contract";
import type { JwksSource } from "./jwks.js";
import type { KeyEntry } from "./keys.js";

/** Why a token was refused. For logs and metrics only: callers are never told (RFC 6750 §3.1 `invalid_token`). */
export type JwtFailure =
  | "too_large"
  | "malformed"
  | "alg_not_allowed"
  | "crit_not_understood"
  | "unknown_kid"
  | "no_usable_key"
  | "bad_signature"
  | "expired"
  | "not_yet_valid"
  | "issued_in_future"
  | "too_old"
  | "wrong_issuer"
  | "wrong_audience"
  | "wrong_typ"
  | "missing_claim"
  | "invalid_claim"
  | ConsumerRefusal
  | "jwks_unavailable";

export type JwtResult = { ok: true; identity: Identity; cached: boolean } | { ok: false; reason: JwtFailure };

/** Base64url segments only; the signature must be non-empty, so `alg: none` tokens fail here already. */
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;
const MAX_KID_CHARS = 256;
const MAX_SCOPES = 256;
/** A token without `exp` (only when a provider allows it) is remembered this long at most. */
const NO_EXP_CACHE_MS = 300_000;

/** The key verified tokens are remembered under: a digest, so the cache holds no bearer tokens and a bounded size per entry. */
export function tokenCacheKey(token: string): string {
  return createHash("sha256").update(token).digest("base64url");
}

function decodeSegment(segment: string): unknown {
  try {
    return JSON.parse(Buffer.from(segment, "base64url").toString("utf8"));
  } catch {
    return undefined;
  }
}

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);

/**
 * The unverified `iss` of a compact JWT, used only to pick which provider verifies it (as Envoy's
 * jwt_authn does); undefined when the token is not a JWT.
 */
export function peekIssuer(token: string, maxChars = 65_536): string | undefined {
  if (token.length > maxChars || !COMPACT_JWS.test(token)) return undefined;
  const payload = decodeSegment(token.slice(token.indexOf(".") + 1, token.lastIndexOf(".")));
  return isObject(payload) && typeof payload.iss === "string" ? payload.iss : undefined;
}

/** Whether a string has the shape of a compact JWS (three base64url segments). */
export function looksLikeJwt(token: string): boolean {
  return COMPACT_JWS.test(token);
}

interface VerifiedToken {
  consumer: string;
  planClaim: string | undefined;
  scopes: readonly string[];
  claims: Readonly<Record<string, unknown>>;
  /** The key that verified it; the entry is dropped when that key leaves the provider's set. */
  fingerprint: string;
  /**
   * The last answer, with the consumer records it was linked against: while those records are
   * the same, a cache hit hands out the same identity (and so the same grant of headers).
   */
  answered?: { records: ReadonlyMap<string, Consumer>; identity: Identity };
}

export interface JwtVerifierOptions {
  clock: Clock;
  jwks: JwksSource;
  cacheSize: number;
  /** Consumer records by name, read on every success so a policy update applies to cached tokens too. */
  consumers: () => ReadonlyMap<string, Consumer>;
  onCache?: (hit: boolean) => void;
  onEvict?: () => void;
}

/**
 * Verifies the JWTs of one provider (RFC 7519 with the RFC 8725 rules): size cap before parsing,
 * algorithms pinned, key chosen by `kid` from the provider's own keys only (`jku`, `x5u`, `jwk`
 * and `x5c` headers are never read), unknown `crit` refused, `exp`/`nbf`/`iat` checked with a
 * stated skew, `iss`/`aud`/`typ` checked. Verified tokens are remembered until they expire.
 */
export class JwtVerifier {
  private readonly cache: TtlCache<string, VerifiedToken>;
  private readonly skewMs: number;
  private readonly requiredClaims: string[];

  constructor(
    readonly provider: JwtProvider,
    private readonly opts: JwtVerifierOptions,
  ) {
    this.cache = new TtlCache(opts.cacheSize, opts.onEvict);
    this.skewMs = provider.clockSkewSeconds * 1000;
    const required = new Set(provider.requiredClaims);
    if (provider.requireExp) required.add("exp");
    required.add(provider.consumerClaim);
    this.requiredClaims = [...required];
  }

  get jwks(): JwksSource {
    return this.opts.jwks;
  }

  /** The answer for a token verified earlier and still valid, without I/O; undefined when not cached. */
  fromCache(cacheKey: string): JwtResult | undefined {
    const hit = this.cache.get(cacheKey, this.opts.clock());
    if (hit === undefined) return undefined;
    if (!this.opts.jwks.current()?.has(hit.fingerprint)) {
      // The signing key was withdrawn; the token is verified again (and refused).
      this.cache.delete(cacheKey);
      return undefined;
    }
    this.opts.onCache?.(true);
    return this.answer(hit, true);
  }

  async verify(token: string, cacheKey = tokenCacheKey(token)): Promise<JwtResult> {
    if (token.length > this.provider.maxTokenBytes) return { ok: false, reason: "too_large" };
    if (!COMPACT_JWS.test(token)) return { ok: false, reason: "malformed" };
    const cached = this.fromCache(cacheKey);
    if (cached) return cached;
    this.opts.onCache?.(false);

    const header = decodeSegment(token.slice(0, token.indexOf(".")));
    if (!isObject(header)) return { ok: false, reason: "malformed" };
    const alg = header.alg;
    if (typeof alg !== "string") return { ok: false, reason: "malformed" };
    if (!(this.provider.algorithms as readonly string[]).includes(alg))
      return { ok: false, reason: "alg_not_allowed" };
    // No extension is understood, so any `crit` must be refused (RFC 7515 §4.1.11).
    if (header.crit !== undefined) return { ok: false, reason: "crit_not_understood" };
    const kid = header.kid;
    if (kid !== undefined && (typeof kid !== "string" || kid.length === 0 || kid.length > MAX_KID_CHARS)) {
      return { ok: false, reason: "malformed" };
    }

    const lookup = await this.opts.jwks.lookup(kid, alg as JwsAlgorithm);
    if (!lookup.ok) return { ok: false, reason: lookup.reason };

    const now = this.opts.clock();
    let failure: JwtFailure = "bad_signature";
    for (const entry of lookup.keys) {
      const outcome = await this.verifyWith(token, alg as JwsAlgorithm, entry, now);
      if (outcome.ok) {
        const verified = outcome.verified;
        const expiresAt = this.cacheUntil(outcome.payload, now);
        if (expiresAt > now) this.cache.set(cacheKey, verified, expiresAt);
        return this.answer(verified, false);
      }
      failure = outcome.reason;
      // Claims are checked only after a valid signature, so any other failure is final.
      if (failure !== "bad_signature") break;
    }
    return { ok: false, reason: failure };
  }

  private async verifyWith(
    token: string,
    alg: JwsAlgorithm,
    entry: KeyEntry,
    now: number,
  ): Promise<{ ok: true; verified: VerifiedToken; payload: JWTPayload } | { ok: false; reason: JwtFailure }> {
    const p = this.provider;
    const options: JWTVerifyOptions = {
      algorithms: [alg],
      issuer: p.issuer,
      clockTolerance: p.clockSkewSeconds,
      requiredClaims: this.requiredClaims,
      currentDate: new Date(now),
    };
    if (p.audiences) options.audience = p.audiences;
    if (p.maxTokenAgeSeconds !== undefined) options.maxTokenAge = p.maxTokenAgeSeconds;
    if (p.typ !== undefined) options.typ = p.typ;
    let payload: JWTPayload;
    try {
      const key = await entry.key(alg);
      ({ payload } = await jwtVerify(token, key, options));
    } catch (err) {
      return { ok: false, reason: classify(err) };
    }
    if (!registeredClaimsWellTyped(payload)) return { ok: false, reason: "invalid_claim" };
    // jose checks `iat` against the clock only together with maxTokenAge; a token from the future is refused regardless.
    if (typeof payload.iat === "number" && payload.iat * 1000 > now + this.skewMs) {
      return { ok: false, reason: "issued_in_future" };
    }
    const rawConsumer = payload[p.consumerClaim];
    const consumer =
      typeof rawConsumer === "string"
        ? rawConsumer
        : typeof rawConsumer === "number"
          ? String(rawConsumer)
          : "";
    if (consumer.length === 0) return { ok: false, reason: "invalid_claim" };
    const rawPlan = p.planClaim === undefined ? undefined : payload[p.planClaim];
    return {
      ok: true,
      payload,
      verified: {
        consumer,
        planClaim: typeof rawPlan === "string" && rawPlan.length > 0 ? rawPlan : undefined,
        scopes: scopesOf(payload, p.scopesClaim),
        claims: Object.freeze({ ...payload }),
        fingerprint: entry.fingerprint,
      },
    };
  }

  /** No later than the token's `exp` (and its maximum age), so the cache never extends a token's life. */
  private cacheUntil(payload: JWTPayload, now: number): number {
    let until = typeof payload.exp === "number" ? payload.exp * 1000 : now + NO_EXP_CACHE_MS;
    if (this.provider.maxTokenAgeSeconds !== undefined && typeof payload.iat === "number") {
      until = Math.min(until, (payload.iat + this.provider.maxTokenAgeSeconds) * 1000);
    }
    return until;
  }

  /** A subject the provider links to a consumer record gets that consumer's plan (see `linkConsumer`). */
  private answer(v: VerifiedToken, cached: boolean): JwtResult {
    const records = this.opts.consumers();
    if (v.answered?.records === records) return { ok: true, identity: v.answered.identity, cached };
    const link = linkConsumer(v.consumer, this.provider.consumers, records);
    if (!link.ok) return link;
    const record = link.record;
    const identity: Identity = {
      kind: "jwt",
      provider: this.provider.name,
      consumer: v.consumer,
      plan: record?.plan ?? v.planClaim ?? DEFAULT_PLAN,
      scopes: v.scopes,
      claims: v.claims,
    };
    v.answered = { records, identity };
    return { ok: true, identity, cached };
  }

  clearCache(): void {
    this.cache.clear();
  }
}

/** 2^64: Envoy reads the times into 64-bit unsigned integers. */
const TIME_LIMIT = 2 ** 64;

/**
 * RFC 7519's types for the registered claims that are present, held as Envoy's jwt_authn holds
 * them, so that a token is refused on both paths or on neither: `iss`, `sub` and `jti` strings,
 * `aud` a string or a list of strings, `exp`, `nbf` and `iat` numbers from 0 below 2^64 (null is
 * of no such type). A subject that is a number is no subject; another consumer claim may be one.
 */
function registeredClaimsWellTyped(payload: JWTPayload): boolean {
  const present = (claim: string) => Object.hasOwn(payload, claim);
  for (const claim of ["iss", "sub", "jti"])
    if (present(claim) && typeof payload[claim] !== "string") return false;
  const aud: unknown = payload.aud;
  if (
    present("aud") &&
    typeof aud !== "string" &&
    !(Array.isArray(aud) && aud.every((a) => typeof a === "string"))
  )
    return false;
  for (const claim of ["exp", "nbf", "iat"]) {
    const t = payload[claim];
    if (present(claim) && !(typeof t === "number" && t >= 0 && t < TIME_LIMIT)) return false;
  }
  return true;
}

function scopesOf(payload: JWTPayload, claim: string | undefined): string[] {
  const out = new Set<string>();
  const add = (v: unknown) => {
    if (typeof v === "string") {
      for (const s of v.split(" ")) if (s) out.add(s);
    } else if (Array.isArray(v)) {
      for (const s of v) if (typeof s === "string" && s) out.add(s);
    }
  };
  if (claim !== undefined) add(payload[claim]);
  else {
    add(payload.scope);
    add(payload.scp);
  }
  return [...out].slice(0, MAX_SCOPES);
}

function classify(err: unknown): JwtFailure {
  const e = err as { code?: string; claim?: string; reason?: string; message?: string };
  switch (e.code) {
    case "ERR_JWS_SIGNATURE_VERIFICATION_FAILED":
      return "bad_signature";
    case "ERR_JOSE_ALG_NOT_ALLOWED":
      return "alg_not_allowed";
    case "ERR_JWT_EXPIRED":
      return e.claim === "iat" ? "too_old" : "expired";
    case "ERR_JWT_CLAIM_VALIDATION_FAILED":
      if (e.reason === "missing") return "missing_claim";
      switch (e.claim) {
        case "nbf":
          return "not_yet_valid";
        case "iat":
          return "issued_in_future";
        case "iss":
          return "wrong_issuer";
        case "aud":
          return "wrong_audience";
        case "typ":
          return "wrong_typ";
        default:
          return "invalid_claim";
      }
    default:
      return "malformed";
  }
}
