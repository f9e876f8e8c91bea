/**
 * Who the caller is: ext-authz for the routes with an auth policy (jwt_authn for the ones it can
 * check alone), the policy carried by each route, and the identity headers stripped on arrival.
 */
import { ALL_IDENTITY_HEADERS, duration, TYPE_PREFIX } from "@portico/contract";
import type { AuthPolicy, Route } from "../../model/schema.js";
import type { GatewayContext } from "../context.js";
import type { HttpFeature, HttpFilter, HttpFilterName } from "../feature.js";
import {
  authPolicyOf,
  JWT_AUTHN_FILTER,
  JWT_AUTHN_PER_ROUTE,
  JWT_PAYLOAD_KEY,
  jwksClusters,
  jwtAuthnFilter,
  nativeJwtProviders,
} from "./jwt-authn.js";

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

/** Whether any route of the gateway uses ext_authz / jwt_authn: computed once per gateway, not per route. */
const gatewayFacts = new WeakMap<GatewayContext, { filterOn: boolean; nativeOn: boolean }>();

function factsOf(ctx: GatewayContext): { filterOn: boolean; nativeOn: boolean } {
  let facts = gatewayFacts.get(ctx);
  if (!facts) {
    const mine = ctx.config.routes.filter((x) => x.gateway === ctx.gateway.name);
    facts = {
      filterOn: mine.some((x) => authPolicyOf(ctx, x) !== undefined),
      nativeOn: mine.some((x) => nativeJwtProviders(ctx, x) !== undefined),
    };
    gatewayFacts.set(ctx, facts);
  }
  return facts;
}

/** The HTTP filters that authenticate callers on this listener's routes, in order. */
export function authHttpFilters(ctx: GatewayContext, routes: readonly Route[]): HttpFilter[] {
  const settings = ctx.gateway.extAuthz;
  if (!settings || !routes.some((r) => authPolicyOf(ctx, r))) return [];
  const native = routes.filter((r) => nativeJwtProviders(ctx, r) !== undefined);
  const viaService = routes.some((r) => authPolicyOf(ctx, r) && nativeJwtProviders(ctx, r) === undefined);
  return [
    ...(native.length ? [jwtAuthnFilter(ctx, native)] : []),
    ...(viaService ? [extAuthzFilter(ctx)] : []),
  ];
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
  const { filterOn, nativeOn } = factsOf(ctx);
  const jwtOff: Record<string, object> = nativeOn
    ? { [JWT_AUTHN_FILTER]: { "@type": TYPE_PREFIX + JWT_AUTHN_PER_ROUTE, disabled: true } }
    : {};
  if (policy && nativeJwtProviders(ctx, r)) {
    return {
      [JWT_AUTHN_FILTER]: { "@type": TYPE_PREFIX + JWT_AUTHN_PER_ROUTE, requirement_name: policy.name },
      [EXT_AUTHZ_FILTER]: { "@type": TYPE_PREFIX + EXT_AUTHZ_PER_ROUTE, disabled: true },
    };
  }
  if (!policy || !ctx.gateway.extAuthz) {
    return {
      ...jwtOff,
      ...(filterOn
        ? { [EXT_AUTHZ_FILTER]: { "@type": TYPE_PREFIX + EXT_AUTHZ_PER_ROUTE, disabled: true } }
        : {}),
    };
  }
  return {
    ...jwtOff,
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
  clusters: jwksClusters,
};
