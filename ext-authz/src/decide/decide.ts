import { ANONYMOUS, type Identity } from "../identity.js";
import type { RoutePolicy } from "../policy/compile.js";
import { parseCookies, type RequestAttributes } from "./request.js";
import type { FoundCredential } from "./extract.js";
import { ALL_IDENTITY_HEADERS, IDENTITY_HEADERS, safeValue } from "@portico/contract";

/** The credential family a failure concerns; it picks the `WWW-Authenticate` scheme. */
export type Scheme = "bearer" | "apiKey";

/** What authentication found, before the route's rules are applied. */
export type AuthOutcome =
  | { kind: "none" }
  /** The same credential in several places with different values. */
  | { kind: "conflict"; scheme: Scheme }
  /** `reason` is for logs and metrics only; the caller is never told why. */
  | { kind: "invalid"; scheme: Scheme; provider: string; reason: string }
  /** A dependency (JWKS, introspection) could not answer; `failOpen` is the provider's failure mode. */
  | { kind: "unavailable"; provider: string; failOpen: boolean; reason: string }
  | { kind: "authenticated"; identity: Identity; used: readonly FoundCredential[] };

/** The `code` of the JSON body (and a metrics label). */
export type DecisionCode =
  | "ok"
  | "anonymous"
  | "fail_open"
  | "missing_credentials"
  | "invalid_token"
  | "invalid_api_key"
  | "invalid_request"
  | "insufficient_scope"
  | "consumer_not_allowed"
  | "claims_not_allowed"
  | "auth_unavailable"
  | "auth_config_error"
  | "internal_error";

/** Rate-limit keys, each always with a value. */
export interface RateLimitMetadata {
  readonly consumer: string;
  readonly plan: string;
  readonly ip: string;
  readonly provider: string;
}

export type Header = readonly [name: string, value: string];

export interface Decision {
  readonly allowed: boolean;
  /** 200 when allowed; otherwise the status of the local reply. */
  readonly status: number;
  readonly code: DecisionCode;
  /** Request headers to set (overwriting) before the upstream. */
  readonly headersToSet: readonly Header[];
  readonly headersToRemove: readonly string[];
  readonly queryParamsToRemove: readonly string[];
  /** Headers of the local reply when denied. */
  readonly responseHeaders: readonly Header[];
  /** JSON body of the local reply when denied; empty when allowed. */
  readonly body: string;
  /** Dynamic metadata for the rate limiter; present when allowed. */
  readonly metadata: RateLimitMetadata | undefined;
  readonly identity: Identity | undefined;
  /** Why, for logs only. */
  readonly reason: string | undefined;
}

export interface DecideSettings {
  readonly realm: string;
  readonly maxScopesHeaderBytes: number;
}

const MESSAGES: Record<Exclude<DecisionCode, "ok" | "anonymous" | "fail_open">, string> = {
  missing_credentials: "This route requires authentication.",
  invalid_token: "The access token is not valid.",
  invalid_api_key: "The API key is not valid.",
  invalid_request: "Send one credential, in one place.",
  insufficient_scope: "The credential does not grant the scope this route requires.",
  consumer_not_allowed: "This consumer may not call this route.",
  claims_not_allowed: "The credential does not meet this route's requirements.",
  auth_unavailable: "Authentication is temporarily unavailable. Retry shortly.",
  auth_config_error: "This route's authentication settings are not valid.",
  internal_error: "Authentication failed unexpectedly.",
};

function deny(
  status: number,
  code: keyof typeof MESSAGES,
  challenge: string | undefined,
  reason: string | undefined,
  extra: readonly Header[] = [],
): Decision {
  const responseHeaders: Header[] = [
    ["content-type", "application/json"],
    ["cache-control", "no-store"],
    ...extra,
  ];
  if (challenge) responseHeaders.push(["www-authenticate", challenge]);
  return {
    allowed: false,
    status,
    code,
    headersToSet: [],
    headersToRemove: [],
    queryParamsToRemove: [],
    responseHeaders,
    body: JSON.stringify({ code, message: MESSAGES[code] }),
    metadata: undefined,
    identity: undefined,
    reason,
  };
}

