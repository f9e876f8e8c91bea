import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { POLICY_GROUP, AuthTypeUrl } from "@portico/contract";
import {
  Authorizer,
  AuthzServer,
  AUTHORIZATION_SERVICE,
  authTypes,
  HEALTH_SERVICE,
  healthTypes,
  method,
  XdsPolicySource,
} from "@portico/ext-authz";
import { startAdmin, waitFor, type AdminHandle } from "../harness/index.js";

type Obj = Record<string, any>;

/**
 * ext-authz receiving its policy from a real control plane over xDS, and answering real gRPC
 * Check calls: API keys made and revoked through the admin API take effect by the time the
 * write returns with ?wait=applied, and a policy ext-authz cannot use is NACKed, shown in the
 * fleet status, and leaves the previous policy serving.
 */
describe("ext-authz policy over xDS from the control plane", () => {
  const NODE = "ext-authz-it-1";
  let api: AdminHandle;
  let server: AuthzServer;
  let authorizer: Authorizer;
  let source: XdsPolicySource;
  let client: grpc.Client;
  /** Plaintext keys as the admin API showed them once. */
  const keys: Record<string, string> = {};
  const { CheckRequest, CheckResponse } = authTypes();
  const { HealthCheckRequest, HealthCheckResponse } = healthTypes();
  const checkMethod = method<Obj, Obj>(AUTHORIZATION_SERVICE, "Check", CheckRequest, CheckResponse);
  const healthMethod = method<Obj, Obj>(HEALTH_SERVICE, "Check", HealthCheckRequest, HealthCheckResponse);

  function unary(m: typeof checkMethod, req: Obj): Promise<Obj> {
    return new Promise((resolve, reject) =>
      client.makeUnaryRequest(m.path, m.requestSerialize, m.responseDeserialize, req, (err, res) =>
        err ? reject(err) : resolve(res!),
      ),
    );
  }

  /** A CheckRequest as Envoy sends it for a route whose context extensions name the policy. */
  const check = (headers: Record<string, string>, policy = "partners") =>
    unary(checkMethod, {
      attributes: {
        source: { address: { socket_address: { address: "203.0.113.7", port_value: 40000 } } },
        request: {
          http: {
            id: "r1",
            method: "GET",
            path: "/orders",
            host: "api.test",
            headers: { ":path": "/orders", ":method": "GET", ...headers },
          },
        },
        context_extensions: { policy },
      },
    });
  const health = async () => (await unary(healthMethod, { service: AUTHORIZATION_SERVICE })).status;
  const header = (res: Obj, name: string) =>
    (res.ok_response?.headers as Obj[] | undefined)?.find((h) => h.header.key === name)?.header.value;
  const findNode = async (): Promise<Obj | undefined> =>
    ((await api.call("GET", "/api/v1/status")).json.nodes as Obj[]).find((n) => n.id === NODE);
  const node = async (): Promise<Obj> => {
    const found = await findNode();
    expect(found, `node ${NODE} in /api/v1/status`).toBeDefined();
    return found!;
  };

  beforeAll(async () => {
    api = await startAdmin();
    // An empty environment: a provider whose secret variable is not set cannot be built here.
    authorizer = new Authorizer({ env: {} });
    server = new AuthzServer({ authorizer, address: "127.0.0.1:0" });
    const port = await server.start();
    client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  });

  afterAll(async () => {
    source?.close();
    client?.close();
    await server?.stop(1_000);
    await api?.stop();
  });

  it("fails closed and is NOT_SERVING until the first policy arrives over xDS", async () => {
    source = new XdsPolicySource({ target: `127.0.0.1:${api.cp.xdsPort}`, nodeId: NODE, authorizer });
    source.on("ready", () => server.health.set("SERVING"));
    // Connected, but the store is empty: nothing has been published yet.
    const connected = await waitFor(findNode, { what: "the ext-authz node in /api/v1/status" });
    expect(connected).toMatchObject({ group: POLICY_GROUP, protocol: "delta" });
    expect(connected.appliedRevision).toBeUndefined();
    expect(await health()).toBe("NOT_SERVING");
    const before = await check({ "x-api-key": "pk_anything" });
    expect(before.denied_response.status).toEqual({ code: "ServiceUnavailable" });
    expect(JSON.parse(before.denied_response.body).code).toBe("auth_unavailable");

    const policy = await api.call("PUT", "/api/v1/authPolicies/partners?wait=applied", {
      body: { accept: ["apiKey"], requiredScopes: ["orders:read"] },
    });
    expect(policy.status).toBe(201);
    expect(policy.json.rollout).toEqual({
      applied: true,
      timedOut: false,
      nodes: [{ id: NODE, group: POLICY_GROUP, state: "applied" }],
    });
    expect(await health()).toBe("SERVING");
  });

  it("an API key created with ?wait=applied is accepted by the very next Check, with identity headers", async () => {
    const consumer = await api.call("POST", "/api/v1/consumers?wait=applied", {
      body: { name: "acme", plan: "gold", scopes: ["orders:read"] },
    });
    expect(consumer.status).toBe(201);

    for (const name of ["acme-ci", "acme-ops"]) {
      const created = await api.call("POST", "/api/v1/apiKeys?wait=applied", {
        body: { name, consumer: "acme" },
      });
      expect(created.status).toBe(201);
      expect(created.headers.get("portico-applied")).toBe("true");
      // The wait covered the ext-authz node, not only Envoys.
      expect(created.json.rollout.nodes).toContainEqual({ id: NODE, group: POLICY_GROUP, state: "applied" });
      expect(created.json.key).toMatch(/^pk_/);
      keys[name] = created.json.key;
    }

    const res = await check({ "x-api-key": keys["acme-ci"]! });
    expect(res.status).toEqual({ code: grpc.status.OK });
    expect(header(res, "x-portico-consumer")).toBe("acme");
    expect(header(res, "x-portico-key-id")).toBe("acme-ci");
    expect(header(res, "x-portico-plan")).toBe("gold");
    expect(header(res, "x-portico-scopes")).toBe("orders:read");
    expect(res.ok_response.headers_to_remove).toContain("x-api-key");

    const unknown = await check({ "x-api-key": "pk_made_up" });
    expect(unknown.denied_response.status).toEqual({ code: "Unauthorized" });
  });

  it("a key revoked with ?wait=applied is refused 401 by the very next Check; the node shows the applied revision", async () => {
    const current = (await api.call("GET", "/api/v1/apiKeys/acme-ci")).json;
    const revoked = await api.call("PUT", "/api/v1/apiKeys/acme-ci?wait=applied", {
      body: { ...current, revoked: true },
    });
    expect(revoked.status).toBe(200);
    expect(revoked.json.rollout).toMatchObject({ applied: true });

    const res = await check({ "x-api-key": keys["acme-ci"]! });
    expect(res.status.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(res.denied_response.status).toEqual({ code: "Unauthorized" });
    expect(JSON.parse(res.denied_response.body).code).toBe("invalid_api_key");
    expect((await check({ "x-api-key": keys["acme-ops"]! })).status).toEqual({ code: grpc.status.OK });

    const status = await node();
    expect(status.appliedRevision).toBe(api.cp.xds.cache.get(POLICY_GROUP)!.revision);
    expect(status.appliedConfigRevision).toBe(api.cp.publisher.current!.revision);
    expect(Object.keys(status.types).sort()).toEqual(Object.values(AuthTypeUrl).sort());
  });

  it("a provider ext-authz cannot build is NACKed, shown in /status and the write's answer; the old policy keeps working", async () => {
    const revision = authorizer.revision;
    const res = await api.call("POST", "/api/v1/oauthProviders?wait=applied", {
      body: {
        name: "partner-as",
        introspectionUrl: "https://as.partner.test/introspect",
        clientId: "portico",
        clientSecretEnv: "PORTICO_SECRET_IT_UNSET",
      },
    });
    expect(res.status).toBe(201);
    expect(res.headers.get("portico-applied")).toBe("false");
    const error = "OAuth provider partner-as: PORTICO_SECRET_IT_UNSET is not set";
    expect(res.json.rollout.nodes).toContainEqual({
      id: NODE,
      group: POLICY_GROUP,
      state: "nacked",
      error,
      type: AuthTypeUrl.OAuthProvider,
    });

    const status = await node();
    expect(status.types[AuthTypeUrl.OAuthProvider].lastNack.message).toBe(error);
    expect(authorizer.revision).toBe(revision);
    expect((await check({ "x-api-key": keys["acme-ops"]! })).status).toEqual({ code: grpc.status.OK });
    expect((await check({ "x-api-key": keys["acme-ci"]! })).status.code).toBe(grpc.status.UNAUTHENTICATED);

    // Removing the provider brings the node back to an applied state.
    const removed = await api.call("DELETE", "/api/v1/oauthProviders/partner-as?wait=applied");
    expect(removed.status).toBe(200);
    expect(removed.json.rollout.nodes).toEqual([{ id: NODE, group: POLICY_GROUP, state: "applied" }]);
    expect((await node()).appliedRevision).toBe(api.cp.xds.cache.get(POLICY_GROUP)!.revision);
  });
});
