/**
 * The group Portico's policy services (ext-authz, the rate limiter, the aggregator) name as their
 * `node.cluster`. It is not a valid gateway name (gateway names have no ':'), so no gateway can
 * take it, and its nodes show in the fleet status beside the Envoys.
 */
export const POLICY_GROUP = "portico:policy";
