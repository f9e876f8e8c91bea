import { describe, expect, it } from "vitest";
import { ConfigError } from "../src/model/errors.js";
import { regexLiteral, shadows } from "../src/model/route-order.js";
import type { ConfigInput } from "../src/model/schema.js";
import { configWarnings, validateConfig } from "../src/model/validate.js";
import { translate } from "../src/translate/translate.js";
import { TypeUrl } from "../src/xds/types.js";

type RouteInput = NonNullable<ConfigInput["routes"]>[number];

function configOf(routes: Partial<RouteInput>[]): ConfigInput {
  return {
    gateways: [
      {
        name: "edge",
        listeners: [
          { name: "http", port: 10000 },
          { name: "admin", port: 10001 },
        ],
      },
    ],
    upstreams: [{ name: "u", endpoints: [{ host: "127.0.0.1", port: 8080 }] }],
    routes: routes.map((r) => ({ gateway: "edge", upstream: "u", ...r }) as RouteInput),
  };
}

/** The names of the catch-all virtual host's routes, guards left out, as Envoy tries them. */
function order(routes: Partial<RouteInput>[]): string[] {
  const rc = translate(validateConfig(configOf(routes)))
    .get("edge")!
    .find((r) => r.typeUrl === TypeUrl.Route)!.message as { virtual_hosts: { routes: { name: string }[] }[] };
  return rc.virtual_hosts
    .at(-1)!
    .routes.map((r) => r.name)
    .filter((n) => !n.includes("/"));
}

function refusal(routes: Partial<RouteInput>[]): { field: string; reason: string }[] {
  try {
    validateConfig(configOf(routes));
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).details;
  }
  throw new Error("expected the config to be refused");
}

const v2 = { name: "x-version", exact: "v2" };

