/**
 * Who the caller is. Each route with an auth policy is decided by Envoy alone when it can be
 * (JWT-only policies: jwt_authn, then Portico's checks; see jwt-authn.ts) and by ext-authz
 * otherwise (API keys, OAuth, or a gateway that asks for it), with ext_authz turned off on the
 * routes Envoy decides, so they make no call; the identity headers are stripped on arrival.
 */
import { ALL_IDENTITY_HEADERS, duration, TYPE_PREFIX } from "@portico/contract";
import { hasServiceLimits, usageLimits } from "../../model/ratelimit-enforcement.js";
import type { AuthPolicy, Route } from "../../model/schema.js";
import { rateLimitPolicyOf, type GatewayContext } from "../context.js";
import { FILTER_OFF, type HttpFeature, type HttpFilter, type HttpFilterName } from "../feature.js";
import {
  JWT_CHECKS,
  JWT_CHECKS_OFF,
  JWT_IDENTITY,
  jwtChecksFilter,
  jwtChecksRoute,
  jwtIdentityFilter,
} from "./jwt-checks.js";
import { IDENTITY_NAMESPACE } from "./jwt-checks-lua.js";
import {
  authPath,
  authPolicyOf,
  gatewayHasNative,
  JWT_AUTHN_FILTER,
  JWT_AUTHN_OFF,
  jwtAuthnFilter,
  jwtAuthnPerRoute,
  payloadHeaders,
} from "./jwt-authn.js";

const EXT_AUTHZ = "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz";
const EXT_AUTHZ_PER_ROUTE = "envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute";
const EARLY_HEADER_MUTATION = "envoy.extensions.http.early_header_mutation.header_mutation.v3.HeaderMutation";
export const EXT_AUTHZ_FILTER: HttpFilterName = "envoy.filters.http.ext_authz";

/**
 * The namespace of the caller's identity in dynamic metadata: ext-authz's (Envoy files its
 * answer under the filter's name), and the checks after jwt_authn write theirs there too.
 */
export const EXT_AUTHZ_NAMESPACE = IDENTITY_NAMESPACE;

/**
 * Every listener removes identity headers as a request arrives, before routing and before any
 * filter, so whatever reaches an upstream was set by authentication: a client can never forge an
 * identity, on any route, whichever filter authenticates it (or none).
 */
export function identityHeaderStrip(ctx: GatewayContext, trusted: boolean): object | undefined {
  // So are the headers jwt_authn reports verified tokens in: only Envoy may write them, on every
  // listener, even one that trusts the identity its peer sends (the checks after jwt_authn take
  // one as jwt_authn's verdict on the token).
  const names = [...(trusted ? [] : ALL_IDENTITY_HEADERS), ...payloadHeaders(ctx)];
  if (names.length === 0) return undefined;
  return {
    name: "portico.strip-identity",
    typed_config: {
      "@type": TYPE_PREFIX + EARLY_HEADER_MUTATION,
      mutations: names.map((h) => ({ remove: h })),
    },
  };
}

/** Whether any route of the gateway meets `test`: computed once per gateway, not per route. */
function anyRouteOfGateway(
  test: (ctx: GatewayContext, r: Route) => boolean,
): (ctx: GatewayContext) => boolean {
  const byGateway = new WeakMap<GatewayContext, boolean>();
  return (ctx) => {
    let on = byGateway.get(ctx);
    if (on === undefined) {
      on = ctx.config.routes.some((x) => x.gateway === ctx.gateway.name && test(ctx, x));
      byGateway.set(ctx, on);
    }
    return on;
  };
}

/** Whether any route of the gateway calls ext-authz. */
const filterOn = anyRouteOfGateway((ctx, r) => authPath(ctx, r).kind === "ext_authz");

/** Whether Envoy verifies the route and copies the identity the checks admit into metadata. */
function copiesIdentity(ctx: GatewayContext, r: Route): boolean {
  return authPath(ctx, r).kind === "native" && !identityInHeaders(ctx, r);
}

/** Whether any route of the gateway copies its identity into metadata (so the filter is there to turn off). */
const identityCopied = anyRouteOfGateway(copiesIdentity);

/** The HTTP filters that authenticate callers on this listener's routes, in order. */
export function authHttpFilters(ctx: GatewayContext, routes: readonly Route[]): HttpFilter[] {
  if (!ctx.gateway.extAuthz || !routes.some((r) => authPolicyOf(ctx, r))) return [];
  const native = jwtAuthnFilter(ctx, routes);
  const viaService = routes.some((r) => authPath(ctx, r).kind === "ext_authz");
  const copied = routes.filter((r) => copiesIdentity(ctx, r));
  const identity = copied.length > 0 ? [jwtIdentityFilter(copied.some((r) => readsPlan(ctx, r)))] : [];
  return [
    ...(native ? [native, jwtChecksFilter(), ...identity] : []),
    ...(viaService ? [extAuthzFilter(ctx)] : []),
  ];
}

