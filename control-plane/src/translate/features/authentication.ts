/**
 * Who the caller is: ext-authz for the routes with an auth policy (also on gateways asking for
 * Envoy's jwt_authn, which is less strict: see `NATIVE_JWT_UNFIT`), the policy carried by each
 * route, and the identity headers stripped on arrival.
 */
import { ALL_IDENTITY_HEADERS, duration, TYPE_PREFIX } from "@portico/contract";
import type { AuthPolicy, Route } from "../../model/schema.js";
import type { GatewayContext } from "../context.js";
import type { HttpFeature, HttpFilter, HttpFilterName } from "../feature.js";
import { authPolicyOf } from "./jwt-authn.js";

const EXT_AUTHZ = "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz";
const EXT_AUTHZ_PER_ROUTE = "envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute";
const EARLY_HEADER_MUTATION = "envoy.extensions.http.early_header_mutation.header_mutation.v3.HeaderMutation";
export const EXT_AUTHZ_FILTER: HttpFilterName = "envoy.filters.http.ext_authz";

/** The namespace Envoy files ext-authz's dynamic metadata under. */
export const EXT_AUTHZ_NAMESPACE = EXT_AUTHZ_FILTER;

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
      mutations: ALL_IDENTITY_HEADERS.map((h) => ({ remove: h })),
    },
  };
}

/** Whether any route of the gateway uses ext_authz: computed once per gateway, not per route. */
const filterOnByGateway = new WeakMap<GatewayContext, boolean>();

function filterOn(ctx: GatewayContext): boolean {
  let on = filterOnByGateway.get(ctx);
  if (on === undefined) {
    on = ctx.config.routes.some((x) => x.gateway === ctx.gateway.name && authPolicyOf(ctx, x) !== undefined);
    filterOnByGateway.set(ctx, on);
  }
  return on;
}

/** The HTTP filters that authenticate callers on this listener's routes, in order. */
export function authHttpFilters(ctx: GatewayContext, routes: readonly Route[]): HttpFilter[] {
  if (!ctx.gateway.extAuthz || !routes.some((r) => authPolicyOf(ctx, r))) return [];
  return [extAuthzFilter(ctx)];
}

function extAuthzFilter(ctx: GatewayContext): HttpFilter {
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
    strip_credentials: String(p.stripCredentials ?? true),
  };
}

/** Routes with a policy send it to ext-authz; the rest skip the call (public routes cost nothing). */
export function authPerFilterConfig(ctx: GatewayContext, r: Route): Record<string, object> {
  const policy = authPolicyOf(ctx, r);
  if (!policy || !ctx.gateway.extAuthz) {
    return filterOn(ctx)
      ? { [EXT_AUTHZ_FILTER]: { "@type": TYPE_PREFIX + EXT_AUTHZ_PER_ROUTE, disabled: true } }
      : {};
  }
  return {
    [EXT_AUTHZ_FILTER]: {
      "@type": TYPE_PREFIX + EXT_AUTHZ_PER_ROUTE,
      check_settings: { context_extensions: contextExtensions(policy) },
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

export const authentication: HttpFeature = {
  name: "authentication",
  listener: (ctx, listener, routes) => ({
    httpFilters: authHttpFilters(ctx, routes),
    connectionManager: listener.trustIdentityHeaders
      ? {}
      : { early_header_mutation_extensions: [identityHeaderStrip()] },
    route: (r) => {
      // Guards authenticate like their route: a caller learns nothing about a protected route unauthenticated.
      const perFilterConfig = authPerFilterConfig(ctx, r);
      return { perFilterConfig, guardPerFilterConfig: perFilterConfig };
    },
  }),
  // The policy service the gateway's filter calls, whether or not a route uses it yet.
  upstreams: (ctx) => (ctx.gateway.extAuthz ? [ctx.gateway.extAuthz.upstream] : []),
};
