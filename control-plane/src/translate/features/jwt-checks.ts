/**
 * The `portico.jwt_checks` filter (a Lua script, jwt-checks-lua.ts) and each natively verified
 * route's rules for it: the route's auth policy and its providers' settings, compiled to the
 * tables the script reads from the route's `filter_context`, with ext-authz's defaults where the
 * policy leaves a setting to ext-authz (realm, scopes header size, credential stripping).
 */
import { createHash } from "node:crypto";
import {
  IDENTITY_HEADERS,
  safeValue,
  SettingsSchema,
  struct,
  TYPE_PREFIX,
  type CredentialSource,
} from "@portico/contract";
import type { NativeProvider } from "../../model/auth-path.js";
import type { AuthPolicy, Config } from "../../model/schema.js";
import type { HttpFilter, HttpFilterName } from "../feature.js";
import { IDENTITY_NAMESPACE, JWT_CHECKS_FILTER, JWT_CHECKS_LUA } from "./jwt-checks-lua.js";
import { pinnedKeys } from "./jwt-keys.js";

const LUA = "envoy.extensions.filters.http.lua.v3.Lua";
const LUA_PER_ROUTE = "envoy.extensions.filters.http.lua.v3.LuaPerRoute";
const HEADER_TO_METADATA = "envoy.extensions.filters.http.header_to_metadata.v3.Config";
export const JWT_CHECKS: HttpFilterName = JWT_CHECKS_FILTER;
export const JWT_IDENTITY: HttpFilterName = "portico.jwt_identity";

/** ext-authz's settings as the control plane runs it: it sends no `settings`, so the defaults hold. */
const SETTINGS = SettingsSchema.parse({});

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/**
 * The header jwt_authn writes the payload segment of each token it verified for a provider
 * (`forward_payload_header`): how the script knows Envoy's verdict is about the token ext-authz
 * would have read. Removed before the upstream; a client's own is removed on arrival.
 */
export function payloadHeader(provider: string): string {
  return `x-portico-jwt-${provider}`;
}

/** jose's normalizeTyp, which ext-authz compares `typ` with. */
export function normalizeTyp(value: string): string {
  const lower = value.toLowerCase();
  return value.includes("/") ? lower : `application/${lower}`;
}

function source(s: CredentialSource): Json {
  if ("query" in s) return { q: s.query };
  if ("cookie" in s) return { c: s.cookie };
  if (s.prefix === undefined) return { h: s.header };
  return { h: s.header, n: s.prefix.length, pl: s.prefix.toLowerCase(), pt: s.prefix.trim().toLowerCase() };
}

function providerTable({ provider: j, keys }: NativeProvider): Json {
  const { withoutKid } = pinnedKeys(keys, j.algorithms);
  return {
    n: j.name,
    sn: safeValue(j.name),
    iss: j.issuer,
    from: j.from.map(source),
    max: j.maxTokenBytes,
    fh: payloadHeader(j.name),
    algs: Object.fromEntries(j.algorithms.map((a) => [a, true])),
    one: Object.fromEntries(withoutKid.map((a) => [a, true])),
    ...(j.typ !== undefined ? { typ: normalizeTyp(j.typ) } : {}),
    skew: j.clockSkewSeconds,
    ...(j.maxTokenAgeSeconds !== undefined ? { age: j.maxTokenAgeSeconds } : {}),
    exp: j.requireExp,
    req: j.requiredClaims,
    cc: j.consumerClaim,
    ...(j.planClaim !== undefined ? { pc: j.planClaim } : {}),
    ...(j.scopesClaim !== undefined ? { sc: j.scopesClaim } : {}),
    ...(j.consumers?.length ? { links: Object.fromEntries(j.consumers.map((c) => [c, true])) } : {}),
  };
}

