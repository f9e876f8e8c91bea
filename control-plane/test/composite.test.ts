import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { decodeMessage, unpackAny, type PackedAny, COMPOSITE_ROUTE_TYPE_URL } from "@portico/contract";
import { withPartsTokens } from "../src/model/composite.js";
import { ConfigError } from "../src/model/errors.js";
import type { ConfigInput } from "../src/model/schema.js";
import { parseConfigText, references, validateConfig } from "../src/model/validate.js";
import { buildSnapshots } from "../src/config/publish.js";
import { POLICY_GROUP, translatePolicy } from "../src/translate/policy.js";
import { translate } from "../src/translate/translate.js";
import { TypeUrl } from "../src/xds/types.js";

const golden = () =>
  parseConfigText(
    fs.readFileSync(
      path.join(path.dirname(new URL(import.meta.url).pathname), "golden", "composite.yaml"),
      "utf8",
    ),
  );

const base = (): ConfigInput => ({
  gateways: [
    {
      name: "edge",
      listeners: [{ name: "http", port: 10000 }],
      aggregator: { upstream: "agg", partsListener: { port: 10001 } },
    },
  ],
  upstreams: [
    { name: "users", endpoints: [{ host: "10.0.0.1", port: 80 }] },
    { name: "agg", endpoints: [{ host: "127.0.0.1", port: 8090 }] },
  ],
  compositeRoutes: [
    {
      name: "home",
      gateway: "edge",
      match: { path: "/users/{id}/home" },
      timeoutMs: 1000,
      parts: [{ key: "profile", upstream: "users", path: "/users/{id}", timeoutMs: 500 }],
    },
  ],
});

function problems(input: ConfigInput): { field: string; reason: string }[] {
  try {
    validateConfig(input);
  } catch (err) {
    if (err instanceof ConfigError) return err.details;
    throw err;
  }
  return [];
}

function withRoute(patch: object, gatewayPatch: object = {}): ConfigInput {
  const c = base();
  c.compositeRoutes = [{ ...c.compositeRoutes![0]!, ...patch }];
  c.gateways = [{ ...c.gateways![0]!, ...gatewayPatch }];
  return c;
}