/** Challenges for the schemes the route accepts; `error` goes on the scheme that failed (RFC 6750 §3). */
function challenges(
  route: RoutePolicy,
  realm: string,
  failed?: { scheme: Scheme; error: string; scope?: string },
): string | undefined {
  const parts: string[] = [];
  const bearer = route.accept.some((a) => a.kind !== "apiKey");
  const apiKey = route.accept.some((a) => a.kind === "apiKey");
  if (bearer) {
    let c = `Bearer realm="${realm}"`;
    if (failed?.scheme === "bearer") {
      c += `, error="${failed.error}"`;
      if (failed.scope) c += `, scope="${failed.scope}"`;
    }
    parts.push(c);
  }
  if (apiKey) parts.push(`ApiKey realm="${realm}"`);
  return parts.length ? parts.join(", ") : undefined;
}

/** Refusal for a route whose context extensions cannot be read: fail closed, and say it is Portico's fault. */
export function configErrorDecision(reason: string): Decision {
  return deny(500, "auth_config_error", undefined, reason);
}

/** Refusal while no policy has been received: fail closed until the service knows the rules. */
export function noPolicyDecision(): Decision {
  return deny(503, "auth_unavailable", undefined, "no policy received yet");
}

export function internalErrorDecision(reason: string): Decision {
  return deny(500, "internal_error", undefined, reason);
}

function claimMatches(value: unknown, accepted: ReadonlySet<string>): boolean {
  if (Array.isArray(value)) return value.some((v) => claimMatches(v, accepted));
  if (typeof value === "string") return accepted.has(value);
  if (typeof value === "number" || typeof value === "boolean") return accepted.has(String(value));
  return false;
}

function scopesHeader(scopes: readonly string[], maxBytes: number): string {
  let out = "";
  for (const raw of scopes) {
    const s = safeValue(raw, maxBytes);
    const next = out ? `${out} ${s}` : s;
    // Cut at a scope boundary: an upstream sees fewer scopes, never a mangled one.
    if (next.length > maxBytes) break;
    out = next;
  }
  return out;
}

/** The headers, query parameters and cookies that carried the credential, removed before the upstream. */
function stripEdits(
  used: readonly FoundCredential[],
  req: RequestAttributes,
): { remove: string[]; set: Header[]; query: string[] } {
  const remove = new Set<string>();
  const query = new Set<string>();
  const cookieNames = new Set<string>();
  for (const { source } of used) {
    if ("header" in source) remove.add(source.header);
    else if ("query" in source) query.add(source.query);
    else cookieNames.add(source.cookie);
  }
  const set: Header[] = [];
  if (cookieNames.size > 0 && !remove.has("cookie")) {
    const kept = parseCookies(req.headers.get("cookie")).filter(([name]) => !cookieNames.has(name));
    if (kept.length === 0) remove.add("cookie");
    else set.push(["cookie", kept.map(([n, v]) => `${n}=${v}`).join("; ")]);
  }
  return { remove: [...remove], set, query: [...query] };
}

function allowAnonymous(req: RequestAttributes, code: "anonymous" | "fail_open", reason?: string): Decision {
  return {
    allowed: true,
    status: 200,
    code,
    headersToSet: [],
    // Removed, so a client cannot pass itself off as a consumer on a public route.
    headersToRemove: ALL_IDENTITY_HEADERS,
    queryParamsToRemove: [],
    responseHeaders: [],
    body: "",
    metadata: {
      consumer: ANONYMOUS,
      plan: ANONYMOUS,
      ip: safeValue(req.sourceIp ?? "unknown"),
      provider: ANONYMOUS,
    },
    identity: undefined,
    reason,
  };
}

/**
 * The decision for one request: pure, no I/O. Missing or invalid credentials → 401 with a
 * `WWW-Authenticate` challenge; valid but not allowed → 403; a dependency down → 503 (or
 * anonymous, for a fail-open provider); otherwise allowed, with identity headers overwritten
 * and the credential stripped.
 */
