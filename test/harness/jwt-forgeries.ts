import { AUDIENCE, b64url, claims, rsaKey, signJwt, type TestKey } from "./jwt-keys.js";

/**
 * The forged and broken tokens every JWT verifier of Portico must refuse, for a provider of
 * ISSUER/AUDIENCE pinned to RS256 whose key `key` (kid `key.kid`) is published without `alg`, so
 * the pin alone stands between RS256 and every other RSA algorithm. The same corpus runs against
 * ext-authz's verifier and, through a real Envoy, against both authentication paths.
 */
export interface ForgeryOptions {
  /** A consumer record the provider does not link: a token naming it must be refused. */
  unlinkedConsumer?: string;
  /** A consumer record the provider links but that is disabled. */
  disabledConsumer?: string;
}

export function forgedTokens(
  key: TestKey,
  nowMs: number,
  opts: ForgeryOptions = {},
): Record<string, string | undefined> {
  const s = Math.floor(nowMs / 1000);
  const pub = key.publicKey!;
  const pem = Buffer.from(pub.export({ format: "pem", type: "spki" }) as string);
  const der = pub.export({ format: "der", type: "spki" }) as Buffer;
  const good = signJwt(key, claims(nowMs));
  const [h, p, sig] = good.split(".") as [string, string, string];
  const flipped = Buffer.from(sig, "base64url");
  flipped[10] = flipped[10]! ^ 1;
  const attacker = rsaKey(key.kid);
  const out: Record<string, string | undefined> = {
    "no token": undefined,
    "empty bearer": "",
    "alg none, unsigned": `${b64url({ alg: "none", typ: "JWT" })}.${b64url(claims(nowMs))}.`,
    "alg none, with a signature": `${b64url({ alg: "none", kid: key.kid })}.${b64url(claims(nowMs))}.${b64url("sig")}`,
    "alg NONE": `${b64url({ alg: "NONE", kid: key.kid })}.${b64url(claims(nowMs))}.${b64url("x")}`,
    "RS256 key as an HS256 secret (PEM)": signJwt(key, claims(nowMs), { alg: "HS256", secret: pem }),
    "RS256 key as an HS256 secret (DER)": signJwt(key, claims(nowMs), { alg: "HS256", secret: der }),
    "RS256 key as an HS256 secret, no kid": signJwt(key, claims(nowMs), {
      alg: "HS256",
      secret: pem,
      header: { kid: undefined },
    }),
    "PS256 with the pinned RS256 key": signJwt(key, claims(nowMs), { alg: "PS256" }),
    "RS512 with the pinned RS256 key": signJwt(key, claims(nowMs), { alg: "RS512" }),
    "RS384 with the pinned RS256 key": signJwt(key, claims(nowMs), { alg: "RS384" }),
    "PS512 with the pinned RS256 key": signJwt(key, claims(nowMs), { alg: "PS512" }),
    "unknown kid": signJwt(key, claims(nowMs), { header: { kid: `${key.kid}-unknown` } }),
    "kid with path traversal": signJwt(key, claims(nowMs), { header: { kid: "../../../../etc/passwd" } }),
    "kid with SQL": signJwt(key, claims(nowMs), { header: { kid: "' OR '1'='1' --" } }),
    "empty kid": signJwt(key, claims(nowMs), { header: { kid: "" } }),
    "kid of 257 characters": signJwt(key, claims(nowMs), { header: { kid: "k".repeat(257) } }),
    "kid not a string": signJwt(key, claims(nowMs), { header: { kid: 7 } }),
    "another key under the same kid": signJwt(attacker, claims(nowMs)),
    "attacker key in jwk and jku headers": signJwt(attacker, claims(nowMs), {
      header: { jwk: attacker.jwk, jku: "https://evil.test/jwks.json", x5u: "https://evil.test/x.pem" },
    }),
    "unknown crit": signJwt(key, claims(nowMs), { header: { crit: ["urn:x"], "urn:x": 1 } }),
    "crit b64": signJwt(key, claims(nowMs), { header: { crit: ["b64"], b64: false } }),
    "crit null": signJwt(key, claims(nowMs), { header: { crit: null } }),
    "iat an hour ahead": signJwt(key, claims(nowMs, { iat: s + 3600 })),
    "iat beyond the 60 s skew": signJwt(key, claims(nowMs, { iat: s + 90 })),
    expired: signJwt(key, claims(nowMs, { exp: s - 3600 })),
    "expired beyond the skew": signJwt(key, claims(nowMs, { exp: s - 61 })),
    "nbf an hour ahead": signJwt(key, claims(nowMs, { nbf: s + 3600 })),
    "exp not a number": signJwt(key, claims(nowMs, { exp: String(s + 600) })),
    "missing exp": signJwt(key, claims(nowMs, { exp: undefined })),
    "wrong audience": signJwt(key, claims(nowMs, { aud: "other-api" })),
    "no audience": signJwt(key, claims(nowMs, { aud: undefined })),
    "wrong issuer": signJwt(key, claims(nowMs, { iss: "https://evil.test" })),
    "no subject": signJwt(key, claims(nowMs, { sub: undefined })),
    "empty subject": signJwt(key, claims(nowMs, { sub: "" })),
    "reserved subject": signJwt(key, claims(nowMs, { sub: "anonymous" })),
    "reserved subject, spaced and capitalised": signJwt(key, claims(nowMs, { sub: " Anonymous\u00a0" })),
    "reserved subject, Kelvin sign": signJwt(key, claims(nowMs, { sub: "UN\u212ANOWN" })),
    // RFC 7519's types for the registered claims (a number as the subject names no one).
    "subject a number": signJwt(key, claims(nowMs, { sub: 12345 })),
    "subject null": signJwt(key, claims(nowMs, { sub: null })),
    "token id a number": signJwt(key, claims(nowMs, { jti: 7 })),
    "audience beside a number": signJwt(key, claims(nowMs, { aud: [AUDIENCE, 5] })),
    "issued before 1970": signJwt(key, claims(nowMs, { iat: -5 })),
    "expiry null": signJwt(key, claims(nowMs, { exp: null })),
    oversized: signJwt(key, claims(nowMs, { pad: "x".repeat(9_000) })),
    "two segments": `${h}.${p}`,
    "four segments": `${good}.${sig}`,
    "padded signature": `${good}=`,
    "flipped signature bit": `${h}.${p}.${flipped.toString("base64url")}`,
    "signature of another payload": `${h}.${b64url(claims(nowMs, { sub: "admin" }))}.${sig}`,
    "header not JSON": `${b64url("not json")}.${p}.${sig}`,
    "payload not an object": signJwt(key, "[1,2,3]"),
  };
  if (opts.unlinkedConsumer)
    out["subject naming an unlinked consumer"] = signJwt(key, claims(nowMs, { sub: opts.unlinkedConsumer }));
  if (opts.disabledConsumer)
    out["subject naming a disabled consumer"] = signJwt(key, claims(nowMs, { sub: opts.disabledConsumer }));
  return out;
}
