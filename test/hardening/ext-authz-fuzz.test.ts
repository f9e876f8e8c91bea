import { createHash, randomBytes } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sha256Hex, Authorizer, AuthzServer, AUTHORIZATION_SERVICE } from "@portico/ext-authz";
import { policyOf, request } from "../harness/ext-authz-fixtures.js";
import { claims, ecKey, hmacKey, ISSUER, AUDIENCE, rsaKey, signJwt } from "../harness/jwt-keys.js";

/**
 * ext-authz fed random and mutated credentials, headers and oversized inputs: it must answer every
 * one (no throw, no crash) and accept none but the genuine credentials. The generator is seeded, so
 * a failure names a case that can be replayed.
 */

const KEY = "pk_fuzz_genuine_key_0123456789";
const rsa = rsaKey("rsa-1");
const ec = ecKey("ec-1");
const hs = hmacKey("hs-1");
const policy = policyOf({
  jwtProviders: [
    {
      name: "idp",
      issuer: ISSUER,
      audiences: [AUDIENCE],
      jwks: { keys: [rsa.jwk, ec.jwk] },
      algorithms: ["RS256", "ES256"],
    },
    {
      name: "hmac",
      issuer: "https://hmac.test",
      allowAnyAudience: true,
      jwks: { keys: [hs.jwk] },
      algorithms: ["HS256"],
    },
  ],
  consumers: [{ name: "acme", plan: "gold" }],
  apiKeys: [{ name: "acme-live", consumer: "acme", sha256: sha256Hex(KEY) }],
});
const EXT = { accept: "jwt,apiKey", anonymous: "false" };
/** PORTICO_HARDENING_SCALE multiplies the cases for the longer run in bench/hardening.ts. */
const SCALE = Number(process.env.PORTICO_HARDENING_SCALE ?? 1);
/** The attacker's own key, under the genuine key's kid. */
const attacker = rsaKey("rsa-1");

