import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Authorizer } from "../src/authorizer.js";
import { sha256Hex } from "../src/apikey/verify.js";
import { AuthzServer } from "../src/grpc/server.js";
import { AUTHORIZATION_SERVICE, authTypes, HEALTH_SERVICE, healthTypes, method } from "../src/grpc/protos.js";
import { policyOf, AUDIENCE, claims, ISSUER, rsaKey, signJwt } from "@portico/testing";

const rsa = rsaKey("k1");
const policy = policyOf({
  jwtProviders: [
    { name: "idp", issuer: ISSUER, audiences: [AUDIENCE], jwks: { keys: [rsa.jwk] }, algorithms: ["RS256"] },
  ],
  consumers: [{ name: "acme", plan: "gold" }],
  apiKeys: [{ name: "acme-live", consumer: "acme", sha256: sha256Hex("pk_live") }],
  authPolicies: [
    { name: "orders", accept: ["jwt", "apiKey"], requiredScopes: ["orders:read"] },
    { name: "public", accept: ["jwt"], allowAnonymous: true },
  ],
});

type Obj = Record<string, any>;

/** Struct fields as plain strings, whatever the JS name of google.protobuf.Value's string field. */
function metadata(struct: Obj | undefined): Record<string, string> | undefined {
  if (!struct) return undefined;
  return Object.fromEntries(
    Object.entries(struct.fields as Obj).map(([k, v]) => [
      k,
      (v as Obj).string_value ?? (v as Obj).stringValue,
    ]),
  );
}

/** A CheckRequest as Envoy builds it (snake_case, as in the .proto). */
function checkRequest(headers: Record<string, string>, ext: Record<string, string>, path = "/orders") {
  return {
    attributes: {
      source: { address: { socket_address: { address: "203.0.113.9", port_value: 51234 } } },
      destination: { address: { socket_address: { address: "10.0.0.1", port_value: 8080 } } },
      request: {
        time: { seconds: Math.floor(Date.now() / 1000) },
        http: {
          id: "req-1",
          method: "GET",
          path,
          host: "api.test",
          scheme: "https",
          protocol: "HTTP/1.1",
          headers: { ":path": path, ":method": "GET", ...headers },
        },
      },
      context_extensions: ext,
    },
  };
}

