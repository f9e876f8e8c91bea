import { describe, expect, it } from "vitest";
import { checkPolicyDocument, type PolicyInput } from "@portico/contract";
import { Authorizer } from "../src/authorizer.js";
import { sha256Hex } from "../src/apikey/verify.js";
import { AUDIENCE, claims, ISSUER, policyOf, request, rsaKey, signJwt } from "@portico/testing";

const NOW = Date.UTC(2025, 5, 1, 12, 0, 0);
const rsa = rsaKey("k1");
const KEY = "pk_live_acme_0123456789";

function problems(doc: PolicyInput): string[] {
  const r = checkPolicyDocument(doc);
  return r.ok ? [] : r.error.details.map((d) => `${d.field}: ${d.reason}`);
}

const jwt = (over: Record<string, unknown>) => ({
  jwtProviders: [{ name: "idp", issuer: ISSUER, audiences: [AUDIENCE], algorithms: ["RS256"], ...over }],
});
const oauth = (over: Record<string, unknown>) => ({
  oauthProviders: [
    { name: "as", introspectionUrl: "https://as.test/i", clientId: "portico", clientSecret: "s", ...over },
  ],
});

describe("ext-authz takes nothing on trust", () => {
  it("fetches keys and verdicts over https only; plain http to loopback only when a provider says so", () => {
    const jwks = (uri: string, loopback = false) =>
      problems(jwt({ jwksUri: uri, allowInsecureLoopback: loopback }) as PolicyInput);
    const intro = (url: string, loopback = false) =>
      problems(oauth({ introspectionUrl: url, allowInsecureLoopback: loopback }) as PolicyInput);
    expect(jwks("https://idp.test/jwks")).toEqual([]);
    expect(jwks("http://idp.test/jwks")).toEqual([
      "jwtProviders[0].jwksUri: must be https:// (plain http:// is allowed to loopback only)",
    ]);
    // The per-provider waiver covers loopback, never a host on the network.
    expect(jwks("http://idp.test/jwks", true)).toHaveLength(1);
    expect(jwks("http://10.0.0.5/jwks", true)).toHaveLength(1);
    expect(jwks("http://127.0.0.1:8080/jwks")).toEqual([
      "jwtProviders[0].jwksUri: plain http:// to loopback needs allowInsecureLoopback: true",
    ]);
    for (const host of ["127.0.0.1:8080", "localhost", "[::1]:9"])
      expect(jwks(`http://${host}/j`, true)).toEqual([]);
    expect(jwks("https://user:pw@idp.test/jwks")).toHaveLength(1);
    expect(intro("http://as.test/i")).toEqual([
      "oauthProviders[0].introspectionUrl: must be https:// (plain http:// is allowed to loopback only)",
    ]);
    expect(intro("http://127.0.0.1:1/i", true)).toEqual([]);
  });

  it("reads client secrets only from PORTICO_SECRET_* variables", () => {
    const env = (name: string) =>
      problems(oauth({ clientSecret: undefined, clientSecretEnv: name }) as PolicyInput);
    expect(env("PORTICO_SECRET_PARTNER_AS")).toEqual([]);
    for (const name of [
      "AWS_SECRET_ACCESS_KEY",
      "DATABASE_URL",
      "PORTICO_SECRET_",
      "portico_secret_x",
      "HOME",
    ]) {
      expect(env(name), name).toHaveLength(1);
      expect(env(name)[0]).toMatch(/^oauthProviders\[0\]\.clientSecretEnv: .*PORTICO_SECRET_/);
    }
  });

  it("requires audiences unless a provider waives them; an empty list is no waiver", () => {
    const jwks = { keys: [rsa.jwk] };
    expect(problems(jwt({ jwks, audiences: undefined }) as PolicyInput)).toEqual([
      "jwtProviders[0].audiences: list the audiences a token must name, or set allowAnyAudience: true to accept any",
    ]);
    expect(problems(jwt({ jwks, audiences: [] }) as PolicyInput)[0]).toMatch(/^jwtProviders\[0\]\.audiences/);
    expect(problems(jwt({ jwks, audiences: undefined, allowAnyAudience: true }) as PolicyInput)).toEqual([]);
    expect(problems(jwt({ jwks, allowAnyAudience: true }) as PolicyInput)).toHaveLength(1);
  });

  it("refuses consumer records with reserved names, and links to consumers that do not exist", () => {
    expect(problems({ consumers: [{ name: "anonymous" }] })).toEqual([
      "consumers[0].name: anonymous is reserved for callers without credentials",
    ]);
    expect(problems(jwt({ jwks: { keys: [rsa.jwk] }, consumers: ["ghost"] }) as PolicyInput)).toEqual([
      "jwtProviders[0].consumers[0]: no consumer named ghost",
    ]);
  });

  describe("a token's subject", () => {
    const doc = (linked?: string[]): PolicyInput => ({
      jwtProviders: [
        {
          name: "idp",
          issuer: ISSUER,
          audiences: [AUDIENCE],
          jwks: { keys: [rsa.jwk] },
          algorithms: ["RS256"],
          ...(linked ? { consumers: linked } : {}),
        },
      ],
      consumers: [{ name: "acme", plan: "gold", scopes: ["orders:write"] }],
      apiKeys: [{ name: "acme-live", consumer: "acme", sha256: sha256Hex(KEY) }],
    });
    const authz = (linked?: string[]) => new Authorizer({ policy: policyOf(doc(linked)), clock: () => NOW });
    const bearer = (sub: string) => ({ authorization: `Bearer ${signJwt(rsa, claims(NOW, { sub }))}` });
    const ACME_ONLY = { accept: "jwt,apiKey", anonymous: "false", consumers: "acme" };
    const ANY = { accept: "jwt,apiKey", anonymous: "false" };

    it("may not be a reserved name: `anonymous` would escape per-consumer limits", async () => {
      for (const sub of ["anonymous", "Anonymous", "unknown", "default"]) {
        const d = await authz().check(request(bearer(sub), { ext: ANY }));
        expect(d, sub).toMatchObject({ allowed: false, status: 401, code: "invalid_token" });
      }
    });

    it("never becomes an API-key consumer its provider does not link: no plan, no allow-list, no shared limits", async () => {
      const a = authz();
      const d = await a.check(request(bearer("acme"), { ext: ANY }));
      expect(d).toMatchObject({ allowed: false, status: 401, code: "invalid_token" });
      expect((await a.check(request(bearer("acme"), { ext: ACME_ONLY }))).allowed).toBe(false);
      // The API key itself still works, and a subject that names no record is its own caller.
      expect((await a.check(request({ "x-api-key": KEY }, { ext: ACME_ONLY }))).allowed).toBe(true);
      const other = await a.check(request(bearer("user-42"), { ext: ANY }));
      expect(other).toMatchObject({ allowed: true, metadata: { consumer: "user-42", plan: "default" } });
    });

    it("from an introspection answer follows the same rules", async () => {
      const answering = (sub: string) =>
        new Authorizer({
          policy: policyOf({ ...(oauth({}) as PolicyInput), consumers: [{ name: "acme" }] }),
          clock: () => NOW,
          fetch: async () => Response.json({ active: true, sub }),
        });
      const ext = { accept: "oauth", anonymous: "false" };
      for (const sub of ["anonymous", "acme"]) {
        const d = await answering(sub).check(request({ authorization: "Bearer opaque-token" }, { ext }));
        expect(d, sub).toMatchObject({ allowed: false, status: 401, code: "invalid_token" });
      }
      const ok = await answering("svc-1").check(request({ authorization: "Bearer opaque-token" }, { ext }));
      expect(ok).toMatchObject({ allowed: true, metadata: { consumer: "svc-1" } });
    });

    it("is that consumer when its provider links it (`consumers`)", async () => {
      const d = await authz(["acme"]).check(request(bearer("acme"), { ext: ACME_ONLY }));
      expect(d).toMatchObject({
        allowed: true,
        metadata: { consumer: "acme", plan: "gold", provider: "idp" },
      });
    });
  });
});
