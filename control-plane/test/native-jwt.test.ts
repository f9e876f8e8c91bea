import fs from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "@portico/common";
import {
  AUDIENCE,
  ISSUER,
  JwksServer,
  makeTestPki,
  removeTestPki,
  rsaKey,
  waitFor,
  type TestPki,
} from "@portico/testing";
import { authPathOf, nativeModeProblem } from "../src/model/auth-path.js";
import type { FetchedKeys } from "../src/model/jwks.js";
import { ConfigSchema, type Config, type ConfigInput } from "../src/model/schema.js";
import { validateConfig } from "../src/model/validate.js";
import { cacheControlMaxAge, fetchJwks } from "../src/jwks/fetch.js";
import { JwksKeeper, refreshSeconds } from "../src/jwks/keeper.js";
import { routeAuthStatus } from "../src/jwks/route-status.js";
import { statusText } from "../src/cli/status.js";
import { keyWithoutKid, pinnedKeys } from "../src/translate/features/jwt-keys.js";
import { translate } from "../src/translate/translate.js";
import { TypeUrl } from "../src/xds/types.js";

const rsa = rsaKey("k1");
const { alg: _alg, kid: _kid, ...bare } = rsa.jwk;

function config(over: Partial<ConfigInput> = {}, jwt?: "auto" | "ext_authz" | "jwt_authn"): Config {
  return ConfigSchema.parse({
    gateways: [
      {
        name: "edge",
        listeners: [{ name: "http", port: 10000 }],
        extAuthz: { upstream: "ext-authz", ...(jwt ? { jwt } : {}) },
      },
    ],
    upstreams: [
      { name: "ext-authz", protocol: "grpc", endpoints: [{ host: "127.0.0.1", port: 9001 }] },
      { name: "api", endpoints: [{ host: "127.0.0.1", port: 8080 }] },
    ],
    jwtProviders: [
      {
        name: "idp",
        issuer: ISSUER,
        audiences: [AUDIENCE],
        jwks: { keys: [rsa.jwk] },
        algorithms: ["RS256"],
      },
      {
        name: "remote",
        issuer: "https://remote.test",
        audiences: [AUDIENCE],
        jwksUri: "https://remote.test/jwks.json",
        algorithms: ["RS256"],
      },
    ],
    authPolicies: [
      { name: "idp-users", accept: ["idp"] },
      { name: "remote-users", accept: ["remote"] },
      { name: "members", accept: ["apiKey", "idp"] },
    ],
    routes: [
      { name: "me", gateway: "edge", match: { path: "/me" }, upstream: "api", authPolicy: "idp-users" },
      {
        name: "remote",
        gateway: "edge",
        match: { path: "/remote" },
        upstream: "api",
        authPolicy: "remote-users",
      },
      {
        name: "members",
        gateway: "edge",
        match: { path: "/members" },
        upstream: "api",
        authPolicy: "members",
      },
      { name: "health", gateway: "edge", match: { path: "/health" }, upstream: "api" },
    ],
    ...over,
  });
}

const policy = (c: Config, name: string) => c.authPolicies.find((p) => p.name === name)!;
const keysFor = (uri: string): FetchedKeys => new Map([["remote", { uri, keys: [bare], digest: "d" }]]);

