import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { silentLogger } from "@portico/common";
import {
  buildSnapshots,
  authPolicyDocument,
  validateConfig,
  authPolicyResources,
  XdsServer,
  encodeResource,
  type ConfigInput,
} from "@portico/control-plane";
import { POLICY_GROUP, messageType, type PackedAny, AuthTypeUrl, type PolicyInput } from "@portico/contract";
import { sha256Hex } from "../src/apikey/verify.js";
import { Authorizer } from "../src/authorizer.js";
import { compilePolicy, type CompiledPolicy } from "../src/policy/compile.js";
import { assembleDocument, decodeResource, partOf, type PolicyItem } from "../src/xds/resources.js";
import { XdsPolicySource, type PolicyChange } from "../src/xds/policy-source.js";
import { request, ecKey } from "@portico/testing";

const ec = ecKey("k1");

/** A config using every field that has to survive the trip, including those whose zero value matters. */
const CONFIG: ConfigInput = {
  jwtProviders: [
    {
      name: "partner-idp",
      issuer: "https://partner.test",
      allowAnyAudience: true,
      jwksUri: "http://127.0.0.1:8443/.well-known/jwks.json",
      allowInsecureLoopback: true,
      algorithms: ["RS256", "PS256"],
      from: [{ header: "X-Partner-Token" }, { query: "token" }, { cookie: "session" }],
    },
    {
      name: "idp",
      issuer: "https://idp.test",
      audiences: ["portico-api", "other"],
      jwks: { keys: [ec.jwk] },
      algorithms: ["ES256"],
      clockSkewSeconds: 0,
      jwksRefetchCooldownSeconds: 0,
      maxTokenAgeSeconds: 3600,
      requireExp: false,
      requiredClaims: ["sub", "tenant"],
      typ: "at+jwt",
      consumerClaim: "client_id",
      planClaim: "tier",
      scopesClaim: "permissions",
      jwksCacheSeconds: 120,
      jwksTimeoutMs: 500,
      maxTokenBytes: 4096,
      consumers: ["acme"],
    },
  ],
  oauthProviders: [
    {
      name: "as",
      introspectionUrl: "https://as.test/introspect",
      clientId: "portico",
      clientSecretEnv: "PORTICO_SECRET_AS",
      failureMode: "open",
      audiences: ["api"],
      issuer: "https://as.test",
      consumerField: "username",
      planField: "plan",
      negativeCacheSeconds: 0,
      cacheMaxSeconds: 60,
      consumers: ["globex"],
    },
  ],
  consumers: [
    { name: "acme", plan: "gold", scopes: ["orders:read"], metadata: { team: "payments", region: "eu" } },
    { name: "globex", disabled: true },
  ],
  apiKeys: [
    {
      name: "acme-live",
      consumer: "acme",
      sha256: sha256Hex("pk_live"),
      prefix: "pk_live",
      expiresAt: "2099-01-01T00:00:00+02:00",
      scopes: ["orders:write"],
    },
    { name: "acme-old", consumer: "acme", sha256: sha256Hex("pk_old"), revoked: true },
  ],
  authPolicies: [
    {
      name: "orders",
      accept: ["idp", "apiKey", "oauth"],
      requiredScopes: ["orders:read", "orders:list"],
      scopesMode: "any",
      requiredClaims: { tenant: ["a", "b"] },
      stripCredentials: false,
    },
    { name: "locked", accept: ["apiKey"], consumers: ["globex"] },
    { name: "public", allowAnonymous: true, accept: ["jwt"], consumers: ["acme"] },
  ],
};

/** An Any as it arrives: the encoded bytes of the snapshot, decoded as google.protobuf.Any. */
function overTheWire(typeUrl: string, name: string, message: object): PackedAny {
  const encoded = encodeResource(typeUrl, name, message);
  return messageType("google.protobuf.Any").decode(encoded.any) as unknown as PackedAny;
}

/** The static path: the same items in a policy file, listed by name as xDS assembles them. */
function staticDocument(config: ReturnType<typeof validateConfig>): PolicyInput {
  const doc = authPolicyDocument(config);
  const byName = <T extends { name: string }>(items: T[] | undefined) =>
    [...(items ?? [])].sort((a, b) => (a.name < b.name ? -1 : 1));
  return {
    jwtProviders: byName(doc.jwtProviders),
    oauthProviders: byName(doc.oauthProviders),
    consumers: byName(doc.consumers),
    apiKeys: byName(doc.apiKeys),
    authPolicies: byName(doc.authPolicies),
  };
}

function compiled(doc: unknown): CompiledPolicy {
  const r = compilePolicy(doc);
  if (!r.ok) throw new Error(JSON.stringify(r.error));
  return r.value;
}

