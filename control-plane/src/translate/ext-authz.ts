import type { Route } from "../model/schema.js";
import type { GatewayContext } from "./context.js";

/** What a route adds for authentication: per-filter settings and headers to strip. */
export interface AuthRouteFields {
  perFilter: Record<string, object>;
  /** Request headers removed before the upstream (identity headers on routes ext-authz skips). */
  removeHeaders: string[];
}

/** The HTTP filters that authenticate callers on this listener's routes, in order. */
export function authHttpFilters(_ctx: GatewayContext, _routes: Route[]): object[] {
  return [];
}

export function authRouteFields(_ctx: GatewayContext, _r: Route): AuthRouteFields {
  return { perFilter: {}, removeHeaders: [] };
}

/** The namespace Envoy files ext-authz's dynamic metadata under. */
export const EXT_AUTHZ_NAMESPACE = "envoy.filters.http.ext_authz";

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
