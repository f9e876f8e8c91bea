import type { Jwk } from "@portico/contract";

/**
 * Signing keys the control plane fetched from a provider's `jwksUri` and checked by the rules
 * ext-authz applies to the keys it fetches (`jwkProblem(…, "remote")`): what the translator gives
 * Envoy as `local_jwks`.
 */
export interface FetchedKeySet {
  /** Where they came from: keys of another URI (the provider was changed since) are never used. */
  readonly uri: string;
  readonly keys: readonly Jwk[];
  /** A digest of the keys, so a refetch that changed nothing changes no snapshot. */
  readonly digest: string;
}

/** Provider name → the keys held for it. */
export type FetchedKeys = ReadonlyMap<string, FetchedKeySet>;
