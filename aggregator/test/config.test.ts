import { describe, expect, it } from "vitest";
import { compileRoutes, findRoute } from "../src/config/compile.js";
import { parseConfigText } from "../src/config/file.js";
import { compositeProblems } from "@portico/contract";
import { partsUrl, specOf } from "../src/config/xds-source.js";

const route = (extra: object = {}) => ({
  name: "home",
  match: { path: "/users/{id}/home" },
  timeoutMs: 1000,
  partsUrl: "http://127.0.0.1:10001/",
  parts: [
    { key: "profile", upstream: "users", path: "/users/{id}", timeoutMs: 400, required: true },
    { key: "orders", upstream: "orders", path: "/orders?user={id}", timeoutMs: 800 },
  ],
  ...extra,
});

describe("composite route rules", () => {
  it("accepts a valid route and fills in the defaults", () => {
    const c = compileRoutes([{ at: "routes[0]", value: route() }]);
    expect(c.ok).toBe(true);
    if (!c.ok) return;
    const r = c.value.routes.get("home")!;
    expect(r.partsUrl).toBe("http://127.0.0.1:10001");
    expect([...r.methods]).toEqual(["GET"]);
    expect(r.parts.map((p) => [p.key, p.required, p.staleMaxAgeMs])).toEqual([
      ["profile", true, undefined],
      ["orders", false, undefined],
    ]);
  });

  it("reports every problem with its field: duplicate keys, deadlines, unknown parameters", () => {
    const problems = compositeProblems(
      {
        match: { path: "/users/{id}/home" },
        timeoutMs: 500,
        parts: [
          { key: "a", path: "/a/{id}", timeoutMs: 100 },
          { key: "a", path: "/b/{user}", timeoutMs: 500 },
          { key: "c", path: "/c/{", timeoutMs: 900 },
        ],
      },
      "compositeRoutes[3]",
    );
    expect(problems).toEqual([
      { field: "compositeRoutes[3].parts[1].key", reason: "key 'a' is already used by parts[0]" },
      {
        field: "compositeRoutes[3].parts[1].timeoutMs",
        reason: "500 ms is not under the route's timeoutMs (500 ms)",
      },
      {
        field: "compositeRoutes[3].parts[1].path",
        reason: "{user} is not a parameter of the route's path '/users/{id}/home'",
      },
      {
        field: "compositeRoutes[3].parts[2].timeoutMs",
        reason: "900 ms is not under the route's timeoutMs (500 ms)",
      },
      { field: "compositeRoutes[3].parts[2].path", reason: "a '{' without its '}'" },
    ]);
  });

  it("refuses a shape error, a reserved key and two routes on one path, naming the fields", () => {
    const c = compileRoutes([
      { at: "routes[0]", value: route({ timeoutMs: "1s" }) },
      {
        at: "routes[1]",
        value: route({ parts: [{ key: "_stale", upstream: "u", path: "/", timeoutMs: 1 }] }),
      },
      { at: "routes[2]", value: route() },
      {
        at: "routes[3]",
        value: route({
          name: "other",
          match: { path: "/users/{user}/home" },
          parts: [{ key: "a", upstream: "u", path: "/a/{user}", timeoutMs: 1 }],
        }),
      },
    ]);
    expect(c.ok).toBe(false);
    if (c.ok) return;
    expect(c.problems.map((p) => p.field)).toEqual([
      "routes[0].timeoutMs",
      "routes[1].parts[0].key",
      "routes[3].match.path",
    ]);
    expect(c.problems[2]!.reason).toBe("routes[2] already serves this path");
  });

  it("finds a route by the name Envoy gives, else by path, fewest parameters first", () => {
    const c = compileRoutes([
      { at: "a", value: route({ name: "any", match: { path: "/users/{id}/{page}" } }) },
      { at: "b", value: route() },
    ]);
    if (!c.ok) throw new Error(JSON.stringify(c.problems));
    expect(findRoute(c.value, undefined, "/users/7/home")?.route.name).toBe("home");
    expect(findRoute(c.value, undefined, "/users/7/other")?.params).toEqual({ id: "7", page: "other" });
    expect(findRoute(c.value, "any", "/users/7/home")?.route.name).toBe("any");
    expect(findRoute(c.value, "nope", "/users/7/home")).toBeUndefined();
  });
});

describe("the static file", () => {
  it("reads routes sharing a partsUrl", () => {
    const c = parseConfigText(`
partsUrl: http://127.0.0.1:10001
routes:
  - name: home
    match: { path: /home, methods: [GET, HEAD] }
    timeoutMs: 300
    parts:
      - { key: me, upstream: users, path: "/me/{header.x-portico-consumer}", timeoutMs: 200, staleFallback: { maxAgeSeconds: 30 } }
`);
    if (!c.ok) throw new Error(JSON.stringify(c.problems));
    const r = c.value.routes.get("home")!;
    expect(r.partsUrl).toBe("http://127.0.0.1:10001");
    expect([...r.methods]).toEqual(["GET", "HEAD"]);
    expect(r.parts[0]!.staleMaxAgeMs).toBe(30_000);
  });

  it("names the line of a YAML error and the field of a missing partsUrl", () => {
    const bad = parseConfigText("routes: [\n");
    expect(bad.ok).toBe(false);
    if (!bad.ok) expect(bad.problems[0]!.field).toMatch(/^line \d+, column \d+$/);
    const noUrl = parseConfigText(
      "routes:\n  - { name: a, match: { path: /a }, timeoutMs: 9, parts: [{ key: a, upstream: u, path: /a, timeoutMs: 1 }] }\n",
    );
    expect(noUrl.ok).toBe(false);
    if (!noUrl.ok) expect(noUrl.problems.map((p) => p.field)).toEqual(["routes[0].partsUrl"]);
  });
});

describe("resources from the control plane", () => {
  it("become the spec the file would hold, parts reached on loopback when Envoy binds every interface", () => {
    const m = {
      name: "home",
      gateway: "edge",
      path: "/home",
      timeout_ms: 900,
      parts_address: "0.0.0.0",
      parts_port: 10001,
      parts: [
        { key: "a", upstream: "u", path: "/a", timeout_ms: 100, stale_fallback: { max_age_seconds: 5 } },
      ],
    };
    expect(specOf(m)).toEqual({
      name: "home",
      gateway: "edge",
      match: { path: "/home", methods: undefined },
      timeoutMs: 900,
      partsUrl: "http://127.0.0.1:10001",
      parts: [
        {
          key: "a",
          upstream: "u",
          path: "/a",
          method: undefined,
          timeoutMs: 100,
          required: false,
          staleFallback: { maxAgeSeconds: 5 },
        },
      ],
    });
    expect(partsUrl({ ...m, parts_address: "10.0.0.5" })).toBe("http://10.0.0.5:10001");
    expect(partsUrl(m, "envoy.internal")).toBe("http://envoy.internal:10001");
    expect(partsUrl({ ...m, parts_address: "::1" })).toBe("http://[::1]:10001");
  });
});
