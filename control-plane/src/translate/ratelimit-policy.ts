import type { Config } from "../model/schema.js";
import type { ResourceInput } from "../xds/snapshot.js";

/** Rate-limit policies as the rate-limit service's resource types (one per domain). */
export function rateLimitPolicyResources(_config: Config): ResourceInput[] {
  return [];
}
