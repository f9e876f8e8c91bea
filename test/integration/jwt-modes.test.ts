import https from "node:https";
import fs from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "@portico/common";
import { Authorizer, AuthzServer } from "@portico/ext-authz";
import { policyOf } from "../harness/ext-authz-fixtures.js";
import { forgedTokens } from "../harness/jwt-forgeries.js";
import { AUDIENCE, claims, ISSUER, rsaKey, signJwt, type TestKey } from "../harness/jwt-keys.js";
import { JwksServer } from "../harness/jwks-server.js";
import { makeTestPki, removeTestPki, type TestPki } from "../harness/certs.js";
import {
  freePort,
  httpRequest,
  startAdmin,
  startEnvoy,
  startHttpUpstream,
  waitFor,
  type AdminHandle,
  type EnvoyProcess,
  type HttpResponse,
  type HttpUpstream,
  type UpstreamReply,
} from "../harness/index.js";
import { useEnvoyLogs } from "../harness/logs.js";

const rsa = rsaKey("k1");
/** Published without `alg`, so only the provider's pin stands between RS256 and every other RSA algorithm. */
const { alg: _alg, ...bareJwk } = rsa.jwk;
const ROTATING_ISSUER = "https://rotating.test";
const COOKIE_ISSUER = "https://cookie.test";
const cookieKey = rsaKey("c1");
const oldKey = rsaKey("old-1");
const newKey = rsaKey("new-1");

/** A query string an attacker controls: it must never be reflected in a refusal. */
const QUERY = "?next=https%3A%2F%2Fevil.test%2F&token=leak-me";

/** ext-authz fetches through this, trusting the test CA like the control plane does. */
function fetchTrusting(ca: string): typeof fetch {
  return ((input: string | URL | Request, init?: RequestInit) =>
    new Promise<Response>((resolve, reject) => {
      const req = https.get(
        new URL(String(input)),
        { ca, headers: init?.headers as Record<string, string> },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () =>
            resolve(
              new Response(Buffer.concat(chunks), {
                status: res.statusCode,
                headers: Object.entries(res.headers).flatMap(([k, v]) =>
                  typeof v === "string" ? [[k, v] as [string, string]] : [],
                ),
              }),
            ),
          );
        },
      );
      req.on("error", reject);
      init?.signal?.addEventListener("abort", () => req.destroy(new Error("aborted")));
    })) as typeof fetch;
}

/**
 * The same routes on two gateways through real Envoys: one sends every route to ext-authz
 * (`extAuthz.jwt: ext_authz`), the other has Envoy verify them (`jwt_authn`: jwt_authn with the
 * keys the control plane holds, then Portico's checks). Both must answer every request alike:
 * the same refusals (status, JSON body, challenge), the same identity at the upstream.
 */
