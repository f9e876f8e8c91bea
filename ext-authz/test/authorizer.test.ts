import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Authorizer } from "../src/authorizer.js";
import { sha256Hex } from "../src/apikey/verify.js";
import { AuthzMetrics } from "../src/metrics.js";
import {
  policyOf,
  request,
  AUDIENCE,
  claims,
  ecKey,
  ISSUER,
  rsaKey,
  signJwt,
  json,
  JwksServer,
  TestServer,
} from "@portico/testing";

const NOW = Date.now();
const rsa = rsaKey("main");
const partnerKey = ecKey("partner");
const PARTNER = "https://partner-idp.test";

describe("the authorizer (credentials → decision)", () => {
  let jwks: JwksServer;
  let as: TestServer;
  let authz: Authorizer;
  const metrics = new AuthzMetrics();

  beforeAll(async () => {
    jwks = await new JwksServer([rsa.jwk]).start();
    as = await new TestServer((req, res) => {
      const token = new URLSearchParams(req.body).get("token");
      json(
        res,
        200,
        token === "opaque-ok"
          ? { active: true, sub: "svc-1", scope: "orders:read", exp: Math.floor(NOW / 1000) + 600 }
          : { active: false },
      );
    }).start();
    const policy = policyOf({
      jwtProviders: [
        {
          name: "main",
          issuer: ISSUER,
          audiences: [AUDIENCE],
          jwksUri: jwks.jwksUri,
          allowInsecureLoopback: true,
          algorithms: ["RS256"],
          consumers: ["acme"],
        },
        {
          name: "partner",
          issuer: PARTNER,
          allowAnyAudience: true,
          jwks: { keys: [partnerKey.jwk] },
          algorithms: ["ES256"],
          consumerClaim: "client_id",
        },
      ],
      oauthProviders: [
        {
          name: "as",
          introspectionUrl: `${as.url}/introspect`,
          allowInsecureLoopback: true,
          clientId: "portico",
          clientSecret: "x",
        },
      ],
      consumers: [{ name: "acme", plan: "gold" }],
      apiKeys: [{ name: "acme-1", consumer: "acme", sha256: sha256Hex("pk_acme") }],
      authPolicies: [
        { name: "orders", accept: ["jwt", "oauth", "apiKey"], requiredScopes: ["orders:read"] },
        { name: "main-only", accept: ["main"] },
      ],
    });
    authz = new Authorizer({ policy, metrics });
    await authz.warm();
  });
  afterAll(async () => {
    await jwks.stop();
    await as.stop();
  });

  const orders = { policy: "orders" };

  it("routes each bearer token to its provider by issuer, opaque ones to introspection", async () => {
    const main = await authz.check(
      request({ authorization: `Bearer ${signJwt(rsa, claims(NOW))}` }, { ext: orders }),
    );
    expect(main).toMatchObject({ allowed: true, identity: { provider: "main", consumer: "alice" } });
    const partner = await authz.check(
      request(
        {
          authorization: `Bearer ${signJwt(partnerKey, claims(NOW, { iss: PARTNER, aud: undefined, client_id: "p-7" }))}`,
        },
        { ext: orders },
      ),
    );
    expect(partner).toMatchObject({ allowed: true, identity: { provider: "partner", consumer: "p-7" } });
    const opaque = await authz.check(request({ authorization: "Bearer opaque-ok" }, { ext: orders }));
    expect(opaque).toMatchObject({ allowed: true, identity: { provider: "as", consumer: "svc-1" } });
    const key = await authz.check(request({ "x-api-key": "pk_acme" }, { ext: { ...orders, scopes: "" } }));
    expect(key).toMatchObject({
      allowed: true,
      metadata: { consumer: "acme", plan: "gold", provider: "apiKey" },
    });
  });

  it("refuses a token from an issuer the route does not accept", async () => {
    const partner = signJwt(partnerKey, claims(NOW, { iss: PARTNER, client_id: "p-7" }));
    const d = await authz.check(
      request({ authorization: `Bearer ${partner}` }, { ext: { policy: "main-only" } }),
    );
    expect(d).toMatchObject({ allowed: false, status: 401, code: "invalid_token" });
    const wrongIss = signJwt(rsa, claims(NOW, { iss: "https://evil.test" }));
    expect(
      (await authz.check(request({ authorization: `Bearer ${wrongIss}` }, { ext: { policy: "main-only" } })))
        .code,
    ).toBe("invalid_token");
  });

  it("overwrites identity headers a client sent, and removes them for anonymous callers", async () => {
    const forged = {
      "x-portico-consumer": "acme",
      "x-portico-plan": "enterprise",
      "x-portico-key-id": "acme-1",
      "x-portico-scopes": "admin",
    };
    const d = await authz.check(
      request(
        { ...forged, authorization: `Bearer ${signJwt(rsa, claims(NOW, { sub: "bob" }))}` },
        { ext: orders },
      ),
    );
    expect(d.headersToSet).toContainEqual(["x-portico-consumer", "bob"]);
    expect(d.headersToSet).toContainEqual(["x-portico-plan", "default"]);
    expect(d.headersToSet).toContainEqual(["x-portico-scopes", "orders:read profile"]);
    expect(d.headersToRemove).toContain("x-portico-key-id");
    const anon = await authz.check(request(forged, { ext: { ...orders, anonymous: "true" } }));
    expect(anon).toMatchObject({ allowed: true, code: "anonymous", headersToSet: [] });
    expect(anon.headersToRemove).toEqual(expect.arrayContaining(Object.keys(forged)));
  });

  it("answers 500 (fail closed) for context extensions it cannot read", async () => {
    const d = await authz.check(
      request(
        { authorization: `Bearer ${signJwt(rsa, claims(NOW))}` },
        { ext: { policy: "orders", scope: "x" } },
      ),
    );
    expect(d).toMatchObject({ allowed: false, status: 500, code: "auth_config_error" });
  });

  it("counts decisions, cache hits and JWKS fetches", async () => {
    const token = signJwt(rsa, claims(NOW, { sub: "carol" }));
    const before =
      (await metrics.cacheLookups.get()).values.find(
        (v) => v.labels.cache === "jwt" && v.labels.result === "hit",
      )?.value ?? 0;
    for (let i = 0; i < 5; i++)
      await authz.check(request({ authorization: `Bearer ${token}` }, { ext: orders }));
    const after =
      (await metrics.cacheLookups.get()).values.find(
        (v) => v.labels.cache === "jwt" && v.labels.result === "hit",
      )?.value ?? 0;
    expect(after - before).toBe(4);
    const text = await metrics.registry.metrics();
    expect(text).toMatch(/portico_ext_authz_decisions_total\{result="allow",code="ok"\} \d+/);
    expect(text).toMatch(/portico_ext_authz_decisions_total\{result="error",code="auth_config_error"\} 1/);
    expect(text).toContain(
      'portico_ext_authz_jwks_fetches_total{provider="main",trigger="startup",result="ok"} 1',
    );
    expect(text).toMatch(/portico_ext_authz_cache_hit_ratio\{cache="jwt"\} 0\.\d+/);
    expect(text).toMatch(/portico_ext_authz_check_duration_seconds_count\{result="allow"\} \d+/);
  });

  it("keeps JWKS and caches across a policy update that leaves the provider unchanged", async () => {
    const fetches = jwks.fetches;
    const token = signJwt(rsa, claims(NOW, { sub: "acme" }));
    await authz.check(request({ authorization: `Bearer ${token}` }, { ext: orders }));
    const next = policyOf({
      jwtProviders: [
        {
          name: "main",
          issuer: ISSUER,
          audiences: [AUDIENCE],
          jwksUri: jwks.jwksUri,
          allowInsecureLoopback: true,
          algorithms: ["RS256"],
          consumers: ["acme"],
        },
      ],
      consumers: [{ name: "acme", plan: "platinum" }],
    });
    authz.setPolicy(next);
    const d = await authz.check(request({ authorization: `Bearer ${token}` }));
    // Served from the cache, with the plan the new policy gives the linked consumer record.
    expect(d).toMatchObject({ allowed: true, metadata: { consumer: "acme", plan: "platinum" } });
    expect(jwks.fetches).toBe(fetches);
    expect(authz.revision).toBe(next.revision);
  });
});

describe("the authorizer when the JWKS endpoint is down", () => {
  it("fails closed with 503 while no key was ever fetched", async () => {
    const dead = await new TestServer((_r, res) => res.writeHead(500).end()).start();
    const authz = new Authorizer({
      policy: policyOf({
        jwtProviders: [
          {
            name: "main",
            issuer: ISSUER,
            audiences: [AUDIENCE],
            jwksUri: `${dead.url}/jwks`,
            allowInsecureLoopback: true,
            algorithms: ["RS256"],
          },
        ],
      }),
    });
    await authz.warm();
    const d = await authz.check(request({ authorization: `Bearer ${signJwt(rsa, claims(NOW))}` }));
    expect(d).toMatchObject({ allowed: false, status: 503, code: "auth_unavailable" });
    await dead.stop();
  });
});
