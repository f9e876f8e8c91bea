import { execFile } from "node:child_process";
import { EventEmitter } from "node:events";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { randomUUID } from "node:crypto";
import { promisify } from "node:util";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "@portico/common";
import { encodeMessage, loadProtoRoot } from "@portico/contract";
import { findEnvoy } from "@portico/envoy";
import { startRedis, type RedisServer } from "@portico/testing";
import { buildSnapshots, Publisher } from "../src/config/publish.js";
import { ConfigError } from "../src/model/errors.js";
import { enforcedBy } from "../src/model/ratelimit-enforcement.js";
import type { Config, ConfigInput } from "../src/model/schema.js";
import { policyCounters, quotaOf, subjectOf, type QuotaDeny } from "../src/model/usage-quota.js";
import { parseConfigText, validateConfig } from "../src/model/validate.js";
import { decodeLogMessage, metadataString } from "../src/quota/access-log.js";
import { MemoryLedger } from "../src/quota/memory-ledger.js";
import { UsageCounting } from "../src/quota/usage-counter.js";
import { RedisStore } from "../src/store/redis-store.js";
import { denyScript, NO_DENIES } from "../src/translate/features/quota-lua.js";
import { QUOTA_FILTER, usageRoutes } from "../src/translate/features/quota.js";
import { staticBootstrap } from "../src/translate/static-bootstrap.js";
import { translate } from "../src/translate/translate.js";
import { SnapshotCache } from "../src/xds/cache.js";
import { TypeUrl } from "../src/xds/types.js";
import { expectGolden, GOLDEN_DIR } from "./translate/golden.js";

const run = promisify(execFile);
const dir = path.join(GOLDEN_DIR, "quota");
const fixture = () =>
  parseConfigText(fs.readFileSync(path.join(GOLDEN_DIR, "features", "quota.yaml"), "utf8"));
type Limit = NonNullable<NonNullable<ConfigInput["rateLimitPolicies"]>[number]["limits"]>[number];

/** One gateway (with a rate-limit service unless told), one route with a policy of these limits. */
function config(limits: Limit[], policy: object = {}, rateLimitService = true): Config {
  return validateConfig({
    gateways: [
      {
        name: "edge",
        listeners: [{ name: "http", port: 10000 }],
        ...(rateLimitService ? { rateLimit: { upstream: "rls" } } : {}),
      },
    ],
    upstreams: [
      { name: "app", endpoints: [{ host: "127.0.0.1", port: 8080 }] },
      { name: "rls", protocol: "grpc", endpoints: [{ host: "127.0.0.1", port: 8081 }] },
    ],
    rateLimitPolicies: [{ name: "p", limits, ...policy }],
    routes: [
      { name: "r", gateway: "edge", match: { pathPrefix: "/" }, upstream: "app", rateLimitPolicy: "p" },
    ],
  });
}

function problems(limits: Limit[], rateLimitService = true): { field: string; reason: string }[] {
  try {
    config(limits, {}, rateLimitService);
    return [];
  } catch (err) {
    if (err instanceof ConfigError) return err.details;
    throw err;
  }
}

const enforcers = (limits: Limit[], policy: object = {}) => {
  const p = config(limits, policy).rateLimitPolicies[0]!;
  return p.limits.map((l) => enforcedBy(l, p));
};

const DAY = 86_400_000;
/** Noon UTC on a fixed day, the clock of most tests below. */
const NOON = Date.parse("2030-03-14T12:00:00Z");
const MIDNIGHT = Date.parse("2030-03-15T00:00:00Z");

