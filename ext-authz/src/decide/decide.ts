import { ANONYMOUS, type Identity } from "../identity.js";
import type { RoutePolicy } from "../policy/compile.js";
import { parseCookies, type RequestAttributes } from "./request.js";
import type { FoundCredential } from "./extract.js";
import { grantFor, type Grant, type Header } from "./grant.js";
import { ALL_IDENTITY_HEADERS, safeValue } from "@portico/contract";

export type { Grant, Header } from "./grant.js";

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
  /**
   * Allowed: the caller's grant, shared by all its requests (`metadata` carries its consumer,
   * plan and provider). Arrays a decision shares with others are frozen; the gRPC layer encodes
   * each shared part once.
   */
  readonly grant?: Grant;
  /** Denied: the refusal, shared by every request refused the same way on the same route. */
  readonly refusal?: Refusal;
}

/** Everything of a denial but its reason: built once per route and kind of refusal. */
export interface Refusal {
  readonly status: number;
  readonly code: Exclude<DecisionCode, "ok" | "anonymous" | "fail_open">;
  readonly responseHeaders: readonly Header[];
  readonly body: string;
}

const NONE: readonly never[] = Object.freeze([]);

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

function refusal(
  status: number,
  code: Refusal["code"],
  challenge: string | undefined,
  extra: readonly Header[] = [],
): Refusal {
  const responseHeaders: Header[] = [
    ["content-type", "application/json"],
    ["cache-control", "no-store"],
    ...extra,
  ];
  if (challenge) responseHeaders.push(["www-authenticate", challenge]);
  return Object.freeze({
    status,
    code,
    responseHeaders: Object.freeze(responseHeaders),
    body: JSON.stringify({ code, message: MESSAGES[code] }),
  });
}

function refuse(r: Refusal, reason: string | undefined): Decision {
  return {
    allowed: false,
    status: r.status,
    code: r.code,
    headersToSet: NONE,
    headersToRemove: NONE,
    queryParamsToRemove: NONE,
    responseHeaders: r.responseHeaders,
    body: r.body,
    metadata: undefined,
    identity: undefined,
    reason,
    refusal: r,
  };
}

/** Refusals that depend on no route. */
const CONFIG_ERROR = refusal(500, "auth_config_error", undefined);
const NO_POLICY = refusal(503, "auth_unavailable", undefined);
const INTERNAL_ERROR = refusal(500, "internal_error", undefined);
const UNAVAILABLE = refusal(503, "auth_unavailable", undefined, [["retry-after", "1"]]);

/** The kinds of refusal whose headers depend on the route (its challenges). */
type RouteRefusal =
  | "missing"
  | "conflict:bearer"
  | "conflict:apiKey"
  | "invalid_token"
  | "invalid_api_key"
  | "insufficient_scope"
  | "consumer_not_allowed"
  | "claims_not_allowed";

/** Per route (and realm), each kind of refusal built once. Routes live as long as their policy. */
const routeRefusals = new WeakMap<RoutePolicy, { realm: string; byKind: Map<RouteRefusal, Refusal> }>();

function routeRefusal(route: RoutePolicy, realm: string, kind: RouteRefusal): Refusal {
  let held = routeRefusals.get(route);
  if (!held || held.realm !== realm) {
    held = { realm, byKind: new Map() };
    routeRefusals.set(route, held);
  }
  let r = held.byKind.get(kind);
  if (!r) {
    r = buildRouteRefusal(route, realm, kind);
    held.byKind.set(kind, r);
  }
  return r;
}