/**
 * Whether something reads the caller's plan from a request's dynamic metadata on the route: the
 * rate-limit service's descriptors and the quotas counted from access logs do; the limits each
 * Envoy counts and the access log read the consumer alone.
 */
function readsPlan(ctx: GatewayContext, r: Route): boolean {
  const p = rateLimitPolicyOf(ctx, r);
  return p !== undefined && (hasServiceLimits(p) || usageLimits(p).length > 0);
}

/**
 * Whether the caller's identity on the route stays in the identity headers alone, never copied into
 * dynamic metadata: Envoy verifies the route's tokens, admits no anonymous caller (so every request
 * the checks let through carries `x-portico-consumer`), and only readers that can take the header
 * read the consumer (the limits each Envoy counts, the access log). Copying it into metadata costs
 * about a twentieth of a bare request's instructions in Envoy (callgrind), the most expensive step
 * of the route after Lua itself. Routes whose plan the rate-limit service or the quotas read, and
 * routes that admit anonymous callers (whose identity the checks write to metadata), keep the copy.
 */
export function identityInHeaders(ctx: GatewayContext, r: Route): boolean {
  const path = authPath(ctx, r);
  return path.kind === "native" && !path.policy.allowAnonymous && !readsPlan(ctx, r);
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

/**
 * Routes Envoy decides carry their requirement and rules (and the rules' version in their metadata)
 * and skip ext_authz; routes with another policy send it to ext-authz; the rest skip both (public
 * routes cost nothing).
 */
export function authRoute(
  ctx: GatewayContext,
  r: Route,
  stripped = false,
): { perFilterConfig: Record<string, object>; metadata?: Record<string, Record<string, string>> } {
  const path = authPath(ctx, r);
  const native = gatewayHasNative(ctx);
  const serviceOff = filterOn(ctx)
    ? { [EXT_AUTHZ_FILTER]: { "@type": TYPE_PREFIX + EXT_AUTHZ_PER_ROUTE, disabled: true } }
    : {};
  const nativeOff = native
    ? { [JWT_AUTHN_FILTER]: JWT_AUTHN_OFF, [JWT_CHECKS]: JWT_CHECKS_OFF, [JWT_IDENTITY]: FILTER_OFF }
    : {};
  if (path.kind === "native") {
    const checks = jwtChecksRoute(ctx.config, path.policy, path.providers, stripped);
    return {
      perFilterConfig: {
        [JWT_AUTHN_FILTER]: jwtAuthnPerRoute(path.policy),
        [JWT_CHECKS]: checks.perRoute,
        ...(identityCopied(ctx) && identityInHeaders(ctx, r) ? { [JWT_IDENTITY]: FILTER_OFF } : {}),
        ...serviceOff,
      },
      metadata: checks.metadata,
    };
  }
  if (path.kind === "public" || !ctx.gateway.extAuthz)
    return { perFilterConfig: { ...nativeOff, ...serviceOff } };
  return {
    perFilterConfig: {
      ...nativeOff,
      [EXT_AUTHZ_FILTER]: {
        "@type": TYPE_PREFIX + EXT_AUTHZ_PER_ROUTE,
        check_settings: { context_extensions: contextExtensions(path.policy) },
      },
    },
  };
}

/**
 * Where the caller's identity is in a request's dynamic metadata once authentication ran, for the
 * rate limiter's `metadata` descriptor actions (`source: DYNAMIC`): the same place whether
 * ext-authz or the checks after jwt_authn admitted the caller. Absent on routes without an auth
 * policy and for requests that did not authenticate: the action's default (`anonymous`) applies,
 * so every descriptor has a value.
 */
export function identityMetadataKey(field: "consumer" | "plan"): { key: string; path: { key: string }[] } {
  return { key: EXT_AUTHZ_NAMESPACE, path: [{ key: field }] };
}

export const authentication: HttpFeature = {
  name: "authentication",
  listener: (ctx, listener, routes) => {
    const trusted = listener.trustIdentityHeaders === true;
    const strip = identityHeaderStrip(ctx, trusted);
    return {
      httpFilters: authHttpFilters(ctx, routes),
      connectionManager: strip ? { early_header_mutation_extensions: [strip] } : {},
      route: (r) => {
        // Guards authenticate like their route: a caller learns nothing about a protected route unauthenticated.
        const { perFilterConfig, metadata } = authRoute(ctx, r, !trusted);
        return { perFilterConfig, guardPerFilterConfig: perFilterConfig, metadata, guardMetadata: metadata };
      },
    };
  },
  // The policy service the gateway's filter calls, whether or not a route uses it yet.
  upstreams: (ctx) => (ctx.gateway.extAuthz ? [ctx.gateway.extAuthz.upstream] : []),
};
