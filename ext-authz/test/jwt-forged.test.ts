import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { InlineJwks, RemoteJwks } from "../src/jwt/jwks.js";
import { keyFitsAlg, JwtProviderSchema, type JwtProvider, type PolicyInput } from "@portico/contract";
import { JwtVerifier } from "../src/jwt/verifier.js";
import {
  AUDIENCE,
  b64url,
  claims,
  ecKey,
  edKey,
  hmacKey,
  ISSUER,
  rsaKey,
  signJwt,
  forgedTokens,
  type TestKey,
  JwksServer,
  TestServer,
  manualClock,
} from "@portico/testing";

type ProviderInput = NonNullable<PolicyInput["jwtProviders"]>[number];

const NOW = Date.UTC(2025, 5, 1, 12, 0, 0);
const rsa = rsaKey("rsa-1");
const ec = ecKey("ec-1");
const ed = edKey("ed-1");
const hs = hmacKey("hs-1");
const attacker = rsaKey("rsa-1");

function provider(over: Partial<ProviderInput> = {}): JwtProvider {
  return JwtProviderSchema.parse({
    name: "idp",
    issuer: ISSUER,
    audiences: [AUDIENCE],
    jwks: { keys: [rsa.jwk, ec.jwk, ed.jwk] },
    algorithms: ["RS256", "ES256", "EdDSA"],
    // The test JWKS servers listen on loopback, over plain HTTP.
    ...(over.jwksUri !== undefined ? { allowInsecureLoopback: true } : {}),
    ...over,
  });
}

function verifier(p: JwtProvider = provider(), clock = () => NOW): JwtVerifier {
  return new JwtVerifier(p, {
    clock,
    jwks: new InlineJwks(p.jwks!.keys),
    cacheSize: 100,
    consumers: () => new Map(),
  });
}

async function reason(token: string, v: JwtVerifier = verifier()): Promise<string> {
  const r = await v.verify(token);
  return r.ok ? "accepted" : r.reason;
}

