import type { Config } from "../model/schema.js";
import type { ResourceInput } from "../xds/snapshot.js";

/** Consumers, API keys, JWT and OAuth providers as ext-authz's resource types. */
export function authPolicyResources(_config: Config): ResourceInput[] {
  return [];
}