describe("usage-counted quotas: who counts", () => {
  it("counts calendar quotas by consumer or address from access logs by default, the rest as before", () => {
    expect(
      enforcers([
        { requests: 1000, per: "day" },
        { requests: 100_000, per: "month", by: "ip" },
        { requests: 50, per: "week", by: "ip", callers: "anonymous" },
        { requests: 9, per: "year", callers: "identified" },
        { requests: 10, per: "second" },
        { requests: 1000, per: "hour" },
        { requests: 500, per: "day", by: "route" },
        { requests: 500, per: "day", by: "ip", callers: "identified" },
        { requests: 500, per: "day", algorithm: "sliding_window", callers: "identified" },
        { requests: 7, per: "year", by: "ip", enforce: "service" },
      ]),
    ).toEqual([
      "usage",
      "usage",
      "usage",
      "usage",
      "envoy",
      "service",
      "service",
      "service",
      "service",
      "service",
    ]);
    expect(enforcers([{ requests: 10, per: "day", shadow: true }])).toEqual(["service"]);
    expect(enforcers([{ requests: 10, per: "day" }], { shadow: true })).toEqual(["service"]);
  });

  it("counts a plan's quota where the quota it replaces is counted, and both with the service when one says so", () => {
    expect(
      enforcers([
        { requests: 1000, per: "day" },
        { requests: 50_000, per: "day", plan: "gold" },
      ]),
    ).toEqual(["usage", "usage"]);
    expect(
      enforcers([
        { requests: 1000, per: "day" },
        { requests: 50_000, per: "day", plan: "gold", enforce: "service" },
      ]),
    ).toEqual(["service", "service"]);
  });

  it("refuses `enforce: usage` where the control plane cannot count as the limit says", () => {
    expect(problems([{ requests: 10, per: "minute", enforce: "usage" }])).toEqual([
      {
        field: "rateLimitPolicies[0].limits[0].enforce",
        reason:
          "usage counting is for calendar quotas (per day, week, month or year, fixed_window): use enforce: service",
      },
    ]);
    expect(problems([{ requests: 10, per: "day", by: "route", enforce: "usage" }])[0]?.reason).toMatch(
      /route-wide quota/,
    );
    expect(problems([{ requests: 10, per: "day", enforce: "usage" }])).toEqual([]);
  });

  it("needs no rate-limit service for quotas the control plane counts", () => {
    expect(() => config([{ requests: 10, per: "day" }], {}, false)).not.toThrow();
    expect(problems([{ requests: 10, per: "day", enforce: "service" }], false)).toEqual([
      {
        field: "routes[0].rateLimitPolicy",
        reason: "gateway 'edge' has no rateLimit service to enforce it; set gateways.rateLimit",
      },
    ]);
  });
});

describe("usage-counted quotas: counters and subjects", () => {
  it("keeps one counter per kind of subject and period, a plan's quota beside the general one", () => {
    const p = fixture().rateLimitPolicies[0]!;
    const shown = policyCounters(p).map((c) => ({ ...c, plans: Object.fromEntries(c.plans) }));
    expect(shown).toEqual([
      {
        policy: "daily",
        id: "anonymous|calendar:day:Europe/Paris",
        kind: "anonymous",
        unit: "day",
        timeZone: "Europe/Paris",
        requests: 1000,
        plans: {},
      },
      {
        policy: "daily",
        id: "consumer|calendar:day:Europe/Paris",
        kind: "consumer",
        unit: "day",
        timeZone: "Europe/Paris",
        requests: 1000,
        plans: { gold: 50_000 },
      },
      {
        policy: "daily",
        id: "ip|calendar:month:Europe/Paris",
        kind: "ip",
        unit: "month",
        timeZone: "Europe/Paris",
        requests: 100_000,
        plans: {},
      },
    ]);
    const [anonymous, consumer, ip] = policyCounters(p);
    expect(subjectOf(consumer!.kind, "acme", "10.0.0.1")).toBe("c:acme");
    expect(subjectOf(consumer!.kind, "anonymous", "10.0.0.1")).toBeUndefined();
    expect(subjectOf(anonymous!.kind, "anonymous", "10.0.0.1")).toBe("a:10.0.0.1");
    expect(subjectOf(anonymous!.kind, "acme", "10.0.0.1")).toBeUndefined();
    expect(subjectOf(ip!.kind, "acme", "::1")).toBe("i:::1");
    expect([quotaOf(consumer!, "gold"), quotaOf(consumer!, "free"), quotaOf(consumer!, undefined)]).toEqual([
      50_000, 1000, 1000,
    ]);
  });

  it("merges quotas of one period on the same subjects: the smallest decides", () => {
    const p = config([
      { requests: 300, per: "day" },
      { requests: 200, per: "day", callers: "identified" },
      { requests: 100, per: "day", by: "ip", callers: "anonymous" },
    ]).rateLimitPolicies[0]!;
    expect(policyCounters(p).map((c) => [c.id, c.requests])).toEqual([
      ["anonymous|calendar:day:UTC", 100],
      ["consumer|calendar:day:UTC", 200],
    ]);
  });
});

