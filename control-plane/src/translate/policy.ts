import type { Config } from "../model/schema.js";
import type { ResourceInput } from "../xds/snapshot.js";
import { aggregatorPolicyResources } from "./aggregator-policy.js";
import { withCompositeRoutes } from "./features/composite.js";
import { authPolicyResources } from "./auth-policy.js";
import { rateLimitPolicyResources } from "./ratelimit-policy.js";

export { POLICY_GROUP } from "@portico/contract";

/** The model → Portico's policy resource types. Pure, like the Envoy translator. */
export function translatePolicy(config: Config): ResourceInput[] {
  return [
    ...authPolicyResources(config),
    // Composite routes are routes to the rate limiter too: their policies' limits must be in its domains.
    ...rateLimitPolicyResources(withCompositeRoutes(config)),
    ...aggregatorPolicyResources(config),
  ];
}