describe("forged and broken JWTs are refused", () => {
  it("accepts a correct token (the baseline every forgery below departs from)", async () => {
    for (const key of [rsa, ec, ed]) expect(await reason(signJwt(key, claims(NOW)))).toBe("accepted");
  });

  it("refuses alg none, signed or not, in any spelling", async () => {
    const body = `${b64url({ alg: "none", typ: "JWT" })}.${b64url(claims(NOW))}`;
    expect(await reason(`${body}.`)).toBe("malformed");
    expect(await reason(`${body}.${b64url("sig")}`)).toBe("alg_not_allowed");
    for (const alg of ["None", "NONE", "nOnE"]) {
      expect(await reason(`${b64url({ alg, kid: "rsa-1" })}.${b64url(claims(NOW))}.${b64url("x")}`)).toBe(
        "alg_not_allowed",
      );
    }
  });

  it("refuses an RS256 token re-signed as HS256 with the RSA public key", async () => {
    const pub = rsa.publicKey!;
    const secrets = [
      Buffer.from(pub.export({ format: "pem", type: "spki" }) as string),
      Buffer.from(pub.export({ format: "pem", type: "pkcs1" }) as string),
      pub.export({ format: "der", type: "spki" }) as Buffer,
      Buffer.from(JSON.stringify(rsa.jwk)),
      Buffer.from(rsa.jwk.n!, "base64url"),
    ];
    for (const secret of secrets) {
      const forged = signJwt(rsa, claims(NOW), { alg: "HS256", secret });
      // Pinned to RS256: the algorithm is refused before any key is looked up.
      expect(await reason(forged)).toBe("alg_not_allowed");
      // Even a provider that also allows HS256 never uses an RSA key as an HMAC secret.
      const both = provider({ jwks: { keys: [rsa.jwk, hs.jwk] }, algorithms: ["RS256", "HS256"] });
      expect(await reason(forged, verifier(both))).toBe("no_usable_key");
      const noKid = signJwt(rsa, claims(NOW), { alg: "HS256", secret, header: { kid: undefined } });
      expect(await reason(noKid, verifier(both))).toBe("bad_signature");
    }
  });

  it("refuses really-signed PS256 and RS512 tokens under a provider pinned to RS256, whatever the key says", async () => {
    const { alg: _alg, ...bare } = rsa.jwk;
    for (const keys of [[rsa.jwk], [bare]]) {
      const pinned = verifier(provider({ jwks: { keys }, algorithms: ["RS256"] }));
      for (const alg of ["PS256", "RS512", "PS512", "RS384"]) {
        expect(await reason(signJwt(rsa, claims(NOW), { alg }), pinned), alg).toBe("alg_not_allowed");
      }
      expect(await reason(signJwt(rsa, claims(NOW)), pinned)).toBe("accepted");
    }
    // A key published for RS256 verifies nothing else, even when the provider allows more.
    const wide = verifier(provider({ jwks: { keys: [rsa.jwk] }, algorithms: ["RS256", "PS256", "RS512"] }));
    for (const alg of ["PS256", "RS512"]) {
      expect(await reason(signJwt(rsa, claims(NOW), { alg }), wide), alg).toBe("no_usable_key");
    }
  });

  it("treats kid as an opaque key: path traversal, SQL and prototype names find nothing", async () => {
    for (const kid of [
      "../../../../etc/passwd",
      "/dev/null",
      "' OR '1'='1' --",
      "x'; DROP TABLE keys; --",
      "__proto__",
      "constructor",
      "rsa-1\u0000",
    ]) {
      expect(await reason(signJwt(rsa, claims(NOW), { header: { kid } }))).toBe("unknown_kid");
    }
    expect(await reason(signJwt(rsa, claims(NOW), { header: { kid: "k".repeat(257) } }))).toBe("malformed");
    expect(await reason(signJwt(rsa, claims(NOW), { header: { kid: 7 } }))).toBe("malformed");
  });

  it("never follows jku, x5u, jwk or x5c: an attacker's embedded key verifies nothing", async () => {
    const fetched = await new TestServer((_r, res) =>
      res.end(JSON.stringify({ keys: [attacker.jwk] })),
    ).start();
    try {
      const header = {
        jku: `${fetched.url}/jwks.json`,
        x5u: `${fetched.url}/cert.pem`,
        jwk: attacker.jwk,
        x5c: ["MIIB"],
      };
      // Signed by the attacker, with the attacker's key embedded or linked: refused.
      expect(await reason(signJwt(attacker, claims(NOW), { header }))).toBe("bad_signature");
      expect(await reason(signJwt(attacker, claims(NOW), { header: { ...header, kid: "attacker" } }))).toBe(
        "unknown_kid",
      );
      // Signed by the real key: the extra headers are simply ignored.
      expect(await reason(signJwt(rsa, claims(NOW), { header }))).toBe("accepted");
      expect(fetched.requests).toHaveLength(0);
    } finally {
      await fetched.stop();
    }
  });

  it("refuses any crit extension, even one jose knows", async () => {
    expect(
      await reason(
        signJwt(rsa, claims(NOW), { header: { crit: ["urn:example:unknown"], "urn:example:unknown": 1 } }),
      ),
    ).toBe("crit_not_understood");
    expect(await reason(signJwt(rsa, claims(NOW), { header: { crit: ["b64"], b64: false } }))).toBe(
      "crit_not_understood",
    );
  });

  it("checks exp, nbf and iat against the clock with the stated 60 s skew", async () => {
    const s = Math.floor(NOW / 1000);
    expect(await reason(signJwt(rsa, claims(NOW, { exp: s - 61 })))).toBe("expired");
    expect(await reason(signJwt(rsa, claims(NOW, { exp: s - 30 })))).toBe("accepted");
    expect(await reason(signJwt(rsa, claims(NOW, { nbf: s + 61 })))).toBe("not_yet_valid");
    expect(await reason(signJwt(rsa, claims(NOW, { nbf: s + 30 })))).toBe("accepted");
    expect(await reason(signJwt(rsa, claims(NOW, { iat: s + 61 })))).toBe("issued_in_future");
    expect(await reason(signJwt(rsa, claims(NOW, { iat: s + 30 })))).toBe("accepted");
    expect(await reason(signJwt(rsa, claims(NOW, { exp: String(s + 600) })))).toBe("invalid_claim");
    const strict = verifier(provider({ clockSkewSeconds: 0 }));
    expect(await reason(signJwt(rsa, claims(NOW, { exp: s - 1 })), strict)).toBe("expired");
    expect(await reason(signJwt(rsa, claims(NOW, { nbf: s + 1 })), strict)).toBe("not_yet_valid");
  });

  it("refuses tokens older than the maximum age", async () => {
    const v = verifier(provider({ maxTokenAgeSeconds: 300 }));
    const s = Math.floor(NOW / 1000);
    expect(await reason(signJwt(rsa, claims(NOW, { iat: s - 400 })), v)).toBe("too_old");
    expect(await reason(signJwt(rsa, claims(NOW, { iat: s - 100 })), v)).toBe("accepted");
    expect(await reason(signJwt(rsa, claims(NOW, { iat: undefined })), v)).toBe("missing_claim");
  });

  it("refuses the wrong issuer, audience or typ", async () => {
    expect(await reason(signJwt(rsa, claims(NOW, { iss: "https://evil.test" })))).toBe("wrong_issuer");
    expect(await reason(signJwt(rsa, claims(NOW, { aud: "other-api" })))).toBe("wrong_audience");
    expect(await reason(signJwt(rsa, claims(NOW, { aud: ["other-api", AUDIENCE] })))).toBe("accepted");
    expect(await reason(signJwt(rsa, claims(NOW, { aud: undefined })))).toBe("missing_claim");
    const typed = verifier(provider({ typ: "at+jwt" }));
    expect(await reason(signJwt(rsa, claims(NOW)), typed)).toBe("wrong_typ");
    expect(await reason(signJwt(rsa, claims(NOW), { header: { typ: "at+jwt" } }), typed)).toBe("accepted");
  });

  it("refuses a token without exp when exp is required (the default), and without the consumer claim", async () => {
    expect(await reason(signJwt(rsa, claims(NOW, { exp: undefined })))).toBe("missing_claim");
    expect(
      await reason(signJwt(rsa, claims(NOW, { exp: undefined })), verifier(provider({ requireExp: false }))),
    ).toBe("accepted");
    expect(await reason(signJwt(rsa, claims(NOW, { sub: undefined })))).toBe("missing_claim");
    expect(await reason(signJwt(rsa, claims(NOW, { sub: "" })))).toBe("invalid_claim");
    const custom = verifier(provider({ requiredClaims: ["tenant"] }));
    expect(await reason(signJwt(rsa, claims(NOW)), custom)).toBe("missing_claim");
    expect(await reason(signJwt(rsa, claims(NOW, { tenant: "t1" })), custom)).toBe("accepted");
  });

  it("refuses an oversized token before decoding anything", async () => {
    const big = signJwt(rsa, claims(NOW, { pad: "x".repeat(9_000) }));
    expect(await reason(big)).toBe("too_large");
    // Not even the header is read: garbage of that size is "too large", not "malformed".
    expect(await reason("%".repeat(10_000))).toBe("too_large");
    expect(await reason(big, verifier(provider({ maxTokenBytes: 16_384 })))).toBe("accepted");
  });

  it("refuses malformed segments", async () => {
    const good = signJwt(rsa, claims(NOW));
    const [h, p, s] = good.split(".") as [string, string, string];
    const cases = [
      "",
      "abc",
      `${h}.${p}`,
      `${h}.${p}.${s}.${s}`,
      `${h}..${s}`,
      `.${p}.${s}`,
      `${h}.${p}.${s}=`,
      `${h}.${p}.${s.replace(/_/g, "/")}/+`,
      `${b64url("not json")}.${p}.${s}`,
      `${b64url("[1,2]")}.${p}.${s}`,
      `${b64url({ kid: "rsa-1" })}.${p}.${s}`,
      ` ${good}`,
    ];
    for (const t of cases) expect(await reason(t)).not.toBe("accepted");
    // A valid signature over a payload that is not a JSON object is still not a JWT.
    expect(await reason(signJwt(rsa, "just text"))).toBe("malformed");
    expect(await reason(signJwt(rsa, "[1,2,3]"))).toBe("malformed");
    // A flipped bit in the signature.
    const sig = Buffer.from(s, "base64url");
    sig[10] = sig[10]! ^ 1;
    expect(await reason(`${h}.${p}.${sig.toString("base64url")}`)).toBe("bad_signature");
    // The payload of another token under this signature.
    const other = signJwt(rsa, claims(NOW, { sub: "mallory" })).split(".")[1];
    expect(await reason(`${h}.${other}.${s}`)).toBe("bad_signature");
  });

  it("refuses an ECDSA signature with r = s = 0 (CVE-2022-21449)", async () => {
    const [h, p] = signJwt(ec, claims(NOW)).split(".");
    expect(await reason(`${h}.${p}.${Buffer.alloc(64).toString("base64url")}`)).toBe("bad_signature");
    // The DER form of r = s = 0, and a wrong-length signature.
    expect(await reason(`${h}.${p}.${Buffer.from("3006020100020100", "hex").toString("base64url")}`)).toBe(
      "bad_signature",
    );
    // r = s = n (the curve order) is just as invalid.
    const n = Buffer.from("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551", "hex");
    expect(await reason(`${h}.${p}.${Buffer.concat([n, n]).toString("base64url")}`)).toBe("bad_signature");
  });

  it("refuses a token signed with an algorithm the key does not pin", async () => {
    // An ES256 token naming an RSA key's kid: the key type, not the header, decides.
    expect(await reason(signJwt(ec, claims(NOW), { header: { kid: "rsa-1" } }))).toBe("no_usable_key");
    // A PS256 token for a key published with alg RS256.
    const ps = provider({ algorithms: ["RS256", "PS256"] });
    const psToken = `${b64url({ alg: "PS256", kid: "rsa-1" })}.${b64url(claims(NOW))}.${b64url("x")}`;
    expect(await reason(psToken, verifier(ps))).toBe("no_usable_key");
  });
});

