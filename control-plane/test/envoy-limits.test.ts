import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it, vi } from "vitest";
import { silentLogger } from "@portico/common";
import { ConfigService } from "../src/admin/config-service.js";
import { Publisher } from "../src/config/publish.js";
import { GroupMembership } from "../src/fleet/membership.js";
import { ConfigError } from "../src/model/errors.js";
import { enforcedBy } from "../src/model/ratelimit-enforcement.js";
import type { ConfigInput } from "../src/model/schema.js";
import { parseConfigText, validateConfig } from "../src/model/validate.js";
import { openStore } from "../src/store/index.js";
import { CALLER_LIMITS_FILTER, envoyShare } from "../src/translate/features/envoy-limits.js";
import { RATE_LIMIT_CONFIG_TYPE_URL, rateLimitPolicyResources } from "../src/translate/ratelimit-policy.js";
import { translate } from "../src/translate/translate.js";
import { SnapshotCache } from "../src/xds/cache.js";
import { FleetState } from "../src/xds/fleet.js";
import { TypeUrl } from "../src/xds/types.js";
import { expectGolden, GOLDEN_DIR } from "./translate/golden.js";
import { AUDIENCE, ISSUER, rsaKey } from "@portico/testing";

type Limit = NonNullable<NonNullable<ConfigInput["rateLimitPolicies"]>[number]["limits"]>[number];

const dir = path.join(GOLDEN_DIR, "envoy-limits");
const fixture = () => parseConfigText(fs.readFileSync(path.join(dir, "envoy-limits.yaml"), "utf8"));

/** One gateway, one route with a policy of these limits; the gateway has a rate-limit service unless told. */
function config(
  limits: Limit[],
  opts: { service?: boolean; shadow?: boolean; headers?: "exact" | "always" | "off" } = {},
) {
  return validateConfig({
    gateways: [
      {
        name: "edge",
        listeners: [{ name: "http", port: 10000 }],
        ...(opts.service === false ? {} : { rateLimit: { upstream: "rls" } }),
        ...(opts.headers ? { rateLimitHeaders: opts.headers } : {}),
      },
    ],
    upstreams: [
      { name: "rls", protocol: "grpc", endpoints: [{ host: "127.0.0.1", port: 8081 }] },
      { name: "app", endpoints: [{ host: "127.0.0.1", port: 8080 }] },
    ],
    routes: [
      { name: "r", gateway: "edge", match: { pathPrefix: "/" }, upstream: "app", rateLimitPolicy: "p" },
    ],
    rateLimitPolicies: [{ name: "p", limits, ...(opts.shadow ? { shadow: true } : {}) }],
  });
}

function problems(
  limits: Limit[],
  opts: Parameters<typeof config>[1] = {},
): { field: string; reason: string }[] {
  try {
    config(limits, opts);
  } catch (err) {
    if (err instanceof ConfigError) return err.details;
    throw err;
  }
  return [];
}

/** Who counts each limit of the one policy. */
const enforcers = (limits: Limit[], opts: { shadow?: boolean } = {}) => {
  const p = config(limits, opts).rateLimitPolicies[0]!;
  return p.limits.map((l) => enforcedBy(l, p));
};

/** The edge group's route table and listener as the translator makes them for `members` Envoys. */
function edge(cfg: ReturnType<typeof config>, members = 1) {
  const resources = translate(cfg, () => members).get("edge")!;
  const listener = resources.find((r) => r.typeUrl === TypeUrl.Listener)!.message as any;
  const table = resources.find((r) => r.typeUrl === TypeUrl.Route)!.message as any;
  const ecds = resources.find(
    (r) => r.typeUrl === TypeUrl.ExtensionConfig && r.name === CALLER_LIMITS_FILTER,
  );
  return {
    filters: listener.filter_chains[0].filters[0].typed_config.http_filters.map(
      (f: any) => f.name,
    ) as string[],
    routes: new Map<string, any>(table.virtual_hosts[0].routes.map((r: any) => [r.name, r])),
    callerLimits: (ecds?.message as any)?.typed_config,
    localReplies: listener.filter_chains[0].filters[0].typed_config.local_reply_config.mappers as any[],
  };
}

