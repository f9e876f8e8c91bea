import { checkPolicyDocument, type PolicyInput } from "@portico/contract";
import type { FieldProblem } from "./errors.js";
import type { Config } from "./schema.js";

/**
 * The ext-authz policy document a config stands for: what ext-authz assembles from the resources
 * it receives over xDS, and what a static policy file with the same items would hold. The arrays
 * keep the config's order, so ext-authz's field paths (`authPolicies[1].accept`) are the config's.
 * `settings` is left to ext-authz's defaults.
 */
export function authPolicyDocument(config: Config): PolicyInput {
  return {
    jwtProviders: config.jwtProviders,
    oauthProviders: config.oauthProviders,
    consumers: config.consumers,
    apiKeys: config.apiKeys,
    authPolicies: config.authPolicies,
  };
}

/** What ext-authz would refuse in this config (and so NACK), checked before the config is stored. */
export function authPolicyProblems(config: Config): FieldProblem[] {
  const checked = checkPolicyDocument(authPolicyDocument(config));
  return checked.ok ? [] : checked.error.details;
}
