import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "@portico/common";
import { sha256Hex, Authorizer, AuthzServer } from "@portico/ext-authz";
import { policyOf } from "../harness/ext-authz-fixtures.js";
import { AUDIENCE, b64url, claims, ISSUER, rsaKey, signJwt } from "../harness/jwt-keys.js";
import {
  freePort,
  httpRequest,
  startAdmin,
  startEnvoy,
  startHttpUpstream,
  waitFor,
  type AdminHandle,
  type EnvoyProcess,
  type HttpUpstream,
} from "../harness/index.js";
import { useEnvoyLogs } from "../harness/logs.js";

const KEY = "pk_test_acme_0123456789";
const OTHER_KEY = "pk_test_globex_987654321";
const rsa = rsaKey("k1");

/** The policy ext-authz holds: providers, consumers and keys (the routes' rules come from Envoy). */
const policy = policyOf({
  jwtProviders: [
    { name: "idp", issuer: ISSUER, audiences: [AUDIENCE], jwks: { keys: [rsa.jwk] }, algorithms: ["RS256"] },
  ],
  consumers: [
    { name: "acme", plan: "gold", scopes: ["orders:read"] },
    { name: "globex", plan: "free" },
  ],
  apiKeys: [
    { name: "acme-live", consumer: "acme", sha256: sha256Hex(KEY) },
    { name: "globex-live", consumer: "globex", sha256: sha256Hex(OTHER_KEY) },
  ],
});

const IDENTITY = ["x-portico-consumer", "x-portico-key-id", "x-portico-plan", "x-portico-scopes"];
const FORGED = {
  "x-portico-consumer": "admin",
  "x-portico-plan": "enterprise",
  "x-portico-scopes": "orders:write admin",
};

/**
 * Authentication through a real Envoy: routes and their policies come from the control plane over
 * xDS, the ext_authz filter calls Portico's ext-authz over gRPC, and an echo upstream shows what
 * reached it.
 */
