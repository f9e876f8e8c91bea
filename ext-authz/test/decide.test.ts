import { describe, expect, it } from "vitest";
import { decide, type AuthOutcome } from "../src/decide/decide.js";
import { extractCredential } from "../src/decide/extract.js";
import { ALL_IDENTITY_HEADERS, safeValue } from "@portico/contract";
import { routePolicyFrom } from "../src/decide/route.js";
import type { Identity } from "../src/identity.js";
import type { RoutePolicy } from "../src/policy/compile.js";
import { policyOf, request, ISSUER, rsaKey } from "@portico/testing";

const rsa = rsaKey("k");
const policy = policyOf({
  jwtProviders: [
    {
      name: "idp",
      issuer: ISSUER,
      allowAnyAudience: true,
      jwks: { keys: [rsa.jwk] },
      algorithms: ["RS256"],
      from: [
        { header: "authorization", prefix: "Bearer " },
        { query: "access_token" },
        { cookie: "session" },
      ],
    },
  ],
  consumers: [{ name: "acme", plan: "gold" }],
  authPolicies: [
    { name: "orders", accept: ["jwt", "apiKey"], requiredScopes: ["orders:read", "orders:write"] },
    { name: "public", accept: ["jwt"], allowAnonymous: true },
    { name: "partners", accept: ["apiKey"], consumers: ["acme"], stripCredentials: false },
  ],
});
const settings = { realm: "portico", maxScopesHeaderBytes: 64 };

function route(ext: Record<string, string>): RoutePolicy {
  const r = routePolicyFrom(policy, ext);
  if (!r.ok) throw new Error(r.error);
  return r.value;
}

const alice: Identity = {
  kind: "jwt",
  provider: "idp",
  consumer: "alice",
  plan: "default",
  scopes: ["orders:read", "orders:write"],
  claims: { tenant: "t1", roles: ["admin", "dev"], level: 3 },
};
const acmeKey: Identity = {
  kind: "apiKey",
  provider: "apiKey",
  consumer: "acme",
  plan: "gold",
  keyId: "acme-live",
  scopes: [],
  claims: {},
};
const bearerUsed = [{ value: "tok", source: { header: "authorization", prefix: "Bearer " } }];

