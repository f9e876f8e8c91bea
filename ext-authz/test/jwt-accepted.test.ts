import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { InlineJwks, RemoteJwks } from "../src/jwt/jwks.js";
import { JwtVerifier, tokenCacheKey } from "../src/jwt/verifier.js";
import { JwtProviderSchema, type Jwk, type JwtProvider, type PolicyInput } from "@portico/contract";
import {
  manualClock,
  AUDIENCE,
  claims,
  ecKey,
  edKey,
  hmacKey,
  ISSUER,
  rsaKey,
  signJwt,
  JwksServer,
} from "@portico/testing";

type ProviderInput = NonNullable<PolicyInput["jwtProviders"]>[number];
const NOW = Date.UTC(2025, 5, 1, 12, 0, 0);

function provider(over: Partial<ProviderInput>): JwtProvider {
  return JwtProviderSchema.parse({
    name: "idp",
    issuer: ISSUER,
    audiences: [AUDIENCE],
    algorithms: ["RS256"],
    // The test JWKS servers listen on loopback, over plain HTTP.
    ...(over.jwksUri !== undefined ? { allowInsecureLoopback: true } : {}),
    ...over,
  });
}

function inline(p: JwtProvider, clock: () => number = () => NOW, consumers = new Map()): JwtVerifier {
  return new JwtVerifier(p, {
    clock,
    jwks: new InlineJwks(p.jwks!.keys),
    cacheSize: 100,
    consumers: () => consumers,
  });
}

describe("accepted tokens", () => {
  it("accepts RS256, PS256, ES256, EdDSA and HS256, and reads identity from the claims", async () => {
    const keys = [rsaKey("rs"), rsaKey("ps", "PS256"), ecKey("es"), edKey("ed"), hmacKey("hs")];
    const p = provider({
      jwks: { keys: keys.map((k) => k.jwk) },
      algorithms: ["RS256", "PS256", "ES256", "EdDSA", "HS256"],
    });
    const v = inline(p);
    for (const key of keys) {
      const r = await v.verify(signJwt(key, claims(NOW, { sub: `user-${key.kid}`, scp: ["admin"] })));
      expect(r.ok, key.alg).toBe(true);
      if (r.ok) {
        expect(r.identity).toMatchObject({
          kind: "jwt",
          provider: "idp",
          consumer: `user-${key.kid}`,
          plan: "default",
          scopes: ["orders:read", "profile", "admin"],
        });
        expect(r.identity.claims.aud).toBe(AUDIENCE);
      }
    }
  });

  it("takes the plan from the consumer record the provider links, then from the plan claim", async () => {
    const rsa = rsaKey("k");
    const p = provider({ jwks: { keys: [rsa.jwk] }, planClaim: "tier", consumers: ["alice"] });
    const v = inline(p, () => NOW, new Map([["alice", { name: "alice", plan: "gold", disabled: false }]]));
    const known = await v.verify(signJwt(rsa, claims(NOW, { sub: "alice", tier: "free" })));
    const unknown = await v.verify(signJwt(rsa, claims(NOW, { sub: "bob", tier: "silver" })));
    expect(known.ok && known.identity.plan).toBe("gold");
    expect(unknown.ok && unknown.identity.plan).toBe("silver");
    const disabled = inline(p, () => NOW, new Map([["alice", { name: "alice", disabled: true }]]));
    const r = await disabled.verify(signJwt(rsa, claims(NOW, { sub: "alice" })));
    expect(r.ok ? "ok" : r.reason).toBe("consumer_disabled");
  });

  describe("RFC 7515 appendix A examples (their exp is 2011-03-22, so the clock is pinned before it)", () => {
    const A_PAYLOAD =
      "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
    const EXP = 1300819380 * 1000;
    const before = EXP - 60_000;
    const rfc = (keys: Jwk[], algorithms: ProviderInput["algorithms"]) =>
      provider({
        issuer: "joe",
        audiences: undefined,
        allowAnyAudience: true,
        consumerClaim: "iss",
        jwks: { keys },
        algorithms,
        clockSkewSeconds: 0,
      });

    const a1 = {
      token: `eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.${A_PAYLOAD}.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk`,
      key: {
        kty: "oct",
        k: "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow",
      } as Jwk,
    };
    const a2 = {
      token:
        `eyJhbGciOiJSUzI1NiJ9.${A_PAYLOAD}.` +
        "cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZc" +
        "AcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOk" +
        "HWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw",
      key: {
        kty: "RSA",
        e: "AQAB",
        n:
          "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMs" +
          "D1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdV" +
          "MTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ",
      } as Jwk,
    };
    const a3 = {
      token: `eyJhbGciOiJFUzI1NiJ9.${A_PAYLOAD}.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q`,
      key: {
        kty: "EC",
        crv: "P-256",
        x: "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
        y: "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
      } as Jwk,
    };

    it("A.1 HS256", async () => {
      const r = await inline(rfc([a1.key], ["HS256"]), () => before).verify(a1.token);
      expect(r.ok && r.identity.claims["http://example.com/is_root"]).toBe(true);
      const late = await inline(rfc([a1.key], ["HS256"]), () => EXP).verify(a1.token);
      expect(late.ok ? "ok" : late.reason).toBe("expired");
    });

    it("A.2 RS256", async () => {
      const r = await inline(rfc([a2.key], ["RS256"]), () => before).verify(a2.token);
      expect(r.ok && r.identity.consumer).toBe("joe");
    });

    it("A.3 ES256", async () => {
      const r = await inline(rfc([a3.key], ["ES256"]), () => before).verify(a3.token);
      expect(r.ok && r.identity.consumer).toBe("joe");
    });

    it("each example fails under another example's key", async () => {
      const r = await inline(rfc([a2.key, a3.key], ["RS256", "ES256"]), () => before).verify(
        a2.token.replace(/\.[^.]+$/, "." + a3.token.split(".")[2]),
      );
      expect(r.ok ? "ok" : r.reason).toBe("bad_signature");
    });
  });
});