/** A small seeded PRNG (mulberry32): the same seed gives the same cases. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const ALPHABET =
  "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ \r\n\0\u00e9\u2028{}\"'";

function mutate(token: string, rnd: () => number): string {
  const pick = (n: number) => Math.floor(rnd() * n);
  const chars = [...token];
  switch (pick(9)) {
    case 0: // flip characters
      for (let i = 0, n = 1 + pick(4); i < n; i++)
        chars[pick(chars.length)] = ALPHABET[pick(ALPHABET.length)]!;
      return chars.join("");
    case 1: // truncate
      return token.slice(0, pick(token.length));
    case 2: // duplicate or drop a segment
      return token
        .split(".")
        .flatMap((s) => (rnd() < 0.3 ? [] : rnd() < 0.3 ? [s, s] : [s]))
        .join(".");
    case 3: // swap segments between two genuine tokens
      return [token.split(".")[0], signJwt(ec, claims(Date.now())).split(".")[1], token.split(".")[2]].join(
        ".",
      );
    case 4: // random bytes as segments
      return [0, 1, 2].map(() => randomBytes(pick(64)).toString("base64url")).join(".");
    case 5: // a header the attacker chose, signed with the attacker's key
      return signJwt(attacker, claims(Date.now()), {
        header: [{ alg: "none" }, { jku: "http://127.0.0.1:1/" }, { kid: "../../x" }, { crit: ["b64"] }][
          pick(4)
        ],
      });
    case 6: // HS256 re-signed with every public key as the secret
      return signJwt(rsa, claims(Date.now()), {
        alg: "HS256",
        secret: Buffer.from(JSON.stringify([rsa.jwk, ec.jwk][pick(2)])),
      });
    case 7: // oversized
      return token + "A".repeat(8_000 + pick(100_000));
    default: // unicode and control characters around the token
      return `${ALPHABET[pick(ALPHABET.length)]}${token}${ALPHABET[pick(ALPHABET.length)]}`;
  }
}

const sameBytes = (a: string, b: string) =>
  a.split(".").length === 3 &&
  b.split(".").length === 3 &&
  a
    .split(".")
    .every(
      (seg, i) =>
        /^[A-Za-z0-9_-]*$/.test(seg) &&
        Buffer.from(seg, "base64url").equals(Buffer.from(b.split(".")[i]!, "base64url")),
    );

describe("ext-authz under fuzzed input", () => {
  const authorizer = new Authorizer({ policy });
  const counts = { cases: 0, accepted: 0, refused: 0 };

  afterAll(() => {
    console.log(
      `ext-authz fuzz: ${counts.cases} cases, ${counts.accepted} accepted (genuine only), ${counts.refused} refused`,
    );
  });

  it("accepts none of 4,000 mutated tokens (only byte-identical genuine ones), and answers every one", async () => {
    const rnd = prng(0x5eed);
    const genuine = [
      signJwt(rsa, claims(Date.now())),
      signJwt(ec, claims(Date.now())),
      signJwt(hs, claims(Date.now(), { iss: "https://hmac.test" })),
    ];
    for (let i = 0; i < 4_000 * SCALE; i++) {
      const original = genuine[i % genuine.length]!;
      const token = mutate(original, rnd);
      const scheme = rnd() < 0.9 ? "Bearer " : ["bearer  ", "Basic ", "", "Bearer\t"][Math.floor(rnd() * 4)]!;
      const d = await authorizer.check(request({ authorization: scheme + token }, { ext: EXT }));
      counts.cases++;
      if (d.allowed) {
        counts.accepted++;
        expect(
          sameBytes(token.trim(), original),
          `case ${i} accepted a forgery: ${JSON.stringify(token)}`,
        ).toBe(true);
      } else {
        counts.refused++;
        expect([400, 401, 403, 413, 431]).toContain(d.status);
      }
    }
  });

  it("accepts no API key but the genuine one, whatever the header holds", async () => {
    const rnd = prng(0xa71);
    const cases = [
      "",
      " ",
      KEY.slice(0, -1),
      KEY + " ",
      ` ${KEY}`,
      KEY.toUpperCase(),
      `${KEY}\r\nx-portico-consumer: admin`,
      `${KEY}\0`,
      "x".repeat(100_000),
      createHash("sha256").update(KEY).digest("hex"),
      ...Array.from({ length: 2_000 * SCALE }, () => mutate(KEY, rnd)),
    ];
    for (const key of cases) {
      const d = await authorizer.check(request({ "x-api-key": key }, { ext: EXT }));
      counts.cases++;
      if (d.allowed) counts.accepted++;
      else counts.refused++;
      // HTTP drops spaces and tabs around a field value (RFC 9110 §5.5), so those still name the key.
      expect(d.allowed, `API key ${JSON.stringify(key.slice(0, 80))}`).toBe(
        key.replace(/^[ \t]+|[ \t]+$/g, "") === KEY,
      );
    }
  });

  it("answers random headers, paths and context extensions without throwing", async () => {
    const rnd = prng(0xbad);
    const junk = (n: number) =>
      Array.from({ length: n }, () => ALPHABET[Math.floor(rnd() * ALPHABET.length)]).join("");
    for (let i = 0; i < 2_000 * SCALE; i++) {
      const headers: Record<string, string> = {};
      for (let h = 0, n = Math.floor(rnd() * 20); h < n; h++)
        headers[junk(1 + Math.floor(rnd() * 20))] = junk(Math.floor(rnd() * 300));
      const ext: Record<string, string> = rnd() < 0.5 ? EXT : { [junk(8)]: junk(8), accept: junk(10) };
      const d = await authorizer.check(
        request(headers, { ext, path: "/" + junk(Math.floor(rnd() * 2_000)) }),
      );
      counts.cases++;
      expect(d.allowed).toBe(false);
      counts.refused++;
    }
  });

  describe("over gRPC", () => {
    let server: AuthzServer;
    let client: grpc.Client;

    beforeAll(async () => {
      server = new AuthzServer({ authorizer, address: "127.0.0.1:0" });
      await server.start();
      client = new grpc.Client(`127.0.0.1:${server.port}`, grpc.credentials.createInsecure());
    });
    afterAll(async () => {
      client?.close();
      await server?.stop();
    });

    it("survives 500 undecodable and random CheckRequests and keeps answering real ones", async () => {
      const rnd = prng(0x9e7);
      const call = (bytes: Buffer) =>
        new Promise<grpc.ServiceError | null>((resolve) =>
          client.makeUnaryRequest(
            `/${AUTHORIZATION_SERVICE}/Check`,
            (b: Buffer) => b,
            (b: Buffer) => b,
            bytes,
            { deadline: Date.now() + 5_000 },
            (err) => resolve(err),
          ),
        );
      let errors = 0;
      for (let i = 0; i < 500; i++) {
        const size = Math.floor(rnd() * (i % 50 === 0 ? 3_000_000 : 2_000));
        const started = Date.now();
        const err = await call(randomBytes(size));
        if (Date.now() - started > 1_000)
          console.log(`  slow: ${size} bytes took ${Date.now() - started} ms (${err?.code})`);
        counts.cases++;
        if (err) errors++;
      }
      // The process is still up and serving.
      expect(await call(Buffer.alloc(0))).toBeNull();
      console.log(
        `  gRPC: 500 random payloads, ${errors} answered with a gRPC error, the rest with a decision`,
      );
    });
  });
});