describe("limits Envoy counts: who counts", () => {
  it("gives Envoy short windows per consumer or address, the control plane calendar quotas, the service the rest", () => {
    expect(
      enforcers([
        { requests: 10, per: "second" },
        { requests: 100, per: "minute", by: "ip" },
        { requests: 5, window: "30s", by: "ip", callers: "anonymous", algorithm: "token_bucket" },
        { requests: 1000, per: "hour", callers: "identified" },
        { requests: 9, window: "2m", callers: "identified" },
        { requests: 1_000_000, per: "month", callers: "identified" },
        { requests: 50, per: "second", by: "route" },
        { requests: 20, window: "10s", by: "ip", callers: "identified", algorithm: "sliding_window" },
        { requests: 7, per: "minute", by: "ip", callers: "identified" },
      ]),
    ).toEqual(["envoy", "envoy", "envoy", "service", "service", "usage", "service", "service", "service"]);
  });

  it("keeps with the service what only it does: shadow, plans and the limits a plan replaces", () => {
    expect(enforcers([{ requests: 10, per: "second", shadow: true }])).toEqual(["service"]);
    expect(enforcers([{ requests: 10, per: "second" }], { shadow: true })).toEqual(["service"]);
    expect(
      enforcers([
        { requests: 10, per: "second", callers: "identified" },
        { requests: 3, per: "second", plan: "free" },
        { requests: 100, per: "minute", callers: "identified" },
      ]),
    ).toEqual(["service", "service", "envoy"]);
  });

  it("follows `enforce`, and refuses `enforce: envoy` where Envoy cannot count as the limit says", () => {
    expect(
      enforcers([
        { requests: 10, per: "second", enforce: "service" },
        { requests: 1000, per: "hour", enforce: "envoy" },
        { requests: 50, per: "second", by: "route", enforce: "envoy" },
      ]),
    ).toEqual(["service", "envoy", "envoy"]);
    expect(
      problems([
        { requests: 10, per: "day", enforce: "envoy" },
        { requests: 10, window: "10s", algorithm: "sliding_window", enforce: "envoy" },
        { requests: 10, per: "minute", by: "ip", callers: "identified", enforce: "envoy" },
        { requests: 10, per: "second", shadow: true, enforce: "envoy" },
      ]),
    ).toEqual([
      {
        field: "rateLimitPolicies[0].limits[0].enforce",
        reason: expect.stringMatching(/calendar quota.*enforce: service/),
      },
      {
        field: "rateLimitPolicies[0].limits[1].enforce",
        reason: expect.stringContaining("no sliding window"),
      },
      { field: "rateLimitPolicies[0].limits[2].enforce", reason: expect.stringContaining("share one count") },
      { field: "rateLimitPolicies[0].limits[3].enforce", reason: expect.stringContaining("shadow") },
    ]);
  });

  it("needs no rate-limit service for limits Envoy counts, and one as soon as the service counts any", () => {
    expect(() => config([{ requests: 10, per: "second" }], { service: false })).not.toThrow();
    expect(() => config([{ requests: 10, per: "hour" }], { service: false })).toThrow(
      /routes\[0\]\.rateLimitPolicy: gateway 'edge' has no rateLimit service/,
    );
  });
});

