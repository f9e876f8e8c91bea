import type { Config } from "../model/schema.js";
import type { ResourceInput } from "../xds/snapshot.js";
import { aggregatorPolicyResources } from "./aggregator-policy.js";
import { withCompositeRoutes } from "./aggregator.js";
import { authPolicyResources } from "./auth-policy.js";
import { rateLimitPolicyResources } from "./ratelimit-policy.js";

/**
 * The group Portico's policy services (ext-authz, the rate limiter, the aggregator) name as their
 * `node.cluster`. It is not a valid gateway name (gateway names have no ':'), so no gateway can
 * take it, and its nodes show in the fleet status beside the Envoys.
 */
export const POLICY_GROUP = "portico:policy";

/** The model → Portico's policy resource types. Pure, like the Envoy translator. */
export function translatePolicy(config: Config): ResourceInput[] {
  return [
    ...authPolicyResources(config),
    // Composite routes are routes to the rate limiter too: their policies' limits must be in its domains.
    ...rateLimitPolicyResources(withCompositeRoutes(config)),
    ...aggregatorPolicyResources(config),
  ];
}
