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