describe("ext-authz over real gRPC", () => {
  let server: AuthzServer;
  let client: grpc.Client;
  const { CheckRequest, CheckResponse } = authTypes();
  const { HealthCheckRequest, HealthCheckResponse } = healthTypes();
  const check = method<Obj, Obj>(AUTHORIZATION_SERVICE, "Check", CheckRequest, CheckResponse);
  const healthCheck = method<Obj, Obj>(HEALTH_SERVICE, "Check", HealthCheckRequest, HealthCheckResponse);
  const healthWatch = method<Obj, Obj>(
    HEALTH_SERVICE,
    "Watch",
    HealthCheckRequest,
    HealthCheckResponse,
    true,
  );

  function call<Req, Res>(
    m: { path: string; requestSerialize: (v: Req) => Buffer; responseDeserialize: (b: Buffer) => Res },
    req: Req,
  ) {
    return new Promise<Res>((resolve, reject) =>
      client.makeUnaryRequest(m.path, m.requestSerialize, m.responseDeserialize, req, (err, res) =>
        err ? reject(err) : resolve(res!),
      ),
    );
  }

  beforeAll(async () => {
    server = new AuthzServer({ authorizer: new Authorizer({ policy }), address: "127.0.0.1:0" });
    const port = await server.start();
    expect(port).toBeGreaterThan(0);
    client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  });
  afterAll(async () => {
    client.close();
    await server.stop(1_000);
  });

  it("allows a valid JWT: OK status, identity headers overwritten, credential removed, metadata", async () => {
    const token = signJwt(rsa, claims(Date.now(), { sub: "alice" }));
    const res = await call(
      check,
      checkRequest({ authorization: `Bearer ${token}`, "x-portico-consumer": "acme" }, { policy: "orders" }),
    );
    expect(res.status).toEqual({ code: 0 });
    expect(res.denied_response).toBeUndefined();
    expect(res.ok_response.headers).toEqual([
      { header: { key: "x-portico-consumer", value: "alice" }, append_action: "OVERWRITE_IF_EXISTS_OR_ADD" },
      { header: { key: "x-portico-plan", value: "default" }, append_action: "OVERWRITE_IF_EXISTS_OR_ADD" },
      { header: { key: "x-portico-provider", value: "idp" }, append_action: "OVERWRITE_IF_EXISTS_OR_ADD" },
      {
        header: { key: "x-portico-scopes", value: "orders:read profile" },
        append_action: "OVERWRITE_IF_EXISTS_OR_ADD",
      },
    ]);
    expect(res.ok_response.headers_to_remove).toEqual(["x-portico-key-id", "authorization"]);
    expect(metadata(res.dynamic_metadata)).toEqual({
      consumer: "alice",
      plan: "default",
      ip: "203.0.113.9",
      provider: "idp",
    });
  });

  it("allows an API key from Envoy's raw header_map encoding", async () => {
    const req = checkRequest({}, { policy: "orders", scopes: "" });
    const http = req.attributes.request.http as Obj;
    delete http.headers;
    http.header_map = {
      headers: [
        { key: "x-api-key", raw_value: Buffer.from("pk_live") },
        { key: ":path", raw_value: Buffer.from("/orders") },
      ],
    };
    const res = await call(check, req);
    expect(res.status).toEqual({ code: 0 });
    expect(res.ok_response.headers).toContainEqual({
      header: { key: "x-portico-key-id", value: "acme-live" },
      append_action: "OVERWRITE_IF_EXISTS_OR_ADD",
    });
    expect(metadata(res.dynamic_metadata)?.plan).toBe("gold");
  });

  it("denies a forged token: UNAUTHENTICATED, 401, WWW-Authenticate, JSON body", async () => {
    const forged = signJwt(rsa, claims(Date.now()), {
      alg: "HS256",
      secret: Buffer.from(rsa.jwk.n!, "base64url"),
    });
    const res = await call(check, checkRequest({ authorization: `Bearer ${forged}` }, { policy: "orders" }));
    expect(res.status).toEqual({ code: grpc.status.UNAUTHENTICATED, message: "invalid_token" });
    expect(res.ok_response).toBeUndefined();
    expect(res.denied_response.status).toEqual({ code: "Unauthorized" });
    expect(res.denied_response.headers).toEqual([
      {
        header: { key: "content-type", value: "application/json" },
        append_action: "OVERWRITE_IF_EXISTS_OR_ADD",
      },
      { header: { key: "cache-control", value: "no-store" }, append_action: "OVERWRITE_IF_EXISTS_OR_ADD" },
      {
        header: {
          key: "www-authenticate",
          value: 'Bearer realm="portico", error="invalid_token", ApiKey realm="portico"',
        },
        append_action: "OVERWRITE_IF_EXISTS_OR_ADD",
      },
    ]);
    expect(JSON.parse(res.denied_response.body)).toEqual({
      code: "invalid_token",
      message: "The access token is not valid.",
    });
    expect(res.dynamic_metadata).toBeUndefined();
  });

  it("denies a valid token without the scope with PERMISSION_DENIED and 403", async () => {
    const token = signJwt(rsa, claims(Date.now(), { scope: "profile" }));
    const res = await call(check, checkRequest({ authorization: `Bearer ${token}` }, { policy: "orders" }));
    expect(res.status.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(res.denied_response.status).toEqual({ code: "Forbidden" });
    expect(JSON.parse(res.denied_response.body).code).toBe("insufficient_scope");
  });

  it("lets anonymous callers through a public route with identity headers removed and anonymous metadata", async () => {
    const res = await call(
      check,
      checkRequest({ "x-portico-consumer": "acme", "x-portico-plan": "gold" }, { policy: "public" }),
    );
    expect(res.status).toEqual({ code: 0 });
    expect(res.ok_response.headers).toBeUndefined();
    expect([...res.ok_response.headers_to_remove].sort()).toEqual([
      "x-portico-consumer",
      "x-portico-key-id",
      "x-portico-plan",
      "x-portico-provider",
      "x-portico-scopes",
    ]);
    expect(metadata(res.dynamic_metadata)).toEqual({
      consumer: "anonymous",
      plan: "anonymous",
      ip: "203.0.113.9",
      provider: "anonymous",
    });
  });

  it("removes a query-parameter credential through query_parameters_to_remove", async () => {
    const local = policyOf({
      jwtProviders: [
        {
          name: "idp",
          issuer: ISSUER,
          audiences: [AUDIENCE],
          jwks: { keys: [rsa.jwk] },
          algorithms: ["RS256"],
          from: [{ query: "access_token" }],
        },
      ],
    });
    const s = new AuthzServer({ authorizer: new Authorizer({ policy: local }), address: "127.0.0.1:0" });
    const port = await s.start();
    const c = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
    try {
      const token = signJwt(rsa, claims(Date.now()));
      const res = await new Promise<Obj>((resolve, reject) =>
        c.makeUnaryRequest(
          check.path,
          check.requestSerialize,
          check.responseDeserialize,
          checkRequest({}, {}, `/orders?access_token=${token}&page=2`),
          (e, r) => (e ? reject(e) : resolve(r!)),
        ),
      );
      expect(res.status).toEqual({ code: 0 });
      expect(res.ok_response.query_parameters_to_remove).toEqual(["access_token"]);
    } finally {
      c.close();
      await s.stop(1_000);
    }
  });

  it("answers 401 without credentials and 500 for unreadable route settings, never a gRPC error", async () => {
    const none = await call(check, checkRequest({}, { policy: "orders" }));
    expect(none.denied_response.status).toEqual({ code: "Unauthorized" });
    const bad = await call(check, checkRequest({}, { policy: "orders", scope: "admin" }));
    expect(bad.status.code).toBe(grpc.status.INTERNAL);
    expect(bad.denied_response.status).toEqual({ code: "InternalServerError" });
    const empty = await call(check, {});
    expect(empty.denied_response.status).toEqual({ code: "Unauthorized" });
  });

  it("serves the standard health service: SERVING for the server and for the Authorization service", async () => {
    expect(await call(healthCheck, {})).toEqual({ status: "SERVING" });
    expect(await call(healthCheck, { service: AUTHORIZATION_SERVICE })).toEqual({ status: "SERVING" });
    await expect(call(healthCheck, { service: "nope" })).rejects.toMatchObject({
      code: grpc.status.NOT_FOUND,
    });
  });

  it("streams health changes to watchers and says NOT_SERVING when stopping", async () => {
    const s = new AuthzServer({ authorizer: new Authorizer({ policy }), address: "127.0.0.1:0" });
    const port = await s.start();
    const c = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
    const seen: string[] = [];
    const stream = c.makeServerStreamRequest(
      healthWatch.path,
      healthWatch.requestSerialize,
      healthWatch.responseDeserialize,
      {},
    );
    stream.on("data", (m: Obj) => seen.push(m.status));
    stream.on("error", () => undefined);
    const ended = new Promise<void>((resolve) => stream.on("end", resolve));
    while (seen.length === 0) await new Promise((r) => setTimeout(r, 5));
    s.health.set("NOT_SERVING");
    s.health.set("SERVING");
    while (seen.length < 3) await new Promise((r) => setTimeout(r, 5));
    await s.stop(1_000);
    await ended;
    expect(seen).toEqual(["SERVING", "NOT_SERVING", "SERVING", "NOT_SERVING"]);
    c.close();
  });
});