describe("the verified-token cache", () => {
  const rsa = rsaKey("k");

  it("answers a repeated token from memory and never past the token's exp", async () => {
    const clock = manualClock(NOW);
    const hits: boolean[] = [];
    const p = provider({ jwks: { keys: [rsa.jwk] }, clockSkewSeconds: 60 });
    const v = new JwtVerifier(p, {
      clock: clock.now,
      jwks: new InlineJwks([rsa.jwk]),
      cacheSize: 10,
      consumers: () => new Map(),
      onCache: (h) => hits.push(h),
    });
    const token = signJwt(rsa, claims(NOW, { exp: Math.floor(NOW / 1000) + 30 }));
    expect((await v.verify(token)).ok).toBe(true);
    const again = await v.verify(token);
    expect(again.ok && again.cached).toBe(true);
    expect(hits).toEqual([false, true]);
    // At exp the cache no longer answers; the token is checked again (and, within the skew, still passes uncached).
    clock.advance(30_000);
    const atExp = await v.verify(token);
    expect(atExp.ok && atExp.cached).toBe(false);
    clock.advance(61_000);
    const after = await v.verify(token);
    expect(after.ok ? "ok" : after.reason).toBe("expired");
  });

  it("stays within its size bound", async () => {
    const p = provider({ jwks: { keys: [rsa.jwk] } });
    const hits: boolean[] = [];
    const v = new JwtVerifier(p, {
      clock: () => NOW,
      jwks: new InlineJwks([rsa.jwk]),
      cacheSize: 3,
      consumers: () => new Map(),
      onCache: (h) => hits.push(h),
    });
    const tokens = Array.from({ length: 5 }, (_, i) => signJwt(rsa, claims(NOW, { sub: `u${i}` })));
    for (const t of tokens) await v.verify(t);
    expect(v.fromCache(tokenCacheKey(tokens[0]!))).toBeUndefined();
    expect(v.fromCache(tokenCacheKey(tokens[4]!))?.ok).toBe(true);
  });

  it("drops cached tokens whose key left the published set", async () => {
    const old = rsaKey("old");
    const next = rsaKey("next");
    const server = await new JwksServer([old.jwk]).start();
    try {
      const clock = manualClock(NOW);
      const p = provider({ jwksUri: server.jwksUri });
      const jwks = new RemoteJwks({
        uri: server.jwksUri,
        clock: clock.now,
        cacheMs: 60_000,
        cooldownMs: 30_000,
        timeoutMs: 2_000,
      });
      const v = new JwtVerifier(p, { clock: clock.now, jwks, cacheSize: 10, consumers: () => new Map() });
      const token = signJwt(old, claims(NOW, { exp: Math.floor(NOW / 1000) + 3600 }));
      expect((await v.verify(token)).ok).toBe(true);
      expect((await v.verify(token)).ok).toBe(true);
      server.keys = [next.jwk];
      clock.advance(61_000);
      // The expired set triggers a background refresh; wait for it through a lookup of the new key.
      await v.verify(signJwt(next, claims(clock.now())));
      const r = await v.verify(token);
      expect(r.ok ? "ok" : r.reason).toBe("unknown_kid");
    } finally {
      await server.stop();
    }
  });
});

