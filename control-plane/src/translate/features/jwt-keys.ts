/**
 * A provider's keys as Envoy's `local_jwks`, each pinned to the algorithms the provider allows:
 * Envoy verifies a token only with a key whose `alg` equals the token's, so a key published without
 * `alg` (which Envoy would try with any RSA algorithm) becomes one entry per allowed algorithm it
 * fits, and a provider pinned to RS256 never verifies a PS256 or RS512 token.
 */
import { keyFitsAlg, type Jwk, type JwsAlgorithm } from "@portico/contract";

/**
 * The kid of a key published without one. Envoy lets a key without kid verify a token naming any
 * kid, where ext-authz finds a key by kid only; a kid longer than the 256 characters a token may
 * name (longer ones are refused before any key is looked up) keeps every named kid off it, while
 * a token without kid still finds it, as in ext-authz.
 */
export function keyWithoutKid(index: number): string {
  return `portico-key-without-kid-${index}-`.padEnd(300, "0");
}

/** What defines the key (or the secret); nothing that could steer Envoy's use of it. */
const MATERIAL = ["crv", "n", "e", "x", "y", "k"] as const;

export interface PinnedKeys {
  /** The JWK Set for `local_jwks`. */
  readonly jwks: { keys: Record<string, string>[] };
  /** Algorithms a token without kid may use: those exactly one key fits (ext-authz refuses it otherwise). */
  readonly withoutKid: readonly JwsAlgorithm[];
}

export function pinnedKeys(keys: readonly Jwk[], algorithms: readonly JwsAlgorithm[]): PinnedKeys {
  const out: Record<string, string>[] = [];
  keys.forEach((key, i) => {
    for (const alg of algorithms) {
      if (!keyFitsAlg(key, alg)) continue;
      const entry: Record<string, string> = { kty: key.kty, kid: key.kid ?? keyWithoutKid(i), alg };
      for (const m of MATERIAL) if (key[m] !== undefined) entry[m] = key[m];
      out.push(entry);
    }
  });
  const withoutKid = algorithms.filter((alg) => keys.filter((k) => keyFitsAlg(k, alg)).length === 1);
  return { jwks: { keys: out }, withoutKid };
}
