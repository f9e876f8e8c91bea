import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Authorizer } from "../src/authorizer.js";
import { Introspector } from "../src/oauth/introspection.js";
import { OauthProviderSchema, type PolicyInput } from "@portico/contract";
import { manualClock, policyOf, request, json, TestServer } from "@portico/testing";

type OauthInput = NonNullable<PolicyInput["oauthProviders"]>[number];
const NOW = Date.UTC(2025, 5, 1, 12);
const S = Math.floor(NOW / 1000);

/** A small RFC 7662 authorization server: knows a few tokens and checks the client's credentials. */
function authorizationServer(tokens: Record<string, object>): TestServer {
  return new TestServer((req, res) => {
    const expected = `Basic ${Buffer.from("portico:s3cret%2F+").toString("base64")}`;
    if (req.method !== "POST" || req.headers.authorization !== expected)
      return json(res, 401, { error: "invalid_client" });
    if (req.headers["content-type"] !== "application/x-www-form-urlencoded")
      return json(res, 400, { error: "invalid_request" });
    const token = new URLSearchParams(req.body).get("token") ?? "";
    json(res, 200, tokens[token] ?? { active: false });
  });
}

describe("OAuth2 token introspection (RFC 7662)", () => {
  let as: TestServer;
  const clock = manualClock(NOW);

  beforeEach(async () => {
    clock.set(NOW);
    as = await authorizationServer({
      "tok-alice": {
        active: true,
        sub: "alice",
        scope: "orders:read orders:write",
        exp: S + 120,
        client_id: "web",
        tier: "gold",
      },
      "tok-client": { active: true, client_id: "batch-job", scope: "reports", exp: S + 3600 },
      "tok-expired": { active: true, sub: "bob", exp: S - 1 },
      "tok-other-aud": { active: true, sub: "carol", aud: "another-api", exp: S + 100 },
    }).start();
  });
  afterEach(() => as.stop());

  function introspector(over: Partial<OauthInput> = {}) {
    const provider = OauthProviderSchema.parse({
      name: "as",
      introspectionUrl: `${as.url}/oauth2/introspect`,
      allowInsecureLoopback: true,
      clientId: "portico",
      // Characters that must be form-encoded inside HTTP Basic (RFC 6749 §2.3.1).
      clientSecret: "s3cret/ ",
      planField: "tier",
      // Production's 150 ms default is about Envoy's deadline; a loaded test machine needs more
      // for the first connection. The timeout test sets its own.
      timeoutMs: 2_000,
      ...over,
    });
    return new Introspector(provider, { clock: clock.now, consumers: () => new Map() });
  }

  it("authenticates an active token with the client's credentials and reads its identity", async () => {
    const r = await introspector().introspect("tok-alice");
    expect(r).toMatchObject({
      ok: true,
      cached: false,
      identity: {
        kind: "oauth",
        provider: "as",
        consumer: "alice",
        plan: "gold",
        scopes: ["orders:read", "orders:write"],
      },
    });
    expect(as.requests[0]!.body).toBe("token=tok-alice&token_type_hint=access_token");
    const client = await introspector().introspect("tok-client");
    expect(client.ok && client.identity.consumer).toBe("batch-job");
  });

  it("caches an active answer until the token's exp, and no longer", async () => {
    const i = introspector();
    await i.introspect("tok-alice");
    const again = await i.introspect("tok-alice");
    expect(again.ok && again.cached).toBe(true);
    expect(as.requests).toHaveLength(1);
    clock.advance(120_000);
    await i.introspect("tok-alice");
    expect(as.requests).toHaveLength(2);
  });

  it("caches an active answer at most cacheMaxSeconds", async () => {
    const i = introspector({ cacheMaxSeconds: 60 });
    await i.introspect("tok-client");
    clock.advance(59_000);
    await i.introspect("tok-client");
    expect(as.requests).toHaveLength(1);
    clock.advance(1_000);
    await i.introspect("tok-client");
    expect(as.requests).toHaveLength(2);
  });

  it("refuses inactive, expired and wrong-audience tokens, and caches the refusal briefly", async () => {
    const i = introspector({ negativeCacheSeconds: 10, audiences: ["portico-api"] });
    expect(await i.introspect("tok-unknown")).toEqual({ ok: false, reason: "inactive", cached: false });
    expect(await i.introspect("tok-unknown")).toEqual({ ok: false, reason: "inactive", cached: true });
    expect(as.requests).toHaveLength(1);
    clock.advance(10_000);
    expect(await i.introspect("tok-unknown")).toEqual({ ok: false, reason: "inactive", cached: false });
    expect(as.requests).toHaveLength(2);
    expect((await i.introspect("tok-expired")).ok).toBe(false);
    expect((await i.introspect("tok-other-aud")).ok).toBe(false);
    expect((await i.introspect("tok-alice")).ok).toBe(false);
  });

  it("shares one call among concurrent requests with the same token", async () => {
    const i = introspector();
    const results = await Promise.all(Array.from({ length: 20 }, () => i.introspect("tok-alice")));
    expect(results.every((r) => r.ok)).toBe(true);
    expect(as.requests).toHaveLength(1);
  });

  it("reports the endpoint down (refused, 5xx, timeout, not JSON) as unavailable, and fails fast for a second", async () => {
    as.setHandler((_req, res) => res.writeHead(502).end("bad gateway"));
    const i = introspector();
    expect(await i.introspect("tok-alice")).toMatchObject({
      ok: false,
      reason: "unavailable",
      detail: "introspection endpoint answered HTTP 502",
    });
    expect(await i.introspect("tok-other")).toMatchObject({ ok: false, reason: "unavailable" });
    expect(as.requests).toHaveLength(1);

    clock.advance(1_000);
    as.setHandler((_req, res) => res.writeHead(200, { "content-type": "text/html" }).end("<html>"));
    expect(await i.introspect("tok-alice")).toMatchObject({ ok: false, reason: "unavailable" });

    clock.advance(1_000);
    as.setHandler(() => undefined);
    const slow = introspector({ timeoutMs: 50 });
    const started = performance.now();
    expect(await slow.introspect("tok-alice")).toMatchObject({
      ok: false,
      reason: "unavailable",
      detail: "no answer within 50 ms",
    });
    expect(performance.now() - started).toBeLessThan(1_000);

    await as.stop();
    const gone = introspector();
    expect(await gone.introspect("tok-alice")).toMatchObject({ ok: false, reason: "unavailable" });
    as = await authorizationServer({}).start();
  });

  describe("through the authorizer", () => {
    function authorizer(failureMode: "closed" | "open") {
      const policy = policyOf({
        oauthProviders: [
          {
            name: "as",
            introspectionUrl: `${as.url}/introspect`,
            allowInsecureLoopback: true,
            clientId: "portico",
            clientSecretEnv: "PORTICO_SECRET_AS",
            failureMode,
          },
        ],
        authPolicies: [{ name: "api", accept: ["oauth"], requiredScopes: ["orders:read"] }],
      });
      return new Authorizer({ policy, clock: clock.now, env: { PORTICO_SECRET_AS: "s3cret/ " } });
    }

    it("allows an active token with the required scope, refuses an inactive one with 401 invalid_token", async () => {
      const a = authorizer("closed");
      const ok = await a.check(request({ authorization: "Bearer tok-alice" }, { ext: { policy: "api" } }));
      expect(ok).toMatchObject({
        allowed: true,
        metadata: { consumer: "alice", plan: "default", provider: "as" },
      });
      expect(ok.headersToRemove).toContain("authorization");
      const dead = await a.check(request({ authorization: "Bearer tok-nope" }, { ext: { policy: "api" } }));
      expect(dead).toMatchObject({ allowed: false, status: 401, code: "invalid_token" });
      expect(dead.responseHeaders).toContainEqual([
        "www-authenticate",
        'Bearer realm="portico", error="invalid_token"',
      ]);
      const noScope = await a.check(
        request({ authorization: "Bearer tok-client" }, { ext: { policy: "api" } }),
      );
      expect(noScope).toMatchObject({ allowed: false, status: 403, code: "insufficient_scope" });
    });

    it("fails closed by default when the endpoint is down: 503, nothing reaches the upstream", async () => {
      await as.stop();
      const d = await authorizer("closed").check(
        request({ authorization: "Bearer tok-alice" }, { ext: { policy: "api" } }),
      );
      expect(d).toMatchObject({ allowed: false, status: 503, code: "auth_unavailable" });
      expect(d.responseHeaders).toContainEqual(["retry-after", "1"]);
      as = await authorizationServer({}).start();
    });

    it("fails open only when configured, and then as an anonymous caller without identity headers", async () => {
      await as.stop();
      const d = await authorizer("open").check(
        request(
          { authorization: "Bearer tok-alice", "x-portico-consumer": "admin" },
          { ext: { policy: "api" } },
        ),
      );
      expect(d).toMatchObject({
        allowed: true,
        code: "fail_open",
        metadata: { consumer: "anonymous", plan: "anonymous" },
      });
      expect(d.headersToRemove).toContain("x-portico-consumer");
      expect(d.headersToSet).toEqual([]);
      as = await authorizationServer({}).start();
    });

    it("refuses to start when the secret's environment variable is missing", () => {
      const policy = policyOf({
        oauthProviders: [
          {
            name: "as",
            introspectionUrl: `${as.url}/introspect`,
            allowInsecureLoopback: true,
            clientId: "portico",
            clientSecretEnv: "PORTICO_SECRET_NOPE",
          },
        ],
      });
      expect(() => new Authorizer({ policy, env: {} })).toThrow(
        "OAuth provider as: PORTICO_SECRET_NOPE is not set",
      );
    });
  });
});
