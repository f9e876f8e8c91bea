import type { Route } from "../model/schema.js";
import type { GatewayContext } from "./context.js";

/** The HTTP filters that limit callers on this listener's routes (after authentication), in order. */
export function rateLimitHttpFilters(_ctx: GatewayContext, _routes: Route[]): object[] {
  return [];
}

/** Per-filter settings of a route (e.g. its `local_ratelimit` token bucket), by filter name. */
export function rateLimitPerRoute(_ctx: GatewayContext, _r: Route): Record<string, object> {
  return {};
}

/** The route action's `rate_limits`: the descriptors sent to the rate-limit service. */
export function routeRateLimits(_ctx: GatewayContext, _r: Route): object[] | undefined {
  return undefined;
}