describe("which routes Envoy verifies itself", () => {
  it("takes JWT-only policies whose keys are held, and says why it leaves the others to ext-authz", () => {
    const c = config();
    const g = c.gateways[0]!;
    expect(authPathOf(c, g, policy(c, "idp-users"), undefined).kind).toBe("native");
    expect(authPathOf(c, g, undefined, undefined)).toEqual({ kind: "public" });
    expect(authPathOf(c, g, policy(c, "members"), undefined)).toMatchObject({
      kind: "ext_authz",
      reason: expect.stringMatching(/API keys/),
    });
    expect(authPathOf(c, g, policy(c, "remote-users"), undefined)).toMatchObject({
      kind: "ext_authz",
      reason: "the keys of provider remote (https://remote.test/jwks.json) are not fetched yet",
    });
    expect(authPathOf(c, g, policy(c, "remote-users"), keysFor("https://remote.test/jwks.json")).kind).toBe(
      "native",
    );
    // Keys of another URI (the provider changed since they were fetched) are not used.
    expect(authPathOf(c, g, policy(c, "remote-users"), keysFor("https://old.test/jwks.json")).kind).toBe(
      "ext_authz",
    );
    const service = config({}, "ext_authz");
    expect(authPathOf(service, service.gateways[0]!, policy(service, "idp-users"), undefined)).toMatchObject({
      kind: "ext_authz",
      reason: expect.stringMatching(/extAuthz\.jwt/),
    });
  });

  it("leaves to ext-authz the providers Envoy cannot tell apart or verify", () => {
    const twin = config({
      jwtProviders: [
        {
          name: "idp",
          issuer: ISSUER,
          audiences: [AUDIENCE],
          jwks: { keys: [rsa.jwk] },
          algorithms: ["RS256"],
        },
        {
          name: "twin",
          issuer: ISSUER,
          audiences: ["other"],
          jwks: { keys: [rsa.jwk] },
          algorithms: ["RS256"],
        },
      ],
      authPolicies: [{ name: "idp-users", accept: ["idp"] }],
      routes: [
        { name: "me", gateway: "edge", match: { path: "/me" }, upstream: "api", authPolicy: "idp-users" },
      ],
    });
    expect(authPathOf(twin, twin.gateways[0]!, policy(twin, "idp-users"), undefined)).toMatchObject({
      kind: "ext_authz",
      reason: expect.stringMatching(/share the issuer/),
    });
  });

  it("refuses at write time a JWT-only route that a jwt_authn gateway could not verify, naming why", () => {
    const input = {
      gateways: [
        {
          name: "edge",
          listeners: [{ name: "http", port: 10000 }],
          extAuthz: { upstream: "ext-authz", jwt: "jwt_authn" },
        },
      ],
      upstreams: [
        { name: "ext-authz", protocol: "grpc", endpoints: [{ host: "127.0.0.1", port: 9001 }] },
        { name: "api", endpoints: [{ host: "127.0.0.1", port: 8080 }] },
      ],
      jwtProviders: [
        {
          name: "a",
          issuer: ISSUER,
          audiences: [AUDIENCE],
          jwks: { keys: [rsa.jwk] },
          algorithms: ["RS256"],
        },
        {
          name: "b",
          issuer: ISSUER,
          audiences: [AUDIENCE],
          jwks: { keys: [rsa.jwk] },
          algorithms: ["RS256"],
        },
      ],
      authPolicies: [
        { name: "a-users", accept: ["a"] },
        { name: "mixed", accept: ["apiKey", "a"] },
      ],
      routes: [
        { name: "me", gateway: "edge", match: { path: "/me" }, upstream: "api", authPolicy: "a-users" },
        { name: "mixed", gateway: "edge", match: { path: "/mixed" }, upstream: "api", authPolicy: "mixed" },
      ],
    };
    expect(() => validateConfig(input)).toThrow(
      /routes\[0\]\.authPolicy: gateway 'edge' has Envoy verify JWT routes.*share the issuer/,
    );
    // A policy that also takes API keys is ext-authz's on any gateway; so is every route under auto.
    const c = ConfigSchema.parse(input);
    expect(nativeModeProblem(c, c.gateways[0]!, "mixed")).toBeUndefined();
    expect(() =>
      validateConfig({
        ...input,
        gateways: [{ ...input.gateways[0]!, extAuthz: { upstream: "ext-authz" } }],
      }),
    ).not.toThrow();
  });
});

