import {
  resolveAccept,
  toClaimRequirements,
  type CompiledPolicy,
  type RoutePolicy,
} from "../policy/compile.js";
import type { Result } from "@portico/contract";

/**
 * The per-route settings Envoy passes in `CheckRequest.attributes.context_extensions` (set on the
 * route's `ExtAuthzPerRoute.check_settings`). A route names an auth policy, or spells its rules
 * inline, or both (inline keys then override the named policy's fields). A route with none uses
 * `settings.defaultPolicy`, or else: any configured provider, no anonymous callers.
 */
export const CONTEXT_KEYS = {
  /** Name of an auth policy in the policy document. */
  policy: "policy",
  /** Comma-separated provider names or kinds (`jwt`, `oauth`, `apiKey`), tried in this order. */
  accept: "accept",
  /** Required scopes, separated by spaces or commas. */
  scopes: "scopes",
  /** `all` (every scope, the default) or `any` (at least one). */
  scopesMode: "scopes_mode",
  /** Comma-separated consumers allowed on the route (403 for others). */
  consumers: "consumers",
  /** `true`: callers without credentials pass as `anonymous`; `false`: they get 401. */
  anonymous: "anonymous",
  /** A JSON object, claim name → a value or a list of accepted values. */
  claims: "claims",
  /** `true` or `false`: remove the credential before the request goes upstream. */
  stripCredentials: "strip_credentials",
} as const;

const KNOWN_KEYS = new Set<string>(Object.values(CONTEXT_KEYS));

const list = (s: string, sep: RegExp) =>
  s
    .split(sep)
    .map((x) => x.trim())
    .filter((x) => x.length > 0);

function bool(key: string, value: string): Result<boolean, string> {
  if (value === "true") return { ok: true, value: true };
  if (value === "false") return { ok: true, value: false };
  return { ok: false, error: `${key} must be true or false, not ${JSON.stringify(value)}` };
}

/**
 * The route's requirements. An unknown key or a bad value is an error, never ignored: a typo such
 * as `scope=admin` must not quietly make a route less protected.
 */
export function routePolicyFrom(
  policy: CompiledPolicy,
  ext: Readonly<Record<string, string>>,
): Result<RoutePolicy, string> {
  const keys = Object.keys(ext);
  for (const k of keys) {
    if (!KNOWN_KEYS.has(k)) return { ok: false, error: `unknown context extension ${JSON.stringify(k)}` };
  }
  let base: RoutePolicy = policy.defaultPolicy;
  const named = ext[CONTEXT_KEYS.policy];
  if (named !== undefined) {
    const found = policy.authPolicies.get(named);
    if (!found) return { ok: false, error: `no auth policy named ${JSON.stringify(named)}` };
    base = found;
  }
  if (keys.every((k) => k === CONTEXT_KEYS.policy)) return { ok: true, value: base };

  const route: { -readonly [K in keyof RoutePolicy]: RoutePolicy[K] } = { ...base, name: named ?? "inline" };
  const accept = ext[CONTEXT_KEYS.accept];
  if (accept !== undefined) {
    const resolved = resolveAccept(list(accept, /,/), policy);
    if (!resolved.ok) return { ok: false, error: `accept: ${resolved.error}` };
    if (resolved.value.length === 0) return { ok: false, error: "accept names no provider" };
    route.accept = resolved.value;
  }
  const scopes = ext[CONTEXT_KEYS.scopes];
  if (scopes !== undefined) route.requiredScopes = list(scopes, /[\s,]+/);
  const mode = ext[CONTEXT_KEYS.scopesMode];
  if (mode !== undefined) {
    if (mode !== "any" && mode !== "all")
      return { ok: false, error: `scopes_mode must be any or all, not ${JSON.stringify(mode)}` };
    route.scopesMode = mode;
  }
  const consumers = ext[CONTEXT_KEYS.consumers];
  if (consumers !== undefined) {
    const names = list(consumers, /,/);
    if (names.length === 0)
      return { ok: false, error: "consumers is empty; omit it to allow every consumer" };
    route.consumers = new Set(names);
  }
  const anonymous = ext[CONTEXT_KEYS.anonymous];
  if (anonymous !== undefined) {
    const b = bool(CONTEXT_KEYS.anonymous, anonymous);
    if (!b.ok) return b;
    route.allowAnonymous = b.value;
  }
  const strip = ext[CONTEXT_KEYS.stripCredentials];
  if (strip !== undefined) {
    const b = bool(CONTEXT_KEYS.stripCredentials, strip);
    if (!b.ok) return b;
    route.stripCredentials = b.value;
  }
  const claims = ext[CONTEXT_KEYS.claims];
  if (claims !== undefined) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(claims);
    } catch {
      return { ok: false, error: "claims is not JSON" };
    }
    const valid =
      typeof parsed === "object" &&
      parsed !== null &&
      !Array.isArray(parsed) &&
      Object.values(parsed).every(
        (v) =>
          typeof v === "string" ||
          (Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === "string")),
      );
    if (!valid)
      return { ok: false, error: "claims must map claim names to a string or a non-empty list of strings" };
    route.requiredClaims = toClaimRequirements(parsed as Record<string, string | string[]>);
  }
  return { ok: true, value: route };
}