describe("limits Envoy counts: each Envoy's share", () => {
  it("divides the rate exactly and the bucket rounding down, never below one token", () => {
    const perMinute = { requests: 20, per: "minute", algorithm: "fixed_window" } as const;
    expect([1, 2, 3, 4].map((n) => envoyShare(perMinute as any, n))).toEqual([
      { maxTokens: 20, tokensPerFill: 20, fillIntervalMs: 60_000 },
      { maxTokens: 10, tokensPerFill: 20, fillIntervalMs: 120_000 },
      // 3 × 6 = 18 at once, never 21; the rate is still 20 a minute for the group.
      { maxTokens: 6, tokensPerFill: 20, fillIntervalMs: 180_000 },
      { maxTokens: 5, tokensPerFill: 20, fillIntervalMs: 240_000 },
    ]);
    const bucket = { requests: 10, window: "30s", algorithm: "token_bucket", burst: 15 } as const;
    expect(envoyShare(bucket as any, 2)).toEqual({ maxTokens: 7, tokensPerFill: 10, fillIntervalMs: 60_000 });
    const tiny = { requests: 3, per: "second", algorithm: "fixed_window" } as const;
    expect(envoyShare(tiny as any, 4)).toEqual({ maxTokens: 1, tokensPerFill: 3, fillIntervalMs: 4_000 });
    expect(envoyShare(tiny as any, 0).maxTokens).toBe(3);
  });

  for (const members of [1, 2, 4]) {
    it(`matches the golden file for ${members} Envoy(s) in the group`, () => {
      const cfg = fixture();
      const { filters, routes, callerLimits } = edge(cfg, members);
      const domain = rateLimitPolicyResources(cfg).find((r) => r.typeUrl === RATE_LIMIT_CONFIG_TYPE_URL)!;
      expectGolden(dir, `members-${members}`, {
        filters,
        callerLimits,
        routes: Object.fromEntries(
          [...routes].map(([name, r]) => [
            name,
            {
              callerLimits: r.metadata?.filter_metadata?.[CALLER_LIMITS_FILTER],
              callerLimitsOff: r.typed_per_filter_config?.[CALLER_LIMITS_FILTER],
              serviceDescriptors: r.route.rate_limits,
            },
          ]),
        ),
        rateLimitService: domain.message,
      });
    });
  }

  it("calls no rate-limit service from a route whose limits Envoy counts alone", () => {
    const { filters, routes } = edge(fixture(), 2);
    expect(filters).toContain(CALLER_LIMITS_FILTER);
    expect(routes.get("native").route.rate_limits).toBeUndefined();
    expect(routes.get("mixed").route.rate_limits).toBeDefined();
    const domain = rateLimitPolicyResources(fixture())[0]!.message as any;
    expect(domain.descriptors.map((d: any) => d.value)).toEqual(["mixed"]);
    // With Envoy counting every limit of the gateway, the listener has no ratelimit filter at all.
    const alone = edge(
      config([
        { requests: 10, per: "second" },
        { requests: 5, per: "second", by: "ip" },
      ]),
    );
    expect(alone.filters).toContain(CALLER_LIMITS_FILTER);
    expect(alone.filters).not.toContain("envoy.filters.http.ratelimit");
    expect(alone.routes.get("r").route.rate_limits).toBeUndefined();
  });
});

describe("limits Envoy counts: what a route sends", () => {
  /** Routes `keyed` (authenticated callers only) and `open` (anonymous callers too), both of policy p. */
  const authConfig = (failOpen: boolean) => {
    const base = config(
      [
        { requests: 10, per: "second", by: "consumer" },
        { requests: 5, per: "second", by: "ip", callers: "anonymous" },
      ],
      { service: false },
    ) as any;
    return validateConfig({
      ...base,
      gateways: [{ ...base.gateways[0], extAuthz: { upstream: "authz", failOpen } }],
      upstreams: [
        ...base.upstreams,
        { name: "authz", protocol: "grpc", endpoints: [{ host: "127.0.0.1", port: 9001 }] },
      ],
      authPolicies: [
        { name: "keys", accept: ["apiKey"] },
        { name: "maybe", accept: ["apiKey"], allowAnonymous: true },
      ],
      routes: [
        {
          name: "keyed",
          gateway: "edge",
          match: { path: "/keyed" },
          upstream: "app",
          rateLimitPolicy: "p",
          authPolicy: "keys",
        },
        {
          name: "open",
          gateway: "edge",
          match: { path: "/open" },
          upstream: "app",
          rateLimitPolicy: "p",
          authPolicy: "maybe",
        },
      ],
    });
  };
  const slots = (cfg: ReturnType<typeof config>, route: string) =>
    Object.keys(edge(cfg).routes.get(route).metadata.filter_metadata[CALLER_LIMITS_FILTER].fields).filter(
      (k) => k !== "retry_after" && k !== "limit_header",
    );

  it("leaves out what only an anonymous caller's request matches on a route only authenticated callers reach", () => {
    // The anonymous callers' address limit and the consumer limit's fallback to the address.
    expect(slots(authConfig(false), "open")).toEqual([
      "consumer.0",
      "address_consumer.0",
      "address_consumer.1",
    ]);
    expect(slots(authConfig(false), "keyed")).toEqual(["consumer.0"]);
    // The buckets are the policy's, whichever route names them.
    expect(edge(authConfig(false)).callerLimits.descriptors).toHaveLength(4);
    // A gateway that lets callers through when ext-authz fails may send anonymous callers anywhere.
    expect(slots(authConfig(true), "keyed")).toEqual([
      "consumer.0",
      "address_consumer.0",
      "address_consumer.1",
    ]);
  });

  it("reads the consumer from the checks' header on a route Envoy verifies for authenticated callers only", () => {
    const jwtConfig = (allowAnonymous: boolean) => {
      const base = authConfig(false) as any;
      return validateConfig({
        ...base,
        jwtProviders: [
          {
            name: "idp",
            issuer: ISSUER,
            audiences: [AUDIENCE],
            jwks: { keys: [rsaKey("k1").jwk] },
            algorithms: ["RS256"],
          },
        ],
        authPolicies: [{ name: "users", accept: ["idp"], allowAnonymous }],
        routes: base.routes.map((r: object) => ({ ...r, authPolicy: "users" })),
      });
    };
    const only = edge(jwtConfig(false));
    // No dynamic metadata to read: the consumer limit takes the header every admitted request carries.
    expect(only.filters).not.toContain("portico.jwt_identity");
    expect(slots(jwtConfig(false), "keyed")).toEqual(["consumer_header.0"]);
    const actions = only.callerLimits.rate_limits.map((l: { actions: object[] }) => l.actions);
    expect(actions).toContainEqual([
      {
        metadata: {
          descriptor_key: "limit",
          metadata_key: { key: CALLER_LIMITS_FILTER, path: [{ key: "consumer_header.0" }] },
          source: "ROUTE_ENTRY",
        },
      },
      { request_headers: { header_name: "x-portico-consumer", descriptor_key: "consumer" } },
    ]);
    // The same buckets as a route that reads the consumer from metadata.
    expect(only.callerLimits.descriptors).toEqual(edge(authConfig(false)).callerLimits.descriptors);
    // A route that admits anonymous callers reads metadata, where the checks file `anonymous`.
    expect(edge(jwtConfig(true)).filters).toContain("portico.jwt_identity");
    expect(slots(jwtConfig(true), "keyed")).toEqual([
      "consumer.0",
      "address_consumer.0",
      "address_consumer.1",
    ]);
  });
});

