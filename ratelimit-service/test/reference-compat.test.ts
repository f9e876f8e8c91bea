/**
 * Portico checked against envoyproxy/ratelimit's own documentation and tests, through real gRPC
 * (ShouldRateLimit on a running server), once per backend: memory, Redis strict and Redis
 * local-first. Each case names where it comes from: a section of the reference's README, one of
 * its Go tests (test/config/config_test.go), an example config with the integration script that
 * drives it, or, where only the code says it, the reference's source file and function.
 * The configs are in fixtures/upstream/, each file saying where it was taken from.
 *
 * Needs Envoy 1.40's API descriptors (@portico/contract): the WEEK and per-descriptor hits_addend
 * cases use fields the older Envoy API copy did not have.
 */
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startRedis, type RedisServer } from "@portico/testing";
import { createLimiter, type BackendOptions } from "../src/backend.js";
import { ConfigError } from "../src/config/errors.js";
import { buildConfig, loadConfig } from "../src/config/load.js";
import { ManualClock } from "../src/limiter/clock.js";
import type { RateLimiter } from "../src/limiter/types.js";
import { RedisBackend } from "../src/redis/backend.js";
import { parseRedisSpec } from "../src/redis/connect.js";
import {
  createRateLimitClient,
  type RateLimitClient,
  type RateLimitRequest,
  type RateLimitResponse,
} from "../src/service/codec.js";
import { UNLIMITED_REMAINING } from "../src/service/rls.js";
import { startRateLimitService, type RateLimitServer } from "../src/service/server.js";
import { DEFAULT_LIMIT_HEADERS } from "../src/service/verdict.js";
import { d, FIXTURES, req } from "./helpers.js";

const MODES = ["memory", "redis strict", "redis local-first"] as const;
type Mode = (typeof MODES)[number];

const config = loadConfig(path.join(FIXTURES, "upstream"));
/** 10 s into a minute, so minute windows have 50 s left; the clock never moves during a run. */
const START = Date.parse("2030-01-03T00:00:10Z");

/** A running service on one backend, with RateLimit-* headers on, and a twin in global shadow mode. */
interface Service {
  call(request: RateLimitRequest): Promise<RateLimitResponse>;
  callShadow(request: RateLimitRequest): Promise<RateLimitResponse>;
  stop(): Promise<void>;
}

function backendFor(mode: Mode, redisUrl: string, clock: ManualClock): BackendOptions {
  if (mode === "memory") return { kind: "memory", clock };
  const redisMode = mode === "redis strict" ? "strict" : "local-first";
  return {
    kind: "redis",
    mode: redisMode,
    connection: parseRedisSpec(redisUrl),
    clock,
    prefix: `compat-${redisMode}:`,
    // Generous: the machine is shared, and a timeout would turn a decision into a degraded one.
    timeoutMs: 1_000,
    // One instance: its share is the whole limit, so local-first decides exactly.
    instances: 1,
  };
}

async function startService(mode: Mode, redisUrl: string): Promise<Service> {
  const limiter: RateLimiter = createLimiter(backendFor(mode, redisUrl, new ManualClock(START)));
  if (limiter instanceof RedisBackend) await limiter.waitUntilUp();
  const servers: RateLimitServer[] = [
    await startRateLimitService({ config, limiter, port: 0, limitHeaders: DEFAULT_LIMIT_HEADERS }),
    await startRateLimitService({ config, limiter, port: 0, shadowMode: true }),
  ];
  const clients: RateLimitClient[] = servers.map((s) => createRateLimitClient(s.address));
  return {
    call: (r) => clients[0]!.shouldRateLimit(r),
    callShadow: (r) => clients[1]!.shouldRateLimit(r),
    stop: async () => {
      for (const c of clients) c.close();
      await Promise.all(servers.map((s) => s.stop(1_000)));
      await limiter.close();
    },
  };
}