describe("route order", () => {
  it("puts a route with a header condition before the plain route of the same path, whatever the order of creation", () => {
    expect(
      order([
        { name: "hv", match: { pathPrefix: "/hv" } },
        { name: "hv-v2", match: { pathPrefix: "/hv", headers: [v2] } },
      ]),
    ).toEqual(["hv-v2", "hv"]);
  });

  it("orders exact paths, longer prefixes, regexes; more conditions first; then priority, then creation", () => {
    expect(
      order([
        { name: "regex", match: { pathRegex: "/r/[0-9]+" } },
        { name: "prefix-a", match: { pathPrefix: "/a" } },
        { name: "prefix-a-get", match: { pathPrefix: "/a", methods: ["GET"] } },
        { name: "prefix-a-get-v2", match: { pathPrefix: "/a", methods: ["GET"], headers: [v2] } },
        { name: "prefix-ab", match: { pathPrefix: "/a/b" } },
        { name: "exact", match: { path: "/a/b/c" } },
        { name: "q-low", match: { pathPrefix: "/q", query: [{ name: "x", present: true }] } },
        { name: "q-high", match: { pathPrefix: "/q", headers: [v2] }, priority: 5 },
      ]),
    ).toEqual([
      "exact",
      "prefix-ab",
      "prefix-a-get-v2",
      "q-high",
      "prefix-a-get",
      "q-low",
      "prefix-a",
      "regex",
    ]);
  });

  it("refuses a route another one makes unreachable, naming both", () => {
    expect(
      refusal([
        { name: "hv", match: { pathPrefix: "/hv" } },
        { name: "hv-again", match: { pathPrefix: "/hv" } },
      ]),
    ).toEqual([
      {
        field: "routes[1].match",
        reason:
          "route 'hv-again' is never reached: route 'hv' (pathPrefix /hv) matches every request it matches and is tried first",
      },
    ]);
    // A regex under a prefix route with no conditions: the prefix ranks first and takes it all.
    expect(
      refusal([
        { name: "orders", match: { pathPrefix: "/orders" } },
        { name: "order-by-id", match: { pathRegex: "^/orders/[0-9]+$", methods: ["GET"] } },
      ])[0]!.reason,
    ).toMatch(/^route 'order-by-id' is never reached: route 'orders' \(pathPrefix \/orders\)/);
    // The same conditions on the same exact path, in another order.
    expect(
      refusal([
        { name: "a", match: { path: "/a", headers: [v2, { name: "x-b", present: true }] } },
        { name: "b", match: { path: "/a", headers: [{ name: "x-b", present: true }, v2] } },
      ]),
    ).toHaveLength(1);
  });

  it("accepts routes that only seem to overlap", () => {
    const ok = [
      // Another method, another exact value of the same header, a longer prefix, another listener.
      [
        { name: "get", match: { path: "/a", methods: ["GET"] as const } },
        { name: "post", match: { path: "/a", methods: ["POST"] as const } },
      ],
      [
        { name: "v1", match: { pathPrefix: "/a", headers: [{ name: "x-version", exact: "v1" }] } },
        { name: "v2", match: { pathPrefix: "/a", headers: [v2] } },
      ],
      [
        { name: "short", match: { pathPrefix: "/a" } },
        { name: "long", match: { pathPrefix: "/a/b" } },
      ],
      [
        { name: "http", listener: "http", match: { pathPrefix: "/a" } },
        { name: "admin", listener: "admin", match: { pathPrefix: "/a" } },
      ],
      // The regex's paths do not all start with the prefix.
      [
        { name: "orders", match: { pathPrefix: "/orders" } },
        { name: "either", match: { pathRegex: "/orders/1|/users/1" } },
      ],
    ] as Partial<RouteInput>[][];
    for (const routes of ok) {
      const config = validateConfig(configOf(routes));
      expect(configWarnings(config), JSON.stringify(routes)).toEqual([]);
    }
  });

  it("warns where another route takes only part of a route's requests", () => {
    const tie = configWarnings(
      validateConfig(
        configOf([
          { name: "hv-v2", match: { pathPrefix: "/hv", headers: [v2] } },
          { name: "hv-beta", match: { pathPrefix: "/hv", headers: [{ name: "x-beta", present: true }] } },
        ]),
      ),
    );
    expect(tie).toEqual([
      {
        field: "routes[1].match",
        reason:
          "requests that match both route 'hv-v2' and route 'hv-beta' go to 'hv-v2', which was created first; give one of them a higher priority to choose",
        about: [
          { kind: "routes", name: "hv-beta" },
          { kind: "routes", name: "hv-v2" },
        ],
      },
    ]);
    // A priority settles the tie: no warning.
    expect(
      configWarnings(
        validateConfig(
          configOf([
            { name: "hv-v2", match: { pathPrefix: "/hv", headers: [v2] } },
            {
              name: "hv-beta",
              match: { pathPrefix: "/hv", headers: [{ name: "x-beta", present: true }] },
              priority: 1,
            },
          ]),
        ),
      ),
    ).toEqual([]);
    // Shadowed on one listener only: reachable on the other.
    const scoped = shadows(
      validateConfig(
        configOf([
          { name: "admin-only", listener: "admin", match: { pathPrefix: "/a" } },
          { name: "everywhere", match: { pathPrefix: "/a" } },
        ]),
      ),
    );
    expect(scoped.map((s) => [s.full, s.reason])).toEqual([
      [
        false,
        "route 'everywhere' is never reached on listener admin: route 'admin-only' (pathPrefix /a) matches every request it matches and is tried first",
      ],
    ]);
  });

  it("reads the literal start of a regex", () => {
    expect(regexLiteral("^/orders/[0-9]+$")).toEqual({ prefix: "/orders/", exact: false });
    expect(regexLiteral("/health")).toEqual({ prefix: "/health", exact: true });
    expect(regexLiteral("/items?")).toEqual({ prefix: "/item", exact: false });
    expect(regexLiteral("/v1\\.2/x")).toEqual({ prefix: "/v1.2/x", exact: true });
    expect(regexLiteral("/a/(b|c)")).toEqual({ prefix: "/a/", exact: false });
    expect(regexLiteral("/a|/b")).toEqual({ prefix: "", exact: false });
    expect(regexLiteral("/a\\d")).toEqual({ prefix: "/a", exact: false });
  });
});