function buildRouteRefusal(route: RoutePolicy, realm: string, kind: RouteRefusal): Refusal {
  switch (kind) {
    case "missing":
      return refusal(401, "missing_credentials", challenges(route, realm));
    case "conflict:bearer":
    case "conflict:apiKey":
      return refusal(
        400,
        "invalid_request",
        challenges(route, realm, {
          scheme: kind === "conflict:bearer" ? "bearer" : "apiKey",
          error: "invalid_request",
        }),
      );
    case "invalid_token":
      return refusal(
        401,
        "invalid_token",
        challenges(route, realm, { scheme: "bearer", error: "invalid_token" }),
      );
    case "invalid_api_key":
      return refusal(401, "invalid_api_key", challenges(route, realm));
    case "insufficient_scope": {
      const scope = route.requiredScopes.map((s) => safeValue(s).replace(/["\\]/g, "")).join(" ");
      return refusal(
        403,
        "insufficient_scope",
        challenges(route, realm, { scheme: "bearer", error: "insufficient_scope", scope }),
      );
    }
    case "consumer_not_allowed":
      return refusal(403, "consumer_not_allowed", undefined);
    case "claims_not_allowed":
      return refusal(403, "claims_not_allowed", undefined);
  }
}

/** An API-key caller without the scope: no bearer challenge for a credential that is no token. */
const INSUFFICIENT_SCOPE_KEY = refusal(403, "insufficient_scope", undefined);

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
  return refuse(CONFIG_ERROR, reason);
}

/** Refusal while no policy has been received: fail closed until the service knows the rules. */
export function noPolicyDecision(): Decision {
  return refuse(NO_POLICY, "no policy received yet");
}

export function internalErrorDecision(reason: string): Decision {
  return refuse(INTERNAL_ERROR, reason);
}

function claimMatches(value: unknown, accepted: ReadonlySet<string>): boolean {
  if (Array.isArray(value)) return value.some((v) => claimMatches(v, accepted));
  if (typeof value === "string") return accepted.has(value);
  if (typeof value === "number" || typeof value === "boolean") return accepted.has(String(value));
  return false;
}

/** Identity headers removed on a public route, so a client cannot pass itself off as a consumer. */
const ANONYMOUS_GRANT: Grant = Object.freeze({
  headersToSet: NONE,
  headersToRemove: Object.freeze([...ALL_IDENTITY_HEADERS]),
  consumer: ANONYMOUS,
  plan: ANONYMOUS,
  provider: ANONYMOUS,
});

/**
 * A grant's removals plus the header that carried the credential, per grant and header: the
 * common edit (a credential in one header, stripped) then costs no allocation.
 */
const removalsWith = new WeakMap<Grant, Map<string, readonly string[]>>();

function removalWith(grant: Grant, header: string): readonly string[] {
  let byHeader = removalsWith.get(grant);
  if (!byHeader) removalsWith.set(grant, (byHeader = new Map()));
  let list = byHeader.get(header);
  if (!list) {
    list = Object.freeze(
      grant.headersToRemove.includes(header)
        ? [...grant.headersToRemove]
        : [...grant.headersToRemove, header],
    );
    byHeader.set(header, list);
  }
  return list;
}

interface Edits {
  readonly set: readonly Header[];
  readonly remove: readonly string[];
  readonly query: readonly string[];
}

/**
 * The grant's headers plus what strips the credential before the upstream: the headers,
 * query parameters and cookies that carried it.
 */
function stripEdits(grant: Grant, used: readonly FoundCredential[], req: RequestAttributes): Edits {
  if (used.length === 1 && "header" in used[0]!.source) {
    return { set: grant.headersToSet, remove: removalWith(grant, used[0]!.source.header), query: NONE };
  }
  const remove = new Set<string>(grant.headersToRemove);
  const query = new Set<string>();
  const cookieNames = new Set<string>();
  for (const { source } of used) {
    if ("header" in source) remove.add(source.header);
    else if ("query" in source) query.add(source.query);
    else cookieNames.add(source.cookie);
  }
  const set: Header[] = [...grant.headersToSet];
  if (cookieNames.size > 0 && !remove.has("cookie")) {
    const kept = parseCookies(req.headers.get("cookie")).filter(([name]) => !cookieNames.has(name));
    if (kept.length === 0) remove.add("cookie");
    else set.push(["cookie", kept.map(([n, v]) => `${n}=${v}`).join("; ")]);
  }
  return { remove: [...remove], set, query: [...query] };
}

function allowAnonymous(req: RequestAttributes, code: "anonymous" | "fail_open", reason?: string): Decision {
  const g = ANONYMOUS_GRANT;
  return {
    allowed: true,
    status: 200,
    code,
    headersToSet: g.headersToSet,
    headersToRemove: g.headersToRemove,
    queryParamsToRemove: NONE,
    responseHeaders: NONE,
    body: "",
    metadata: {
      consumer: g.consumer,
      plan: g.plan,
      ip: safeValue(req.sourceIp ?? "unknown"),
      provider: g.provider,
    },
    identity: undefined,
    reason,
    grant: g,
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
      return refuse(routeRefusal(route, realm, "missing"), "no credentials");
    case "conflict":
      return refuse(
        routeRefusal(route, realm, outcome.scheme === "bearer" ? "conflict:bearer" : "conflict:apiKey"),
        "credential in several places with different values",
      );
    case "invalid":
      return refuse(
        routeRefusal(route, realm, outcome.scheme === "bearer" ? "invalid_token" : "invalid_api_key"),
        `${outcome.provider}: ${outcome.reason}`,
      );
    case "unavailable":
      if (outcome.failOpen) return allowAnonymous(req, "fail_open", `${outcome.provider}: ${outcome.reason}`);
      return refuse(UNAVAILABLE, `${outcome.provider}: ${outcome.reason}`);
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
    return refuse(
      routeRefusal(route, settings.realm, "consumer_not_allowed"),
      `consumer ${identity.consumer} not in the route's list`,
    );
  }
  for (const [claim, accepted] of route.requiredClaims) {
    if (!claimMatches(identity.claims[claim], accepted)) {
      return refuse(
        routeRefusal(route, settings.realm, "claims_not_allowed"),
        `claim ${claim} does not match`,
      );
    }
  }
  if (route.requiredScopes.length > 0) {
    const granted = identity.scopes;
    const ok =
      route.scopesMode === "all"
        ? route.requiredScopes.every((s) => granted.includes(s))
        : route.requiredScopes.some((s) => granted.includes(s));
    if (!ok) {
      return refuse(
        bearer ? routeRefusal(route, settings.realm, "insufficient_scope") : INSUFFICIENT_SCOPE_KEY,
        `scopes (${route.scopesMode}) ${route.requiredScopes.join(" ")} not granted`,
      );
    }
  }

  const grant = grantFor(identity, settings.maxScopesHeaderBytes);
  const edits: Edits = route.stripCredentials
    ? stripEdits(grant, used, req)
    : { set: grant.headersToSet, remove: grant.headersToRemove, query: NONE };
  return {
    allowed: true,
    status: 200,
    code: "ok",
    headersToSet: edits.set,
    headersToRemove: edits.remove,
    queryParamsToRemove: edits.query,
    responseHeaders: NONE,
    body: "",
    metadata: {
      consumer: grant.consumer,
      plan: grant.plan,
      ip: safeValue(req.sourceIp ?? "unknown"),
      provider: grant.provider,
    },
    identity,
    reason: undefined,
    grant,
  };
}
