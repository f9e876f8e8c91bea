import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "@portico/common";
import { Authorizer, AuthzServer } from "@portico/ext-authz";
import { policyOf } from "../harness/ext-authz-fixtures.js";
import { AUDIENCE, b64url, claims, ISSUER, rsaKey, signJwt } from "../harness/jwt-keys.js";
import {
  freePort,
  httpRequest,
  startAdmin,
  startEnvoy,
  startHttpUpstream,
  type AdminHandle,
  type EnvoyProcess,
  type HttpUpstream,
} from "../harness/index.js";
import { useEnvoyLogs } from "../harness/logs.js";

const rsa = rsaKey("k1");
/** Published without `alg`, so only the provider's pin stands between RS256 and every other RSA algorithm. */
const { alg: _alg, ...bareJwk } = rsa.jwk;
const PROVIDER = {
  name: "idp",
  issuer: ISSUER,
  audiences: [AUDIENCE],
  jwks: { keys: [bareJwk] },
  algorithms: ["RS256" as const],
};
/** A query string an attacker controls: it must never be reflected in a refusal. */
const QUERY = "?next=https%3A%2F%2Fevil.test%2F&token=leak-me";

/**
 * The forged-token corpus through a real Envoy on two gateways: one with the default
 * (`extAuthz.jwt: ext_authz`), one asking for Envoy's own jwt_authn. Both refuse every forgery
 * alike: 401, the same JSON body, the same challenge, never the request URL nor the failed check.
 */
describe("JWT refusals are the same whichever mode a gateway asks for", () => {
  const track = useEnvoyLogs();
  let api: AdminHandle;
  let upstream: HttpUpstream;
  let authz: AuthzServer;
  const envoys: EnvoyProcess[] = [];
  const ports = { ext_authz: 0, jwt_authn: 0 };
  let checks = 0;

  beforeAll(async () => {
    const authzPort = await freePort();
    ports.ext_authz = await freePort();
    ports.jwt_authn = await freePort();
    upstream = await startHttpUpstream("api");
    authz = new AuthzServer({
      authorizer: new Authorizer({ policy: policyOf({ jwtProviders: [PROVIDER] }), logger: silentLogger() }),
      address: `127.0.0.1:${authzPort}`,
      onCheckDone: () => void checks++,
    });
    await authz.start();
    api = await startAdmin();
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
    await put("/api/v1/jwtProviders/idp", PROVIDER);
    await put("/api/v1/authPolicies/idp-users", { name: "idp-users", accept: ["idp"] });
    for (const [mode, port] of Object.entries(ports)) {
      const gateway = mode.replace("_", "-");
      await put(`/api/v1/gateways/${gateway}`, {
        name: gateway,
        listeners: [{ name: "http", port, address: "127.0.0.1" }],
        extAuthz: { upstream: "ext-authz", timeoutMs: 1000, jwt: mode },
      });
      await put(`/api/v1/routes/${gateway}-profile`, {
        name: `${gateway}-profile`,
        gateway,
        match: { pathPrefix: "/profile" },
        upstream: "api",
        authPolicy: "idp-users",
      });
      envoys.push(
        track(await startEnvoy({ nodeId: `${gateway}-modes`, group: gateway, xdsPort: api.cp.xdsPort })),
      );
    }
    await Promise.all(envoys.map((e) => e.waitReady({ timeoutMs: 20_000 })));
  });

  afterAll(async () => {
    for (const e of envoys) await e.stop();
    await api?.stop();
    await authz?.stop();
    await upstream?.close();
  });

  /** What a caller is told, less the request id that differs on every answer. */
  const shape = (r: { status: number; body: string; headers: Record<string, string | undefined> }) => {
    const { request_id: _id, ...body } = JSON.parse(r.body) as Record<string, unknown>;
    return { status: r.status, body, challenge: r.headers["www-authenticate"] };
  };

  const call = (mode: keyof typeof ports, token: string | undefined) =>
    httpRequest(`http://127.0.0.1:${ports[mode]}/profile/me${QUERY}`, {
      headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
    });

  it("lets a valid token through in both modes", async () => {
    const token = signJwt(rsa, claims(Date.now(), { sub: "user-7" }));
    for (const mode of ["ext_authz", "jwt_authn"] as const)
      expect((await call(mode, token)).status, mode).toBe(200);
  });

  it("refuses every forgery with the same 401, body and challenge in both modes, reflecting nothing", async () => {
    const now = Date.now();
    const s = Math.floor(now / 1000);
    const pem = Buffer.from(rsa.publicKey!.export({ format: "pem", type: "spki" }) as string);
    const forgeries: Record<string, string | undefined> = {
      "no token": undefined,
      "alg none": `${b64url({ alg: "none", typ: "JWT" })}.${b64url(claims(now))}.`,
      "RS256 key as an HS256 secret": signJwt(rsa, claims(now), { alg: "HS256", secret: pem }),
      "PS256 with the pinned RS256 key": signJwt(rsa, claims(now), { alg: "PS256" }),
      "RS512 with the pinned RS256 key": signJwt(rsa, claims(now), { alg: "RS512" }),
      "unknown kid": signJwt(rsa, claims(now), { header: { kid: "k2" } }),
      "another key": signJwt(rsaKey("k1"), claims(now)),
      "unknown crit": signJwt(rsa, claims(now), { header: { crit: ["urn:x"], "urn:x": 1 } }),
      "iat an hour ahead": signJwt(rsa, claims(now, { iat: s + 3600 })),
      expired: signJwt(rsa, claims(now, { exp: s - 3600 })),
      "nbf an hour ahead": signJwt(rsa, claims(now, { nbf: s + 3600 })),
      "wrong audience": signJwt(rsa, claims(now, { aud: "other-api" })),
      "wrong issuer": signJwt(rsa, claims(now, { iss: "https://evil.test" })),
      "missing exp": signJwt(rsa, claims(now, { exp: undefined })),
      "reserved subject": signJwt(rsa, claims(now, { sub: "anonymous" })),
    };
    const before = upstream.requests;
    for (const [what, token] of Object.entries(forgeries)) {
      const [a, b] = [await call("ext_authz", token), await call("jwt_authn", token)];
      for (const res of [a, b]) {
        expect(res.status, what).toBe(401);
        const challenge = res.headers["www-authenticate"] ?? "";
        expect(challenge, what).toMatch(/^Bearer realm="portico"/);
        expect(challenge, what).not.toMatch(/profile|leak-me|evil|127\.0\.0\.1/);
        expect(res.body, what).not.toMatch(
          /leak-me|evil|signature|kid|alg|expired|issuer|audience|crit|iat|Jwt/i,
        );
        expect(Object.keys(JSON.parse(res.body)).sort(), what).toEqual(["code", "message", "request_id"]);
      }
      expect(shape(b), what).toEqual(shape(a));
    }
    expect(upstream.requests).toBe(before);
    // Every one of them was refused by ext-authz, the jwt_authn gateway's too.
    expect(checks).toBeGreaterThanOrEqual(2 * Object.keys(forgeries).length);
  });
});