/** The same request `n` times, one after the other; the codes in order. */
async function repeat(service: Service, request: RateLimitRequest, n: number) {
  const codes: string[] = [];
  let last!: RateLimitResponse;
  for (let i = 0; i < n; i++) {
    last = await service.call(request);
    codes.push(last.overall_code);
  }
  return { codes, last, ok: codes.filter((c) => c === "OK").length };
}

/** A request whose descriptors all take `hits` hits (the request's hits_addend). */
function hits(n: number, request: RateLimitRequest): RateLimitRequest {
  return { ...request, hits_addend: n };
}

/** The response's added headers as `name: value` lines. */
const headerLines = (r: RateLimitResponse) =>
  (r.response_headers_to_add ?? []).map((h) => `${h.key}: ${h.value}`);

const noLimit = (s: RateLimitResponse["statuses"][number] | undefined) => {
  expect(s?.code).toBe("OK");
  expect(s?.current_limit ?? undefined).toBeUndefined();
};

let redis: RedisServer;
beforeAll(async () => {
  redis = await startRedis();
}, 20_000);
afterAll(async () => {
  await redis?.stop();
});

describe.each(MODES)("reference behaviour over gRPC, %s", (mode) => {
  let svc: Service;
  beforeAll(async () => {
    svc = await startService(mode, redis.url);
  }, 20_000);
  afterAll(async () => {
    await svc?.stop();
  });

  it('README "Example 1": each exact value has its own 500 per second; a value without a rule is not limited', async () => {
    expect((await svc.call(hits(500, req("mongo_cps", d("database=users"))))).overall_code).toBe("OK");
    const refused = await svc.call(req("mongo_cps", d("database=users")));
    expect(refused.overall_code).toBe("OVER_LIMIT");
    expect(refused.statuses[0]).toMatchObject({
      code: "OVER_LIMIT",
      current_limit: { requests_per_unit: 500, unit: "SECOND" },
      limit_remaining: 0,
    });
    expect((await svc.call(req("mongo_cps", d("database=default")))).statuses[0]).toMatchObject({
      code: "OK",
      limit_remaining: 499,
    });
    noLimit((await svc.call(req("mongo_cps", d("database=other")))).statuses[0]);
  });

  it('README "Example 2": 5 marketing messages a day per number, 100 a day per number; the answer ORs the descriptors', async () => {
    const marketing = req(
      "messaging",
      d("message_type=marketing", "to_number=2061111111"),
      d("to_number=2061111111"),
    );
    const r = await repeat(svc, marketing, 6);
    expect(r.codes).toEqual(["OK", "OK", "OK", "OK", "OK", "OVER_LIMIT"]);
    expect(r.last.statuses[0]).toMatchObject({
      code: "OVER_LIMIT",
      current_limit: { requests_per_unit: 5, unit: "DAY" },
    });
    expect(r.last.statuses[1]).toMatchObject({
      code: "OK",
      current_limit: { requests_per_unit: 100, unit: "DAY" },
    });
    // Another number has its own counters.
    const other = await svc.call(req("messaging", d("message_type=marketing", "to_number=2062222222")));
    expect(other.statuses[0]).toMatchObject({ code: "OK", limit_remaining: 4 });
  });

  it('README "Example 3": the exact value beats the key-only rule, so 50.0.0.5 is blocked and others get 10 per second', async () => {
    const blocked = await svc.call(req("edge_proxy_per_ip", d("remote_address=50.0.0.5")));
    expect(blocked.overall_code).toBe("OVER_LIMIT");
    expect(blocked.statuses[0]).toMatchObject({
      current_limit: { requests_per_unit: 0 },
      limit_remaining: 0,
    });
    const other = await repeat(svc, req("edge_proxy_per_ip", d("remote_address=50.0.0.1")), 11);
    expect(other.ok).toBe(10);
  });

  it('README "Example 5": unlimited answers OK with limit_remaining 4294967295; the limited key next to it counts', async () => {
    const r = await svc.call(hits(1_000_000, req("internal", d("ldap=cn"), d("azure=app"))));
    expect(r.statuses[0]).toMatchObject({ code: "OK", limit_remaining: UNLIMITED_REMAINING });
    expect(r.statuses[1]).toMatchObject({
      code: "OVER_LIMIT",
      current_limit: { requests_per_unit: 100, unit: "MINUTE" },
    });
  });

  it('README "Example 6": user-a is in shadow mode and never refused; user-b gets 20 per second', async () => {
    const a = await svc.call(hits(11, req("example6", d("service=auth-service", "user=user-a"))));
    expect(a.overall_code).toBe("OK");
    expect(a.statuses[0]).toMatchObject({ code: "OK", limit_remaining: 0 });
    const b = await svc.call(hits(21, req("example6", d("service=auth-service", "user=user-b"))));
    expect(b.overall_code).toBe("OVER_LIMIT");
  });

  it('README "Example 7": the rule that replaces specific_limit applies alone, and the replaced limit does not count', async () => {
    const both = req(
      "example7_readme",
      d("key_1=value_1", "user=bkthomps"),
      d("key_2=value_2", "user=bkthomps"),
    );
    const r = await repeat(svc, both, 6);
    expect(r.ok).toBe(6);
    noLimit(r.last.statuses[0]);
    expect(r.last.statuses[1]).toMatchObject({
      current_limit: { requests_per_unit: 10 },
      limit_remaining: 4,
    });
    // Alone, (key_1, value_1), (user, bkthomps) still has its 5 per second untouched.
    const alone = await svc.call(req("example7_readme", d("key_1=value_1", "user=bkthomps")));
    expect(alone.statuses[0]).toMatchObject({ current_limit: { requests_per_unit: 5 }, limit_remaining: 4 });
  });

  it('README "Example 8": with detailed_metric each unspecified value still has its own 10 a minute; value1 has 20', async () => {
    expect((await svc.call(hits(11, req("example8", d("key1=unspecified_value"))))).overall_code).toBe(
      "OVER_LIMIT",
    );
    expect((await svc.call(hits(10, req("example8", d("key1=unspecified_value2"))))).overall_code).toBe("OK");
    expect((await svc.call(hits(20, req("example8", d("key1=value1"))))).overall_code).toBe("OK");
  });

  it('README "Example 9": a trailing wildcard matches by prefix, each value with its own counter', async () => {
    expect((await svc.call(hits(20, req("example9", d("key1=value1"))))).overall_code).toBe("OK");
    expect((await svc.call(req("example9", d("key1=value1")))).overall_code).toBe("OVER_LIMIT");
    expect((await svc.call(req("example9", d("key1=valueXYZ")))).statuses[0]).toMatchObject({
      code: "OK",
      current_limit: { requests_per_unit: 20, unit: "MINUTE" },
      limit_remaining: 19,
    });
    noLimit((await svc.call(req("example9", d("key1=other")))).statuses[0]);
  });

  it('README "Example 9": a middle wildcard needs the prefix and the suffix (/api/*/action)', async () => {
    for (const v of ["/api/123/action", "/api/user-id/action"]) {
      expect((await svc.call(req("example9", d(`path=${v}`)))).statuses[0]).toMatchObject({
        current_limit: { requests_per_unit: 20 },
        limit_remaining: 19,
      });
    }
    noLimit((await svc.call(req("example9", d("path=/api/123/other")))).statuses[0]);
  });

  it('README "Example 9": several wildcards each match a segment, in order (/api/*/resource/*/action)', async () => {
    for (const v of ["/api/v1/resource/123/action", "/api/v2/resource/456/action"]) {
      expect((await svc.call(req("example9", d(`route=${v}`)))).statuses[0]).toMatchObject({
        current_limit: { requests_per_unit: 20 },
      });
    }
    for (const v of ["/api/v1/resource/123/other", "/api/v1/items/123/action"]) {
      noLimit((await svc.call(req("example9", d(`route=${v}`)))).statuses[0]);
    }
  });

  it('README "Example 10": value_to_metric changes metrics only; the limit is 60 a minute per subject_id', async () => {
    const one = req("example10", d("route=api", "http_method=GET", "subject_id=123"));
    expect((await svc.call(hits(60, one))).overall_code).toBe("OK");
    expect((await svc.call(one)).overall_code).toBe("OVER_LIMIT");
    expect(
      (await svc.call(req("example10", d("route=web", "http_method=POST", "subject_id=456")))).statuses[0],
    ).toMatchObject({
      limit_remaining: 59,
    });
  });

  it('README "Example 11" and "Sharing thresholds for wildcard matches": files/* values share 10 an hour; files_no_share/* values do not', async () => {
    expect((await svc.call(hits(5, req("example11", d("files=files/a.pdf"))))).overall_code).toBe("OK");
    expect((await svc.call(hits(5, req("example11", d("files=files/b.csv"))))).overall_code).toBe("OK");
    expect((await svc.call(req("example11", d("files=files/c.txt")))).overall_code).toBe("OVER_LIMIT");
    expect(
      (await svc.call(hits(10, req("example11", d("files_no_share=files_no_share/a.pdf"))))).overall_code,
    ).toBe("OK");
    expect((await svc.call(req("example11", d("files_no_share=files_no_share/b.csv")))).overall_code).toBe(
      "OK",
    );
  });

  it('README "Example 11", share_threshold with value_to_metric: every api/* route shares the 60 a minute of a method', async () => {
    await svc.call(req("example11_metrics", d("route=api/v1", "method=GET")));
    expect(
      (await svc.call(req("example11_metrics", d("route=api/v2", "method=GET")))).statuses[0],
    ).toMatchObject({
      limit_remaining: 58,
    });
    expect(
      (await svc.call(req("example11_metrics", d("route=api/v2", "method=POST")))).statuses[0],
    ).toMatchObject({
      limit_remaining: 59,
    });
  });

  it("TestWildcardConfig: middle and multiple wildcards match exactly what the test says, and * may be empty", async () => {
    const limitOf = async (pair: string) =>
      (await svc.call(req("wildcard_test", d(pair)))).statuses[0]?.current_limit?.requests_per_unit;
    for (const pair of ["midWild=barab", "midWild=bar123b", "midWild=barb"])
      expect(await limitOf(pair)).toBe(20);
    for (const pair of ["midWild=bara", "midWild=xbarb"]) expect(await limitOf(pair)).toBeUndefined();
    for (const pair of ["multiWild=foo123bar456baz", "multiWild=foobarbaz"])
      expect(await limitOf(pair)).toBe(10);
    for (const pair of ["multiWild=foo123baz", "multiWild=bar456baz"])
      expect(await limitOf(pair)).toBeUndefined();
    // A literal value does not match by prefix; a value outside the wildcard matches nothing.
    expect(await limitOf("noWild=foo1")).toBeUndefined();
    expect(await limitOf("wild=bar")).toBeUndefined();
    expect(await limitOf("noVal=foo1")).toBe(20);
    const nested = await svc.call(req("wildcard_test", d("nestedWild=val1", "wild=goo2")));
    expect(nested.statuses[0]).toMatchObject({ current_limit: { requests_per_unit: 20 } });
  });

  it("TestWildcardConfig: without share_threshold, values matching one wildcard count apart", async () => {
    await svc.call(hits(5, req("wildcard_test", d("midWild=bar-one-b"))));
    expect((await svc.call(req("wildcard_test", d("midWild=bar-two-b")))).statuses[0]).toMatchObject({
      limit_remaining: 19,
    });
  });

  it("TestShareThreshold (explicit value precedence over wildcard): test1 has its own 50, test2, test23 and test123 share 100", async () => {
    await svc.call(req("share_threshold_test", d("file=test2")));
    await svc.call(req("share_threshold_test", d("file=test23")));
    expect((await svc.call(req("share_threshold_test", d("file=test123")))).statuses[0]).toMatchObject({
      current_limit: { requests_per_unit: 100 },
      limit_remaining: 97,
    });
    expect((await svc.call(req("share_threshold_test", d("file=test1")))).statuses[0]).toMatchObject({
      current_limit: { requests_per_unit: 50 },
      limit_remaining: 49,
    });
  });

  it("TestShareThreshold (middle and multiple wildcards): matching values share one counter; others match nothing", async () => {
    const remaining = async (pair: string) =>
      (await svc.call(req("share_threshold_test", d(pair)))).statuses[0]?.limit_remaining;
    expect(await remaining("midpath=/api/v1")).toBe(99);
    expect(await remaining("midpath=/api-beta-v1")).toBe(98);
    expect(await remaining("midpath=/apiXYZv1")).toBe(97);
    noLimit((await svc.call(req("share_threshold_test", d("midpath=/api/v2")))).statuses[0]);
    expect(await remaining("multiroute=svcAepBrpc")).toBe(49);
    expect(await remaining("multiroute=svcXXXepYYYrpc")).toBe(48);
    expect(await remaining("multiroute=svceprpc")).toBe(47);
    noLimit((await svc.call(req("share_threshold_test", d("multiroute=svcABCrpc")))).statuses[0]);
    // share_threshold with value_to_metric: still one counter (/api*v2).
    expect(await remaining("midroute=/api/v2")).toBe(79);
    expect(await remaining("midroute=/api-beta-v2")).toBe(78);
  });

  it("TestShareThreshold (nested wildcards): a shared parent level shares the child's counter; a child without it does not", async () => {
    const remaining = async (...pairs: string[]) =>
      (await svc.call(req("share_threshold_test", d(...pairs)))).statuses[0]?.limit_remaining;
    // Nested middle wildcards, both shared: t*prod then res*v2.
    expect(await remaining("tenant=t1prod", "resource=resAv2")).toBe(59);
    expect(await remaining("tenant=t99prod", "resource=resBBBv2")).toBe(58);
    // The same key at two levels, both shared.
    expect(await remaining("files=top/file1.txt", "files=nested/file1.txt")).toBe(299);
    expect(await remaining("files=top/file2.txt", "files=nested/file2.txt")).toBe(298);
    // A shared wildcard above a non-shared one: each file value has its own counter.
    expect(await remaining("path=path/foo", "file=file/doc1", "type=pdf")).toBe(119);
    expect(await remaining("path=path/bar", "file=file/doc2", "type=pdf")).toBe(119);
    expect(await remaining("path=path/baz", "file=file/doc1", "type=pdf")).toBe(118);
    // Under a plain level (nested=parent), a shared wildcard.
    expect(await remaining("nested=parent", "files=nested/a")).toBe(199);
    expect(await remaining("nested=parent", "files=nested/b")).toBe(198);
  });

  it("src/config/config_impl.go GetLimit: of several wildcards on a level the first in config order wins; exact beats them, key-only comes last", async () => {
    const limitOf = async (pair: string) =>
      (await svc.call(req("wildcard_order", d(pair)))).statuses[0]?.current_limit?.requests_per_unit;
    expect(await limitOf("path=/api/v1/action")).toBe(4);
    // /api/* is listed before /api/*/action, so it takes /api/x/action too.
    expect(await limitOf("path=/api/x/action")).toBe(2);
    expect(await limitOf("path=/other")).toBe(1);
    expect(await limitOf("route=/v1/users/7")).toBe(5);
    expect(await limitOf("route=/v2")).toBe(6);
  });

  it("examples/ratelimit/config/quota.yaml with integration-test/scripts/quota.sh: quota descriptors report their own status; the request is refused once both are over", async () => {
    const request = req("quota", d("service=service_1"), d("service=service_2"));
    const first = await svc.call(request);
    expect(first.overall_code).toBe("OK");
    const second = await svc.call(request);
    expect(second.overall_code).toBe("OK");
    expect(second.statuses.map((s) => s.code)).toEqual(["OVER_LIMIT", "OK"]);
    const third = await svc.call(request);
    expect(third.overall_code).toBe("OVER_LIMIT");
    expect(third.statuses.map((s) => s.code)).toEqual(["OVER_LIMIT", "OVER_LIMIT"]);
  });

  it("src/service/ratelimit.go shouldRateLimitWorker: quota mode next to normal limits and unlimited rules", async () => {
    // The only quota descriptor over: refused, with Retry-After.
    const only = hits(3, req("quota_mixed", d("backend=a")));
    const refused = await svc.call(only);
    expect(refused.overall_code).toBe("OVER_LIMIT");
    expect(headerLines(refused)).toContain("retry-after: 50");
    // One of two quota descriptors over: OK, each reporting its own status.
    const split = await svc.call(req("quota_mixed", d("backend=a"), d("backend=b")));
    expect(split.overall_code).toBe("OK");
    expect(split.statuses.map((s) => s.code)).toEqual(["OVER_LIMIT", "OK"]);
    // A normal descriptor over refuses, whatever the quota descriptors say.
    const normal = await svc.call(hits(4, req("quota_mixed", d("backend=c"), d("tenant=t"))));
    expect(normal.overall_code).toBe("OVER_LIMIT");
    expect(normal.statuses.map((s) => s.code)).toEqual(["OVER_LIMIT", "OVER_LIMIT"]);
    // An unlimited quota-mode rule is not a quota descriptor: the one that is over decides.
    const unlimited = await svc.call(req("quota_mixed", d("backend=a"), d("free=x")));
    expect(unlimited.overall_code).toBe("OVER_LIMIT");
  });

  it('README "Rate limit definition" with Envoy\'s RateLimitResponse.RateLimit.Unit: unit week is answered as WEEK', async () => {
    const r = await repeat(svc, req("week", d("report=monthly")), 4);
    expect(r.codes).toEqual(["OK", "OK", "OK", "OVER_LIMIT"]);
    expect(r.last.statuses[0]).toMatchObject({ current_limit: { requests_per_unit: 3, unit: "WEEK" } });
    expect(r.last.statuses[0]!.duration_until_reset!.seconds).toBeLessThanOrEqual(7 * 86_400);
  });

  it('README "Request Fields" (RateLimitRequest.hits_addend, RateLimitDescriptor.hits_addend): a descriptor\'s own hits_addend wins, 0 only asks', async () => {
    const r = await svc.call({
      domain: "internal",
      hits_addend: 3,
      descriptors: [
        d("azure=h1"),
        { ...d("azure=h2"), hits_addend: { value: 10 } },
        { ...d("azure=h3"), hits_addend: { value: 0 } },
      ],
    });
    expect(r.statuses.map((s) => s.limit_remaining)).toEqual([97, 90, 100]);
    expect((await svc.call(req("internal", d("azure=h3")))).statuses[0]!.limit_remaining).toBe(99);
  });

  it('README "Custom headers": RateLimit-Limit, -Remaining and -Reset describe the descriptor closest to its limit', async () => {
    const ok = await svc.call(
      hits(5, req("example9", d("key1=value-headers"), d("path=/api/headers/action"))),
    );
    expect(headerLines(ok)).toEqual([
      "RateLimit-Limit: 20",
      "RateLimit-Remaining: 15",
      "RateLimit-Reset: 50",
    ]);
    // Refused: the refusing descriptor, then Retry-After.
    const over = await svc.call(
      hits(16, req("example9", d("path=/api/headers/action"), d("key1=value-headers"))),
    );
    expect(over.overall_code).toBe("OVER_LIMIT");
    expect(headerLines(over)).toEqual([
      "RateLimit-Limit: 20",
      "RateLimit-Remaining: 0",
      "RateLimit-Reset: 50",
      "retry-after: 50",
    ]);
  });

  it('README "Global ShadowMode": every answer is OK, and the descriptors still say they are over', async () => {
    const r = await svc.callShadow(req("edge_proxy_per_ip", d("remote_address=50.0.0.5")));
    expect(r.overall_code).toBe("OK");
    expect(r.statuses[0]!.code).toBe("OVER_LIMIT");
  });
});

