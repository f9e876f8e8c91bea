/**
 * envoyproxy/ratelimit's documented examples, loaded unchanged, behave as its README describes:
 * what needs the handler's insides (a moving clock, counters, metrics) or a second config. The
 * answers themselves are checked over gRPC on every backend in reference-compat.test.ts.
 */
import path from "node:path";
import { describe, expect, it } from "vitest";
import { loadConfig } from "../src/config/load.js";
import { d, FIXTURES, memoryHandler, req, send } from "./helpers.js";

const dir = path.join(FIXTURES, "upstream");

describe("envoyproxy/ratelimit README examples", () => {
  const config = loadConfig(dir);

  it("loads every example file of the directory, and only the files at its top", () => {
    expect([...config.domains.keys()].sort()).toEqual([
      "edge_proxy_per_ip",
      "example10",
      "example11",
      "example11_metrics",
      "example6",
      "example7",
      "example7_readme",
      "example8",
      "example9",
      "internal",
      "messaging",
      "mongo_cps",
      "prefix_wildcards",
      "quota",
      "quota_mixed",
      "share_threshold_test",
      "week",
      "wildcard_order",
      "wildcard_test",
    ]);
  });

  it("Example 1: windows start on whole seconds from the epoch", async () => {
    const { handler, clock } = memoryHandler(config);
    expect((await send(handler, req("mongo_cps", d("database=users")), 501)).over).toBe(1);
    clock.advance(1_000);
    expect((await send(handler, req("mongo_cps", d("database=users")), 1)).ok).toBe(1);
  });

  it("Example 4: a request matches only rules at the level of its last entry", async () => {
    const request = req("example4", d("key=value", "subkey=subvalue"));
    const noMatch = memoryHandler(loadConfig(path.join(dir, "example4-levels", "no-match.yaml"))).handler;
    expect((await noMatch.shouldRateLimit(request)).statuses[0]).toEqual({ code: "OK", limit_remaining: 0 });
    const match = memoryHandler(loadConfig(path.join(dir, "example4-levels", "match.yaml"))).handler;
    expect((await match.shouldRateLimit(request)).statuses[0]).toMatchObject({
      code: "OK",
      current_limit: { requests_per_unit: 300, unit: "SECOND" },
      limit_remaining: 299,
    });
    // And the first-level rule does not apply to a one-entry request in the nested config.
    expect((await match.shouldRateLimit(req("example4", d("key=value")))).statuses[0]).toEqual({
      code: "OK",
      limit_remaining: 0,
    });
  });

  it("Example 5: an unlimited descriptor never touches a counter", async () => {
    const { handler, limiter } = memoryHandler(config);
    expect((await send(handler, req("internal", d("ldap=x")), 1_000)).over).toBe(0);
    expect(limiter.size()).toBe(0);
  });

  it("Example 6: shadow mode counts what it lets through over the limit", async () => {
    const { handler } = memoryHandler(config);
    await send(handler, req("example6", d("service=auth-service", "user=user-a")), 30);
    const shadow = await handler.metrics.shadowMode.get();
    expect(shadow.values.find((v) => v.labels.domain === "example6")?.value).toBe(20);
  });

  it("Example 7: a rule that replaces another drops it from the request", async () => {
    const { handler } = memoryHandler(config);
    const vip = await send(handler, req("example7", d("api=foo"), d("user=vip")), 50);
    expect(vip.over).toBe(0);
    // The replaced rule is not checked: no limit reported for its descriptor.
    expect(vip.last.statuses[0]).toEqual({ code: "OK", limit_remaining: 0 });
    expect(vip.last.statuses[1]).toMatchObject({
      current_limit: { name: "vip", requests_per_unit: 100 },
      limit_remaining: 50,
    });
    // Without the vip rule matching, "api" applies; the replaced calls above did not count on it.
    const other = await send(handler, req("example7", d("api=foo"), d("user=someone")), 11);
    expect(other.ok).toBe(10);
  });

  it("wildcards: exact beats prefix beats key-only; each value counts alone unless share_threshold", async () => {
    const { handler } = memoryHandler(config);
    expect((await send(handler, req("prefix_wildcards", d("path=/foo/exact")), 3)).ok).toBe(2);
    expect((await send(handler, req("prefix_wildcards", d("path=/foo/a")), 21)).ok).toBe(20);
    expect((await send(handler, req("prefix_wildcards", d("path=/foo/b")), 20)).ok).toBe(20);
    expect((await send(handler, req("prefix_wildcards", d("path=/bar")), 6)).ok).toBe(5);
    expect((await send(handler, req("prefix_wildcards", d("files=/shared/a")), 2)).ok).toBe(2);
    // One counter for every value under /shared/.
    const b = await send(handler, req("prefix_wildcards", d("files=/shared/b")), 2);
    expect(b.ok).toBe(1);
  });

  it("an unknown domain or no matching rule answers OK without a limit", async () => {
    const { handler } = memoryHandler(config);
    const r = await handler.shouldRateLimit(req("nope", d("a=b"), d("c=d")));
    expect(r.overall_code).toBe("OK");
    expect(r.statuses).toEqual([
      { code: "OK", limit_remaining: 0 },
      { code: "OK", limit_remaining: 0 },
    ]);
  });
});
