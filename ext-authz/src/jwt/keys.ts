import { importJWK } from "jose";
import { keyFitsAlg, type Jwk, type JwsAlgorithm } from "@portico/contract";

/** Only the members that define the public key (or the secret), so no header-ish member steers the import. */
function keyMaterial(jwk: Jwk): Record<string, string> {
  const out: Record<string, string> = { kty: jwk.kty };
  for (const m of ["crv", "n", "e", "x", "y", "k"] as const) {
    const v = jwk[m];
    if (v !== undefined) out[m] = v;
  }
  return out;
}

export type VerificationKey = Awaited<ReturnType<typeof importJWK>>;

/** A key of a JWKS, imported once per algorithm it is used with. */
export class KeyEntry {
  private readonly imported = new Map<JwsAlgorithm, Promise<VerificationKey>>();
  /** Identifies the key material itself, so a cached token is dropped when its key leaves the set. */
  readonly fingerprint: string;

  constructor(readonly jwk: Jwk) {
    this.fingerprint = JSON.stringify(keyMaterial(jwk));
  }

  key(alg: JwsAlgorithm): Promise<VerificationKey> {
    let p = this.imported.get(alg);
    if (!p) {
      p = importJWK(keyMaterial(this.jwk), alg);
      // A key that failed to import is retried on the next token rather than poisoning the cache.
      p.catch(() => this.imported.delete(alg));
      this.imported.set(alg, p);
    }
    return p;
  }
}

/** An immutable snapshot of a provider's keys, indexed by `kid` (an opaque map key, never a path). */
export class KeySet {
  private readonly byKid = new Map<string, KeyEntry[]>();
  private readonly fingerprints = new Set<string>();
  readonly entries: readonly KeyEntry[];

  constructor(jwks: readonly Jwk[]) {
    this.entries = jwks.map((j) => new KeyEntry(j));
    for (const e of this.entries) {
      this.fingerprints.add(e.fingerprint);
      if (e.jwk.kid === undefined) continue;
      const list = this.byKid.get(e.jwk.kid);
      if (list) list.push(e);
      else this.byKid.set(e.jwk.kid, [e]);
    }
  }

  /**
   * Keys that may verify a token with this `kid` and `alg`. Without a `kid`, only an unambiguous
   * match counts: one key of the right type.
   */
  candidates(kid: string | undefined, alg: JwsAlgorithm): KeyEntry[] {
    if (kid !== undefined) return (this.byKid.get(kid) ?? []).filter((e) => keyFitsAlg(e.jwk, alg));
    const fitting = this.entries.filter((e) => keyFitsAlg(e.jwk, alg));
    return fitting.length === 1 ? fitting : [];
  }

  hasKid(kid: string): boolean {
    return this.byKid.has(kid);
  }

  has(fingerprint: string): boolean {
    return this.fingerprints.has(fingerprint);
  }

  get size(): number {
    return this.entries.length;
  }
}