describe("the shared forged-token corpus (the one both authentication paths face through Envoy)", () => {
  it("is refused, every token of it, by a provider pinned to RS256 whose key names no alg", async () => {
    const { alg: _alg, ...bare } = rsa.jwk;
    const pinned = provider({ jwks: { keys: [bare] }, algorithms: ["RS256"], consumers: ["initech"] });
    const records = new Map([
      ["globex", { name: "globex", disabled: false }],
      ["initech", { name: "initech", disabled: true }],
    ]);
    const v = new JwtVerifier(pinned, {
      clock: () => NOW,
      jwks: new InlineJwks(pinned.jwks!.keys),
      cacheSize: 100,
      consumers: () => records,
    });
    const corpus = forgedTokens(rsa, NOW, { unlinkedConsumer: "globex", disabledConsumer: "initech" });
    expect(Object.keys(corpus).length).toBeGreaterThan(40);
    for (const [what, token] of Object.entries(corpus)) {
      if (token === undefined) continue;
      expect(await reason(token, v), what).not.toBe("accepted");
    }
    // The corpus departs from a token this provider accepts.
    expect(await reason(signJwt(rsa, claims(NOW)), v)).toBe("accepted");
  });
});

describe("unknown kids and the JWKS endpoint", () => {
  let server: JwksServer;
  beforeAll(async () => {
    server = await new JwksServer([rsa.jwk]).start();
  });
  afterAll(() => server.stop());

  function remote(clock: () => number, cooldownSeconds = 30): JwtVerifier {
    const p = provider({
      jwks: undefined,
      jwksUri: server.jwksUri,
      jwksRefetchCooldownSeconds: cooldownSeconds,
    });
    const jwks = new RemoteJwks({
      uri: p.jwksUri!,
      clock,
      cacheMs: 600_000,
      cooldownMs: cooldownSeconds * 1000,
      timeoutMs: 2_000,
    });
    return new JwtVerifier(p, { clock, jwks, cacheSize: 100, consumers: () => new Map() });
  }

  it("re-fetches exactly once for an unknown kid, then refuses; a flood of made-up kids adds no fetch", async () => {
    const clock = manualClock(NOW);
    const v = remote(clock.now);
    await v.jwks.warm();
    const base = server.fetches;
    expect(await reason(signJwt(rsa, claims(NOW)), v)).toBe("accepted");
    expect(server.fetches).toBe(base);

    expect(await reason(signJwt(attacker, claims(NOW), { header: { kid: "unknown-1" } }), v)).toBe(
      "unknown_kid",
    );
    expect(server.fetches).toBe(base + 1);

    // 500 different kids at once, then 100 more one by one, within the cooldown.
    const flood = await Promise.all(
      Array.from({ length: 500 }, (_, i) =>
        reason(signJwt(attacker, claims(NOW), { header: { kid: `made-up-${i}` } }), v),
      ),
    );
    expect(new Set(flood)).toEqual(new Set(["unknown_kid"]));
    for (let i = 0; i < 100; i++) {
      clock.advance(200);
      await reason(signJwt(attacker, claims(clock.now()), { header: { kid: `seq-${i}` } }), v);
    }
    expect(server.fetches).toBe(base + 1);
    // Kid text never reaches the URL: every fetch asked for the configured path.
    expect(new Set(server.requests.map((r) => r.url))).toEqual(new Set(["/.well-known/jwks.json"]));

    // After the cooldown, the next unknown kid may cause one more fetch.
    clock.advance(30_000);
    await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        reason(signJwt(attacker, claims(clock.now()), { header: { kid: `later-${i}` } }), v),
      ),
    );
    expect(server.fetches).toBe(base + 2);
  });

  it("shares one fetch among concurrent first requests when nothing was fetched yet", async () => {
    const before = server.fetches;
    const v = remote(() => NOW);
    const results = await Promise.all(Array.from({ length: 50 }, () => reason(signJwt(rsa, claims(NOW)), v)));
    expect(new Set(results)).toEqual(new Set(["accepted"]));
    expect(server.fetches).toBe(before + 1);
  });

  it("answers jwks_unavailable when the endpoint is down and nothing is cached", async () => {
    const down = new TestServer((_r, res) => res.writeHead(503).end());
    await down.start();
    try {
      const clock = manualClock(NOW);
      const p = provider({ jwks: undefined, jwksUri: `${down.url}/jwks` });
      const jwks = new RemoteJwks({
        uri: p.jwksUri!,
        clock: clock.now,
        cacheMs: 600_000,
        cooldownMs: 30_000,
        timeoutMs: 500,
      });
      const v = new JwtVerifier(p, { clock: clock.now, jwks, cacheSize: 10, consumers: () => new Map() });
      expect(await reason(signJwt(rsa, claims(NOW)), v)).toBe("jwks_unavailable");
      expect(await reason(signJwt(rsa, claims(NOW)), v)).toBe("jwks_unavailable");
      // Failures back off instead of calling the broken endpoint on every request.
      expect(down.requests).toHaveLength(1);
      clock.advance(5_000);
      down.setHandler((_r, res) => res.writeHead(200).end(JSON.stringify({ keys: [rsa.jwk] })));
      expect(await reason(signJwt(rsa, claims(clock.now())), v)).toBe("accepted");
    } finally {
      await down.stop();
    }
  });

  it("ignores symmetric and malformed keys from a published JWKS", async () => {
    const mixed = await new JwksServer([
      hs.jwk,
      { kty: "RSA", kid: "broken" },
      { ...rsa.jwk, x5u: "https://x" },
    ]).start();
    try {
      const events: string[][] = [];
      const p = provider({ jwks: undefined, jwksUri: mixed.jwksUri, algorithms: ["RS256"] });
      const jwks = new RemoteJwks({
        uri: p.jwksUri!,
        clock: () => NOW,
        cacheMs: 600_000,
        cooldownMs: 30_000,
        timeoutMs: 2_000,
        onFetch: (e) => events.push(e.skipped),
      });
      await jwks.warm();
      expect(jwks.current()?.size).toBe(1);
      expect(events[0]).toEqual([
        "keys[0] (kid hs-1): symmetric keys are accepted only inline, never from a JWKS URI",
        "keys[1] (kid broken): an RSA key needs n and e",
      ]);
    } finally {
      await mixed.stop();
    }
  });
});