describe("ext-authz through Envoy", () => {
  const track = useEnvoyLogs();
  let api: AdminHandle;
  let envoy: EnvoyProcess;
  let upstream: HttpUpstream;
  let authz: AuthzServer;
  let authzPort: number;
  let port: number;
  let nativePort: number;
  let native: EnvoyProcess;
  let checks = 0;
  const url = (p: string) => `http://127.0.0.1:${port}${p}`;
  const echoed = (body: string) => JSON.parse(body) as { headers: Record<string, string>; path: string };

  async function startAuthz(): Promise<void> {
    authz = new AuthzServer({
      authorizer: new Authorizer({ policy, logger: silentLogger() }),
      address: `127.0.0.1:${authzPort}`,
      onCheckDone: () => void checks++,
    });
    await authz.start();
  }

  beforeAll(async () => {
    [port, authzPort, nativePort] = [await freePort(), await freePort(), await freePort()];
    upstream = await startHttpUpstream("orders");
    await startAuthz();
    api = await startAdmin();
    const put = async (p: string, body: object) => {
      const res = await api.call("PUT", p, { body });
      expect(res.status, res.text).toBeLessThan(300);
    };
    await put("/api/v1/upstreams/orders", {
      name: "orders",
      endpoints: [{ host: "127.0.0.1", port: upstream.port }],
    });
    await put("/api/v1/upstreams/ext-authz", {
      name: "ext-authz",
      protocol: "grpc",
      endpoints: [{ host: "127.0.0.1", port: authzPort }],
    });
    await put("/api/v1/gateways/edge", {
      name: "edge",
      listeners: [{ name: "http", port, address: "127.0.0.1" }],
      extAuthz: { upstream: "ext-authz", timeoutMs: 1000 },
    });
    await put("/api/v1/consumers/acme", { name: "acme" });
    await put("/api/v1/jwtProviders/idp", {
      name: "idp",
      issuer: ISSUER,
      audiences: [AUDIENCE],
      jwks: { keys: [rsa.jwk] },
      algorithms: ["RS256"],
    });
    await put("/api/v1/authPolicies/members", { name: "members", accept: ["apiKey", "jwt"] });
    await put("/api/v1/authPolicies/writers", {
      name: "writers",
      accept: ["apiKey"],
      requiredScopes: ["orders:write"],
    });
    await put("/api/v1/authPolicies/open-door", {
      name: "open-door",
      accept: ["apiKey"],
      allowAnonymous: true,
    });
    await put("/api/v1/authPolicies/acme-only", {
      name: "acme-only",
      accept: ["apiKey"],
      consumers: ["acme"],
    });
    const routes = [
      { name: "private", match: { pathPrefix: "/private" }, authPolicy: "members" },
      { name: "write", match: { pathPrefix: "/write" }, authPolicy: "writers" },
      { name: "maybe", match: { pathPrefix: "/maybe" }, authPolicy: "open-door" },
      { name: "acme", match: { pathPrefix: "/acme" }, authPolicy: "acme-only" },
      {
        name: "guarded",
        match: { path: "/guarded", methods: ["POST"] },
        authPolicy: "members",
        requiredHeaders: ["idempotency-key"],
      },
      { name: "public", match: { pathPrefix: "/public" } },
    ];
    for (const r of routes)
      await put(`/api/v1/routes/${r.name}`, { ...r, gateway: "edge", upstream: "orders" });
    // A second gateway where Envoy verifies JWT-only routes itself (jwt_authn, then Portico's checks).
    await put("/api/v1/gateways/native", {
      name: "native",
      listeners: [{ name: "http", port: nativePort, address: "127.0.0.1" }],
      extAuthz: { upstream: "ext-authz", jwt: "jwt_authn" },
    });
    await put("/api/v1/authPolicies/idp-users", { name: "idp-users", accept: ["idp"] });
    await put("/api/v1/routes/native-profile", {
      name: "native-profile",
      gateway: "native",
      match: { pathPrefix: "/profile" },
      upstream: "orders",
      authPolicy: "idp-users",
    });
    await put("/api/v1/routes/native-guarded", {
      name: "native-guarded",
      gateway: "native",
      match: { path: "/native-guarded", methods: ["POST"] },
      upstream: "orders",
      authPolicy: "idp-users",
      requiredHeaders: ["idempotency-key"],
    });
    await put("/api/v1/routes/native-keys", {
      name: "native-keys",
      gateway: "native",
      match: { pathPrefix: "/keys" },
      upstream: "orders",
      authPolicy: "members",
    });
    envoy = track(await startEnvoy({ nodeId: "edge-authz", group: "edge", xdsPort: api.cp.xdsPort }));
    native = track(await startEnvoy({ nodeId: "native-authz", group: "native", xdsPort: api.cp.xdsPort }));
    await Promise.all([envoy.waitReady({ timeoutMs: 20_000 }), native.waitReady({ timeoutMs: 20_000 })]);
  });

  afterAll(async () => {
    await native?.stop();
    await envoy?.stop();
    await api?.stop();
    await authz?.stop();
    await upstream?.close();
  });

  it("refuses a request without credentials with 401 and a challenge; the upstream never sees it", async () => {
    const before = upstream.requests;
    const res = await httpRequest(url("/private/orders"));
    expect(res.status).toBe(401);
    expect(res.headers["www-authenticate"]).toMatch(/^(Bearer|ApiKey) /);
    expect(JSON.parse(res.body).code).toBeTruthy();
    expect(upstream.requests).toBe(before);
  });

  it("lets an API key through with identity headers, overwriting forged ones and stripping the key", async () => {
    const res = await httpRequest(url("/private/orders"), { headers: { "x-api-key": KEY, ...FORGED } });
    expect(res.status).toBe(200);
    const seen = echoed(res.body).headers;
    expect(seen["x-portico-consumer"]).toBe("acme");
    expect(seen["x-portico-key-id"]).toBe("acme-live");
    expect(seen["x-portico-plan"]).toBe("gold");
    expect(seen["x-portico-scopes"]).toBe("orders:read");
    expect(seen["x-api-key"]).toBeUndefined();
  });

  it("lets a JWT through as its subject", async () => {
    const token = signJwt(rsa, claims(Date.now(), { sub: "user-42" }));
    const res = await httpRequest(url("/private/profile"), {
      headers: { authorization: `Bearer ${token}`, "x-portico-consumer": "admin" },
    });
    expect(res.status).toBe(200);
    const seen = echoed(res.body).headers;
    expect(seen["x-portico-consumer"]).toBe("user-42");
    expect(seen["x-portico-provider"]).toBe("idp");
    expect(seen.authorization).toBeUndefined();
  });

  it("refuses a forged JWT (alg none, then a wrong key) with 401", async () => {
    const payload = Buffer.from(JSON.stringify(claims(Date.now(), { sub: "admin" }))).toString("base64url");
    const none = `${Buffer.from('{"alg":"none"}').toString("base64url")}.${payload}.`;
    const other = signJwt(rsaKey("k1"), claims(Date.now(), { sub: "admin" }));
    for (const token of [none, other]) {
      const res = await httpRequest(url("/private/orders"), {
        headers: { authorization: `Bearer ${token}` },
      });
      expect(res.status).toBe(401);
      expect(res.headers["www-authenticate"]).toContain('error="invalid_token"');
    }
  });

  it("refuses every forged or broken token through Envoy, and the upstream sees none of them", async () => {
    const now = Date.now();
    const attacker = rsaKey("k1");
    const pub = rsa.publicKey!;
    const [h, p] = signJwt(rsa, claims(now)).split(".") as [string, string];
    const forgeries: Record<string, string> = {
      "alg none": `${b64url({ alg: "none", typ: "JWT" })}.${b64url(claims(now))}.`,
      "RS256 re-signed as HS256 with the public key": signJwt(rsa, claims(now), {
        alg: "HS256",
        secret: Buffer.from(pub.export({ format: "pem", type: "spki" }) as string),
      }),
      "unknown kid": signJwt(rsa, claims(now), { header: { kid: "k2" } }),
      "kid with path traversal": signJwt(rsa, claims(now), { header: { kid: "../../../../etc/passwd" } }),
      "kid with SQL": signJwt(rsa, claims(now), { header: { kid: "' OR '1'='1' --" } }),
      "attacker key in jwk and jku headers": signJwt(attacker, claims(now), {
        header: { jwk: attacker.jwk, jku: "http://127.0.0.1:1/jwks.json" },
      }),
      "unknown crit": signJwt(rsa, claims(now), { header: { crit: ["urn:x"], "urn:x": 1 } }),
      expired: signJwt(rsa, claims(now, { exp: Math.floor(now / 1000) - 3600 })),
      "nbf beyond the skew": signJwt(rsa, claims(now, { nbf: Math.floor(now / 1000) + 3600 })),
      "iat beyond the skew": signJwt(rsa, claims(now, { iat: Math.floor(now / 1000) + 3600 })),
      "wrong issuer": signJwt(rsa, claims(now, { iss: "https://evil.test" })),
      "wrong audience": signJwt(rsa, claims(now, { aud: "other-api" })),
      "missing exp": signJwt(rsa, claims(now, { exp: undefined })),
      oversized: signJwt(rsa, claims(now, { pad: "x".repeat(9000) })),
      "malformed segments": `${h}.${p}`,
      "bad base64": `${h}.${p}.!!!`,
      "signature of another payload": `${h}.${b64url(claims(now, { sub: "admin" }))}.${signJwt(rsa, claims(now)).split(".")[2]}`,
    };
    const before = upstream.requests;
    for (const [what, token] of Object.entries(forgeries)) {
      const res = await httpRequest(url("/private/orders"), {
        headers: { authorization: `Bearer ${token}` },
      });
      expect(res.status, what).toBe(401);
      expect(res.headers["www-authenticate"], what).toContain("invalid_token");
      // The answer never says which check failed.
      expect(res.body, what).not.toMatch(/signature|kid|alg|expired|issuer|audience/i);
    }
    expect(upstream.requests).toBe(before);
  });

  it("answers 403 for a valid caller without the route's scope or outside its consumers", async () => {
    const write = await httpRequest(url("/write/orders"), { headers: { "x-api-key": KEY } });
    expect(write.status).toBe(403);
    expect(JSON.parse(write.body).code).toBe("insufficient_scope");
    const token = signJwt(rsa, claims(Date.now(), { sub: "user-42", scope: "orders:read" }));
    const keyedByJwt = await httpRequest(url("/write/orders"), {
      headers: { authorization: `Bearer ${token}` },
    });
    // The writers policy accepts only API keys: a JWT there is not a credential it knows.
    expect(keyedByJwt.status).toBe(401);
    const acme = await httpRequest(url("/acme/x"), { headers: { "x-api-key": KEY } });
    expect(acme.status).toBe(200);
    const globex = await httpRequest(url("/acme/x"), { headers: { "x-api-key": OTHER_KEY } });
    expect(globex.status).toBe(403);
  });

  it("passes anonymous callers on a route that allows them, without identity headers", async () => {
    const res = await httpRequest(url("/maybe/x"), { headers: FORGED });
    expect(res.status).toBe(200);
    const seen = echoed(res.body).headers;
    for (const h of IDENTITY) expect(seen[h]).toBeUndefined();
    const keyed = await httpRequest(url("/maybe/x"), { headers: { "x-api-key": KEY } });
    expect(echoed(keyed.body).headers["x-portico-consumer"]).toBe("acme");
  });

  it("strips forged identity headers on public routes, which skip the check", async () => {
    const res = await httpRequest(url("/public/x"), { headers: FORGED });
    expect(res.status).toBe(200);
    const seen = echoed(res.body).headers;
    for (const h of IDENTITY) expect(seen[h]).toBeUndefined();
  });

  it("authenticates before a route's own guards answer", async () => {
    const anon = await httpRequest(url("/guarded"), { method: "POST", body: "{}" });
    expect(anon.status).toBe(401);
    const keyed = await httpRequest(url("/guarded"), {
      method: "POST",
      body: "{}",
      headers: { "x-api-key": KEY },
    });
    expect(keyed.status).toBe(400);
    expect(JSON.parse(keyed.body).header).toBe("idempotency-key");
    // So do Envoy's own checks on a route it verifies: its guards carry the route's rules.
    const nativeUrl = `http://127.0.0.1:${nativePort}/native-guarded`;
    const before = checks;
    const anonNative = await httpRequest(nativeUrl, { method: "POST", body: "{}" });
    expect(anonNative.status).toBe(401);
    expect(anonNative.headers["www-authenticate"]).toBe('Bearer realm="portico"');
    const bearer = { authorization: `Bearer ${signJwt(rsa, claims(Date.now(), { sub: "user-7" }))}` };
    const signed = await httpRequest(nativeUrl, { method: "POST", body: "{}", headers: bearer });
    expect(signed.status).toBe(400);
    expect(JSON.parse(signed.body).header).toBe("idempotency-key");
    const whole = await httpRequest(nativeUrl, {
      method: "POST",
      body: "{}",
      headers: { ...bearer, "idempotency-key": "k-1" },
    });
    expect(whole.status).toBe(200);
    expect(echoed(whole.body).headers["x-portico-consumer"]).toBe("user-7");
    expect(checks).toBe(before);
  });

  it("has Envoy verify JWT-only routes with no call to ext-authz when the gateway asks for jwt_authn", async () => {
    const nativeUrl = (p: string) => `http://127.0.0.1:${nativePort}${p}`;
    const before = checks;
    const token = signJwt(rsa, claims(Date.now(), { sub: "user-7" }));
    const ok = await httpRequest(nativeUrl("/profile"), {
      headers: { authorization: `Bearer ${token}`, ...FORGED },
    });
    expect(ok.status).toBe(200);
    const seen = echoed(ok.body).headers;
    expect(seen["x-portico-consumer"]).toBe("user-7");
    expect(seen["x-portico-plan"]).toBe("default");
    expect(seen["x-portico-scopes"]).toBe("orders:read profile");
    expect(seen.authorization).toBeUndefined();
    const forged = signJwt(rsaKey("k1"), claims(Date.now(), { sub: "admin" }));
    for (const headers of [{}, { authorization: `Bearer ${forged}` }, FORGED] as Record<string, string>[]) {
      expect((await httpRequest(nativeUrl("/profile"), { headers })).status).toBe(401);
    }
    expect(checks).toBe(before);
    // A route that also takes API keys goes to ext-authz on the same gateway.
    const keyed = await httpRequest(nativeUrl("/keys"), { headers: { "x-api-key": KEY } });
    expect(keyed.status).toBe(200);
    expect(echoed(keyed.body).headers["x-portico-consumer"]).toBe("acme");
    expect(checks).toBe(before + 1);
  });

  it("fails closed on protected routes when ext-authz is down, while public routes keep working", async () => {
    await authz.stop();
    try {
      const before = upstream.requests;
      for (let i = 0; i < 5; i++) {
        const res = await httpRequest(url("/private/orders"), { headers: { "x-api-key": KEY } });
        expect(res.status).toBe(503);
      }
      expect(upstream.requests).toBe(before);
      const open = await httpRequest(url("/public/x"));
      expect(open.status).toBe(200);
      expect(upstream.requests).toBe(before + 1);
    } finally {
      await startAuthz();
    }
    await waitFor(
      async () =>
        (await httpRequest(url("/private/orders"), { headers: { "x-api-key": KEY } })).status === 200,
      { timeoutMs: 10_000, what: "ext-authz back" },
    );
  });
});
