import { duration, TYPE_PREFIX } from "../../../protos/src/envoy.js";
import type { AuthPolicy, Route } from "../model/schema.js";
import type { GatewayContext } from "./context.js";

const EXT_AUTHZ = "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz";
const EXT_AUTHZ_PER_ROUTE = "envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute";
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

function policyOf(ctx: GatewayContext, r: Route): AuthPolicy | undefined {
  if (r.authPolicy === undefined) return undefined;
  return ctx.config.authPolicies.find((p) => p.name === r.authPolicy);
}

/** The HTTP filters that authenticate callers on this listener's routes, in order. */
export function authHttpFilters(ctx: GatewayContext, routes: Route[]): object[] {
  const settings = ctx.gateway.extAuthz;
  if (!settings || !routes.some((r) => policyOf(ctx, r))) return [];
  return [
    {
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
    },
  ];
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
  const filterOn = ctx.config.routes.some(
    (x) => x.gateway === ctx.gateway.name && policyOf(ctx, x) !== undefined,
  );
  if (!policy || !ctx.gateway.extAuthz) {
    return {
      perFilter: filterOn
        ? { [EXT_AUTHZ_FILTER]: { "@type": TYPE_PREFIX + EXT_AUTHZ_PER_ROUTE, disabled: true } }
        : {},
    };
  }
  return {
    perFilter: {
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
  _ctx: GatewayContext,
  _r: Route,
  field: "consumer" | "plan",
): { key: string; path: { key: string }[] } {
  return { key: EXT_AUTHZ_NAMESPACE, path: [{ key: field }] };
}