describe("which key may verify which algorithm", () => {
  it("is decided by the key's type and curve, never by the token", () => {
    const { alg: _a, ...ecNoAlg } = ec.jwk;
    const { alg: _b, ...rsaNoAlg } = rsa.jwk;
    expect(keyFitsAlg(ecNoAlg, "ES256")).toBe(true);
    expect(keyFitsAlg(ecNoAlg, "RS256")).toBe(false);
    expect(keyFitsAlg(ecNoAlg, "ES384")).toBe(false);
    expect(keyFitsAlg(rsaNoAlg, "PS256")).toBe(true);
    expect(keyFitsAlg(rsaNoAlg, "HS256")).toBe(false);
    expect(keyFitsAlg(rsaNoAlg, "EdDSA")).toBe(false);
    expect(keyFitsAlg(rsa.jwk, "PS256")).toBe(false);
    expect(keyFitsAlg(ed.jwk, "EdDSA")).toBe(true);
    expect(keyFitsAlg(ed.jwk, "Ed25519")).toBe(true);
    expect(keyFitsAlg(hs.jwk, "HS256")).toBe(true);
    expect(keyFitsAlg({ ...hs.jwk, alg: undefined }, "HS384")).toBe(false);
    expect(keyFitsAlg({ ...hmacKey("big", 64).jwk, alg: undefined }, "HS512")).toBe(true);
  });
});

describe("HMAC", () => {
  it("verifies HS256 with an inline secret of at least 256 bits", async () => {
    const p = provider({ jwks: { keys: [hs.jwk] }, algorithms: ["HS256"] });
    expect(await reason(signJwt(hs, claims(NOW)), verifier(p))).toBe("accepted");
    const other: TestKey = hmacKey("hs-1");
    expect(await reason(signJwt(other, claims(NOW)), verifier(p))).toBe("bad_signature");
  });
});