describe("keys pinned for Envoy", () => {
  it("gives a key published without alg one entry per allowed algorithm, under a kid no token can name", () => {
    const pinned = pinnedKeys([bare], ["RS256", "PS256"]);
    expect(pinned.jwks.keys.map((k) => [k.kid, k.alg])).toEqual([
      [keyWithoutKid(0), "RS256"],
      [keyWithoutKid(0), "PS256"],
    ]);
    expect(keyWithoutKid(0).length).toBeGreaterThan(256);
    expect(pinned.withoutKid).toEqual(["RS256", "PS256"]);
    // A key published for RS256 verifies nothing else, whatever the provider allows.
    expect(pinnedKeys([rsa.jwk], ["RS256", "PS256", "RS512"]).jwks.keys.map((k) => k.alg)).toEqual(["RS256"]);
    // Two keys fit: a token without kid is refused, as ext-authz refuses it.
    expect(pinnedKeys([rsa.jwk, { ...rsaKey("k2").jwk }], ["RS256"]).withoutKid).toEqual([]);
    // Only the key material travels.
    expect(Object.keys(pinnedKeys([rsa.jwk], ["RS256"]).jwks.keys[0]!).sort()).toEqual([
      "alg",
      "e",
      "kid",
      "kty",
      "n",
    ]);
  });

  it("translates a provider with fetched keys into jwt_authn with them, and ext_authz off on its route", () => {
    const c = config();
    const uri = "https://remote.test/jwks.json";
    const out = translate(c, undefined, [], keysFor(uri)).get("edge")!;
    const hcm = (out.find((r) => r.typeUrl === TypeUrl.Listener)!.message as any).filter_chains[0].filters[0]
      .typed_config;
    const names = hcm.http_filters.map((f: { name: string }) => f.name);
    // No route of it reads the identity from metadata: it stays in the headers the checks set.
    expect(names.slice(1, 4)).toEqual([
      "envoy.filters.http.jwt_authn",
      "portico.jwt_checks",
      "envoy.filters.http.ext_authz",
    ]);
    const jwt = hcm.http_filters[1].typed_config;
    expect(Object.keys(jwt.providers)).toEqual(["idp", "remote"]);
    expect(JSON.parse(jwt.providers.remote.local_jwks.inline_string).keys[0]).toMatchObject({
      n: bare.n,
      alg: "RS256",
    });
    expect(jwt.providers.remote.jwt_cache_config.jwt_cache_size).toBeGreaterThan(0);
    const routes = (out.find((r) => r.typeUrl === TypeUrl.Route)!.message as any).virtual_hosts[0].routes;
    const perFilter = (name: string) =>
      routes.find((r: { name: string }) => r.name === name).typed_per_filter_config;
    expect(perFilter("remote")["envoy.filters.http.ext_authz"]).toMatchObject({ disabled: true });
    expect(perFilter("remote")["envoy.filters.http.jwt_authn"]).toMatchObject({
      requirement_name: "remote-users",
    });
    expect(perFilter("members")["portico.jwt_checks"]).toMatchObject({ disabled: true });
    expect(perFilter("members")["portico.jwt_identity"]).toMatchObject({ disabled: true });
    expect(perFilter("remote")["portico.jwt_identity"]).toBeUndefined();
    expect(perFilter("members")["envoy.filters.http.ext_authz"].check_settings).toBeDefined();
    // Without keys, the same route is ext-authz's.
    const without = translate(c).get("edge")!;
    const routes2 = (without.find((r) => r.typeUrl === TypeUrl.Route)!.message as any).virtual_hosts[0]
      .routes;
    expect(
      routes2.find((r: { name: string }) => r.name === "remote").typed_per_filter_config[
        "envoy.filters.http.ext_authz"
      ].check_settings,
    ).toBeDefined();
  });
});

describe("the identity Envoy's checks hand on", () => {
  /** The headers `portico.jwt_identity` copies into metadata when route `me` has these limits. */
  const copied = (limits: object[], gateway: object = {}) => {
    const base = config();
    const c = validateConfig({
      ...base,
      gateways: [{ ...base.gateways[0]!, rateLimit: { upstream: "ext-authz" }, ...gateway }],
      rateLimitPolicies: [{ name: "p", limits }],
      routes: base.routes.map((r) => (r.name === "me" ? { ...r, rateLimitPolicy: "p" } : r)),
    });
    const hcm = (
      translate(c)
        .get("edge")!
        .find((r) => r.typeUrl === TypeUrl.Listener)!.message as any
    ).filter_chains[0].filters[0].typed_config;
    const filter = hcm.http_filters.find((f: { name: string }) => f.name === "portico.jwt_identity");
    return (filter?.typed_config.request_rules ?? []).map((r: { header: string }) => r.header) as string[];
  };

  it("is the consumer, and the plan where the rate-limit service or a quota counts by it", () => {
    // Limits each Envoy counts read the consumer from the header the checks set: nothing is copied.
    expect(copied([{ requests: 10, per: "second", by: "consumer" }])).toEqual([]);
    // The rate-limit service is sent the plan.
    expect(copied([{ requests: 10, per: "second", by: "consumer", enforce: "service" }])).toEqual([
      "x-portico-consumer",
      "x-portico-plan",
    ]);
    // A plan's limit is the service's too.
    expect(
      copied([
        { requests: 10, per: "second", by: "consumer" },
        { requests: 50, per: "second", by: "consumer", plan: "gold" },
      ]),
    ).toEqual(["x-portico-consumer", "x-portico-plan"]);
    // A daily quota is counted from the access logs, by plan.
    expect(copied([{ requests: 1000, per: "day", by: "consumer", algorithm: "fixed_window" }])).toEqual([
      "x-portico-consumer",
      "x-portico-plan",
    ]);
  });

  it("is copied on a route that admits anonymous callers, whose limits read it where the checks file `anonymous`", () => {
    const base = config();
    const c = validateConfig({
      ...base,
      authPolicies: base.authPolicies.map((p) =>
        p.name === "idp-users" ? { ...p, allowAnonymous: true } : p,
      ),
      rateLimitPolicies: [{ name: "p", limits: [{ requests: 10, per: "second", by: "consumer" }] }],
      routes: base.routes.map((r) => (r.name === "me" ? { ...r, rateLimitPolicy: "p" } : r)),
    });
    const out = translate(c, undefined, [], keysFor("https://remote.test/jwks.json")).get("edge")!;
    const hcm = (out.find((r) => r.typeUrl === TypeUrl.Listener)!.message as any).filter_chains[0].filters[0]
      .typed_config;
    const filter = hcm.http_filters.find((f: { name: string }) => f.name === "portico.jwt_identity");
    expect(filter.typed_config.request_rules.map((r: { header: string }) => r.header)).toEqual([
      "x-portico-consumer",
    ]);
    const routes = (out.find((r) => r.typeUrl === TypeUrl.Route)!.message as any).virtual_hosts[0].routes;
    const perFilter = (name: string) =>
      routes.find((r: { name: string }) => r.name === name).typed_per_filter_config;
    // The route that copies it runs the filter; /remote, verified by Envoy for callers with tokens
    // only and without limits, keeps its identity in headers and does not.
    expect(perFilter("me")["portico.jwt_identity"]).toBeUndefined();
    expect(perFilter("remote")["portico.jwt_identity"]).toMatchObject({ disabled: true });
    // So its requests are logged by the logger that reads the consumer from the header.
    expect(hcm.access_log.map((l: { filter: object }) => Object.keys(l.filter))).toEqual([
      ["metadata_filter"],
      ["metadata_filter"],
    ]);
    const format = (i: number) => JSON.stringify(hcm.access_log[i].typed_config.log_format);
    expect(format(0)).toContain("%DYNAMIC_METADATA(envoy.filters.http.ext_authz:consumer)%");
    expect(format(1)).toContain("%REQ(X-PORTICO-CONSUMER)%");
    expect(format(1)).not.toContain("DYNAMIC_METADATA");
  });
});

