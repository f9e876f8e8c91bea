import { constants, createHmac, generateKeyPairSync, randomBytes, sign, type KeyObject } from "node:crypto";
import type { Jwk, JwsAlgorithm } from "@portico/contract";

/** A signing key made with node:crypto, independent of the jose library under test. */
export interface TestKey {
  alg: JwsAlgorithm;
  kid: string;
  privateKey: KeyObject | Buffer;
  publicKey?: KeyObject;
  /** What goes into a JWKS (for HMAC: the secret itself, inline only). */
  jwk: Jwk;
}

export function b64url(data: string | Buffer | object): string {
  const buf = Buffer.isBuffer(data)
    ? data
    : Buffer.from(typeof data === "string" ? data : JSON.stringify(data));
  return buf.toString("base64url");
}

function publicJwk(publicKey: KeyObject, kid: string, alg?: string): Jwk {
  const j = publicKey.export({ format: "jwk" }) as Jwk;
  return { ...j, kid, use: "sig", ...(alg ? { alg } : {}) };
}

export function rsaKey(kid: string, alg: JwsAlgorithm = "RS256", bits = 2048): TestKey {
  const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: bits });
  return { alg, kid, privateKey, publicKey, jwk: publicJwk(publicKey, kid, alg) };
}

export function ecKey(kid: string): TestKey {
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  return { alg: "ES256", kid, privateKey, publicKey, jwk: publicJwk(publicKey, kid, "ES256") };
}

export function edKey(kid: string): TestKey {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  return { alg: "EdDSA", kid, privateKey, publicKey, jwk: publicJwk(publicKey, kid, "EdDSA") };
}

export function hmacKey(kid: string, bytes = 32, alg: JwsAlgorithm = "HS256"): TestKey {
  const secret = randomBytes(bytes);
  return { alg, kid, privateKey: secret, jwk: { kty: "oct", k: secret.toString("base64url"), kid, alg } };
}

/** A raw signature over `input` for `alg`, the way RFC 7518 §3 defines it. */
export function signInput(alg: string, input: string, key: KeyObject | Buffer): Buffer {
  const hash = `sha${alg.slice(2)}`;
  if (alg.startsWith("HS"))
    return createHmac(hash, key as Buffer)
      .update(input)
      .digest();
  if (alg.startsWith("RS")) return sign(hash, Buffer.from(input), key as KeyObject);
  if (alg.startsWith("PS")) {
    const saltLength = Number(alg.slice(2)) / 8;
    return sign(hash, Buffer.from(input), {
      key: key as KeyObject,
      padding: constants.RSA_PKCS1_PSS_PADDING,
      saltLength,
    });
  }
  if (alg.startsWith("ES"))
    return sign(hash, Buffer.from(input), { key: key as KeyObject, dsaEncoding: "ieee-p1363" });
  if (alg === "EdDSA" || alg === "Ed25519") return sign(null, Buffer.from(input), key as KeyObject);
  throw new Error(`test helper cannot sign ${alg}`);
}

export interface SignOptions {
  /** Header members added to (or, when undefined, removed from) `{alg, kid, typ}`. */
  header?: Record<string, unknown>;
  /** Sign with this algorithm instead of the key's own (for forgeries). */
  alg?: string;
  /** Sign with this secret instead of the key (for forgeries such as RS256 → HS256). */
  secret?: Buffer;
}

/** A compact JWS over any header and payload, with no checks: forgeries are made with it too. */
export function signJwt(key: TestKey, payload: object | string, opts: SignOptions = {}): string {
  const alg = opts.alg ?? key.alg;
  const header: Record<string, unknown> = { alg, kid: key.kid, typ: "JWT", ...opts.header };
  for (const k of Object.keys(header)) if (header[k] === undefined) delete header[k];
  const input = `${b64url(header)}.${b64url(typeof payload === "string" ? payload : payload)}`;
  const sig = signInput(alg, input, opts.secret ?? key.privateKey);
  return `${input}.${sig.toString("base64url")}`;
}

export const ISSUER = "https://idp.test";
export const AUDIENCE = "portico-api";

/** Claims valid at `nowMs` for ISSUER/AUDIENCE, with overrides (undefined removes a claim). */
export function claims(nowMs: number, over: Record<string, unknown> = {}): Record<string, unknown> {
  const now = Math.floor(nowMs / 1000);
  const c: Record<string, unknown> = {
    iss: ISSUER,
    aud: AUDIENCE,
    sub: "alice",
    iat: now - 10,
    exp: now + 600,
    scope: "orders:read profile",
    jti: randomBytes(8).toString("hex"),
    ...over,
  };
  for (const k of Object.keys(c)) if (c[k] === undefined) delete c[k];
  return c;
}