export function decide(
  route: RoutePolicy,
  outcome: AuthOutcome,
  req: RequestAttributes,
  settings: DecideSettings,
): Decision {
  const realm = settings.realm;
  switch (outcome.kind) {
    case "none":
      if (route.allowAnonymous) return allowAnonymous(req, "anonymous");
      return deny(401, "missing_credentials", challenges(route, realm), "no credentials");
    case "conflict":
      return deny(
        400,
        "invalid_request",
        challenges(route, realm, { scheme: outcome.scheme, error: "invalid_request" }),
        "credential in several places with different values",
      );
    case "invalid":
      return outcome.scheme === "bearer"
        ? deny(
            401,
            "invalid_token",
            challenges(route, realm, { scheme: "bearer", error: "invalid_token" }),
            `${outcome.provider}: ${outcome.reason}`,
          )
        : deny(401, "invalid_api_key", challenges(route, realm), `${outcome.provider}: ${outcome.reason}`);
    case "unavailable":
      if (outcome.failOpen) return allowAnonymous(req, "fail_open", `${outcome.provider}: ${outcome.reason}`);
      return deny(503, "auth_unavailable", undefined, `${outcome.provider}: ${outcome.reason}`, [
        ["retry-after", "1"],
      ]);
    case "authenticated":
      return authorize(route, outcome.identity, outcome.used, req, settings);
  }
}

function authorize(
  route: RoutePolicy,
  identity: Identity,
  used: readonly FoundCredential[],
  req: RequestAttributes,
  settings: DecideSettings,
): Decision {
  const bearer = identity.kind !== "apiKey";
  if (route.consumers !== undefined && !route.consumers.has(identity.consumer)) {
    return deny(
      403,
      "consumer_not_allowed",
      undefined,
      `consumer ${identity.consumer} not in the route's list`,
    );
  }
  for (const [claim, accepted] of route.requiredClaims) {
    if (!claimMatches(identity.claims[claim], accepted)) {
      return deny(403, "claims_not_allowed", undefined, `claim ${claim} does not match`);
    }
  }
  if (route.requiredScopes.length > 0) {
    const granted = identity.scopes;
    const ok =
      route.scopesMode === "all"
        ? route.requiredScopes.every((s) => granted.includes(s))
        : route.requiredScopes.some((s) => granted.includes(s));
    if (!ok) {
      const scope = route.requiredScopes.map((s) => safeValue(s).replace(/["\\]/g, "")).join(" ");
      return deny(
        403,
        "insufficient_scope",
        bearer
          ? challenges(route, settings.realm, { scheme: "bearer", error: "insufficient_scope", scope })
          : undefined,
        `scopes (${route.scopesMode}) ${route.requiredScopes.join(" ")} not granted`,
      );
    }
  }

  const set: Header[] = [
    [IDENTITY_HEADERS.consumer, safeValue(identity.consumer)],
    [IDENTITY_HEADERS.plan, safeValue(identity.plan)],
    [IDENTITY_HEADERS.provider, safeValue(identity.provider)],
  ];
  const remove: string[] = [];
  if (identity.keyId !== undefined) set.push([IDENTITY_HEADERS.keyId, safeValue(identity.keyId)]);
  else remove.push(IDENTITY_HEADERS.keyId);
  const scopes = scopesHeader(identity.scopes, settings.maxScopesHeaderBytes);
  if (scopes) set.push([IDENTITY_HEADERS.scopes, scopes]);
  else remove.push(IDENTITY_HEADERS.scopes);

  let queryParamsToRemove: string[] = [];
  if (route.stripCredentials) {
    const edits = stripEdits(used, req);
    remove.push(...edits.remove);
    set.push(...edits.set);
    queryParamsToRemove = edits.query;
  }
  return {
    allowed: true,
    status: 200,
    code: "ok",
    headersToSet: set,
    headersToRemove: remove,
    queryParamsToRemove,
    responseHeaders: [],
    body: "",
    metadata: {
      consumer: safeValue(identity.consumer),
      plan: safeValue(identity.plan),
      ip: safeValue(req.sourceIp ?? "unknown"),
      provider: safeValue(identity.provider),
    },
    identity,
    reason: undefined,
  };
}