describe("reference config loading", () => {
  const issues = (files: { file: string; text: string }[], mergeDomains = false): string[] => {
    try {
      buildConfig(files, { mergeDomains });
      return [];
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      return err.issues.map((i) => i.reason);
    }
  };
  const one = (text: string) => issues([{ file: "t.yaml", text }]);

  it("TestShareThreshold's config loads, share_threshold on any wildcard; on a literal value it is refused", () => {
    expect(one("domain: d\ndescriptors: [{key: t, value: 't*prod', share_threshold: true}]")).toEqual([]);
    expect(one("domain: d\ndescriptors: [{key: a, value: x, share_threshold: true}]")[0]).toMatch(/wildcard/);
  });

  it("quota_mode is a descriptor key (examples/ratelimit/config/quota.yaml)", () => {
    expect(config.domains.get("quota")!.root.exact.size).toBe(2);
  });

  it("TestReplacesSelf and TestReplacesEmpty", () => {
    expect(
      one(
        "domain: d\ndescriptors: [{key: a, rate_limit: {name: n, unit: second, requests_per_unit: 1, replaces: [{name: n}]}}]",
      )[0],
    ).toMatch(/replaces should not contain the rule's own name/);
    expect(
      one(
        "domain: d\ndescriptors: [{key: a, rate_limit: {unit: second, requests_per_unit: 1, replaces: [{}]}}]",
      )[0],
    ).toMatch(/empty replaces entry/);
  });

  it("TestBadLimitUnit, TestUnlimitedWithRateLimitUnit and TestMisspelledKey", () => {
    expect(
      one("domain: d\ndescriptors: [{key: a, rate_limit: {unit: foo, requests_per_unit: 1}}]")[0],
    ).toMatch(/invalid rate limit unit 'foo'/);
    expect(one("domain: d\ndescriptors: [{key: a, rate_limit: {unlimited: true, unit: second}}]")[0]).toMatch(
      /should not specify rate limit unit when unlimited/,
    );
    expect(one("domain: d\ndescriptors: [{key: a, ratelimit: {unit: second}}]")[0]).toMatch(
      /unknown key 'ratelimit'/,
    );
  });

  it('TestDomainMerge and TestDuplicateKeyDomainMerge (README "File Based Configuration Loading", MERGE_DOMAIN_CONFIG)', () => {
    const key1 = {
      file: "merge_domain_key1.yaml",
      text: "domain: test-domain\ndescriptors: [{key: key1, value: value1, rate_limit: {unit: minute, requests_per_unit: 10}}]",
    };
    const key2 = {
      file: "merge_domain_key2.yaml",
      text: "domain: test-domain\ndescriptors: [{key: key2, value: value2, rate_limit: {unit: minute, requests_per_unit: 20}}]",
    };
    expect(issues([key1, key2])[0]).toMatch(/duplicate domain 'test-domain'/);
    const merged = buildConfig([key1, key2], { mergeDomains: true }).domains.get("test-domain")!;
    expect([...merged.root.exact.values()].map((n) => n.limits[0]!.requestsPerUnit)).toEqual([10, 20]);
    expect(issues([key1, key1], true)[0]).toMatch(
      /duplicate descriptor composite key 'test-domain.key1_value1'/,
    );
  });
});