describe("auth resources: model → proto → ext-authz policy", () => {
  it("rebuilds the document a policy file with the same items would give, field for field", () => {
    const config = validateConfig(CONFIG);
    const parts = {
      jwtProviders: new Map<string, PolicyItem>(),
      oauthProviders: new Map<string, PolicyItem>(),
      consumers: new Map<string, PolicyItem>(),
      apiKeys: new Map<string, PolicyItem>(),
      authPolicies: new Map<string, PolicyItem>(),
    };
    const resources = authPolicyResources(config);
    expect(resources).toHaveLength(10);
    for (const r of resources) {
      parts[partOf(r.typeUrl)!].set(
        r.name,
        decodeResource(r.typeUrl, r.name, overTheWire(r.typeUrl, r.name, r.message)),
      );
    }
    const viaXds = compiled(assembleDocument(parts));
    const viaFile = compiled(staticDocument(config));
    expect(viaXds.document).toEqual(viaFile.document);
    expect(viaXds.revision).toBe(viaFile.revision);

    // Values equal to proto3 defaults, which only explicit presence keeps apart from "not set".
    const idp = viaXds.jwtProviders.get("idp")!;
    expect(idp.clockSkewSeconds).toBe(0);
    expect(idp.jwksRefetchCooldownSeconds).toBe(0);
    expect(idp.requireExp).toBe(false);
    expect(viaXds.oauthProviders.get("as")!.negativeCacheSeconds).toBe(0);
    expect(viaXds.authPolicies.get("locked")!.consumers).toEqual(new Set(["globex"]));
    expect(viaXds.authPolicies.get("orders")!.consumers).toBeUndefined();
    expect(viaXds.authPolicies.get("orders")!.stripCredentials).toBe(false);
  });

  it("one resource per item, named by the item, with the portico.auth.v1 type URLs", () => {
    const resources = authPolicyResources(validateConfig(CONFIG));
    expect(resources.map((r) => `${r.typeUrl.split("/")[1]}:${r.name}`)).toEqual([
      "portico.auth.v1.JwtProvider:partner-idp",
      "portico.auth.v1.JwtProvider:idp",
      "portico.auth.v1.OAuthProvider:as",
      "portico.auth.v1.Consumer:acme",
      "portico.auth.v1.Consumer:globex",
      "portico.auth.v1.ApiKey:acme-live",
      "portico.auth.v1.ApiKey:acme-old",
      "portico.auth.v1.AuthPolicy:orders",
      "portico.auth.v1.AuthPolicy:locked",
      "portico.auth.v1.AuthPolicy:public",
    ]);
  });

  it("refuses a resource whose payload is of another type or named differently", () => {
    const consumer = overTheWire(AuthTypeUrl.Consumer, "acme", { name: "acme" });
    expect(() => decodeResource(AuthTypeUrl.ApiKey, "acme", consumer)).toThrow(
      "resource acme: a type.googleapis.com/portico.auth.v1.Consumer in a type.googleapis.com/portico.auth.v1.ApiKey response",
    );
    expect(() => decodeResource(AuthTypeUrl.Consumer, "other", consumer)).toThrow(
      "consumer other: the message is named acme",
    );
  });
});

/** Consumers, keys and a policy; no providers of either kind, so those types are empty. */
const KEYS_ONLY: ConfigInput = {
  consumers: [{ name: "acme", plan: "gold" }],
  apiKeys: [{ name: "acme-1", consumer: "acme", sha256: sha256Hex("pk_one") }],
  authPolicies: [{ name: "keys", accept: ["apiKey"] }],
};