describe("composite routes in the model", () => {
  it("accepts a valid route", () => {
    expect(problems(base())).toEqual([]);
  });

  it("reports the aggregator's rules with the model's field names", () => {
    const found = problems(
      withRoute({
        parts: [
          { key: "a", upstream: "users", path: "/users/{user}", timeoutMs: 500 },
          { key: "a", upstream: "users", path: "/x", timeoutMs: 1000 },
        ],
      }),
    );
    expect(found).toEqual([
      {
        field: "compositeRoutes[0].parts[0].path",
        reason: "{user} is not a parameter of the route's path '/users/{id}/home'",
      },
      { field: "compositeRoutes[0].parts[1].key", reason: "key 'a' is already used by parts[0]" },
      {
        field: "compositeRoutes[0].parts[1].timeoutMs",
        reason: "1000 ms is not under the route's timeoutMs (1000 ms)",
      },
    ]);
  });

  it("checks references and what the gateway must provide", () => {
    const noAggregator = base();
    delete (noAggregator.gateways![0] as { aggregator?: unknown }).aggregator;
    expect(problems(noAggregator)).toContainEqual({
      field: "compositeRoutes[0].gateway",
      reason: "gateway 'edge' has no aggregator to serve composite routes; set gateways.aggregator",
    });
    expect(
      problems(
        withRoute({ parts: [{ key: "a", upstream: "nope", path: "/a", timeoutMs: 1 }], authPolicy: "x" }),
      ),
    ).toEqual(
      expect.arrayContaining([
        { field: "compositeRoutes[0].parts[0].upstream", reason: "no upstream named 'nope'" },
        { field: "compositeRoutes[0].authPolicy", reason: "no auth policy named 'x'" },
      ]),
    );
    expect(
      problems(withRoute({}, { aggregator: { upstream: "gone", partsListener: { port: 10001 } } })),
    ).toEqual([{ field: "gateways[0].aggregator.upstream", reason: "no upstream named 'gone'" }]);
    expect(
      problems(withRoute({}, { aggregator: { upstream: "agg", partsListener: { port: 10000 } } })),
    ).toEqual([
      {
        field: "gateways[0].aggregator.partsListener.port",
        reason: "port 10000 is already used by listener 'http' of this gateway",
      },
    ]);
    expect(problems(withRoute({ listener: "admin" }))).toEqual([
      { field: "compositeRoutes[0].listener", reason: "gateway 'edge' has no listener named 'admin'" },
    ]);
  });

  it("refuses an identity header in a part's path on a route nobody authenticates", () => {
    expect(
      problems(
        withRoute({
          parts: [{ key: "me", upstream: "users", path: "/me/{header.X-Portico-Consumer}", timeoutMs: 1 }],
        }),
      ),
    ).toEqual([
      {
        field: "compositeRoutes[0].parts[0].path",
        reason: "x-portico-consumer is set only on authenticated calls; give the route an authPolicy",
      },
    ]);
  });

  it("refuses a name a route of the same gateway already has", () => {
    const c = base();
    c.routes = [{ name: "home", gateway: "edge", match: { path: "/x" }, upstream: "users" }];
    expect(problems(c)).toEqual([
      { field: "compositeRoutes[0].name", reason: "gateway 'edge' already has a route named 'home'" },
    ]);
  });

  describe("no weaker than the routes that serve its parts", () => {
    /** The base config with a route serving the part's upstream, and the policies to compare. */
    const guarded = (composite: object, route: object = {}): ConfigInput => {
      const c = withRoute(composite, { extAuthz: { upstream: "authz" }, rateLimit: { upstream: "rls" } });
      c.upstreams!.push(
        { name: "authz", protocol: "grpc", endpoints: [{ host: "127.0.0.1", port: 9191 }] },
        { name: "rls", protocol: "grpc", endpoints: [{ host: "127.0.0.1", port: 8081 }] },
      );
      c.authPolicies = [
        { name: "members", accept: ["apiKey"] },
        { name: "anyone", accept: ["apiKey"], allowAnonymous: true },
        { name: "admins", accept: ["apiKey"], requiredScopes: ["admin"] },
        { name: "admins-and-more", accept: ["apiKey"], requiredScopes: ["admin", "audit"] },
      ];
      c.rateLimitPolicies = [
        { name: "classic", limits: [{ requests: 5, per: "second", by: "consumer" }] },
        { name: "loose", limits: [{ requests: 500, per: "second", by: "consumer" }] },
      ];
      c.routes = [
        {
          name: "users",
          gateway: "edge",
          match: { pathPrefix: "/users" },
          upstream: "users",
          authPolicy: "members",
          ...route,
        },
      ];
      return c;
    };

    it("refuses a composite route that lets in callers the part's route refuses, naming both", () => {
      expect(problems(guarded({ authPolicy: "anyone" }))).toEqual([
        {
          field: "compositeRoutes[0].authPolicy",
          reason:
            "part 'profile' calls users at /users/{id}, which route 'users' serves with authPolicy " +
            "'members', and 'anyone' lets anonymous callers in; use 'members' or a stricter policy",
        },
      ]);
      expect(problems(guarded({}))[0]!.reason).toContain("and it has no authPolicy");
      expect(problems(guarded({ authPolicy: "members" }, { authPolicy: "admins" }))[0]!.reason).toContain(
        "'members' does not require all of the scopes admin",
      );
    });

    it("accepts the same policy or a stricter one, and routes that cannot serve the part", () => {
      expect(problems(guarded({ authPolicy: "members" }))).toEqual([]);
      expect(problems(guarded({ authPolicy: "admins-and-more" }, { authPolicy: "admins" }))).toEqual([]);
      expect(problems(guarded({ authPolicy: "admins" }))).toEqual([]);
      // Another upstream, or a path the part never calls.
      expect(problems(guarded({ authPolicy: "anyone" }, { upstream: "agg" }))).toEqual([]);
      expect(problems(guarded({ authPolicy: "anyone" }, { match: { pathPrefix: "/admin" } }))).toEqual([]);
      // A rewrite or a regex may serve any path: counted, the side of caution.
      expect(
        problems(
          guarded({ authPolicy: "anyone" }, { match: { pathPrefix: "/admin" }, rewrite: { prefix: "/" } }),
        ),
      ).toHaveLength(1);
    });

    it("requires the rate-limit policy of the part's route", () => {
      expect(problems(guarded({ authPolicy: "members" }, { rateLimitPolicy: "classic" }))).toEqual([
        {
          field: "compositeRoutes[0].rateLimitPolicy",
          reason:
            "part 'profile' calls users at /users/{id}, which route 'users' limits with rateLimitPolicy " +
            "'classic'; give this route the same one",
        },
      ]);
      expect(
        problems(
          guarded({ authPolicy: "members", rateLimitPolicy: "loose" }, { rateLimitPolicy: "classic" }),
        ),
      ).toHaveLength(1);
      expect(
        problems(
          guarded({ authPolicy: "members", rateLimitPolicy: "classic" }, { rateLimitPolicy: "classic" }),
        ),
      ).toEqual([]);
    });
  });

  it("keeps a gateway's parts token across writes that leave it out, and makes one when there is none", () => {
    const first = withPartsTokens(validateConfig(base()), undefined, () => "t".repeat(43));
    expect(first.gateways[0]!.aggregator!.partsToken).toBe("t".repeat(43));
    const again = withPartsTokens(validateConfig(base()), first, () => "new".repeat(15));
    expect(again.gateways[0]!.aggregator!.partsToken).toBe("t".repeat(43));
    const given = validateConfig(
      withRoute(
        {},
        { aggregator: { upstream: "agg", partsListener: { port: 10001 }, partsToken: "g".repeat(40) } },
      ),
    );
    expect(withPartsTokens(given, first, () => "x").gateways[0]!.aggregator!.partsToken).toBe("g".repeat(40));
  });

  it("counts as a user of its upstreams and gateway, so they cannot be deleted from under it", () => {
    const refs = references(validateConfig(base())).map(
      (r) => `${r.from.field} -> ${r.to.kind}/${r.to.name}`,
    );
    expect(refs).toEqual(
      expect.arrayContaining([
        "gateways[0].aggregator.upstream -> upstreams/agg",
        "compositeRoutes[0].gateway -> gateways/edge",
        "compositeRoutes[0].parts[0].upstream -> upstreams/users",
      ]),
    );
  });
});