describe("the headers jwt_authn reports verified tokens in", () => {
  /** The headers a listener removes as a request arrives. */
  const stripped = (c: Config) => {
    const hcm = (
      translate(c)
        .get("edge")!
        .find((r) => r.typeUrl === TypeUrl.Listener)!.message as any
    ).filter_chains[0].filters[0].typed_config;
    return (hcm.early_header_mutation_extensions ?? []).flatMap((e: any) =>
      e.typed_config.mutations.map((m: { remove: string }) => m.remove),
    ) as string[];
  };

  it("are removed on arrival on every listener, also one that trusts its peer's identity headers", () => {
    expect(stripped(config())).toEqual(expect.arrayContaining(["x-portico-consumer", "x-portico-jwt-idp"]));
    const base = config();
    const trusting = ConfigSchema.parse({
      ...base,
      gateways: [
        {
          ...base.gateways[0],
          listeners: [{ name: "http", port: 10000, address: "127.0.0.1", trustIdentityHeaders: true }],
        },
      ],
    });
    // The identity its peer sends stays; the payload of a token only jwt_authn may report.
    expect(stripped(trusting)).toEqual(["x-portico-jwt-idp"]);
  });
});

describe("the route status", () => {
  it("names each route's path, the reason when ext-authz verifies it, and the keys' state", () => {
    const c = config();
    const keeper = {
      keys: () => new Map(),
      status: () => [
        {
          provider: "remote",
          uri: "https://remote.test/jwks.json",
          state: "failing" as const,
          error: "HTTP 503",
          failures: 2,
        },
      ],
    };
    const routes = routeAuthStatus(c, keeper);
    expect(routes).toEqual([
      { route: "me", gateway: "edge", auth: "native" },
      {
        route: "remote",
        gateway: "edge",
        auth: "ext_authz",
        reason: "the keys of provider remote (https://remote.test/jwks.json) are not fetched yet: HTTP 503",
      },
      {
        route: "members",
        gateway: "edge",
        auth: "ext_authz",
        reason: "it accepts API keys, which ext-authz checks against their hashes",
      },
      { route: "health", gateway: "edge", auth: "none" },
    ]);
    const text = statusText({
      config: { revision: 1, store: "file" },
      nodes: [],
      routes,
      jwks: keeper.status(),
    });
    expect(text).toMatch(/^me\s+edge\s+native\s*$/m);
    expect(text).toMatch(/^members\s+edge\s+ext_authz\s+it accepts API keys/m);
    expect(text).not.toMatch(/^health/m);
    expect(text).toMatch(/jwks remote \(https:\/\/remote\.test\/jwks\.json\): no keys; failing: HTTP 503/);
  });
});