async function until<T>(what: string, fn: () => T | undefined, timeoutMs = 5_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe.each(["delta", "sotw"] as const)("XdsPolicySource over %s", (protocol) => {
  let server: XdsServer;
  let target: string;
  let source: XdsPolicySource | undefined;
  const publish = (config: ConfigInput) =>
    server.cache.set(buildSnapshots(validateConfig(config)).get(POLICY_GROUP)!);
  const withKey = (name: string, key: string): ConfigInput => ({
    ...KEYS_ONLY,
    apiKeys: [...KEYS_ONLY.apiKeys!, { name, consumer: "acme", sha256: sha256Hex(key) }],
  });
  const keyCheck = (key: string) => request({ "x-api-key": key }, { ext: { policy: "keys" } });

  beforeEach(async () => {
    server = new XdsServer({ log: silentLogger() });
    target = `127.0.0.1:${await server.listen("127.0.0.1", 0)}`;
  });
  afterEach(async () => {
    source?.close();
    source = undefined;
    await server.close(500);
  });

  it("fails closed until the whole policy arrived (empty types included), then answers from it", async () => {
    const authorizer = new Authorizer({});
    expect((await authorizer.check(keyCheck("pk_one"))).status).toBe(503);
    publish(KEYS_ONLY);
    source = new XdsPolicySource({ target, nodeId: "authz-1", protocol, authorizer });
    const ready = new Promise((resolve) => source!.once("ready", resolve));
    await ready;
    expect(authorizer.ready).toBe(true);
    expect((await authorizer.check(keyCheck("pk_one"))).status).toBe(200);
    expect((await authorizer.check(keyCheck("pk_unknown"))).status).toBe(401);
    const node = await until("the node applied", () => {
      const n = server.fleet.get("authz-1");
      return n?.appliedRevision === server.cache.get(POLICY_GROUP)!.revision ? n : undefined;
    });
    expect(node.group).toBe(POLICY_GROUP);
  });

  it("keeps its policy while the control plane is away, and catches up after reconnecting", async () => {
    const authorizer = new Authorizer({});
    publish(KEYS_ONLY);
    source = new XdsPolicySource({ target, nodeId: "authz-4", protocol, authorizer });
    await new Promise((resolve) => source!.once("ready", resolve));
    const port = Number(target.split(":")[1]);
    await server.close(100);
    expect((await authorizer.check(keyCheck("pk_one"))).status).toBe(200);

    server = new XdsServer({ log: silentLogger() });
    await server.listen("127.0.0.1", port);
    publish(withKey("acme-2", "pk_two"));
    await until(
      "the node to reconnect and apply",
      () =>
        server.fleet.get("authz-4")?.appliedRevision === server.cache.get(POLICY_GROUP)!.revision ||
        undefined,
      10_000,
    );
    expect((await authorizer.check(keyCheck("pk_two"))).status).toBe(200);
    expect((await authorizer.check(keyCheck("pk_one"))).status).toBe(200);
  });

  it("a consumer removed with its keys in one change is applied without a NACK (referrers go first)", async () => {
    const authorizer = new Authorizer({});
    publish(withKey("acme-2", "pk_two"));
    source = new XdsPolicySource({ target, nodeId: "authz-3", protocol, authorizer });
    await new Promise((resolve) => source!.once("ready", resolve));
    const rejected: string[] = [];
    source.on("rejected", (_t, reason) => rejected.push(reason));

    publish({ consumers: [{ name: "globex" }], authPolicies: KEYS_ONLY.authPolicies });
    await until(
      "the node applied the change",
      () =>
        server.fleet.get("authz-3")?.appliedRevision === server.cache.get(POLICY_GROUP)!.revision ||
        undefined,
    );
    expect(rejected).toEqual([]);
    expect([...source.policy!.consumers.keys()]).toEqual(["globex"]);
    expect((await authorizer.check(keyCheck("pk_one"))).status).toBe(401);
  });

  it("applies a new API key, refuses a policy it cannot install and keeps the previous one", async () => {
    // No PORTICO_SECRET_AS in this environment: a provider naming it cannot be built.
    const authorizer = new Authorizer({ env: {} });
    publish(KEYS_ONLY);
    source = new XdsPolicySource({ target, nodeId: "authz-2", protocol, authorizer });
    await new Promise((resolve) => source!.once("ready", resolve));
    const changes: PolicyChange[] = [];
    source.on("installed", (_policy, change) => changes.push(change));

    publish(withKey("acme-2", "pk_two"));
    await until("the new key to be installed", () => changes.find((c) => c.typeUrl === AuthTypeUrl.ApiKey));
    expect((await authorizer.check(keyCheck("pk_two"))).status).toBe(200);
    const keys = changes.filter((c) => c.typeUrl === AuthTypeUrl.ApiKey);
    expect(keys).toHaveLength(1);
    // Delta sends the one new key; SotW the whole type.
    expect(keys[0]!.resources).toEqual(protocol === "delta" ? ["acme-2"] : ["acme-1", "acme-2"]);
    const before = authorizer.revision;

    const rejected = new Promise<[string, string]>((resolve) =>
      source!.once("rejected", (typeUrl, reason) => resolve([typeUrl, reason])),
    );
    publish({
      ...withKey("acme-2", "pk_two"),
      oauthProviders: [
        {
          name: "as",
          introspectionUrl: "https://as.test/i",
          clientId: "portico",
          clientSecretEnv: "PORTICO_SECRET_AS",
        },
      ],
    });
    const [typeUrl, reason] = await rejected;
    expect(typeUrl).toBe(AuthTypeUrl.OAuthProvider);
    expect(reason).toBe("OAuth provider as: PORTICO_SECRET_AS is not set");
    expect(authorizer.revision).toBe(before);
    expect((await authorizer.check(keyCheck("pk_two"))).status).toBe(200);
    const nack = await until(
      "the NACK in the fleet status",
      () => server.fleet.get("authz-2")?.types[AuthTypeUrl.OAuthProvider]?.lastNack,
    );
    expect(nack.message).toBe(reason);

    // The next good policy is applied again.
    publish(withKey("acme-3", "pk_three"));
    await until(
      "the node applied the good policy",
      () =>
        server.fleet.get("authz-2")?.appliedRevision === server.cache.get(POLICY_GROUP)!.revision ||
        undefined,
    );
    expect((await authorizer.check(keyCheck("pk_three"))).status).toBe(200);
    expect((await authorizer.check(keyCheck("pk_two"))).status).toBe(401);
  });
});
