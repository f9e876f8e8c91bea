import { duration, TYPE_PREFIX } from "../../../protos/src/envoy.js";
import type { AuthPolicy, JwtProvider, Route } from "../model/schema.js";
import type { GatewayContext } from "./context.js";

const EXT_AUTHZ = "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz";
const EXT_AUTHZ_PER_ROUTE = "envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute";
const JWT_AUTHN = "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication";
const JWT_AUTHN_PER_ROUTE = "envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig";
const UPSTREAM_TLS = "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";
export const JWT_AUTHN_FILTER = "envoy.filters.http.jwt_authn";
/** Where jwt_authn files a verified token's payload, under its filter's metadata namespace. */
const JWT_PAYLOAD_KEY = "jwt_payload";
export const EXT_AUTHZ_FILTER = "envoy.filters.http.ext_authz";

/** The namespace Envoy files ext-authz's dynamic metadata under. */
export const EXT_AUTHZ_NAMESPACE = EXT_AUTHZ_FILTER;

/** The identity headers ext-authz sets on requests it lets through (its `IDENTITY_HEADERS`). */
export const IDENTITY_HEADERS = [
  "x-portico-consumer",
  "x-portico-key-id",
  "x-portico-plan",
  "x-portico-scopes",
  "x-portico-provider",
];

const EARLY_HEADER_MUTATION = "envoy.extensions.http.early_header_mutation.header_mutation.v3.HeaderMutation";

/**
 * Every listener removes identity headers as a request arrives, before routing and before any
 * filter, so whatever reaches an upstream was set by authentication: a client can never forge an
 * identity, on any route, whichever filter authenticates it (or none).
 */
export function identityHeaderStrip(): object {
  return {
    name: "portico.strip-identity",
    typed_config: {
      "@type": TYPE_PREFIX + EARLY_HEADER_MUTATION,
      mutations: IDENTITY_HEADERS.map((h) => ({ remove: h })),
    },
  };
}

/** What a route adds for authentication: per-filter settings. */
export interface AuthRouteFields {
  perFilter: Record<string, object>;
}

const policiesByConfig = new WeakMap<object, Map<string, AuthPolicy>>();

function policyOf(ctx: GatewayContext, r: Route): AuthPolicy | undefined {
  if (r.authPolicy === undefined) return undefined;
  let byName = policiesByConfig.get(ctx.config);
  if (!byName) {
    byName = new Map(ctx.config.authPolicies.map((p) => [p.name, p]));
    policiesByConfig.set(ctx.config, byName);
  }
  return byName.get(r.authPolicy);
}

/** Whether any route of the gateway uses ext_authz / jwt_authn: computed once per gateway, not per route. */
const gatewayFacts = new WeakMap<GatewayContext, { filterOn: boolean; nativeOn: boolean }>();

function factsOf(ctx: GatewayContext): { filterOn: boolean; nativeOn: boolean } {
  let facts = gatewayFacts.get(ctx);
  if (!facts) {
    const mine = ctx.config.routes.filter((x) => x.gateway === ctx.gateway.name);
    facts = {
      filterOn: mine.some((x) => policyOf(ctx, x) !== undefined),
      nativeOn: mine.some((x) => nativeJwtProviders(ctx, x) !== undefined),
    };
    gatewayFacts.set(ctx, facts);
  }
  return facts;
}

/** The HTTP filters that authenticate callers on this listener's routes, in order. */
export function authHttpFilters(ctx: GatewayContext, routes: Route[]): object[] {
  const settings = ctx.gateway.extAuthz;
  if (!settings || !routes.some((r) => policyOf(ctx, r))) return [];
  const native = routes.filter((r) => nativeJwtProviders(ctx, r) !== undefined);
  const viaService = routes.some((r) => policyOf(ctx, r) && nativeJwtProviders(ctx, r) === undefined);
  return [
    ...(native.length ? [jwtAuthnFilter(ctx, native)] : []),
    ...(viaService ? [extAuthzFilter(ctx)] : []),
  ];
}

function extAuthzFilter(ctx: GatewayContext): object {
  const settings = ctx.gateway.extAuthz!;
  return {
    name: EXT_AUTHZ_FILTER,
    typed_config: {
      "@type": TYPE_PREFIX + EXT_AUTHZ,
      grpc_service: {
        envoy_grpc: { cluster_name: settings.upstream },
        timeout: duration(settings.timeoutMs),
      },
      transport_api_version: "V3",
      failure_mode_allow: settings.failOpen,
      status_on_error: { code: settings.statusOnError },
      // ext-authz answers from memory; it never needs the body, so requests are not buffered.
      stat_prefix: ctx.gateway.name,
    },
  };
}

