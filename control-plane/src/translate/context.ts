import type { FetchedKeys } from "../model/jwks.js";
import type { Config, Gateway, Listener, RateLimitPolicy, Route } from "../model/schema.js";
import type { QuotaDeny } from "../model/usage-quota.js";

/** What the per-gateway parts of the translator read: the whole (validated) config and the gateway. */
export interface GatewayContext {
  readonly config: Config;
  readonly gateway: Gateway;
  /**
   * How many Envoys of the gateway's group the control plane sees connected (1 when unknown):
   * the limits each Envoy counts are divided among them.
   */
  readonly members?: number;
  /** Subjects denied now because they used up a calendar quota the control plane counts (quota/). */
  readonly quotaDenies?: readonly QuotaDeny[];
  /**
   * The signing keys the control plane fetched for providers that publish them: their routes are
   * verified by Envoy with these, or by ext-authz while none are held.
   */
  readonly keys?: FetchedKeys;
}

/** The routes a listener serves: its gateway's, unless pinned to another of its listeners. */
export function routesOf(gateway: Gateway, listener: Listener, routes: readonly Route[]): Route[] {
  return routes.filter(
    (r) => r.gateway === gateway.name && (r.listener === undefined || r.listener === listener.name),
  );
}

/** The rate-limit policy a route names, if any. */
export function rateLimitPolicyOf(ctx: GatewayContext, r: Route): RateLimitPolicy | undefined {
  return r.rateLimitPolicy === undefined
    ? undefined
    : ctx.config.rateLimitPolicies.find((p) => p.name === r.rateLimitPolicy);
}
