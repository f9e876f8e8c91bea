import { describe, expect, it } from "vitest";
import { Authorizer } from "../src/authorizer.js";
import { sha256Hex, verifyApiKey } from "../src/apikey/verify.js";
import { policyOf, request, ISSUER, rsaKey } from "@portico/testing";

const NOW = Date.UTC(2025, 5, 1);
const rsa = rsaKey("k");

const policy = policyOf({
  jwtProviders: [
    { name: "idp", issuer: ISSUER, allowAnyAudience: true, jwks: { keys: [rsa.jwk] }, algorithms: ["RS256"] },
  ],
  apiKeySources: [{ header: "x-api-key" }, { query: "api_key" }],
  consumers: [
    { name: "acme", plan: "gold", scopes: ["orders:read"] },
    { name: "globex", plan: "free", disabled: true },
  ],
  apiKeys: [
    { name: "acme-live", consumer: "acme", sha256: sha256Hex("pk_live_acme"), scopes: ["orders:write"] },
    { name: "acme-old", consumer: "acme", sha256: sha256Hex("pk_old_acme"), revoked: true },
    {
      name: "acme-temp",
      consumer: "acme",
      sha256: sha256Hex("pk_temp_acme"),
      expiresAt: "2025-05-31T23:59:59Z",
    },
    {
      name: "acme-next",
      consumer: "acme",
      sha256: sha256Hex("pk_next_acme"),
      expiresAt: "2025-06-30T00:00:00+02:00",
    },
    { name: "globex-1", consumer: "globex", sha256: sha256Hex("pk_globex") },
  ],
  authPolicies: [
    { name: "keys", accept: ["apiKey"] },
    { name: "keys-or-jwt", accept: ["idp", "apiKey"] },
  ],
});

describe("API keys", () => {
  it("finds a key by its hash, with the consumer's plan and both scope lists", () => {
    const r = verifyApiKey(policy.apiKeys, "pk_live_acme", NOW);
    expect(r).toEqual({
      ok: true,
      identity: {
        kind: "apiKey",
        provider: "apiKey",
        consumer: "acme",
        plan: "gold",
        keyId: "acme-live",
        scopes: ["orders:read", "orders:write"],
        claims: {},
      },
    });
    expect(verifyApiKey(policy.apiKeys, "pk_next_acme", NOW).ok).toBe(true);
  });

  it("refuses revoked, expired, unknown and disabled-consumer keys, and absurdly long ones", () => {
    expect(verifyApiKey(policy.apiKeys, "pk_old_acme", NOW)).toEqual({
      ok: false,
      reason: "revoked",
      keyName: "acme-old",
    });
    expect(verifyApiKey(policy.apiKeys, "pk_temp_acme", NOW)).toEqual({
      ok: false,
      reason: "expired",
      keyName: "acme-temp",
    });
    // Expiry is exact to the millisecond.
    expect(verifyApiKey(policy.apiKeys, "pk_temp_acme", Date.parse("2025-05-31T23:59:58.999Z")).ok).toBe(
      true,
    );
    expect(verifyApiKey(policy.apiKeys, "pk_live_acmf", NOW)).toEqual({ ok: false, reason: "unknown" });
    expect(verifyApiKey(policy.apiKeys, "PK_LIVE_ACME", NOW)).toEqual({ ok: false, reason: "unknown" });
    expect(verifyApiKey(policy.apiKeys, "pk_globex", NOW)).toEqual({
      ok: false,
      reason: "consumer_disabled",
      keyName: "globex-1",
    });
    expect(verifyApiKey(policy.apiKeys, "k".repeat(513), NOW)).toEqual({ ok: false, reason: "too_long" });
  });

  describe("through the authorizer", () => {
    const authz = new Authorizer({ policy, clock: () => NOW });
    const check = (
      headers: Record<string, string>,
      ext: Record<string, string> = { policy: "keys" },
      path?: string,
    ) => authz.check(request(headers, { ext, path }));

    it("accepts a key from the header or the query, and strips it before the upstream", async () => {
      const h = await check({ "x-api-key": "pk_live_acme" });
      expect(h).toMatchObject({ allowed: true, code: "ok", queryParamsToRemove: [] });
      expect(h.headersToRemove).toContain("x-api-key");
      expect(h.headersToSet).toContainEqual(["x-portico-key-id", "acme-live"]);
      const q = await check({}, { policy: "keys" }, "/orders?api_key=pk_live_acme&page=2");
      expect(q.allowed).toBe(true);
      expect(q.queryParamsToRemove).toEqual(["api_key"]);
      expect(q.headersToRemove).not.toContain("x-api-key");
    });

    it("answers 401 for revoked and expired keys without saying which", async () => {
      const revoked = await check({ "x-api-key": "pk_old_acme" });
      const expired = await check({ "x-api-key": "pk_temp_acme" });
      for (const d of [revoked, expired]) {
        expect(d).toMatchObject({ allowed: false, status: 401, code: "invalid_api_key" });
        expect(d.body).toBe(
          JSON.stringify({ code: "invalid_api_key", message: "The API key is not valid." }),
        );
        expect(d.responseHeaders).toContainEqual(["www-authenticate", 'ApiKey realm="portico"']);
      }
      expect(revoked.body).toBe(expired.body);
    });

    it("does not accept a key in the wrong header", async () => {
      // In Authorization on a key-only route: no credential at all.
      const bearer = await check({ authorization: "Bearer pk_live_acme" });
      expect(bearer).toMatchObject({ allowed: false, status: 401, code: "missing_credentials" });
      const other = await check({ "x-api-token": "pk_live_acme", apikey: "pk_live_acme" });
      expect(other).toMatchObject({ allowed: false, status: 401, code: "missing_credentials" });
      // On a route that also takes JWTs, the bearer value is not a token any provider knows.
      const mixed = await check({ authorization: "Bearer pk_live_acme" }, { policy: "keys-or-jwt" });
      expect(mixed).toMatchObject({ allowed: false, status: 401, code: "invalid_token" });
    });

    it("answers 400 when two different keys are sent", async () => {
      const d = await check(
        { "x-api-key": "pk_live_acme" },
        { policy: "keys" },
        "/orders?api_key=pk_next_acme",
      );
      expect(d).toMatchObject({ allowed: false, status: 400, code: "invalid_request" });
      const same = await check(
        { "x-api-key": "pk_live_acme" },
        { policy: "keys" },
        "/orders?api_key=pk_live_acme",
      );
      expect(same.allowed).toBe(true);
      expect(same.headersToRemove).toContain("x-api-key");
      expect(same.queryParamsToRemove).toEqual(["api_key"]);
    });
  });
});