/** A StreamAccessLogsMessage as Envoy writes it, encoded with Envoy's own schema. */
const alsRoot = loadProtoRoot(["envoy/service/accesslog/v3/als.proto"]);
function logMessage(
  entries: { route: string; address: string; consumer?: string; plan?: string }[],
  node?: { id: string; cluster: string },
): Buffer {
  const type = alsRoot.lookupType("envoy.service.accesslog.v3.StreamAccessLogsMessage");
  const value = {
    ...(node ? { identifier: { node, log_name: "portico.usage" } } : {}),
    http_logs: {
      log_entry: entries.map((e) => ({
        common_properties: {
          downstream_remote_address: { socket_address: { address: e.address, port_value: 40_000 } },
          start_time: { seconds: 1_900_000_000 },
          upstream_cluster: "app",
          route_name: e.route,
          ...(e.consumer
            ? {
                metadata: {
                  filter_metadata: {
                    "envoy.filters.http.ext_authz": {
                      fields: {
                        // google.protobuf's own types keep protobufjs's camelCase names.
                        consumer: { stringValue: e.consumer },
                        ...(e.plan ? { plan: { stringValue: e.plan } } : {}),
                        scopes: { listValue: { values: [{ stringValue: "orders:read" }] } },
                      },
                    },
                    other: { fields: { consumer: { stringValue: "not this one" } } },
                  },
                },
              }
            : {}),
        },
        request: { path: "/orders", request_headers_bytes: 120 },
        response: { response_code: { value: 200 }, response_code_details: "via_upstream" },
      })),
    },
  };
  return Buffer.from(type.encode(type.fromObject(value)).finish());
}

describe("the access log stream, read cheaply", () => {
  it("reads the node, and each entry's route, address and consumer, skipping the rest", () => {
    const msg = decodeLogMessage(
      logMessage(
        [
          { route: "orders", address: "10.0.0.7", consumer: "acme", plan: "gold" },
          { route: "search", address: "::1" },
        ],
        { id: "edge-1", cluster: "edge" },
      ),
    );
    expect(msg.node).toEqual({ id: "edge-1", cluster: "edge" });
    expect(msg.entries.map((e) => [e.route, e.address])).toEqual([
      ["orders", "10.0.0.7"],
      ["search", "::1"],
    ]);
    const key = (field: string) => ({ key: "envoy.filters.http.ext_authz", path: [{ key: field }] });
    expect(metadataString(msg.entries[0]!.metadata, key("consumer"))).toBe("acme");
    expect(metadataString(msg.entries[0]!.metadata, key("plan"))).toBe("gold");
    expect(metadataString(msg.entries[0]!.metadata, key("scopes"))).toBeUndefined();
    expect(metadataString(msg.entries[0]!.metadata, key("provider"))).toBeUndefined();
    expect(metadataString(msg.entries[1]!.metadata, key("consumer"))).toBeUndefined();
    expect(decodeLogMessage(logMessage([{ route: "orders", address: "10.0.0.8" }])).node).toBeUndefined();
  });
});