describe("composite routes in Envoy", () => {
  it("route to the aggregator ahead of a prefix covering their path, and name themselves", () => {
    const edge = translate(golden()).get("edge")!;
    const rc = edge.find((r) => r.typeUrl === TypeUrl.Route && r.name === "edge/http")!.message as any;
    const names = rc.virtual_hosts[0].routes.map((r: any) => r.name);
    expect(names).toEqual(["dashboard", "dashboard/method-not-allowed", "home", "users"]);
    const home = rc.virtual_hosts[0].routes[2];
    expect(home.route.cluster).toBe("aggregator");
    expect(home.match.safe_regex.regex).toBe("^/users/[^/]+/home$");
    expect(home.request_headers_to_add.map((h: any) => h.header)).toEqual([
      { key: "x-portico-composite", value: "home" },
      // Overwrites any a client sent: the aggregator hands it back to the parts listener.
      { key: "x-portico-parts-token", value: "golden-parts-token-0123456789abcdef" },
    ]);
  });

  it("give each part a route on the parts listener, to its upstream's cluster, with its retries", () => {
    const edge = translate(golden()).get("edge")!;
    const listener = edge.find((r) => r.typeUrl === TypeUrl.Listener && r.name === "edge/~aggregator-parts")!;
    expect((listener.message as any).address.socket_address).toEqual({
      address: "127.0.0.1",
      port_value: 10001,
    });
    const hcm = (listener.message as any).filter_chains[0].filters[0].typed_config;
    // No authentication here: the parts token shows a call comes from the aggregator, which passes
    // on the identity ext-authz set on the client's call.
    expect(hcm.http_filters.map((f: any) => f.name)).toEqual(["envoy.filters.http.router"]);
    expect(hcm.early_header_mutation_extensions).toBeUndefined();
    const rc = edge.find((r) => r.typeUrl === TypeUrl.Route && r.name === "edge/~aggregator-parts")!
      .message as any;
    const routes = rc.virtual_hosts[0].routes;
    expect(routes.map((r: any) => r.name)).toEqual([
      "home/profile",
      "home/orders",
      "dashboard/me",
      "unknown-part",
      "not-from-aggregator",
    ]);
    const token = {
      name: "x-portico-parts-token",
      string_match: { exact: "golden-parts-token-0123456789abcdef" },
    };
    expect(routes[1].match.headers).toEqual([
      { name: "x-portico-part", string_match: { exact: "home/orders" } },
      token,
    ]);
    expect(routes[1].request_headers_to_remove).toEqual(["x-portico-part", "x-portico-parts-token"]);
    expect(routes[1].route.cluster).toBe("orders");
    expect(routes[1].route.retry_policy.num_retries).toEqual({ value: 2 });
    expect(routes[3].match.headers).toEqual([token]);
    expect(routes[3].direct_response.status).toBe(404);
    // Without the token: 403 and no upstream, whatever part or identity the call names.
    expect(routes[4].match).toEqual({ prefix: "/" });
    expect(routes[4].direct_response.status).toBe(403);
    // Part upstreams get clusters (with their outlier detection) though no plain route uses orders.
    const clusters = edge.filter((r) => r.typeUrl === TypeUrl.Cluster).map((r) => r.name);
    expect(clusters).toEqual(["aggregator", "ext-authz", "orders", "rls", "users"]);
  });

  it("send the aggregator one resource per route, and the rate limiter their policies", () => {
    const config = golden();
    const policy = translatePolicy(config);
    const composite = policy.filter((r) => r.typeUrl === COMPOSITE_ROUTE_TYPE_URL);
    expect(composite.map((r) => r.name)).toEqual(["dashboard", "home"]);
    const domain = policy.find((r) => r.name === "edge" && r.typeUrl.endsWith("RateLimitConfig"))!
      .message as any;
    expect(domain.descriptors.map((d: any) => d.value)).toEqual(["per-consumer"]);
    // And they encode: the resource the aggregator decodes is the one the model describes.
    const snapshot = buildSnapshots(config).get(POLICY_GROUP)!;
    const home = snapshot.get(COMPOSITE_ROUTE_TYPE_URL).resources.get("home")!;
    const decoded = unpackAny<any>(decodeMessage<PackedAny>("google.protobuf.Any", home.any));
    expect(decoded).toMatchObject({
      name: "home",
      gateway: "edge",
      path: "/users/{id}/home",
      methods: ["GET", "HEAD"],
      timeout_ms: 1500,
      parts_address: "127.0.0.1",
      parts_port: 10001,
    });
    expect(decoded.parts[1]).toMatchObject({ key: "orders", stale_fallback: { max_age_seconds: 60 } });
  });
});