describe("JWKS fetched by the control plane", () => {
  let pki: TestPki;
  let server: JwksServer;
  let ca: string;

  beforeAll(async () => {
    pki = makeTestPki();
    ca = fs.readFileSync(pki.ca.cert, "utf8");
    server = await new JwksServer([rsa.jwk], pki.server).start();
  });
  afterAll(async () => {
    await server.stop();
    removeTestPki(pki);
  });

  it("fetches over HTTPS from an issuer its CA vouches for, and refuses what ext-authz refuses", async () => {
    const opts = { timeoutMs: 2_000, allowInsecureLoopback: false };
    const ok = await fetchJwks(server.jwksUri, { ...opts, ca });
    expect(ok).toMatchObject({ ok: true, keys: [expect.objectContaining({ kid: "k1" })] });
    // An unknown CA: no keys.
    expect(await fetchJwks(server.jwksUri, opts)).toMatchObject({ ok: false });
    // Plain http: only to loopback, only when the provider allows it.
    expect(await fetchJwks("http://10.1.2.3/jwks.json", opts)).toMatchObject({
      ok: false,
      error: expect.stringMatching(/https/),
    });
    expect(await fetchJwks("http://127.0.0.1:1/jwks.json", opts)).toMatchObject({
      ok: false,
      error: expect.stringMatching(/allowInsecureLoopback/),
    });
    server.keys = [{ kty: "oct", k: "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI", kid: "hs" }, rsa.jwk];
    const mixed = await fetchJwks(server.jwksUri, { ...opts, ca });
    expect(mixed).toMatchObject({ ok: true, keys: [expect.objectContaining({ kid: "k1" })] });
    expect(mixed.ok && mixed.skipped).toEqual([
      "keys[0] (kid hs): symmetric keys are accepted only inline, never from a JWKS URI",
    ]);
    server.keys = [];
    expect(await fetchJwks(server.jwksUri, { ...opts, ca })).toMatchObject({
      ok: false,
      error: expect.stringMatching(/no usable/),
    });
    server.keys = [rsa.jwk];
  });

  it("refreshes as the issuer's Cache-Control says, within bounds", () => {
    expect(cacheControlMaxAge("public, max-age=120")).toBe(120);
    expect(cacheControlMaxAge("no-cache")).toBe(0);
    expect(cacheControlMaxAge(undefined)).toBeUndefined();
    expect(refreshSeconds(120, 600)).toBe(120);
    expect(refreshSeconds(86_400, 600)).toBe(600);
    expect(refreshSeconds(0, 600)).toBe(30);
    expect(refreshSeconds(undefined, 600)).toBe(600);
    expect(refreshSeconds(0, 5)).toBe(5);
  });

  it("publishes again when the keys change, and keeps them when a refetch fails", async () => {
    let changes = 0;
    const keeper = new JwksKeeper({ log: silentLogger(), ca, onChange: () => void changes++ });
    const c = config({
      jwtProviders: [
        {
          name: "remote",
          issuer: "https://remote.test",
          audiences: [AUDIENCE],
          jwksUri: server.jwksUri,
          algorithms: ["RS256"],
        },
      ],
      authPolicies: [],
      routes: [],
    });
    try {
      keeper.track(c);
      await waitFor(() => keeper.keys().get("remote"), { what: "the keys fetched" });
      await new Promise((r) => setImmediate(r));
      expect(
        keeper
          .keys()
          .get("remote")
          ?.keys.map((k) => k.kid),
      ).toEqual(["k1"]);
      expect(changes).toBe(1);
      const held = keeper.keys();
      await keeper.refreshAll();
      await new Promise((r) => setImmediate(r));
      // Nothing changed: the same map, no publish.
      expect(keeper.keys()).toBe(held);
      expect(changes).toBe(1);
      const next = rsaKey("k2");
      server.keys = [next.jwk];
      await keeper.refreshAll();
      await new Promise((r) => setImmediate(r));
      expect(
        keeper
          .keys()
          .get("remote")
          ?.keys.map((k) => k.kid),
      ).toEqual(["k2"]);
      expect(changes).toBe(2);
      server.setHandler((_r, res) => res.writeHead(503).end());
      await keeper.refreshAll();
      expect(
        keeper
          .keys()
          .get("remote")
          ?.keys.map((k) => k.kid),
      ).toEqual(["k2"]);
      expect(keeper.status()[0]).toMatchObject({
        provider: "remote",
        state: "failing",
        keys: 1,
        error: expect.stringMatching(/503/),
      });
      // A provider removed from the config takes its keys with it.
      keeper.track(config({ jwtProviders: [], authPolicies: [], routes: [] }));
      expect(keeper.keys().size).toBe(0);
    } finally {
      keeper.stop();
    }
  });
});
