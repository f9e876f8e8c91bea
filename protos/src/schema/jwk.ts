import { z } from "zod";
import { JwkSchema, type Jwk, type JwsAlgorithm } from "./auth.js";

/*
 * Which JWKs can verify what. The control plane refuses a provider whose inline keys fail these
 * rules before it stores it; ext-authz applies the same rules to keys it fetches.
 */

/** The key a JWS algorithm needs (RFC 7518 §3); a token's `alg` never chooses the key type. */
interface KeyRequirement {
  kty: "RSA" | "EC" | "OKP" | "oct";
  crv?: string;
  /** For HMAC: RFC 7518 §3.2 wants a key at least as long as the hash output. */
  minSecretBytes?: number;
}

const REQUIREMENTS: Record<JwsAlgorithm, KeyRequirement> = {
  RS256: { kty: "RSA" },
  RS384: { kty: "RSA" },
  RS512: { kty: "RSA" },
  PS256: { kty: "RSA" },
  PS384: { kty: "RSA" },
  PS512: { kty: "RSA" },
  ES256: { kty: "EC", crv: "P-256" },
  ES384: { kty: "EC", crv: "P-384" },
  ES512: { kty: "EC", crv: "P-521" },
  EdDSA: { kty: "OKP", crv: "Ed25519" },
  Ed25519: { kty: "OKP", crv: "Ed25519" },
  HS256: { kty: "oct", minSecretBytes: 32 },
  HS384: { kty: "oct", minSecretBytes: 48 },
  HS512: { kty: "oct", minSecretBytes: 64 },
};

/** RFC 8725 §3.5: HMAC secrets shorter than 256 bits can be brute-forced offline from one token. */
export const MIN_HMAC_SECRET_BYTES = 32;
const MIN_RSA_MODULUS_BYTES = 256;
const PRIVATE_MEMBERS = ["d", "p", "q", "dp", "dq", "qi"] as const;

function base64urlBytes(s: string): number {
  if (!/^[A-Za-z0-9_-]*$/.test(s)) return -1;
  return Buffer.from(s, "base64url").length;
}

/** Modulus length without leading zero octets, which some encoders add. */
function modulusBytes(n: string): number {
  if (!/^[A-Za-z0-9_-]*$/.test(n)) return -1;
  const buf = Buffer.from(n, "base64url");
  let i = 0;
  while (i < buf.length && buf[i] === 0) i++;
  return buf.length - i;
}

/**
 * Why a JWK cannot be used to verify anything, or undefined when it can. `remote` keys come from
 * a published JWKS, where a symmetric key would be a leaked secret, so those are refused.
 */
export function jwkProblem(jwk: Jwk, origin: "inline" | "remote"): string | undefined {
  if (jwk.use !== undefined && jwk.use !== "sig") return `use is "${jwk.use}", not "sig"`;
  if (jwk.key_ops !== undefined && !jwk.key_ops.includes("verify")) return "key_ops does not include verify";
  if (jwk.kty !== "oct" && PRIVATE_MEMBERS.some((m) => jwk[m] !== undefined)) {
    return "contains private key material; publish only the public key";
  }
  switch (jwk.kty) {
    case "oct": {
      if (origin === "remote") return "symmetric keys are accepted only inline, never from a JWKS URI";
      const len = jwk.k === undefined ? -1 : base64urlBytes(jwk.k);
      if (len < 0) return "k must be base64url";
      if (len < MIN_HMAC_SECRET_BYTES) return `HMAC secret is ${len * 8} bits; at least 256 are required`;
      return undefined;
    }
    case "RSA": {
      if (jwk.n === undefined || jwk.e === undefined) return "an RSA key needs n and e";
      const len = modulusBytes(jwk.n);
      if (len < 0) return "n must be base64url";
      if (len < MIN_RSA_MODULUS_BYTES) return `RSA modulus is ${len * 8} bits; at least 2048 are required`;
      return undefined;
    }
    case "EC":
      if (!["P-256", "P-384", "P-521"].includes(jwk.crv ?? ""))
        return `unsupported curve ${jwk.crv ?? "(none)"}`;
      if (jwk.x === undefined || jwk.y === undefined) return "an EC key needs x and y";
      return undefined;
    case "OKP":
      if (jwk.crv !== "Ed25519") return `unsupported curve ${jwk.crv ?? "(none)"}`;
      if (jwk.x === undefined) return "an OKP key needs x";
      return undefined;
  }
}

const sameAlg = (a: string, b: string) => a === b || (a.startsWith("Ed") && b.startsWith("Ed"));

/** Whether this key may verify a token signed with `alg`; the key's own `alg`, when set, must agree. */
export function keyFitsAlg(jwk: Jwk, alg: JwsAlgorithm): boolean {
  const req = REQUIREMENTS[alg];
  if (jwk.kty !== req.kty) return false;
  if (req.crv !== undefined && jwk.crv !== req.crv) return false;
  if (jwk.alg !== undefined && !sameAlg(jwk.alg, alg)) return false;
  if (req.minSecretBytes !== undefined && base64urlBytes(jwk.k ?? "") < req.minSecretBytes) return false;
  return true;
}

const JwksDocument = z.object({ keys: z.array(z.unknown()) });
/** Published sets carry members Portico does not use (`x5u`, vendor fields); they are dropped, not refused. */
const PublishedJwk = z.object(JwkSchema.shape);

/**
 * A JWK Set as an issuer publishes it, read and checked: the keys that can verify a signature,
 * each other key with the reason it was left out, and an error when the answer is no set or
 * holds no usable key (far more likely a broken endpoint than a real revocation of every key).
 */
export function readPublishedJwks(json: unknown): { keys: Jwk[]; skipped: string[]; error?: string } {
  const doc = JwksDocument.safeParse(json);
  if (!doc.success) return { keys: [], skipped: [], error: "the answer is not a JWK Set (no keys array)" };
  const keys: Jwk[] = [];
  const skipped: string[] = [];
  doc.data.keys.forEach((raw, i) => {
    const jwk = PublishedJwk.safeParse(raw);
    if (!jwk.success) {
      skipped.push(`keys[${i}]: not a supported JWK`);
      return;
    }
    const why = jwkProblem(jwk.data, "remote");
    if (why) skipped.push(`keys[${i}]${jwk.data.kid ? ` (kid ${jwk.data.kid})` : ""}: ${why}`);
    else keys.push(jwk.data);
  });
  if (keys.length === 0) return { keys, skipped, error: "the JWK Set holds no usable signing key" };
  return { keys, skipped };
}