describe("the decision", () => {
  it("allows with identity headers set, the unused ones removed, the credential stripped, and metadata", () => {
    const d = decide(
      route({ policy: "orders" }),
      { kind: "authenticated", identity: alice, used: bearerUsed },
      request(),
      settings,
    );
    expect(d).toMatchObject({ allowed: true, status: 200, code: "ok", body: "" });
    expect(d.headersToSet).toEqual([
      ["x-portico-consumer", "alice"],
      ["x-portico-plan", "default"],
      ["x-portico-provider", "idp"],
      ["x-portico-scopes", "orders:read orders:write"],
    ]);
    expect(d.headersToRemove).toEqual(["x-portico-key-id", "authorization"]);
    expect(d.metadata).toEqual({ consumer: "alice", plan: "default", ip: "198.51.100.7", provider: "idp" });
  });

  it("sets or removes every identity header on every allowed request", () => {
    for (const identity of [alice, acmeKey]) {
      const d = decide(
        route({ accept: "idp,apiKey" }),
        { kind: "authenticated", identity, used: [] },
        request(),
        settings,
      );
      const touched = new Set([...d.headersToSet.map(([k]) => k), ...d.headersToRemove]);
      for (const h of ALL_IDENTITY_HEADERS) expect(touched.has(h), h).toBe(true);
      // Never both set and removed: Envoy applies removals after additions.
      expect(d.headersToSet.filter(([k]) => d.headersToRemove.includes(k))).toEqual([]);
    }
  });

  it("lets anonymous callers through only when allowed, removing all identity headers", () => {
    const req = request(
      { "x-portico-consumer": "acme", "x-portico-plan": "enterprise" },
      { ip: "2001:db8::1" },
    );
    const d = decide(route({ policy: "public" }), { kind: "none" }, req, settings);
    expect(d).toMatchObject({ allowed: true, code: "anonymous", headersToSet: [] });
    expect([...d.headersToRemove].sort()).toEqual([...ALL_IDENTITY_HEADERS].sort());
    expect(d.metadata).toEqual({
      consumer: "anonymous",
      plan: "anonymous",
      ip: "2001:db8::1",
      provider: "anonymous",
    });
    const noIp = decide(
      route({ policy: "public" }),
      { kind: "none" },
      { ...req, sourceIp: undefined },
      settings,
    );
    expect(noIp.metadata?.ip).toBe("unknown");

    const closed = decide(route({ policy: "orders" }), { kind: "none" }, req, settings);
    expect(closed).toMatchObject({
      allowed: false,
      status: 401,
      code: "missing_credentials",
      metadata: undefined,
    });
    // No error code when no credential was sent (RFC 6750 §3.1); one challenge per accepted scheme.
    expect(closed.responseHeaders).toEqual([
      ["content-type", "application/json"],
      ["cache-control", "no-store"],
      ["www-authenticate", 'Bearer realm="portico", ApiKey realm="portico"'],
    ]);
  });

  it("answers an invalid token with 401 invalid_token and the same body whatever the reason", () => {
    const bodies = new Set<string>();
    for (const reason of ["bad_signature", "expired", "unknown_kid", "alg_not_allowed"]) {
      const out: AuthOutcome = { kind: "invalid", scheme: "bearer", provider: "idp", reason };
      const d = decide(route({ policy: "orders" }), out, request(), settings);
      expect(d).toMatchObject({ allowed: false, status: 401, code: "invalid_token" });
      expect(d.responseHeaders).toContainEqual([
        "www-authenticate",
        'Bearer realm="portico", error="invalid_token", ApiKey realm="portico"',
      ]);
      expect(d.body).not.toContain(reason);
      bodies.add(d.body);
    }
    expect([...bodies]).toEqual([
      JSON.stringify({ code: "invalid_token", message: "The access token is not valid." }),
    ]);
  });

  it("answers 403 insufficient_scope with the scope in the challenge, for all and any modes", () => {
    const reader: Identity = { ...alice, scopes: ["orders:read"] };
    const all = decide(
      route({ policy: "orders" }),
      { kind: "authenticated", identity: reader, used: [] },
      request(),
      settings,
    );
    expect(all).toMatchObject({ allowed: false, status: 403, code: "insufficient_scope" });
    expect(all.responseHeaders).toContainEqual([
      "www-authenticate",
      'Bearer realm="portico", error="insufficient_scope", scope="orders:read orders:write", ApiKey realm="portico"',
    ]);
    const any = decide(
      route({ policy: "orders", scopes_mode: "any" }),
      { kind: "authenticated", identity: reader, used: [] },
      request(),
      settings,
    );
    expect(any.allowed).toBe(true);
    const none = decide(
      route({ policy: "orders", scopes_mode: "any" }),
      { kind: "authenticated", identity: { ...alice, scopes: [] }, used: [] },
      request(),
      settings,
    );
    expect(none.code).toBe("insufficient_scope");
    // API-key callers get the 403 without a Bearer challenge.
    const key = decide(
      route({ accept: "apiKey", scopes: "admin" }),
      { kind: "authenticated", identity: acmeKey, used: [] },
      request(),
      settings,
    );
    expect(key.status).toBe(403);
    expect(key.responseHeaders.find(([k]) => k === "www-authenticate")).toBeUndefined();
  });

  it("answers 403 for consumers not on the route's list and claims that do not match", () => {
    const partners = route({ policy: "partners" });
    expect(
      decide(partners, { kind: "authenticated", identity: acmeKey, used: [] }, request(), settings).allowed,
    ).toBe(true);
    expect(
      decide(partners, { kind: "authenticated", identity: alice, used: [] }, request(), settings),
    ).toMatchObject({
      status: 403,
      code: "consumer_not_allowed",
    });
    const claimed = (claims: string) =>
      decide(
        route({ accept: "jwt", claims }),
        { kind: "authenticated", identity: alice, used: [] },
        request(),
        settings,
      );
    expect(claimed('{"tenant":"t1"}').allowed).toBe(true);
    expect(claimed('{"tenant":["t2","t1"],"roles":"admin","level":"3"}').allowed).toBe(true);
    expect(claimed('{"tenant":"t2"}')).toMatchObject({ status: 403, code: "claims_not_allowed" });
    expect(claimed('{"missing":"x"}').code).toBe("claims_not_allowed");
  });

  it("answers 503 for a dependency down (fail closed) and 400 for conflicting credentials", () => {
    const down = decide(
      route({ policy: "orders" }),
      { kind: "unavailable", provider: "as", failOpen: false, reason: "timeout" },
      request(),
      settings,
    );
    expect(down).toMatchObject({ allowed: false, status: 503, code: "auth_unavailable" });
    expect(down.body).not.toContain("timeout");
    const conflict = decide(
      route({ policy: "orders" }),
      { kind: "conflict", scheme: "bearer" },
      request(),
      settings,
    );
    expect(conflict).toMatchObject({ allowed: false, status: 400, code: "invalid_request" });
  });

  it("strips query and cookie credentials too, keeping the other cookies; or nothing when told not to", () => {
    const req = request(
      { cookie: "theme=dark; session=tok; lang=en" },
      { path: "/x?access_token=tok&page=1" },
    );
    const used = [
      { value: "tok", source: { query: "access_token" } },
      { value: "tok", source: { cookie: "session" } },
    ];
    const d = decide(
      route({ accept: "idp" }),
      { kind: "authenticated", identity: alice, used },
      req,
      settings,
    );
    expect(d.queryParamsToRemove).toEqual(["access_token"]);
    expect(d.headersToSet).toContainEqual(["cookie", "theme=dark; lang=en"]);
    const only = decide(
      route({ accept: "idp" }),
      { kind: "authenticated", identity: alice, used: [used[1]!] },
      request({ cookie: "session=tok" }),
      settings,
    );
    expect(only.headersToRemove).toContain("cookie");
    const kept = decide(
      route({ accept: "idp", strip_credentials: "false" }),
      { kind: "authenticated", identity: alice, used: bearerUsed },
      request(),
      settings,
    );
    expect(kept.headersToRemove).toEqual(["x-portico-key-id"]);
    expect(
      decide(
        route({ policy: "partners" }),
        { kind: "authenticated", identity: acmeKey, used: [{ value: "k", source: { header: "x-api-key" } }] },
        request(),
        settings,
      ).headersToRemove,
    ).toEqual(["x-portico-scopes"]);
  });

  it("makes identity values safe for headers and keeps the scopes header within its limit", () => {
    const evil: Identity = {
      ...alice,
      consumer: "eve\r\nx-portico-plan: enterprise",
      plan: "gøld%",
      scopes: ["a".repeat(40), "b".repeat(20), "c".repeat(5)],
    };
    const d = decide(
      route({ accept: "jwt" }),
      { kind: "authenticated", identity: evil, used: [] },
      request(),
      settings,
    );
    expect(d.headersToSet).toContainEqual(["x-portico-consumer", "eve%0D%0Ax-portico-plan: enterprise"]);
    expect(d.headersToSet).toContainEqual(["x-portico-plan", "g%C3%B8ld%25"]);
    // 40 + 1 + 20 = 61 bytes fit in 64; with the third (+6) they would not, so it is left out whole.
    expect(d.headersToSet).toContainEqual(["x-portico-scopes", `${"a".repeat(40)} ${"b".repeat(20)}`]);
    expect(safeValue("x".repeat(300))).toHaveLength(256);
    expect(safeValue("\ud800")).toBe("%EF%BF%BD");
    expect(safeValue(`${"x".repeat(254)}é`)).toBe("x".repeat(254));
  });
});