describe("the deny filter's config", () => {
  const denies: QuotaDeny[] = [
    { policy: "daily", subject: "c:acme", until: MIDNIGHT - 3_600_000, limit: 1000, unit: "day" },
    { policy: "daily", subject: "a:10.0.0.9", until: MIDNIGHT - 3_600_000, limit: 1000, unit: "day" },
    { policy: "daily", subject: 'i:"odd"\\addr', until: MIDNIGHT + 30 * DAY, limit: 100_000, unit: "month" },
    { policy: "elsewhere", subject: "c:acme", until: MIDNIGHT, limit: 5, unit: "day" },
  ];

  it("is a Lua table of the denied subjects by policy and of the routes they concern, one resource by ECDS", () => {
    const edge = translate(fixture(), undefined, denies).get("edge")!;
    const ecds = edge.filter((r) => r.typeUrl === TypeUrl.ExtensionConfig);
    expect(ecds.map((r) => r.name)).toEqual([QUOTA_FILTER]);
    expectGolden(dir, "denies", ecds[0]!.message);
    const script = (ecds[0]!.message as any).typed_config.default_source_code.inline_string as string;
    // Only the gateway's policies; the routes of other policies are not looked up at all.
    expect(script).not.toContain("elsewhere");
    expect(script).toContain('["orders"]={"daily","envoy.filters.http.ext_authz","consumer"}');
  });

  it("carries the X-RateLimit headers on its refusals unless the gateway says off", () => {
    const script = (cfg: Config) =>
      (
        translate(cfg, undefined, denies)
          .get("edge")!
          .find((r) => r.typeUrl === TypeUrl.ExtensionConfig)!.message as any
      ).typed_config.default_source_code.inline_string as string;
    expect(script(fixture())).toContain("local LIMIT_HEADERS = true\n");
    const off = fixture();
    const quiet = { ...off, gateways: off.gateways.map((g) => ({ ...g, rateLimitHeaders: "off" as const })) };
    expect(script(quiet)).toContain("local LIMIT_HEADERS = false\n");
  });

  it("leaves out denies made for a quota the policy no longer has (it was raised or lowered since)", () => {
    const routes = [...usageRoutes(fixture()).values()];
    const stale = { ...denies[0]!, limit: 500 };
    expect(denyScript(routes, [stale])).toBe(NO_DENIES);
    // The gold plan's own quota is one the policy has.
    expect(denyScript(routes, [{ ...denies[0]!, limit: 50_000 }])).toContain(
      '["c:acme"]={1899759600,50000,86400}',
    );
    // A month's quota denies an address counted by: ip, not an anonymous caller's day quota.
    expect(denyScript(routes, [{ ...denies[1]!, limit: 100_000, unit: "month" }])).toBe(NO_DENIES);
  });

  it("defines no function when nobody is denied, so the filter costs nothing per request", () => {
    const routes = [...usageRoutes(fixture()).values()];
    expect(denyScript(routes, [])).toBe(NO_DENIES);
    expect(denyScript(routes, [denies[3]!])).toBe(NO_DENIES);
    expect(NO_DENIES).not.toMatch(/function/);
  });

  it("changes nothing but the filter's config when a deny comes or goes", () => {
    const cfg = fixture();
    const before = buildSnapshots(cfg, "r1").get("edge")!;
    const after = buildSnapshots(cfg, "r1", undefined, denies).get("edge")!;
    const changed = before.types().filter((t) => before.get(t).version !== after.get(t).version);
    expect(changed).toEqual([TypeUrl.ExtensionConfig]);
  });

  it("is pushed again by the publisher with the denies as they are now", () => {
    const cache = new SnapshotCache();
    let now: QuotaDeny[] = [];
    const publisher = new Publisher(cache, silentLogger(), undefined, undefined, () => now);
    publisher.publish(fixture());
    const first = cache.get("edge")!;
    now = denies;
    expect(publisher.republish()?.changed).toHaveProperty("edge");
    expect(cache.get("edge")!.get(TypeUrl.ExtensionConfig).version).not.toBe(
      first.get(TypeUrl.ExtensionConfig).version,
    );
    expect(cache.get("edge")!.get(TypeUrl.Route).version).toBe(first.get(TypeUrl.Route).version);
    expect(publisher.republish()?.changed).toEqual({});
  });

  it("is accepted by Envoy, the Lua script included", async () => {
    const envoy = await findEnvoy();
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "portico-quota-"));
    try {
      for (const list of [[], denies]) {
        const resources = translate(fixture(), undefined, list).get("edge")!;
        const file = path.join(tmp, "edge.pb");
        fs.writeFileSync(
          file,
          encodeMessage("envoy.config.bootstrap.v3.Bootstrap", staticBootstrap("edge", resources)),
        );
        const result = await run(envoy.path, [
          "--mode",
          "validate",
          "-c",
          file,
          "--disable-hot-restart",
          "-l",
          "error",
        ]).catch((err: { stdout: string; stderr: string }) => ({
          stdout: err.stdout,
          stderr: err.stderr,
          failed: true,
        }));
        expect(result, `${result.stdout}\n${result.stderr}`).not.toHaveProperty("failed");
      }
      // A broken script is refused: the check above would catch a Lua syntax error.
      const resources = translate(fixture(), undefined, denies).get("edge")!;
      const broken = resources.map((r) =>
        r.typeUrl === TypeUrl.ExtensionConfig
          ? {
              ...r,
              message: {
                name: QUOTA_FILTER,
                typed_config: {
                  "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
                  default_source_code: { inline_string: "function envoy_on_request(" },
                },
              },
            }
          : r,
      );
      const file = path.join(tmp, "broken.pb");
      fs.writeFileSync(
        file,
        encodeMessage("envoy.config.bootstrap.v3.Bootstrap", staticBootstrap("edge", broken)),
      );
      await expect(
        run(envoy.path, ["--mode", "validate", "-c", file, "--disable-hot-restart"]),
      ).rejects.toThrow();
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });
});

