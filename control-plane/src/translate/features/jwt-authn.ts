/**
 * Envoy's own `jwt_authn` filter, for the routes whose JWT rules it can check without ext-authz
 * (`extAuthz.jwt: jwt_authn`): the filter with its providers and one requirement per policy, and
 * the clusters it fetches remote JWKS through.
 */
import { duration, IDENTITY_HEADERS, TYPE_PREFIX } from "@portico/contract";
import type { AuthPolicy, JwtProvider, Route } from "../../model/schema.js";
import type { ResourceInput } from "../../xds/snapshot.js";
import { TypeUrl } from "../../xds/types.js";
import type { GatewayContext } from "../context.js";
import type { HttpFilter, HttpFilterName } from "../feature.js";

const JWT_AUTHN = "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication";
export const JWT_AUTHN_PER_ROUTE = "envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig";
const UPSTREAM_TLS = "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";
export const JWT_AUTHN_FILTER: HttpFilterName = "envoy.filters.http.jwt_authn";
/** Where jwt_authn files a verified token's payload, under its filter's metadata namespace. */
export const JWT_PAYLOAD_KEY = "jwt_payload";

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

/**
 * The JWT providers Envoy's own `jwt_authn` filter verifies for this route, when the gateway asks
 * for it (`extAuthz.jwt: jwt_authn`) and the route's rules are ones jwt_authn can express: only JWT
 * providers, no scope, claim or consumer rules, credentials stripped, and providers without the
 * checks jwt_authn lacks (pinned `typ`, maximum token age, required claims) sharing one consumer
 * claim. Other routes stay with ext-authz, which checks everything.
 */
export function nativeJwtProviders(ctx: GatewayContext, r: Route): JwtProvider[] | undefined {
  const p = authPolicyOf(ctx, r);
  if (!p || ctx.gateway.extAuthz?.jwt !== "jwt_authn") return undefined;
  if (p.requiredScopes?.length || p.consumers?.length || p.requiredClaims || p.stripCredentials === false)
    return undefined;
  const all = ctx.config.jwtProviders;
  const providers: JwtProvider[] = [];
  for (const a of p.accept) {
    if (a === "jwt") providers.push(...all);
    else {
      const found = all.find((j) => j.name === a);
      if (!found) return undefined; // an API key, OAuth kind or provider
      providers.push(found);
    }
  }
  const unique = [...new Map(providers.map((j) => [j.name, j])).values()];
  if (unique.length === 0) return undefined;
  const expressible = unique.every(
    (j) => j.typ === undefined && j.maxTokenAgeSeconds === undefined && j.requiredClaims.length === 0,
  );
  if (!expressible || new Set(unique.map((j) => j.consumerClaim)).size !== 1) return undefined;
  return unique;
}

/** The cluster Envoy fetches a provider's remote JWKS through. */
export function jwksClusterName(provider: string): string {
  return `jwks~${provider}`;
}

function jwtProvider(j: JwtProvider): object {
  const headers = j.from.flatMap((f) =>
    "header" in f ? [{ name: f.header, ...(f.prefix ? { value_prefix: f.prefix } : {}) }] : [],
  );
  const params = j.from.flatMap((f) => ("query" in f ? [f.query] : []));
  const cookies = j.from.flatMap((f) => ("cookie" in f ? [f.cookie] : []));
  return {
    issuer: j.issuer,
    ...(j.audiences ? { audiences: j.audiences } : {}),
    ...(j.jwks
      ? { local_jwks: { inline_string: JSON.stringify(j.jwks) } }
      : {
          remote_jwks: {
            http_uri: {
              uri: j.jwksUri,
              cluster: jwksClusterName(j.name),
              timeout: duration(j.jwksTimeoutMs),
            },
            cache_duration: duration(j.jwksCacheSeconds * 1000),
            // Fetched when the listener starts, not by the first request.
            async_fetch: {},
          },
        }),
    ...(headers.length ? { from_headers: headers } : {}),
    ...(params.length ? { from_params: params } : {}),
    ...(cookies.length ? { from_cookies: cookies } : {}),
    forward: false,
    payload_in_metadata: JWT_PAYLOAD_KEY,
    clock_skew_seconds: j.clockSkewSeconds,
    require_expiration: j.requireExp,
    claim_to_headers: [
      { header_name: IDENTITY_HEADERS.consumer, claim_name: j.consumerClaim },
      ...(j.planClaim ? [{ header_name: IDENTITY_HEADERS.plan, claim_name: j.planClaim }] : []),
    ],
  };
}

/** The filter for the given routes, each of which jwt_authn verifies: one requirement per policy. */
export function jwtAuthnFilter(ctx: GatewayContext, routes: readonly Route[]): HttpFilter {
  const providers = new Map<string, JwtProvider>();
  const requirements: Record<string, object> = {};
  for (const r of routes) {
    const list = nativeJwtProviders(ctx, r)!;
    for (const j of list) providers.set(j.name, j);
    const p = authPolicyOf(ctx, r)!;
    const each = [
      ...list.map((j) => ({ provider_name: j.name })),
      ...(p.allowAnonymous ? [{ allow_missing: {} }] : []),
    ];
    requirements[p.name] = each.length === 1 ? each[0]! : { requires_any: { requirements: each } };
  }
  return {
    name: JWT_AUTHN_FILTER,
    typed_config: {
      "@type": TYPE_PREFIX + JWT_AUTHN,
      providers: Object.fromEntries([...providers].sort().map(([name, j]) => [name, jwtProvider(j)])),
      requirement_map: requirements,
      bypass_cors_preflight: true,
    },
  };
}

/** Clusters for the remote JWKS of the providers jwt_authn verifies on this gateway. */
export function jwksClusters(ctx: GatewayContext): ResourceInput[] {
  const providers = new Map<string, JwtProvider>();
  for (const r of ctx.config.routes) {
    if (r.gateway !== ctx.gateway.name) continue;
    for (const j of nativeJwtProviders(ctx, r) ?? []) if (j.jwksUri) providers.set(j.name, j);
  }
  return [...providers.values()]
    .sort((a, b) => a.name.localeCompare(b.name))
    .map((j) => {
      const u = new URL(j.jwksUri!);
      const tls = u.protocol === "https:";
      const port = Number(u.port || (tls ? 443 : 80));
      const name = jwksClusterName(j.name);
      return {
        typeUrl: TypeUrl.Cluster,
        name,
        message: {
          name,
          type: "STRICT_DNS",
          connect_timeout: duration(Math.min(j.jwksTimeoutMs, 5_000)),
          dns_lookup_family: "V4_PREFERRED",
          load_assignment: {
            cluster_name: name,
            endpoints: [
              {
                lb_endpoints: [
                  { endpoint: { address: { socket_address: { address: u.hostname, port_value: port } } } },
                ],
              },
            ],
          },
          ...(tls
            ? {
                transport_socket: {
                  name: "envoy.transport_sockets.tls",
                  typed_config: { "@type": TYPE_PREFIX + UPSTREAM_TLS, sni: u.hostname },
                },
              }
            : {}),
        },
      };
    });
}