describe("context extensions", () => {
  it("uses the named policy, the default policy, or inline keys that override it", () => {
    expect(route({}).name).toBe("default");
    expect(route({ policy: "orders" })).toBe(policy.authPolicies.get("orders"));
    const inline = route({
      accept: "apiKey, idp",
      scopes: "a b,c",
      scopes_mode: "any",
      consumers: "acme, globex",
      anonymous: "true",
    });
    expect(inline).toMatchObject({
      name: "inline",
      accept: [
        { kind: "apiKey", name: "apiKey" },
        { kind: "jwt", name: "idp" },
      ],
      requiredScopes: ["a", "b", "c"],
      scopesMode: "any",
      allowAnonymous: true,
      stripCredentials: true,
    });
    expect([...inline.consumers!]).toEqual(["acme", "globex"]);
    const overridden = route({ policy: "orders", scopes: "" });
    expect(overridden).toMatchObject({
      name: "orders",
      requiredScopes: [],
      accept: policy.authPolicies.get("orders")!.accept,
    });
  });

  it("refuses unknown keys and bad values instead of ignoring them", () => {
    const err = (ext: Record<string, string>) => {
      const r = routePolicyFrom(policy, ext);
      return r.ok ? "ok" : r.error;
    };
    expect(err({ scope: "admin" })).toBe('unknown context extension "scope"');
    expect(err({ policy: "nope" })).toBe('no auth policy named "nope"');
    expect(err({ accept: "ghost" })).toBe("accept: no provider named ghost");
    expect(err({ accept: " , " })).toBe("accept names no provider");
    expect(err({ anonymous: "yes" })).toBe('anonymous must be true or false, not "yes"');
    expect(err({ scopes_mode: "some" })).toBe('scopes_mode must be any or all, not "some"');
    expect(err({ consumers: "" })).toBe("consumers is empty; omit it to allow every consumer");
    expect(err({ claims: "{" })).toBe("claims is not JSON");
    expect(err({ claims: '{"a":1}' })).toBe(
      "claims must map claim names to a string or a non-empty list of strings",
    );
    expect(err({ strip_credentials: "1" })).toBe('strip_credentials must be true or false, not "1"');
  });
});