describe("key rotation in the middle of traffic", () => {
  let server: JwksServer;
  const a = rsaKey("2025-a");
  const b = ecKey("2025-b");
  const c = edKey("2025-c");
  beforeAll(async () => {
    server = await new JwksServer([a.jwk]).start();
  });
  afterAll(() => server.stop());

  it("never fails a request, whether the issuer switches keys abruptly or pre-publishes them", async () => {
    const clock = manualClock(NOW);
    const p = provider({ jwksUri: server.jwksUri, algorithms: ["RS256", "ES256", "EdDSA"] });
    const jwks = new RemoteJwks({
      uri: server.jwksUri,
      clock: clock.now,
      cacheMs: 300_000,
      cooldownMs: 30_000,
      timeoutMs: 2_000,
    });
    const v = new JwtVerifier(p, { clock: clock.now, jwks, cacheSize: 1_000, consumers: () => new Map() });
    await jwks.warm();
    let signer = a;
    let stop = false;
    const failures: string[] = [];
    let ok = 0;
    // Eight clients, each sending fresh tokens (no cache hits) from the current signing key.
    const clients = Array.from({ length: 8 }, async () => {
      while (!stop) {
        const r = await v.verify(signJwt(signer, claims(clock.now())));
        if (r.ok) ok++;
        else failures.push(`${signer.kid}: ${r.reason}`);
        await new Promise((res) => setImmediate(res));
      }
    });
    const settle = async (n: number) => {
      const target = ok + n;
      while (ok < target && failures.length === 0) await new Promise((res) => setTimeout(res, 5));
    };
    await settle(200);
    const fetchesBefore = server.fetches;

    // Abrupt: the issuer publishes b and signs with it in the same instant.
    server.keys = [a.jwk, b.jwk];
    signer = b;
    await settle(200);
    expect(server.fetches).toBe(fetchesBefore + 1);

    // Pre-published: c appears in the set; after the cache period the background refresh has it before first use.
    server.keys = [b.jwk, c.jwk];
    clock.advance(300_000);
    await settle(200);
    const fetchesAfterRefresh = server.fetches;
    signer = c;
    await settle(200);
    expect(server.fetches).toBe(fetchesAfterRefresh);

    stop = true;
    await Promise.all(clients);
    expect(failures).toEqual([]);
    expect(ok).toBeGreaterThanOrEqual(800);
  });
});