/** A log stream as grpc-js hands it to the service: events, and the peer's (absent) certificate. */
class FakeCall extends EventEmitter {
  getAuthContext() {
    return null;
  }
}

function counting(ledger: MemoryLedger, now: () => number, cfg: Config = fixture()) {
  let pushes = 0;
  const usage = new UsageCounting({
    ledger,
    log: silentLogger(),
    config: () => cfg,
    authorizeClients: false,
    onChange: () => pushes++,
    now,
    sweepMs: 10,
  });
  const impl = usage.service().implementation.StreamAccessLogs as unknown as (
    call: FakeCall,
    cb: (err: grpc.ServiceError | null) => void,
  ) => void;
  const results: (grpc.ServiceError | null)[] = [];
  return {
    usage,
    pushes: () => pushes,
    results,
    open(node = { id: "edge-1", cluster: "edge" }) {
      const call = new FakeCall();
      impl(call, (err) => results.push(err));
      let first = true;
      return {
        call,
        send(entries: Parameters<typeof logMessage>[0]) {
          call.emit("data", logMessage(entries, first ? node : undefined));
          first = false;
        },
      };
    },
  };
}

const until = async (fn: () => boolean, what: string) => {
  for (let i = 0; i < 500 && !fn(); i++) await new Promise((r) => setTimeout(r, 10));
  if (!fn()) throw new Error(`gave up waiting for ${what}`);
};