/**
 * The JWT providers Envoy's own `jwt_authn` filter verifies for this route, when the gateway asks
 * for it (`extAuthz.jwt: jwt_authn`) and the route's rules are ones jwt_authn can express: only JWT
 * providers, no scope, claim or consumer rules, credentials stripped, and providers without the
 * checks jwt_authn lacks (pinned `typ`, maximum token age, required claims) sharing one consumer
 * claim. Other routes stay with ext-authz, which checks everything.
 */
export function nativeJwtProviders(ctx: GatewayContext, r: Route): JwtProvider[] | undefined {
  const p = policyOf(ctx, r);
  if (!p || ctx.gateway.extAuthz?.jwt !== "jwt_authn") return undefined;
  if (p.requiredScopes?.length || p.consumers?.length || p.requiredClaims || !p.stripCredentials)
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
      { header_name: "x-portico-consumer", claim_name: j.consumerClaim },
      ...(j.planClaim ? [{ header_name: "x-portico-plan", claim_name: j.planClaim }] : []),
    ],
  };
}

function jwtAuthnFilter(ctx: GatewayContext, routes: Route[]): object {
  const providers = new Map<string, JwtProvider>();
  const requirements: Record<string, object> = {};
  for (const r of routes) {
    const list = nativeJwtProviders(ctx, r)!;
    for (const j of list) providers.set(j.name, j);
    const p = policyOf(ctx, r)!;
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
export function authClusters(ctx: GatewayContext): { name: string; message: object }[] {
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

/**
 * A policy as ext-authz's context extensions (its `CONTEXT_KEYS`): the route carries its own rules,
 * so a route change and the rules it needs arrive at Envoy together, with no window in which
 * ext-authz would be asked about a policy it has not received yet.
 */
export function contextExtensions(p: AuthPolicy): Record<string, string> {
  return {
    accept: p.accept.join(","),
    anonymous: String(p.allowAnonymous),
    ...(p.requiredScopes?.length ? { scopes: p.requiredScopes.join(" "), scopes_mode: p.scopesMode } : {}),
    ...(p.consumers?.length ? { consumers: p.consumers.join(",") } : {}),
    ...(p.requiredClaims && Object.keys(p.requiredClaims).length
      ? { claims: JSON.stringify(p.requiredClaims) }
      : {}),
    strip_credentials: String(p.stripCredentials),
  };
}

/** Routes with a policy send it to ext-authz; the rest skip the call (public routes cost nothing). */
export function authRouteFields(ctx: GatewayContext, r: Route): AuthRouteFields {
  const policy = policyOf(ctx, r);
  const { filterOn, nativeOn } = factsOf(ctx);
  const jwtOff: Record<string, object> = nativeOn
    ? { [JWT_AUTHN_FILTER]: { "@type": TYPE_PREFIX + JWT_AUTHN_PER_ROUTE, disabled: true } }
    : {};
  if (policy && nativeJwtProviders(ctx, r)) {
    return {
      perFilter: {
        [JWT_AUTHN_FILTER]: { "@type": TYPE_PREFIX + JWT_AUTHN_PER_ROUTE, requirement_name: policy.name },
        [EXT_AUTHZ_FILTER]: { "@type": TYPE_PREFIX + EXT_AUTHZ_PER_ROUTE, disabled: true },
      },
    };
  }
  if (!policy || !ctx.gateway.extAuthz) {
    return {
      perFilter: {
        ...jwtOff,
        ...(filterOn
          ? { [EXT_AUTHZ_FILTER]: { "@type": TYPE_PREFIX + EXT_AUTHZ_PER_ROUTE, disabled: true } }
          : {}),
      },
    };
  }
  return {
    perFilter: {
      ...jwtOff,
      [EXT_AUTHZ_FILTER]: {
        "@type": TYPE_PREFIX + EXT_AUTHZ_PER_ROUTE,
        check_settings: { context_extensions: contextExtensions(policy) },
      },
    },
  };
}

/**
 * Where the caller's identity is in a request's dynamic metadata once authentication ran, for the
 * rate limiter's `metadata` descriptor actions (`source: DYNAMIC`). Absent on routes without an
 * auth policy and for requests that did not authenticate: the action's default (`anonymous`)
 * applies, so every descriptor has a value.
 */
export function identityMetadataKey(
  ctx: GatewayContext,
  r: Route,
  field: "consumer" | "plan",
): { key: string; path: { key: string }[] } {
  const native = nativeJwtProviders(ctx, r);
  if (native) {
    // jwt_authn keeps the verified payload; the consumer and plan are claims in it.
    const claim = field === "consumer" ? native[0]!.consumerClaim : (native[0]!.planClaim ?? "plan");
    return { key: JWT_AUTHN_FILTER, path: [{ key: JWT_PAYLOAD_KEY }, { key: claim }] };
  }
  return { key: EXT_AUTHZ_NAMESPACE, path: [{ key: field }] };
}
