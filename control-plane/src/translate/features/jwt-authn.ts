/**
 * JWTs verified by Envoy itself, on the routes whose auth policy Envoy can decide alone
 * (model/auth-path.ts): Envoy's `jwt_authn` with each provider's keys inline (`local_jwks`, pinned
 * to the provider's algorithms; the control plane fetches published ones), its verified-token
 * cache, and a requirement that never refuses by itself (`allow_missing_or_failed`): the
 * `portico.jwt_checks` filter right after it decides and answers as ext-authz would (jwt-checks.ts).
 * Such a route makes no call to ext-authz.
 */
import { TYPE_PREFIX } from "@portico/contract";
import { authPathOf, type AuthPath, type NativeProvider } from "../../model/auth-path.js";
import type { AuthPolicy, Route } from "../../model/schema.js";
import type { GatewayContext } from "../context.js";
import type { HttpFilter, HttpFilterName } from "../feature.js";
import { payloadHeader } from "./jwt-checks.js";
import { pinnedKeys } from "./jwt-keys.js";

const JWT_AUTHN = "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication";
const JWT_AUTHN_PER_ROUTE = "envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig";
export const JWT_AUTHN_FILTER: HttpFilterName = "envoy.filters.http.jwt_authn";

/** Verified tokens each Envoy worker remembers per provider (ext-authz's `tokenCacheSize` default). */
export const JWT_CACHE_SIZE = 10_000;

const policiesByConfig = new WeakMap<object, Map<string, AuthPolicy>>();

/** The route's auth policy, looked up in a by-name index built once per config. */
export function authPolicyOf(ctx: GatewayContext, r: Route): AuthPolicy | undefined {
  if (r.authPolicy === undefined) return undefined;
  let byName = policiesByConfig.get(ctx.config);
  if (!byName) {
    byName = new Map(ctx.config.authPolicies.map((p) => [p.name, p]));
    policiesByConfig.set(ctx.config, byName);
  }
  return byName.get(r.authPolicy);
}

/** Each policy's path on a gateway, decided once per gateway (it depends on the policy, not the route). */
const pathsByGateway = new WeakMap<GatewayContext, Map<string, AuthPath>>();

/** Who decides on a route of this gateway: nobody, Envoy alone, or ext-authz (and why). */
export function authPath(ctx: GatewayContext, r: Route): AuthPath {
  const policy = authPolicyOf(ctx, r);
  if (!policy) return { kind: "public" };
  let paths = pathsByGateway.get(ctx);
  if (!paths) {
    paths = new Map();
    pathsByGateway.set(ctx, paths);
  }
  let path = paths.get(policy.name);
  if (!path) {
    path = authPathOf(ctx.config, ctx.gateway, policy, ctx.keys);
    paths.set(policy.name, path);
  }
  return path;
}

/**
 * Where a provider's tokens are looked for. A header's scheme is matched by ext-authz without
 * regard to case, and by Envoy exactly: Envoy is given the scheme's last characters that are no
 * letters (`Bearer ` → ` `), so it finds the token after `bearer ` and `BEARER ` too, and the
 * checks accept it only when the scheme matched as ext-authz matches it.
 */
function headerLocation(name: string, prefix: string | undefined): object {
  if (prefix === undefined) return { name };
  const tail = /[^A-Za-z]*$/.exec(prefix)![0];
  const usable = tail.length > 0 && prefix.indexOf(tail) === prefix.length - tail.length;
  return { name, value_prefix: usable ? tail : prefix };
}

function envoyProvider({ provider: j, keys }: NativeProvider): object {
  const headers = j.from.flatMap((f) => ("header" in f ? [headerLocation(f.header, f.prefix)] : []));
  const params = j.from.flatMap((f) => ("query" in f ? [f.query] : []));
  const cookies = j.from.flatMap((f) => ("cookie" in f ? [f.cookie] : []));
  return {
    issuer: j.issuer,
    ...(j.audiences ? { audiences: j.audiences } : {}),
    local_jwks: { inline_string: JSON.stringify(pinnedKeys(keys, j.algorithms).jwks) },
    ...(headers.length ? { from_headers: headers } : {}),
    ...(params.length ? { from_params: params } : {}),
    ...(cookies.length ? { from_cookies: cookies } : {}),
    // The checks remove the credential as ext-authz does (headers, query parameters, cookies).
    forward: true,
    forward_payload_header: payloadHeader(j.name),
    require_expiration: j.requireExp,
    // Envoy reads 0 as its default of 60 s; the checks apply the provider's own skew after it.
    clock_skew_seconds: j.clockSkewSeconds,
    jwt_cache_config: { jwt_cache_size: JWT_CACHE_SIZE, jwt_max_token_size: j.maxTokenBytes },
  };
}

/** Whether any route of the gateway is verified by Envoy: once per gateway, not per route. */
const nativeByGateway = new WeakMap<GatewayContext, boolean>();

export function gatewayHasNative(ctx: GatewayContext): boolean {
  let on = nativeByGateway.get(ctx);
  if (on === undefined) {
    on = ctx.config.routes.some((r) => r.gateway === ctx.gateway.name && authPath(ctx, r).kind === "native");
    nativeByGateway.set(ctx, on);
  }
  return on;
}

/** The jwt_authn filter for the listener's natively verified routes: their providers, one requirement per policy. */
export function jwtAuthnFilter(ctx: GatewayContext, routes: readonly Route[]): HttpFilter | undefined {
  const providers = new Map<string, NativeProvider>();
  const requirements = new Map<string, object>();
  for (const r of routes) {
    const path = authPath(ctx, r);
    if (path.kind !== "native") continue;
    for (const np of path.providers) providers.set(np.provider.name, np);
    requirements.set(path.policy.name, {
      requires_any: {
        requirements: [
          ...path.providers.map((np) => ({ provider_name: np.provider.name })),
          // Envoy refuses nothing itself: the checks after it answer every refusal in ext-authz's words.
          { allow_missing_or_failed: {} },
        ],
      },
    });
  }
  if (providers.size === 0) return undefined;
  const sorted = <T>(m: Map<string, T>) => Object.fromEntries([...m].sort(([a], [b]) => a.localeCompare(b)));
  return {
    name: JWT_AUTHN_FILTER,
    typed_config: {
      "@type": TYPE_PREFIX + JWT_AUTHN,
      providers: Object.fromEntries(
        [...providers].sort(([a], [b]) => a.localeCompare(b)).map(([name, np]) => [name, envoyProvider(np)]),
      ),
      requirement_map: sorted(requirements),
      stat_prefix: ctx.gateway.name,
    },
  };
}

/** A natively verified route's requirement (its policy's). */
export function jwtAuthnPerRoute(policy: AuthPolicy): object {
  return { "@type": TYPE_PREFIX + JWT_AUTHN_PER_ROUTE, requirement_name: policy.name };
}

export const JWT_AUTHN_OFF = { "@type": TYPE_PREFIX + JWT_AUTHN_PER_ROUTE, disabled: true };

/** The headers jwt_authn writes for the gateway's native providers: a client's own are removed on arrival. */
export function payloadHeaders(ctx: GatewayContext): string[] {
  const names = new Set<string>();
  for (const r of ctx.config.routes) {
    if (r.gateway !== ctx.gateway.name) continue;
    const path = authPath(ctx, r);
    if (path.kind === "native") for (const np of path.providers) names.add(payloadHeader(np.provider.name));
  }
  return [...names].sort();
}