describe("counting usage into a ledger", () => {
  it("denies a consumer once its quota is used up, its plan's quota for a consumer on a plan", async () => {
    const cfg = config([
      { requests: 3, per: "day" },
      { requests: 5, per: "day", plan: "gold" },
    ]);
    const c = counting(new MemoryLedger({ log: silentLogger() }), () => NOON, cfg);
    await c.usage.start();
    const s = c.open();
    s.send([
      { route: "r", address: "10.0.0.1", consumer: "acme" },
      { route: "r", address: "10.0.0.2", consumer: "acme" },
      { route: "r", address: "10.0.0.1", consumer: "initech", plan: "gold" },
      { route: "r", address: "10.0.0.1", consumer: "initech", plan: "gold" },
      { route: "r", address: "10.0.0.1", consumer: "initech", plan: "gold" },
    ]);
    await new Promise((r) => setTimeout(r, 20));
    expect(c.usage.denies()).toEqual([]);
    s.send([
      { route: "r", address: "10.0.0.3", consumer: "acme" },
      { route: "r", address: "10.0.0.1", consumer: "initech", plan: "gold" },
    ]);
    await until(() => c.usage.denies().length > 0, "acme's deny");
    expect(c.usage.denies()).toEqual([
      { policy: "p", subject: "c:acme", until: MIDNIGHT, limit: 3, unit: "day" },
    ]);
    s.send([{ route: "r", address: "10.0.0.1", consumer: "initech", plan: "gold" }]);
    await until(() => c.usage.denies().length > 1, "initech's deny");
    expect(c.usage.denies().map((d) => [d.subject, d.limit])).toEqual([
      ["c:acme", 3],
      ["c:initech", 5],
    ]);
    // Each change of the denies is one push, not one per entry.
    expect(c.pushes()).toBe(2);
    await c.usage.stop();
    expect(c.results).toEqual([null]);
  });

  it("counts anonymous callers per address, and only on the stream's own group's routes", async () => {
    const cfg = config([{ requests: 2, per: "day" }]);
    const c = counting(new MemoryLedger({ log: silentLogger() }), () => NOON, cfg);
    await c.usage.start();
    // A node of another group reporting this group's route counts for nothing.
    c.open({ id: "bff-1", cluster: "bff" }).send([
      { route: "r", address: "10.0.0.1" },
      { route: "r", address: "10.0.0.1" },
      { route: "r", address: "10.0.0.1" },
    ]);
    const s = c.open();
    s.send([
      { route: "r", address: "10.0.0.1" },
      { route: "r", address: "10.0.0.2" },
      { route: "unknown", address: "10.0.0.1" },
    ]);
    await new Promise((r) => setTimeout(r, 20));
    expect(c.usage.denies()).toEqual([]);
    s.send([{ route: "r", address: "10.0.0.1" }]);
    await until(() => c.usage.denies().length > 0, "the address's deny");
    expect(c.usage.denies().map((d) => d.subject)).toEqual(["a:10.0.0.1"]);
    await c.usage.stop();
  });

  it("lifts a deny when its period ends, and counts the next period from zero", async () => {
    let now = NOON;
    const cfg = config([{ requests: 1, per: "day" }]);
    const c = counting(new MemoryLedger({ log: silentLogger() }), () => now, cfg);
    await c.usage.start();
    const s = c.open();
    s.send([{ route: "r", address: "10.0.0.1", consumer: "acme" }]);
    await until(() => c.usage.denies().length === 1, "the deny");
    now = MIDNIGHT;
    await until(() => c.usage.denies().length === 0, "the deny lifted");
    expect(c.pushes()).toBe(2);
    s.send([{ route: "r", address: "10.0.0.1", consumer: "acme" }]);
    await until(() => c.usage.denies().length === 1, "the next day's deny");
    expect(c.usage.denies()[0]!.until).toBe(MIDNIGHT + DAY);
    await c.usage.stop();
  });

  it("keeps counts and denies across a restart on the file store's ledger", async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "portico-usage-"));
    const file = path.join(tmp, "quota-usage.json");
    try {
      const cfg = config([{ requests: 2, per: "day" }]);
      const first = counting(new MemoryLedger({ log: silentLogger(), file }), () => NOON, cfg);
      await first.usage.start();
      first.open().send([
        { route: "r", address: "10.0.0.1", consumer: "acme" },
        { route: "r", address: "10.0.0.1", consumer: "acme" },
        { route: "r", address: "10.0.0.1", consumer: "globex" },
      ]);
      await until(() => first.usage.denies().length === 1, "acme's deny");
      await first.usage.stop();
      await (first.usage as unknown as { opts: { ledger: MemoryLedger } }).opts.ledger.close();

      const again = counting(new MemoryLedger({ log: silentLogger(), file }), () => NOON, cfg);
      await again.usage.start();
      // acme is still denied; globex's one request is still counted.
      expect(again.usage.denies().map((d) => d.subject)).toEqual(["c:acme"]);
      again.open().send([{ route: "r", address: "10.0.0.1", consumer: "globex" }]);
      await until(() => again.usage.denies().length === 2, "globex's deny");
      await again.usage.stop();

      // Past the period, nothing of it is read back.
      const later = new MemoryLedger({ log: silentLogger(), file, now: () => MIDNIGHT });
      expect(await later.denies(MIDNIGHT)).toEqual([]);
      expect(
        await later.add([{ key: "p/consumer|calendar:day:UTC/x/c:acme", n: 1, expireAt: MIDNIGHT + DAY }]),
      ).toEqual([1]);
      await later.close();
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });

  it("holds a bounded number of addresses, never at the cost of a consumer's count", async () => {
    const ledger = new MemoryLedger({ log: silentLogger(), maxAddressCounts: 2, now: () => NOON });
    const key = (subject: string) => `p/anonymous|calendar:day:Europe/Paris/20526/${subject}`;
    const inc = (subject: string) => ({ key: key(subject), n: 1, expireAt: MIDNIGHT });
    expect(await ledger.add([inc("a:10.0.0.1"), inc("a:10.0.0.2"), inc("a:10.0.0.3")])).toEqual([1, 1, 0]);
    expect(await ledger.add([inc("a:10.0.0.1"), inc("c:acme"), inc("c:globex")])).toEqual([2, 1, 1]);
    expect(ledger.droppedCounts).toBe(1);
    await ledger.close();
  });

  it("refuses a stream from a certificate that names no gateway", async () => {
    const usage = new UsageCounting({
      ledger: new MemoryLedger({ log: silentLogger() }),
      log: silentLogger(),
      config: () => fixture(),
      authorizeClients: true,
      onChange: () => undefined,
    });
    const call = new FakeCall();
    const results: (grpc.ServiceError | null)[] = [];
    (usage.service().implementation.StreamAccessLogs as any)(call, (err: grpc.ServiceError | null) =>
      results.push(err),
    );
    expect(results).toHaveLength(1);
    expect(results[0]).toMatchObject({ code: grpc.status.PERMISSION_DENIED });
    expect(results[0]!.details).toMatch(/a certificate naming no Portico workload identity/);
  });
});