describe("limits Envoy counts: buckets that outlive route changes", () => {
  const filterConfig = (cfg: ReturnType<typeof config>) => JSON.stringify(edge(cfg).callerLimits);
  const withRoutes = (extra: object[]) => {
    const base = config([{ requests: 10, per: "second" }], { service: false }) as any;
    return validateConfig({ ...base, routes: [...base.routes, ...extra] });
  };

  it("leaves the filter config (and so the buckets) as it is when routes are added, changed or removed", () => {
    const before = filterConfig(withRoutes([]));
    const open = { name: "open", gateway: "edge", match: { path: "/open" }, upstream: "app" };
    expect(filterConfig(withRoutes([open]))).toBe(before);
    // Another route of the same policy names the same limit: the same buckets.
    const same = { ...open, name: "same", match: { path: "/same" }, rateLimitPolicy: "p" };
    const shared = edge(withRoutes([same]));
    expect(JSON.stringify(shared.callerLimits)).toBe(before);
    const meta = (name: string) => shared.routes.get(name).metadata.filter_metadata[CALLER_LIMITS_FILTER];
    expect(meta("same")).toEqual(meta("r"));
    expect(shared.routes.get("r").typed_per_filter_config?.[CALLER_LIMITS_FILTER]).toBeUndefined();
  });

  const fromRoute = (key: string) => `%METADATA(ROUTE:${CALLER_LIMITS_FILTER}:${key})%`;
  const header = (key: string, value: string) => ({
    header: { key, value },
    append_action: "OVERWRITE_IF_EXISTS_OR_ADD",
  });

  it("carries the route's Retry-After and limit in its metadata, and sends them with the gateway's refusals only", () => {
    const { routes, callerLimits, localReplies } = edge(
      config([{ requests: 10, per: "minute" }], { service: false }),
      2,
    );
    const meta = routes.get("r").metadata.filter_metadata[CALLER_LIMITS_FILTER].fields;
    // Each of 2 Envoys gets a token every 60 s × 2 / 10 = 12 s.
    expect(meta.retry_after.stringValue).toBe("12");
    // The group's limit, not an Envoy's share of it (which would read `5, 5;w=120`).
    expect(meta.limit_header.stringValue).toBe("10, 10;w=60");
    // The filter's refusals read them from the refused request's route; admitted answers get none.
    expect(callerLimits.response_headers_to_add).toEqual([
      header("retry-after", fromRoute("retry_after")),
      header("x-ratelimit-limit", fromRoute("limit_header")),
      header("x-ratelimit-remaining", "0"),
      header("x-ratelimit-reset", fromRoute("retry_after")),
    ]);
    expect(callerLimits.enable_x_ratelimit_headers).toBeUndefined();
    // The gateway's error answers are the same with and without limits Envoy counts.
    const none = edge(config([{ requests: 10, per: "hour" }]));
    expect(localReplies).toEqual(none.localReplies);
  });
});

