import { describe, expect, it } from "vitest";
import {
  matchPath,
  parsePartTemplate,
  parsePathPattern,
  pathPatternRegex,
  renderPartTemplate,
} from "@portico/contract";

const pattern = (text: string) => {
  const p = parsePathPattern(text);
  if (!p.ok) throw new Error(p.reason);
  return p.value;
};
const template = (text: string) => {
  const t = parsePartTemplate(text);
  if (!t.ok) throw new Error(t.reason);
  return t.value;
};

describe("route path patterns", () => {
  it("matches literal and parameter segments, decoding parameters", () => {
    const p = pattern("/users/{id}/home");
    expect(p.params).toEqual(["id"]);
    expect(matchPath(p, "/users/42/home")).toEqual({ id: "42" });
    expect(matchPath(p, "/users/a%20b/home")).toEqual({ id: "a b" });
    expect(matchPath(p, "/users/42/home/x")).toBeUndefined();
    expect(matchPath(p, "/users//home")).toBeUndefined();
    expect(matchPath(p, "/users/%E0%A4%A/home")).toBeUndefined();
    expect(matchPath(pattern("/home"), "/home")).toEqual({});
    expect(matchPath(pattern("/"), "/")).toEqual({});
    expect(matchPath(pattern("/"), "/x")).toBeUndefined();
  });

  it("gives Envoy an anchored RE2 regex with one segment per parameter and escaped literals", () => {
    expect(pathPatternRegex(pattern("/users/{id}/home"))).toBe("^/users/[^/]+/home$");
    expect(pathPatternRegex(pattern("/v1.0/{a}/{b}"))).toBe("^/v1\\.0/[^/]+/[^/]+$");
    const re = new RegExp(pathPatternRegex(pattern("/v1.0/{a}")));
    expect(re.test("/v1.0/x")).toBe(true);
    expect(re.test("/v1x0/x")).toBe(false);
  });

  it("refuses what it cannot match, saying why", () => {
    const reason = (t: string) => {
      const p = parsePathPattern(t);
      return p.ok ? undefined : p.reason;
    };
    expect(reason("users")).toMatch(/start with '\/'/);
    expect(reason("/users/")).toMatch(/empty path segment/);
    expect(reason("/users/{id}/{id}")).toMatch(/appears twice/);
    expect(reason("/users/x{id}")).toMatch(/whole segment/);
    expect(reason("/users/{1d}")).toMatch(/parameter name/);
  });
});

describe("part path templates", () => {
  it("renders parameters and headers percent-encoded, so no value can add a segment or a query", () => {
    const t = template("/orders/{id}?by={header.X-Portico-Consumer}&x=1");
    expect(t.params).toEqual(["id"]);
    expect(t.headers).toEqual(["x-portico-consumer"]);
    const headers: Record<string, string> = { "x-portico-consumer": "acme&admin=1" };
    expect(renderPartTemplate(t, { id: "../7/x?y" }, (h) => headers[h])).toEqual({
      ok: true,
      path: "/orders/..%2F7%2Fx%3Fy?by=acme%26admin%3D1&x=1",
    });
  });

  it("makes no path when a header it needs is missing or empty", () => {
    const t = template("/me/{header.x-portico-consumer}");
    expect(renderPartTemplate(t, {}, () => undefined)).toEqual({
      ok: false,
      missingHeader: "x-portico-consumer",
    });
    expect(renderPartTemplate(t, {}, () => "")).toEqual({ ok: false, missingHeader: "x-portico-consumer" });
  });

  it("refuses unbalanced braces and unknown placeholders", () => {
    for (const [text, why] of [
      ["/a/{id", /without its '}'/],
      ["/a/id}", /without its '{'/],
      ["/a/{query.x}", /use \{<parameter>\} or \{header.<name>\}/],
      ["/a/{header.bad header}", /spaces/],
      ["a/{id}", /start with/],
    ] as const) {
      const t = parsePartTemplate(text);
      expect(t.ok, text).toBe(false);
      if (!t.ok) expect(t.reason, text).toMatch(why);
    }
  });
});