/** ext-authz's challenges for a route that accepts bearer tokens only (decide.ts `challenges`). */
function challenges(p: AuthPolicy): Json {
  const realm = `Bearer realm="${SETTINGS.realm}"`;
  const scope = (p.requiredScopes ?? []).map((s) => safeValue(s).replace(/["\\]/g, "")).join(" ");
  return {
    missing: realm,
    invalid: `${realm}, error="invalid_token"`,
    request: `${realm}, error="invalid_request"`,
    scope: `${realm}, error="insufficient_scope"${scope ? `, scope="${scope}"` : ""}`,
  };
}

/** The route's rules as the script reads them. */
export function policyTable(p: AuthPolicy, providers: readonly NativeProvider[], stripped = false): Json {
  const claims = Object.entries(p.requiredClaims ?? {});
  return {
    // On a listener that removes identity headers on arrival, the checks add theirs: there is
    // none to replace or remove.
    ...(stripped ? { fresh: true } : {}),
    ch: challenges(p),
    anon: p.allowAnonymous,
    strip: p.stripCredentials ?? SETTINGS.stripCredentials,
    maxs: SETTINGS.maxScopesHeaderBytes,
    ...(p.requiredScopes?.length ? { scopes: p.requiredScopes, all: p.scopesMode === "all" } : {}),
    ...(p.consumers?.length ? { only: Object.fromEntries(p.consumers.map((c) => [c, true])) } : {}),
    ...(claims.length
      ? {
          claims: claims.map(([name, values]) => ({
            name,
            values: Object.fromEntries(values.map((v) => [v, true])),
          })),
        }
      : {}),
    ps: providers.map(providerTable),
  };
}

/** The consumer records of a config, with their version: the same on every route, built once. */
const recordsOf = new WeakMap<Config, { records: Record<string, Json>; rv: string }>();
function consumerRecords(config: Config): { records: Record<string, Json>; rv: string } {
  let out = recordsOf.get(config);
  if (out === undefined) {
    const records: Record<string, Json> = {};
    for (const c of config.consumers)
      records[c.name] = { off: c.disabled, ...(c.plan !== undefined ? { plan: c.plan } : {}) };
    out = { records, rv: version(records) };
    recordsOf.set(config, out);
  }
  return out;
}

function version(value: Json): string {
  return createHash("sha256").update(JSON.stringify(value)).digest("base64url").slice(0, 16);
}

/**
 * What a natively verified route carries for the checks:
 *
 * - its LuaPerRoute, whose `filter_context` holds the route's rules (`policy`) and every consumer
 *   record by name (`records`): a token's subject that names a record must be linked to it by the
 *   provider, and takes its plan;
 * - its metadata under the filter's name, `v`: the version of both. Each worker reads the rules
 *   once per version and remembers its verdict on a token per version; the records, the same on
 *   every route, once per version of theirs (`rv`). Each request reads only `v`, from the route's
 *   metadata: Envoy copies the whole filter context (every record) each time a script asks for it.
 */
export function jwtChecksRoute(
  config: Config,
  p: AuthPolicy,
  providers: readonly NativeProvider[],
  stripped = false,
): { perRoute: object; metadata: Record<string, Record<string, string>> } {
  const policy = policyTable(p, providers, stripped);
  const { records, rv } = consumerRecords(config);
  const v = version({ policy, rv });
  return {
    perRoute: { "@type": TYPE_PREFIX + LUA_PER_ROUTE, filter_context: struct({ v, policy, rv, records }) },
    metadata: { [JWT_CHECKS]: { v } },
  };
}

/** The route is not verified by Envoy: the script does not run. */
export const JWT_CHECKS_OFF = { "@type": TYPE_PREFIX + LUA_PER_ROUTE, disabled: true };

/** The listener's filter; each route brings its rules. */
export function jwtChecksFilter(): HttpFilter {
  return {
    name: JWT_CHECKS,
    typed_config: {
      "@type": TYPE_PREFIX + LUA,
      default_source_code: { inline_string: JWT_CHECKS_LUA },
      stat_prefix: "jwt_checks",
      // The route stays the one matched before the checks, as with ext_authz (which keeps it):
      // the headers the checks set or remove never choose another.
      clear_route_cache: { value: false },
    },
  };
}

/**
 * The identity the checks admitted, copied from the headers they set into dynamic metadata
 * (ext_authz's namespace, where limits, quotas and logs read it), by a native filter right after
 * them: a Lua filter setting it costs more than all its checks together (bench/native-jwt.ts).
 * Its rules copy only headers the checks have just set or removed, and it is off on every route
 * they do not decide, so a header a client sent never becomes an identity. It copies what the
 * gateway reads there, each rule a cost on every request: the consumer always, the plan when a
 * route of the listener that Envoy verifies sends it to the rate-limit service or counts quotas
 * by it (`plan`); the provider never (the upstream has it in its header). It is off, or absent,
 * where nothing reads the identity from metadata (`identityInHeaders` in authentication.ts).
 */
export function jwtIdentityFilter(plan: boolean): HttpFilter {
  const copy = (key: keyof typeof IDENTITY_HEADERS) => ({
    header: IDENTITY_HEADERS[key],
    on_header_present: { metadata_namespace: IDENTITY_NAMESPACE, key, type: "STRING" },
  });
  return {
    name: JWT_IDENTITY,
    typed_config: {
      "@type": TYPE_PREFIX + HEADER_TO_METADATA,
      request_rules: [copy("consumer"), ...(plan ? [copy("plan")] : [])],
    },
  };
}