describe("limits Envoy counts: the gateway's X-RateLimit headers", () => {
  const routeMeta = (cfg: ReturnType<typeof config>) =>
    edge(cfg, 2).routes.get("r").metadata.filter_metadata[CALLER_LIMITS_FILTER].fields;
  const headerKeys = (cfg: ReturnType<typeof config>) =>
    edge(cfg, 2).callerLimits.response_headers_to_add.map((h: any) => h.header.key);

  /** A per-minute limit each Envoy counts beside an hourly one the rate-limit service counts. */
  const withService = (headers: "always" | "off") => {
    const cfg = config(
      [
        { requests: 10, per: "minute" },
        { requests: 1_000, window: "1h", enforce: "service" },
      ],
      { headers },
    );
    expect(edge(cfg, 2).filters).toEqual(
      expect.arrayContaining(["portico.caller_limits", "envoy.filters.http.ratelimit"]),
    );
    return cfg;
  };

  it("names first the limit Retry-After waits for, then each limit of the route", () => {
    const cfg = config(
      [
        { by: "consumer", requests: 100, per: "second" },
        { by: "consumer", requests: 30, window: "30s" },
        { by: "consumer", requests: 2_000, window: "1h", enforce: "envoy" },
      ],
      { service: false },
    );
    const meta = routeMeta(cfg);
    // A token of the hourly limit is back last: 3,600 s × 2 Envoys / 2,000 → 4 s (30 s × 2 / 30 → 2 s).
    expect(meta.retry_after.stringValue).toBe("4");
    expect(meta.limit_header.stringValue).toBe("2000, 100;w=1, 30;w=30, 2000;w=3600");
  });

  it("always: Envoy's own headers on every answer, describing its bucket; refusals add only Retry-After", () => {
    const cfg = config([{ requests: 10, per: "minute" }], { service: false, headers: "always" });
    expect(edge(cfg, 2).callerLimits.enable_x_ratelimit_headers).toBe("DRAFT_VERSION_03");
    expect(headerKeys(cfg)).toEqual(["retry-after"]);
  });

  it("always, where the rate-limit service counts too: its headers on every answer, the group's on this filter's refusals", () => {
    const cfg = withService("always");
    const { callerLimits } = edge(cfg, 2);
    // Envoy's would come on top of the service's.
    expect(callerLimits.enable_x_ratelimit_headers).toBeUndefined();
    expect(headerKeys(cfg)).toEqual([
      "retry-after",
      "x-ratelimit-limit",
      "x-ratelimit-remaining",
      "x-ratelimit-reset",
    ]);
    expect(routeMeta(cfg).limit_header.stringValue).toBe("10, 10;w=60");
  });

  it("off: no X-RateLimit headers from any filter, Retry-After on refusals", () => {
    const cfg = withService("off");
    const { callerLimits } = edge(cfg, 2);
    expect(callerLimits.enable_x_ratelimit_headers).toBeUndefined();
    expect(headerKeys(cfg)).toEqual(["retry-after"]);
    const resources = translate(cfg, () => 2).get("edge")!;
    expect(JSON.stringify(resources)).not.toContain("x_ratelimit");
    expect(JSON.stringify(resources)).not.toContain("x-ratelimit");
  });

  it("refuses a value it does not know, naming the field", () => {
    expect(problems([{ requests: 10, per: "minute" }], { headers: "sometimes" as "off" })).toEqual([
      expect.objectContaining({ field: "gateways[0].rateLimitHeaders" }),
    ]);
  });
});