describe("the Redis ledger, shared by the replicas", () => {
  let redis: RedisServer;
  const stores: RedisStore[] = [];

  beforeAll(async () => {
    redis = await startRedis();
  });

  afterAll(async () => {
    await Promise.all(stores.map((s) => s.close()));
    await redis?.stop();
  });

  async function replica(prefix: string): Promise<RedisStore> {
    const store = new RedisStore({ url: redis.url, prefix, log: silentLogger() });
    stores.push(store);
    await store.open();
    return store;
  }

  it("adds every replica's usage to one count, and tells every replica of a deny", async () => {
    const prefix = `quota-${randomUUID()}`;
    const [a, b] = [(await replica(prefix)).usageLedger(), (await replica(prefix)).usageLedger()];
    const key = "p/consumer|calendar:day:UTC/20526/c:acme";
    expect(await a.add([{ key, n: 3, expireAt: MIDNIGHT }])).toEqual([3]);
    expect(
      await b.add([
        { key, n: 2, expireAt: MIDNIGHT },
        { key: `${key}x`, n: 1, expireAt: MIDNIGHT },
      ]),
    ).toEqual([5, 1]);
    let heard = 0;
    b.watch(() => heard++);
    const deny: QuotaDeny = { policy: "p", subject: "c:acme", until: MIDNIGHT, limit: 5, unit: "day" };
    await a.deny([deny]);
    await until(() => heard > 0, "the other replica to hear of the deny");
    expect(await b.denies(NOON)).toEqual([deny]);
    // A later period's deny of the same quota replaces it; an earlier one never does.
    await b.deny([{ ...deny, until: MIDNIGHT + DAY }]);
    await b.deny([deny]);
    expect(await a.denies(NOON)).toEqual([{ ...deny, until: MIDNIGHT + DAY }]);
    expect(await a.denies(MIDNIGHT + DAY)).toEqual([]);
  });

  it("lets counts expire with their period", async () => {
    const prefix = `quota-${randomUUID()}`;
    const store = await replica(prefix);
    const ledger = store.usageLedger();
    await ledger.add([{ key: "k", n: 1, expireAt: Date.now() + DAY }]);
    const { Redis } = await import("ioredis");
    const raw = new Redis(redis.url);
    try {
      const ttl = await raw.pttl(`{${prefix}}:quota:n:k`);
      expect(ttl).toBeGreaterThan(DAY);
      expect(ttl).toBeLessThanOrEqual(DAY + 60_000);
    } finally {
      raw.disconnect();
    }
  });
});
