/**
 * envoyproxy/ratelimit's documented examples, loaded unchanged, behave as its README describes.
 */
import path from "node:path";
import { describe, expect, it } from "vitest";
import { loadConfig } from "../src/config/load.js";
import { UNLIMITED_REMAINING } from "../src/service/rls.js";
import { d, FIXTURES, memoryHandler, req, send } from "./helpers.js";

const dir = path.join(FIXTURES, "upstream");

describe("envoyproxy/ratelimit README examples", () => {
  const config = loadConfig(dir);

  it("loads every example file of the directory, and only the files at its top", () => {
    expect([...config.domains.keys()].sort()).toEqual([
      "edge_proxy_per_ip",
      "example6",
      "example7",
      "example8",
      "internal",
      "messaging",
      "mongo_cps",
    ]);
  });

  it("Example 1: each exact value has its own 500 per second", async () => {
    const { handler, clock } = memoryHandler(config);
    const users = await send(handler, req("mongo_cps", d("database=users")), 501);
    expect(users.ok).toBe(500);
    expect(users.over).toBe(1);
    expect(users.last.statuses[0]).toMatchObject({
      code: "OVER_LIMIT",
      current_limit: { requests_per_unit: 500, unit: "SECOND" },
      limit_remaining: 0,
    });
    // The other value is untouched; a value with no rule is not limited.
    expect((await send(handler, req("mongo_cps", d("database=default")), 500)).over).toBe(0);
    const other = await handler.shouldRateLimit(req("mongo_cps", d("database=other")));
    expect(other.statuses[0]).toEqual({ code: "OK", limit_remaining: 0 });
    // Windows start on whole seconds from the epoch.
    clock.advance(1_000);
    expect((await send(handler, req("mongo_cps", d("database=users")), 1)).ok).toBe(1);
  });

  it("Example 2: nested marketing limit per number, and an overall limit per number; answers are OR-ed", async () => {
    const { handler } = memoryHandler(config);
    const marketing = (n: string) =>
      req("messaging", d("message_type=marketing", `to_number=${n}`), d(`to_number=${n}`));
    const first = await send(handler, marketing("2061111111"), 6);
    expect(first.ok).toBe(5);
    expect(first.last.overall_code).toBe("OVER_LIMIT");
    expect(first.last.statuses[0]!.code).toBe("OVER_LIMIT");
    expect(first.last.statuses[1]).toMatchObject({
      code: "OK",
      current_limit: { requests_per_unit: 100, unit: "DAY" },
    });
    // Another number has its own counters.
    expect((await send(handler, marketing("2062222222"), 5)).over).toBe(0);
    // The overall 100 a day per number: 6 already counted for the first number (refused calls count).
    const plain = await send(handler, req("messaging", d("to_number=2061111111")), 95);
    expect(plain.ok).toBe(94);
    expect(plain.last.statuses[0]!.code).toBe("OVER_LIMIT");
  });

  it("Example 3: the exact value beats the key-only rule, so one IP is blocked and the others get 10 per second", async () => {
    const { handler } = memoryHandler(config);
    const blocked = await handler.shouldRateLimit(req("edge_proxy_per_ip", d("remote_address=50.0.0.5")));
    expect(blocked.overall_code).toBe("OVER_LIMIT");
    expect(blocked.statuses[0]).toMatchObject({
      current_limit: { requests_per_unit: 0 },
      limit_remaining: 0,
    });
    const other = await send(handler, req("edge_proxy_per_ip", d("remote_address=10.0.0.1")), 11);
    expect(other.ok).toBe(10);
    expect((await send(handler, req("edge_proxy_per_ip", d("remote_address=10.0.0.2")), 10)).ok).toBe(10);
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

  it("Example 5: unlimited answers OK with limit_remaining 4294967295 and never counts", async () => {
    const { handler, limiter } = memoryHandler(config);
    const r = await send(handler, req("internal", d("ldap=x")), 1_000);
    expect(r.over).toBe(0);
    expect(r.last.statuses[0]).toEqual({ code: "OK", limit_remaining: UNLIMITED_REMAINING });
    expect(limiter.size()).toBe(0);
    const azure = await send(handler, req("internal", d("azure=y")), 101);
    expect(azure.ok).toBe(100);
  });

  it("Example 6: shadow mode counts and allows; the other user is limited", async () => {
    const { handler } = memoryHandler(config);
    const a = await send(handler, req("example6", d("service=auth-service", "user=user-a")), 30);
    expect(a.over).toBe(0);
    // Reported over the limit, answered OK.
    expect(a.last.statuses[0]).toMatchObject({ code: "OK", limit_remaining: 0 });
    const shadow = await handler.metrics.shadowMode.get();
    expect(shadow.values.find((v) => v.labels.domain === "example6")?.value).toBe(20);
    const b = await send(handler, req("example6", d("service=auth-service", "user=user-b")), 21);
    expect(b.ok).toBe(20);
    expect(b.last.overall_code).toBe("OVER_LIMIT");
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
    expect((await send(handler, req("example8", d("path=/foo/exact")), 3)).ok).toBe(2);
    expect((await send(handler, req("example8", d("path=/foo/a")), 21)).ok).toBe(20);
    expect((await send(handler, req("example8", d("path=/foo/b")), 20)).ok).toBe(20);
    expect((await send(handler, req("example8", d("path=/bar")), 6)).ok).toBe(5);
    expect((await send(handler, req("example8", d("files=/shared/a")), 2)).ok).toBe(2);
    // One counter for every value under /shared/.
    const b = await send(handler, req("example8", d("files=/shared/b")), 2);
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
