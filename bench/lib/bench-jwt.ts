// The identity provider of the JWT benchmarks: one RSA key, its JWK, and tokens signed with it.
import { generateKeyPairSync, sign } from "node:crypto";

export const ISSUER = "https://idp.bench";
const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
export const jwk = {
  ...(publicKey.export({ format: "jwk" }) as object),
  kid: "bench-1",
  alg: "RS256",
  use: "sig",
};
const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString("base64url");
const now = Math.floor(Date.now() / 1000);

/**
 * A signed token for subject `user-<i>`, valid for an hour, with `claims` besides: distinct tokens
 * (and consumers), so distinct cache entries.
 */
export function token(i: number, claims: object = {}): string {
  const payload = { iss: ISSUER, aud: "bench", sub: `user-${i}`, iat: now, exp: now + 3600, ...claims };
  const input = `${b64({ alg: "RS256", kid: "bench-1", typ: "JWT" })}.${b64(payload)}`;
  return `${input}.${sign("sha256", Buffer.from(input), privateKey).toString("base64url")}`;
}