describe("limits Envoy counts: re-divided when an Envoy joins or leaves", () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  const node = (id: string, group = "edge") => ({ id, cluster: group });
  /** The version of the group's filter config, which holds the buckets. */
  const bucketOf = (cache: SnapshotCache) =>
    cache.get("edge")!.get(TypeUrl.ExtensionConfig).resources.get(CALLER_LIMITS_FILTER)!.version;

  it("publishes again only when a group that divides limits has another count of Envoys", () => {
    const cache = new SnapshotCache();
    const counts = new Map<string, number>();
    const publisher = new Publisher(cache, silentLogger(), undefined, () => counts);
    publisher.publish(config([{ requests: 20, per: "minute" }]));
    const one = bucketOf(cache);
    expect(publisher.refresh()).toBeUndefined();
    // None connected and one connected divide alike: by one.
    counts.set("edge", 1);
    expect(publisher.refresh()).toBeUndefined();
    counts.set("edge", 2).set("other-group", 7);
    expect(Object.keys(publisher.refresh()!.changed)).toEqual(["edge"]);
    expect(bucketOf(cache)).not.toBe(one);
    counts.set("edge", 1);
    publisher.refresh();
    expect(bucketOf(cache)).toBe(one);
    // A group whose limits the service counts does not depend on its Envoys: nothing to publish.
    publisher.publish(config([{ requests: 20, per: "hour" }]));
    counts.set("edge", 3);
    expect(publisher.refresh()).toBeUndefined();
  });

  it("counts a write applied by a node that applied its re-divided snapshot (?wait=applied)", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "portico-envoy-limits-"));
    const store = await openStore(`file:${dir}`, silentLogger());
    try {
      const cache = new SnapshotCache();
      const counts = new Map<string, number>();
      const fleet = new FleetState();
      const publisher = new Publisher(cache, silentLogger(), undefined, () => counts);
      const service = new ConfigService(store, publisher, cache, fleet, silentLogger());
      const a = fleet.connect(node("a"), "sotw");
      const written = await service.write(() => config([{ requests: 20, per: "minute" }]));
      // Another Envoy joins before the first applied the write: the limits are divided again.
      const b = fleet.connect(node("b"), "sotw");
      counts.set("edge", 2);
      publisher.refresh();
      const current = cache.get("edge")!;
      expect(current.revision).not.toBe(written.affected.edge);
      const waiting = service.waitApplied(written, 5_000);
      fleet.applied(a, current.revision, current.source);
      fleet.applied(b, current.revision, current.source);
      expect(await waiting).toMatchObject({ applied: true, timedOut: false });
    } finally {
      await store.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("counts each group's connected Envoys across the fleet, and says so once per quiet spell", () => {
    vi.useFakeTimers();
    const fleet = new FleetState();
    const onChange = vi.fn();
    const membership = new GroupMembership({ fleet, onChange, quietMs: 1_000, maxWaitMs: 5_000 });
    const statuses = ["a", "b", "c"].map((id) => fleet.connect(node(id), "sotw"));
    fleet.connect(node("p", "portico:policy"), "sotw");
    expect(membership.counts()).toEqual(
      new Map([
        ["edge", 3],
        ["portico:policy", 1],
      ]),
    );
    vi.advanceTimersByTime(999);
    expect(onChange).not.toHaveBeenCalled();
    vi.advanceTimersByTime(1);
    expect(onChange).toHaveBeenCalledTimes(1);
    // A rolling restart: one leaves and another joins every half second, for 8 s.
    for (let i = 0; i < 16; i++) {
      if (i % 2 === 0) fleet.disconnect(statuses[0]!);
      else statuses[0] = fleet.connect(node(`a${i}`), "sotw");
      vi.advanceTimersByTime(500);
    }
    // Once at the longest hold-off (5 s), once when it is quiet again: not 16 times.
    vi.advanceTimersByTime(1_000);
    expect(onChange).toHaveBeenCalledTimes(3);
    expect(membership.counts().get("edge")).toBe(3);
    // Another replica's Envoys count too, and their arrival is a change like any other.
    fleet.setRemote("replica-2", [{ ...fleet.get("b")!, id: "elsewhere" }]);
    expect(membership.counts().get("edge")).toBe(4);
    vi.advanceTimersByTime(1_000);
    expect(onChange).toHaveBeenCalledTimes(4);
    membership.stop();
    fleet.disconnect(statuses[1]!);
    vi.advanceTimersByTime(10_000);
    expect(onChange).toHaveBeenCalledTimes(4);
  });
});