describe("JWT routes answer alike whether Envoy or ext-authz verifies them", () => {
  const track = useEnvoyLogs();
  let pki: TestPki;
  let api: AdminHandle;
  let upstream: HttpUpstream;
  let authz: AuthzServer;
  let jwks: JwksServer;
  const envoys: EnvoyProcess[] = [];
  const ports = { service: 0, native: 0 };
  let trustedPort = 0;
  let checks = 0;

  beforeAll(async () => {
    pki = makeTestPki();
    const ca = fs.readFileSync(pki.ca.cert, "utf8");
    jwks = await new JwksServer([oldKey.jwk], pki.server).start();
    const providers = [
      {
        name: "idp",
        issuer: ISSUER,
        audiences: [AUDIENCE],
        jwks: { keys: [bareJwk] },
        algorithms: ["RS256" as const],
        planClaim: "tier",
        consumers: ["acme", "initech"],
        from: [
          { header: "authorization", prefix: "Bearer " },
          { query: "access_token" },
          { cookie: "id_token" },
        ],
      },
      {
        name: "rotating",
        issuer: ROTATING_ISSUER,
        audiences: [AUDIENCE],
        jwksUri: jwks.jwksUri,
        jwksCacheSeconds: 1,
        algorithms: ["RS256" as const],
      },
      {
        name: "cookies",
        issuer: COOKIE_ISSUER,
        audiences: [AUDIENCE],
        jwks: { keys: [cookieKey.jwk] },
        algorithms: ["RS256" as const],
        from: [{ cookie: "session" }],
      },
    ];
    const consumers = [
      { name: "acme", plan: "gold" },
      { name: "globex", plan: "free" },
      { name: "initech", disabled: true },
    ];
    const authzPort = await freePort();
    ports.service = await freePort();
    ports.native = await freePort();
    upstream = await startHttpUpstream("api");
    authz = new AuthzServer({
      authorizer: new Authorizer({
        policy: policyOf({ jwtProviders: providers, consumers }),
        logger: silentLogger(),
        fetch: fetchTrusting(ca),
      }),
      address: `127.0.0.1:${authzPort}`,
      onCheckDone: () => void checks++,
    });
    await authz.start();
    api = await startAdmin({ jwksCa: ca });
    const put = async (p: string, body: object) => {
      const res = await api.call("PUT", p, { body });
      expect(res.status, res.text).toBeLessThan(300);
    };
    await put("/api/v1/upstreams/api", {
      name: "api",
      endpoints: [{ host: "127.0.0.1", port: upstream.port }],
    });
    await put("/api/v1/upstreams/ext-authz", {
      name: "ext-authz",
      protocol: "grpc",
      endpoints: [{ host: "127.0.0.1", port: authzPort }],
    });
    for (const c of consumers) await put(`/api/v1/consumers/${c.name}`, c);
    for (const p of providers) await put(`/api/v1/jwtProviders/${p.name}`, p);
    const policies = [
      { name: "idp-users", accept: ["idp"] },
      { name: "rotating-users", accept: ["rotating"] },
      { name: "any-jwt", accept: ["jwt"] },
      { name: "pair", accept: ["rotating", "idp"] },
      { name: "header-then-cookie", accept: ["rotating", "cookies"] },
      { name: "maybe", accept: ["idp"], allowAnonymous: true },
      {
        name: "admins",
        accept: ["idp"],
        requiredScopes: ["admin"],
        consumers: ["acme"],
        requiredClaims: { tenant: ["t1"] },
      },
    ];
    for (const p of policies) await put(`/api/v1/authPolicies/${p.name}`, p);
    await put("/api/v1/rateLimitPolicies/per-user", {
      name: "per-user",
      limits: [{ requests: 2, per: "minute", by: "consumer" }],
    });
    const routes = [
      { name: "profile", match: { pathPrefix: "/profile" }, authPolicy: "idp-users" },
      { name: "rotating", match: { pathPrefix: "/rotating" }, authPolicy: "rotating-users" },
      { name: "any", match: { pathPrefix: "/any" }, authPolicy: "any-jwt" },
      { name: "pair", match: { pathPrefix: "/pair" }, authPolicy: "pair" },
      { name: "then", match: { pathPrefix: "/then" }, authPolicy: "header-then-cookie" },
      { name: "maybe", match: { pathPrefix: "/maybe" }, authPolicy: "maybe" },
      { name: "admin", match: { pathPrefix: "/admin" }, authPolicy: "admins" },
      {
        name: "limited",
        match: { pathPrefix: "/limited" },
        authPolicy: "idp-users",
        rateLimitPolicy: "per-user",
      },
    ];
    for (const [gateway, port] of Object.entries(ports)) {
      await put(`/api/v1/gateways/${gateway}`, {
        name: gateway,
        listeners: [{ name: "http", port, address: "127.0.0.1" }],
        extAuthz: {
          upstream: "ext-authz",
          timeoutMs: 1000,
          jwt: gateway === "service" ? "ext_authz" : "jwt_authn",
        },
      });
      for (const r of routes)
        await put(`/api/v1/routes/${gateway}-${r.name}`, {
          ...r,
          name: `${gateway}-${r.name}`,
          gateway,
          upstream: "api",
        });
    }
    // A listener that trusts the identity its peer sends (loopback): jwt_authn's verdicts still
    // come only from jwt_authn.
    trustedPort = await freePort();
    await put("/api/v1/gateways/trusted", {
      name: "trusted",
      listeners: [{ name: "http", port: trustedPort, address: "127.0.0.1", trustIdentityHeaders: true }],
      extAuthz: { upstream: "ext-authz", timeoutMs: 1000, jwt: "jwt_authn" },
    });
    await put("/api/v1/routes/trusted-profile", {
      name: "trusted-profile",
      gateway: "trusted",
      match: { pathPrefix: "/profile" },
      authPolicy: "idp-users",
      upstream: "api",
    });
    // The published keys arrive: the rotating provider's routes move to Envoy too.
    await waitFor(
      async () => {
        const status = (await api.call("GET", "/api/v1/status")).json;
        return status.routes.find((r: { route: string }) => r.route === "native-rotating")?.auth === "native";
      },
      { what: "the rotating provider's keys fetched by the control plane" },
    );
    for (const gateway of [...Object.keys(ports), "trusted"])
      envoys.push(
        track(
          await startEnvoy({
            nodeId: `${gateway}-modes`,
            group: gateway,
            xdsPort: api.cp.xdsPort,
            // Access log lines reach stdout within 0.2 s, not Envoy's default 10 s.
            extraArgs: ["--file-flush-interval-msec", "200"],
          }),
        ),
      );
    await Promise.all(envoys.map((e) => e.waitReady({ timeoutMs: 20_000 })));
  });

  afterAll(async () => {
    for (const e of envoys) await e.stop();
    await api?.stop();
    await authz?.stop();
    await jwks?.stop();
    await upstream?.close();
    removeTestPki(pki);
  });

  type Mode = keyof typeof ports;
  const call = (mode: Mode, path: string, headers: Record<string, string> = {}) =>
    httpRequest(`http://127.0.0.1:${ports[mode]}${path}`, { headers });
  const bearer = (token: string | undefined): Record<string, string> =>
    token === undefined ? {} : { authorization: `Bearer ${token}` };

  /** What a caller is told, less the request id that differs on every answer. */
  const shape = (r: HttpResponse) => {
    const { request_id: id, ...body } = JSON.parse(r.body) as Record<string, unknown>;
    expect(typeof id, r.body).toBe("string");
    return {
      status: r.status,
      body,
      challenge: r.headers["www-authenticate"],
      type: r.headers["content-type"],
      cache: r.headers["cache-control"],
    };
  };

  /**
   * What the upstream was given: the path and every header authentication sets or strips. (The
   * headers in which jwt_authn reports verified tokens exist only where Envoy verifies: checked apart.)
   */
  const seen = (r: HttpResponse) => {
    const reply = JSON.parse(r.body) as UpstreamReply;
    const headers = Object.fromEntries(
      Object.entries(reply.headers).filter(
        ([k]) =>
          (k.startsWith("x-portico-") && !k.startsWith("x-portico-jwt-")) ||
          k === "authorization" ||
          k === "cookie",
      ),
    );
    return { path: reply.path, headers };
  };
  const reported = (r: HttpResponse) =>
    Object.keys((JSON.parse(r.body) as UpstreamReply).headers).filter((k) => k.startsWith("x-portico-jwt-"));

  /** Calls both gateways; the native one makes no call to ext-authz. */
  async function both(
    path: string,
    headers: Record<string, string> = {},
  ): Promise<[HttpResponse, HttpResponse]> {
    const service = await call("service", path, headers);
    const before = checks;
    const native = await call("native", path, headers);
    expect(checks, `a call to ext-authz for ${path} on the native gateway`).toBe(before);
    return [service, native];
  }

  it("shows each route's path and, when it is not Envoy, why", async () => {
    const status = (await api.call("GET", "/api/v1/status")).json as {
      routes: { route: string; auth: string; reason?: string }[];
      jwks: { provider: string; state: string; keys?: number }[];
    };
    const of = (name: string) => status.routes.find((r) => r.route === name)!;
    for (const r of ["profile", "rotating", "any", "pair", "then", "maybe", "admin", "limited"]) {
      expect(of(`native-${r}`).auth, r).toBe("native");
      expect(of(`service-${r}`)).toMatchObject({
        auth: "ext_authz",
        reason: expect.stringMatching(/extAuthz\.jwt/),
      });
    }
    expect(status.jwks).toEqual([
      expect.objectContaining({ provider: "rotating", state: "fetched", keys: 1 }),
    ]);
  });

  it("lets valid tokens through with the same identity, credential removed alike, in both modes", async () => {
    const now = Date.now();
    const tokens: Record<string, [string, Record<string, string>]> = {
      "a subject of its own": ["/profile/me", bearer(signJwt(rsa, claims(now, { sub: "user-7" })))],
      "a plan claim": ["/profile/me", bearer(signJwt(rsa, claims(now, { sub: "user-8", tier: "silver" })))],
      "a linked consumer, which brings its plan": [
        "/profile/me",
        bearer(signJwt(rsa, claims(now, { sub: "acme" }))),
      ],
      "scopes as a list": [
        "/profile/me",
        bearer(signJwt(rsa, claims(now, { scope: undefined, scp: ["a", "b", "a"] }))),
      ],
      "no scopes": ["/profile/me", bearer(signJwt(rsa, claims(now, { scope: undefined })))],
      "the scheme in lower case": [
        "/profile/me",
        { authorization: `bearer ${signJwt(rsa, claims(now, { sub: "user-9" }))}` },
      ],
      "a token in the query, among other parameters": [
        `/profile/me?z=1&access_token=${signJwt(rsa, claims(now))}&a=2&flag`,
        {},
      ],
      "a token under an encoded parameter name, beside a plus sign": [
        `/profile/me?q=a+b&access%5Ftoken=${signJwt(rsa, claims(now))}`,
        {},
      ],
      "a token in a cookie, among others": [
        "/profile/me",
        { cookie: `theme=dark; id_token=${signJwt(rsa, claims(now))}; lang="en"` },
      ],
      "the same token in two places": (() => {
        const t = signJwt(rsa, claims(now, { sub: "twice" }));
        return [`/profile/x?access_token=${t}`, { authorization: `Bearer ${t}` }];
      })(),
      "forged identity headers": [
        "/profile/me",
        {
          ...bearer(signJwt(rsa, claims(now, { sub: "user-10" }))),
          "x-portico-consumer": "admin",
          "x-portico-plan": "enterprise",
          "x-portico-key-id": "forged",
          "x-portico-jwt-idp": "forged",
        },
      ],
      "any provider, the second one's token": [
        "/any/thing",
        bearer(signJwt(oldKey, claims(now, { iss: ROTATING_ISSUER, sub: "r-1" }))),
      ],
      "an admin of acme": [
        "/admin/x",
        bearer(signJwt(rsa, claims(now, { sub: "acme", scope: "admin", tenant: ["t0", "t1"] }))),
      ],
      "an anonymous caller": ["/maybe/x", { "x-portico-consumer": "admin" }],
      "a caller on a route that also admits anonymous ones": ["/maybe/x", bearer(signJwt(rsa, claims(now)))],
    };
    for (const [what, [path, headers]] of Object.entries(tokens)) {
      const [a, b] = await both(path, headers);
      expect(a.status, `${what}: ${a.body}`).toBe(200);
      expect(b.status, `${what}: ${b.body}`).toBe(200);
      expect(seen(b), what).toEqual(seen(a));
      expect(reported(b), what).toEqual([]);
    }
    // What ext-authz sets, as a reminder of what "the same" means here.
    const [, acme] = await both("/profile/me", bearer(signJwt(rsa, claims(now, { sub: "acme" }))));
    expect(seen(acme).headers).toEqual({
      "x-portico-consumer": "acme",
      "x-portico-plan": "gold",
      "x-portico-provider": "idp",
      "x-portico-scopes": "orders:read profile",
    });
    const [, query] = await both(`/profile/me?z=1&access_token=${signJwt(rsa, claims(now))}&a=2&flag`);
    expect(seen(query).path).toBe("/profile/me?a=2&flag=&z=1");
  });

  it("reads the claims as ext-authz reads them, whatever the payload's JSON looks like", async () => {
    const now = Date.now();
    const s = Math.floor(now / 1000);
    const head = `"iss":"${ISSUER}","aud":"${AUDIENCE}","iat":${s - 10},"exp":${s + 600}`;
    /** A payload written as text, so its JSON is exactly what is signed. */
    const raw = (text: string) => bearer(signJwt(rsa, text));
    const cases: Record<string, [string, Record<string, string>, number]> = {
      "spacing and escapes everywhere": [
        "/profile/me",
        raw(
          `\n { ${head.replace(/,/g, " ,\t")} ,\r\n "sub" : "us\\u0065r-\\u00e9\\ud83d\\ude00\\"\\\\\\/\\t" , "scope":"a\\u0020b" }  `,
        ),
        200,
      ],
      "a plan claim that is a number": ["/profile/me", raw(`{${head},"sub":"p-1","tier":3}`), 200],
      "a plan claim that is null": ["/profile/me", raw(`{${head},"sub":"p-2","tier":null}`), 200],
      "a plan claim that is an object": [
        "/profile/me",
        raw(`{${head},"sub":"p-3","tier":{"name":"gold"}}`),
        200,
      ],
      "scopes repeated, with runs of spaces, and in both claims": [
        "/profile/me",
        raw(`{${head},"sub":"s-1","scope":"b  a b ","scp":["c",null,3,"a",{"x":1},["d"],"",true]}`),
        200,
      ],
      "scp an object": ["/profile/me", raw(`{${head},"sub":"s-2","scope":null,"scp":{"0":"a"}}`), 200],
      "a claim in a list with nulls": [
        "/admin/x",
        raw(`{${head},"sub":"acme","scope":"admin","tenant":[null,"t1"]}`),
        200,
      ],
      "a claim in a nested list": [
        "/admin/x",
        raw(`{${head},"sub":"acme","scope":"admin","tenant":[["t0"],["t1"]]}`),
        200,
      ],
      "a claim in an object": [
        "/admin/x",
        raw(`{${head},"sub":"acme","scope":"admin","tenant":{"1":"t1"}}`),
        403,
      ],
      "a claim that is true": ["/admin/x", raw(`{${head},"sub":"acme","scope":"admin","tenant":true}`), 403],
      "the subject deep in nothing": [
        "/profile/me",
        raw(`{${head},"sub":"deep","extra":${"[".repeat(60)}1${"]".repeat(60)}}`),
        200,
      ],
      "fractional times": [
        "/profile/me",
        raw(`{"iss":"${ISSUER}","aud":"${AUDIENCE}","iat":${s - 10.5},"exp":${s + 600.25},"sub":"f-1"}`),
        200,
      ],
    };
    for (const [what, [path, headers, status]] of Object.entries(cases)) {
      const [a, b] = await both(path, headers);
      expect(a.status, `${what}: ${a.body}`).toBe(status);
      expect(b.status, `${what}: ${b.body}`).toBe(status);
      if (status === 200) expect(seen(b), what).toEqual(seen(a));
      else expect(shape(b), what).toEqual(shape(a));
    }
    // What ext-authz makes of two of them, as a reminder of what "the same" means here.
    const [, escaped] = await both("/profile/me", cases["spacing and escapes everywhere"]![1]);
    expect(seen(escaped).headers["x-portico-consumer"]).toBe('user-%C3%A9%F0%9F%98%80"\\/%09');
    const [, scopes] = await both(
      "/profile/me",
      cases["scopes repeated, with runs of spaces, and in both claims"]![1],
    );
    expect(seen(scopes).headers["x-portico-scopes"]).toBe("b a c");
  });

  it("refuses the whole forged-token corpus with the same status, body and challenge, reflecting nothing", async () => {
    const corpus = forgedTokens(rsa, Date.now(), { unlinkedConsumer: "globex", disabledConsumer: "initech" });
    const before = upstream.requests;
    for (const [what, token] of Object.entries(corpus)) {
      for (const path of [`/profile/me${QUERY}`, `/any/me${QUERY}`, `/maybe/me${QUERY}`]) {
        if (path.startsWith("/maybe") && token === undefined) continue;
        const [a, b] = await both(path, bearer(token));
        for (const res of [a, b]) {
          expect(res.status, `${what} ${path}`).toBe(401);
          const challenge = res.headers["www-authenticate"] ?? "";
          expect(challenge, what).toMatch(/^Bearer realm="portico"/);
          expect(challenge, what).not.toMatch(/profile|leak-me|evil|127\.0\.0\.1/);
          expect(res.body, what).not.toMatch(
            /leak-me|evil|signature|kid|alg|expired|issuer|audience|crit|iat|Jwt/i,
          );
        }
        expect(shape(b), `${what} ${path}`).toEqual(shape(a));
      }
      // The token in the query string, where the provider reads it too.
      if (token) {
        const [a, b] = await both(`/profile/me?access_token=${encodeURIComponent(token)}&token=leak-me`);
        expect(a.status, what).toBe(401);
        expect(shape(b), `${what} in the query`).toEqual(shape(a));
      }
    }
    expect(upstream.requests).toBe(before);
  });

  it("answers the route's rules, conflicts and the choice among providers alike in both modes", async () => {
    const now = Date.now();
    const cases: Record<string, [string, Record<string, string>, number]> = {
      "a scope missing": [
        "/admin/x",
        bearer(signJwt(rsa, claims(now, { sub: "acme", scope: "orders:read", tenant: "t1" }))),
        403,
      ],
      "another consumer": [
        "/admin/x",
        bearer(signJwt(rsa, claims(now, { scope: "admin", tenant: "t1" }))),
        403,
      ],
      "a claim with another value": [
        "/admin/x",
        bearer(signJwt(rsa, claims(now, { sub: "acme", scope: "admin", tenant: "t2" }))),
        403,
      ],
      "two different tokens": [
        `/profile/me?access_token=${signJwt(rsa, claims(now))}`,
        bearer(signJwt(rsa, claims(now))),
        400,
      ],
      "a token of the first provider that fails, then one of the second": [
        `/any/me`,
        bearer(signJwt(rsa, claims(now, { exp: Math.floor(now / 1000) - 3600 }))),
        401,
      ],
      // Envoy finds a token after any scheme; only one after `Bearer ` counts, as in ext-authz.
      "a valid token after another scheme": [
        "/profile/me",
        { authorization: `Token ${signJwt(rsa, claims(now))}` },
        401,
      ],
      "a valid token after another scheme, where anonymous callers pass": [
        "/maybe/x",
        { authorization: `Token ${signJwt(rsa, claims(now, { sub: "not-me" }))}` },
        200,
      ],
      // ext-authz stops at the first provider whose issuer the token names, whatever comes after.
      "the first provider's expired token, then a conflict for the second": [
        "/pair/me",
        {
          ...bearer(
            signJwt(oldKey, claims(now, { iss: ROTATING_ISSUER, exp: Math.floor(now / 1000) - 3600 })),
          ),
          cookie: `id_token=${signJwt(rsa, claims(now))}`,
        },
        401,
      ],
      "another issuer's token for the first provider, then a conflict for the second": [
        "/pair/me",
        {
          ...bearer(signJwt(oldKey, claims(now, { iss: "https://elsewhere.test" }))),
          cookie: `id_token=${signJwt(rsa, claims(now))}`,
        },
        400,
      ],
      "the first provider's expired token, then a valid token of the second": [
        "/then/me",
        {
          ...bearer(
            signJwt(oldKey, claims(now, { iss: ROTATING_ISSUER, exp: Math.floor(now / 1000) - 3600 })),
          ),
          cookie: `session=${signJwt(cookieKey, claims(now, { iss: COOKIE_ISSUER }))}`,
        },
        401,
      ],
      "another issuer's token for the first provider, then a valid token of the second": [
        "/then/me",
        {
          ...bearer(signJwt(oldKey, claims(now, { iss: "https://elsewhere.test" }))),
          cookie: `session=${signJwt(cookieKey, claims(now, { iss: COOKIE_ISSUER, sub: "cookie-user" }))}`,
        },
        200,
      ],
    };
    for (const [what, [path, headers, status]] of Object.entries(cases)) {
      const [a, b] = await both(path, headers);
      expect(a.status, `${what}: ${a.body}`).toBe(status);
      if (status === 200) expect(seen(b), what).toEqual(seen(a));
      else expect(shape(b), what).toEqual(shape(a));
    }
  });

  it("takes jwt_authn's verdict from jwt_authn alone, even on a listener that trusts its peer's identity", async () => {
    const now = Date.now();
    const get = (headers: Record<string, string>) =>
      httpRequest(`http://127.0.0.1:${trustedPort}/profile/me`, { headers });
    const good = signJwt(rsa, claims(now, { sub: "acme" }));
    expect((await get(bearer(good))).status).toBe(200);
    // Signed with a key the provider does not have, and sent with the header in which jwt_authn
    // reports the payload of a token it verified.
    const forged = signJwt(cookieKey, claims(now, { sub: "acme" }));
    const refused = await get({ ...bearer(forged), "x-portico-jwt-idp": forged.split(".")[1]! });
    expect(refused.status, refused.body).toBe(401);
    expect(JSON.parse(refused.body).code).toBe("invalid_token");
    // A valid token with a stale payload header from the peer: judged on what jwt_authn verified.
    const stale = await get({ ...bearer(good), "x-portico-jwt-idp": forged.split(".")[1]! });
    expect(stale.status, stale.body).toBe(200);
    expect(seen(stale).headers["x-portico-consumer"]).toBe("acme");
  });

  it("counts a per-consumer limit per natively verified caller", async () => {
    const now = Date.now();
    const alice = bearer(signJwt(rsa, claims(now, { sub: "limited-alice" })));
    const bob = bearer(signJwt(rsa, claims(now, { sub: "limited-bob" })));
    const statuses = [];
    for (let i = 0; i < 3; i++) statuses.push((await call("native", "/limited/x", alice)).status);
    expect(statuses).toEqual([200, 200, 429]);
    expect((await call("native", "/limited/x", bob)).status).toBe(200);
  });

  it("logs the consumer alike whether it reached dynamic metadata or stayed in the checks' header", async () => {
    const native = envoys[Object.keys(ports).indexOf("native")]!;
    const now = Date.now();
    // /profile and /limited admit authenticated callers only: the identity stays in headers
    // (the limit above counted by the header). /maybe admits anonymous callers: it is copied.
    expect(
      (await call("native", "/profile/log", bearer(signJwt(rsa, claims(now, { sub: "log-carol" }))))).status,
    ).toBe(200);
    expect(
      (await call("native", "/maybe/log", bearer(signJwt(rsa, claims(now, { sub: "log-dave" }))))).status,
    ).toBe(200);
    expect((await call("native", "/maybe/log-anonymous")).status).toBe(200);
    const lineOf = async (path: string) =>
      JSON.parse(
        await native.waitForLog(new RegExp(`^\\{.*"path":"${path}"`), `the access log line of ${path}`),
      );
    expect(await lineOf("/profile/log")).toMatchObject({ route: "native-profile", consumer: "log-carol" });
    expect(await lineOf("/maybe/log")).toMatchObject({ route: "native-maybe", consumer: "log-dave" });
    expect(await lineOf("/maybe/log-anonymous")).toMatchObject({
      route: "native-maybe",
      consumer: "anonymous",
    });
    // One line per request, whichever logger wrote it.
    expect(
      native
        .logs()
        .split("\n")
        .filter((l) => l.includes('"path":"/profile/log"')),
    ).toHaveLength(1);
  });

  it("follows a key rotation at the HTTPS JWKS endpoint", async () => {
    const token = (key: TestKey) =>
      bearer(signJwt(key, claims(Date.now(), { iss: ROTATING_ISSUER, sub: "r-2" })));
    expect((await call("native", "/rotating/x", token(oldKey))).status).toBe(200);
    expect((await call("native", "/rotating/x", token(newKey))).status).toBe(401);
    jwks.keys = [newKey.jwk];
    await waitFor(async () => (await call("native", "/rotating/x", token(newKey))).status === 200, {
      what: "the new key at Envoy",
      timeoutMs: 15_000,
    });
    expect((await call("native", "/rotating/x", token(oldKey))).status).toBe(401);
    // ext-authz, which refetches on an unknown kid, answers the same.
    const [a, b] = await both("/rotating/x", token(newKey));
    expect([a.status, b.status]).toEqual([200, 200]);
    expect(seen(b)).toEqual(seen(a));
  });
});
