/**
 * Each route's authentication path as the status shows it: `native` (Envoy verifies, no call
 * out), `ext_authz` with the reason it is not native, or `none` (no auth policy).
 */
import { authPathOf } from "../model/auth-path.js";
import type { Config } from "../model/schema.js";
import type { JwksKeeper } from "./keeper.js";

export interface RouteAuthStatus {
  route: string;
  gateway: string;
  /** A composite route (served by the aggregator), authenticated like any route. */
  composite?: true;
  auth: "native" | "ext_authz" | "none";
  /** Why the route calls ext-authz. */
  reason?: string;
}

export function routeAuthStatus(
  config: Config | undefined,
  jwks: Pick<JwksKeeper, "keys" | "status">,
): RouteAuthStatus[] {
  if (!config) return [];
  const keys = jwks.keys();
  const fetches = new Map(jwks.status().map((s) => [s.provider, s]));
  const gateways = new Map(config.gateways.map((g) => [g.name, g]));
  const policies = new Map(config.authPolicies.map((p) => [p.name, p]));
  const entries = [
    ...config.routes.map((r) => ({ r, composite: false })),
    ...config.compositeRoutes.map((r) => ({ r, composite: true })),
  ];
  return entries.flatMap(({ r, composite }): RouteAuthStatus[] => {
    const gateway = gateways.get(r.gateway);
    if (!gateway) return [];
    const path = authPathOf(config, gateway, r.authPolicy ? policies.get(r.authPolicy) : undefined, keys);
    const base = { route: r.name, gateway: r.gateway, ...(composite ? { composite: true as const } : {}) };
    if (path.kind === "public") return [{ ...base, auth: "none" as const }];
    if (path.kind === "native") return [{ ...base, auth: "native" as const }];
    // A provider whose keys cannot be fetched says why.
    const failing = [...fetches.values()].find(
      (f) => f.state === "failing" && path.reason.includes(`provider ${f.provider} `),
    );
    const reason = failing ? `${path.reason}: ${failing.error}` : path.reason;
    return [{ ...base, auth: "ext_authz" as const, reason }];
  });
}
