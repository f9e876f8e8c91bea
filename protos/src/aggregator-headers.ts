/**
 * The headers the aggregator and Envoy agree on. The control plane's translator writes Envoy's
 * side of each from these same constants.
 */

/** Set by Envoy on a composite route's requests: which route it is (several gateways may share a path). */
export const COMPOSITE_HEADER = "x-portico-composite";

/** Names the part (`<route>/<key>`) on a call to Envoy's parts listener, whose route for it picks the upstream. */
export const PART_HEADER = "x-portico-part";

/** Names the parts left out of an answer (failed, optional); also listed in the body's `_missing`. */
export const PARTIAL_HEADER = "x-portico-partial";

/** Names the parts answered from their last good answer; also listed in the body's `_stale`. */
export const STALE_HEADER = "x-portico-stale";

/**
 * Marks every degraded answer of the gateway's: a route's fallback (`fallback`, set by Envoy) and
 * the aggregator's partial and stale answers (`partial`, `stale`, or both).
 */
export const DEGRADED_HEADER = "x-portico-degraded";

/**
 * The gateway's parts token: Envoy sets it on each call it forwards to the aggregator, the
 * aggregator passes it on to the parts listener, and the parts listener serves no part without it.
 * Anything else that reaches the aggregator or the parts listener cannot claim an identity.
 */
export const PARTS_TOKEN_HEADER = "x-portico-parts-token";