describe("credential extraction", () => {
  const sources = policy.jwtProviders.get("idp")!.from;

  it("reads the bearer scheme case-insensitively and ignores other schemes", () => {
    expect(extractCredential(request({ authorization: "bearer abc" }), sources)).toMatchObject({
      kind: "found",
      value: "abc",
    });
    expect(extractCredential(request({ authorization: "BEARER   abc  " }), sources)).toMatchObject({
      kind: "found",
      value: "abc",
    });
    expect(extractCredential(request({ authorization: "Basic dXNlcjpwYXNz" }), sources)).toEqual({
      kind: "none",
    });
    expect(extractCredential(request({ authorization: "Bearer" }), sources)).toMatchObject({
      kind: "found",
      value: "",
    });
  });

  it("finds the token in a query parameter or a cookie, and flags different values as a conflict", () => {
    expect(extractCredential(request({}, { path: "/a?access_token=q%2Bv" }), sources)).toMatchObject({
      kind: "found",
      value: "q+v",
    });
    expect(extractCredential(request({ cookie: 'a=1; session="c"' }), sources)).toMatchObject({
      kind: "found",
      value: "c",
    });
    const same = extractCredential(
      request({ authorization: "Bearer t", cookie: "session=t" }, { path: "/?access_token=t" }),
      sources,
    );
    expect(same.kind === "found" && same.where.length).toBe(3);
    expect(
      extractCredential(request({ authorization: "Bearer t" }, { path: "/?access_token=u" }), sources),
    ).toEqual({ kind: "conflict" });
    expect(extractCredential(request({}, { path: "/?access_token=t&access_token=u" }), sources)).toEqual({
      kind: "conflict",
    });
  });
});
