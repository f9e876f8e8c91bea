import { describe, expect, it } from "vitest";
import { encodeMessage } from "@portico/contract";
import {
  configFromResources,
  RATE_LIMIT_CONFIG_TYPE_URL,
  ManualClock,
  MemoryLimiter,
  RateLimitHandler,
} from "@portico/ratelimit-service";
import { ConfigError } from "../src/model/errors.js";
import type { ConfigInput } from "../src/model/schema.js";
import { validateConfig } from "../src/model/validate.js";
import {
  descriptorShapes,
  RATE_LIMIT_CONFIG_TYPE,
  rateLimitPolicyResources,
  type DescriptorShape,
} from "../src/translate/ratelimit-policy.js";
import {
  localRateLimitHttpFilters,
  rateLimitHttpFilters,
  rateLimitPerRoute,
  routeRateLimits,
} from "../src/translate/features/rate-limits.js";
import { isFullStateType } from "../src/xds/types.js";

type Limit = NonNullable<NonNullable<ConfigInput["rateLimitPolicies"]>[number]["limits"]>[number];

/** One gateway with a rate-limit service, one route per policy. */
function config(policies: { name: string; limits?: Limit[]; [k: string]: unknown }[], extra: object = {}) {
  return validateConfig({
    gateways: [
      {
        name: "edge",
        listeners: [{ name: "http", port: 10000 }],
        rateLimit: { upstream: "rls" },
      },
    ],
    upstreams: [
      { name: "rls", protocol: "grpc", endpoints: [{ host: "127.0.0.1", port: 8081 }] },
      { name: "app", endpoints: [{ host: "127.0.0.1", port: 8080 }] },
    ],
    routes: policies.map((p) => ({
      name: `r-${p.name}`,
      gateway: "edge",
      match: { pathPrefix: `/${p.name}` },
      upstream: "app",
      rateLimitPolicy: p.name,
    })),
    consumers: [{ name: "acme", plan: "gold" }],
    rateLimitPolicies: policies,
    ...extra,
  });
}

function problems(input: Parameters<typeof config>[0]): { field: string; reason: string }[] {
  try {
    config(input);
  } catch (err) {
    if (err instanceof ConfigError) return err.details;
    throw err;
  }
  return [];
}

/** A request as Envoy describes it: what ext-authz said about the caller, its address, its route. */
interface Caller {
  consumer?: string;
  plan?: string;
  ip: string;
}

/** The descriptors Envoy builds from a route's `rate_limits` for one request. */
function envoyDescriptors(policy: string, route: string, shapes: DescriptorShape[], c: Caller) {
  const value = { consumer: c.consumer ?? "anonymous", plan: c.plan ?? "anonymous", ip: c.ip, route };
  const key = { consumer: "consumer", plan: "plan", ip: "remote_address", route: "route" };
  return shapes.map((s) => ({
    entries: [{ key: "policy", value: policy }, ...s.map((e) => ({ key: key[e], value: value[e] }))],
  }));
}

/** The policy sent over xDS and loaded by the rate-limit service, deciding with a fixed clock. */
function service(cfg: ReturnType<typeof config>) {
  const resources = rateLimitPolicyResources(cfg).map((r) => ({
    name: r.name,
    version: "1",
    any: { type_url: r.typeUrl, value: encodeMessage(RATE_LIMIT_CONFIG_TYPE, r.message) },
  }));
  const clock = new ManualClock(Date.parse("2030-01-15T10:00:00.000Z"));
  const handler = new RateLimitHandler(configFromResources(resources), {
    limiter: new MemoryLimiter({ clock }),
  });
  const ctx = { config: cfg, gateway: cfg.gateways[0]! };
  return {
    clock,
    /** Sends n requests of one caller on the policy's route and counts the admitted ones. */
    async admitted(policy: string, c: Caller, n: number): Promise<number> {
      const p = cfg.rateLimitPolicies.find((x) => x.name === policy)!;
      const route = cfg.routes.find((r) => r.rateLimitPolicy === policy)!;
      expect(routeRateLimits(ctx, route)).toHaveLength(descriptorShapes(p).length);
      let ok = 0;
      for (let i = 0; i < n; i++) {
        const res = await handler.shouldRateLimit({
          domain: "edge",
          descriptors: envoyDescriptors(policy, route.name, descriptorShapes(p), c),
        });
        if (res.overall_code === "OK") ok++;
      }
      return ok;
    },
  };
}

describe("rate-limit policies: the model", () => {
  it("writes the classic gateway policy in a few lines, with defaults filled in", () => {
    const cfg = config([
      {
        name: "classic",
        limits: [
          { requests: 1000, per: "second", callers: "identified" },
          { requests: 100, per: "second", by: "ip", callers: "anonymous" },
          { requests: 1_000_000, per: "month", callers: "identified" },
        ],
      },
    ]);
    expect(cfg.rateLimitPolicies[0]).toMatchObject({
      timeZone: "UTC",
      shadow: false,
      limits: [{ by: "consumer", algorithm: "fixed_window", shadow: false }, { by: "ip" }, {}],
    });
  });

  it("refuses what cannot be counted, naming the field and the reason", () => {
    expect(
      problems([{ name: "p", limits: [{ requests: 1, per: "second", window: "5s" } as Limit] }]),
    ).toEqual([{ field: "rateLimitPolicies[0].limits[0]", reason: "give exactly one of per or window" }]);
    expect(problems([{ name: "p", limits: [{ requests: 1, window: "5x" }] }])[0]).toMatchObject({
      field: "rateLimitPolicies[0].limits[0].window",
    });
    expect(problems([{ name: "p", limits: [] }])).toEqual([
      { field: "rateLimitPolicies[0]", reason: "give limits, local, or both" },
    ]);
    const found = problems([
      {
        name: "p",
        timeZone: "Mars/Olympus",
        limits: [
          { requests: 5, per: "second", burst: 10 },
          { requests: 5, per: "second", by: "consumer", callers: "anonymous" },
          { requests: 5, per: "minute", by: "ip", plan: "gold" },
          { requests: 9, per: "second", burst: 10, algorithm: "token_bucket" },
          { requests: 7, per: "second", burst: 20, algorithm: "token_bucket" },
        ],
      },
    ]);
    expect(found).toEqual([
      {
        field: "rateLimitPolicies[0].timeZone",
        reason: expect.stringContaining("unknown time zone 'Mars/Olympus'"),
      },
      {
        field: "rateLimitPolicies[0].limits[0].burst",
        reason: "burst applies to the token_bucket algorithm only",
      },
      { field: "rateLimitPolicies[0].limits[1].callers", reason: expect.stringContaining("use by: ip") },
      { field: "rateLimitPolicies[0].limits[2].plan", reason: expect.stringContaining("by: consumer") },
      {
        field: "rateLimitPolicies[0].limits[4]",
        reason: expect.stringContaining("same window as limits[3]"),
      },
    ]);
  });

  it("reserves the consumer name 'anonymous' for callers without credentials", () => {
    expect(problems([{ name: "p", local: { requests: 1, per: "second" } }])).toEqual([]);
    expect(() =>
      config([{ name: "p", local: { requests: 1, per: "second" } }], { consumers: [{ name: "anonymous" }] }),
    ).toThrow(/consumers\[0\]\.name: 'anonymous' stands for callers without credentials/);
  });

  it("refuses global limits on a route Envoy answers itself, which has no descriptors", () => {
    const cfg = config([{ name: "p", limits: [{ requests: 1, per: "second" }] }]);
    const input = {
      ...cfg,
      routes: [{ ...cfg.routes[0]!, upstream: undefined, directResponse: { status: 200 } }],
    };
    expect(() => validateConfig(input)).toThrow(
      /routes\[0\]\.rateLimitPolicy: policy 'p' has limits, which apply only to routes with upstreams/,
    );
  });

  it("lets a policy with only a local limit go without a rate-limit service", () => {
    const cfg = validateConfig({
      gateways: [{ name: "edge", listeners: [{ name: "http", port: 10000 }] }],
      upstreams: [{ name: "app", endpoints: [{ host: "127.0.0.1", port: 8080 }] }],
      routes: [
        { name: "r", gateway: "edge", match: { pathPrefix: "/" }, upstream: "app", rateLimitPolicy: "p" },
      ],
      rateLimitPolicies: [{ name: "p", local: { requests: 10, per: "second" } }],
    });
    const ctx = { config: cfg, gateway: cfg.gateways[0]! };
    expect(localRateLimitHttpFilters(ctx, cfg.routes).map((f: any) => f.name)).toEqual([
      "envoy.filters.http.local_ratelimit",
    ]);
    expect(rateLimitHttpFilters(ctx, cfg.routes)).toEqual([]);
    expect(routeRateLimits(ctx, cfg.routes[0]!)).toBeUndefined();
    expect(() =>
      validateConfig({
        ...cfg,
        rateLimitPolicies: [{ name: "p", limits: [{ requests: 1, per: "second", enforce: "service" }] }],
      }),
    ).toThrow(/routes\[0\]\.rateLimitPolicy: gateway 'edge' has no rateLimit service/);
    // A limit each Envoy counts needs no service either.
    expect(() =>
      validateConfig({
        ...cfg,
        rateLimitPolicies: [{ name: "p", limits: [{ requests: 1, per: "second" }] }],
      }),
    ).not.toThrow();
  });
});

describe("rate-limit policies: what Envoy sends", () => {
  it("sends one descriptor per kind of limit, each starting with the policy, identity from ext-authz with a default", () => {
    const cfg = config([
      {
        name: "p",
        limits: [
          { requests: 10, per: "second" },
          { requests: 5, per: "second", plan: "gold" },
          { requests: 3, per: "second", by: "ip", enforce: "service" },
          { requests: 2, per: "minute", by: "route", callers: "anonymous" },
        ],
      },
    ]);
    const ctx = { config: cfg, gateway: cfg.gateways[0]! };
    const limits = routeRateLimits(ctx, cfg.routes[0]!) as { actions: any[] }[];
    const consumer = {
      metadata: {
        descriptor_key: "consumer",
        metadata_key: { key: "envoy.filters.http.ext_authz", path: [{ key: "consumer" }] },
        default_value: "anonymous",
        source: "DYNAMIC",
      },
    };
    const policy = { generic_key: { descriptor_key: "policy", descriptor_value: "p" } };
    expect(limits).toEqual([
      {
        actions: [
          policy,
          consumer,
          {
            metadata: {
              ...consumer.metadata,
              descriptor_key: "plan",
              metadata_key: { key: "envoy.filters.http.ext_authz", path: [{ key: "plan" }] },
            },
          },
        ],
      },
      { actions: [policy, { remote_address: {} }] },
      // `by: consumer` for all callers: anonymous ones are counted per address.
      { actions: [policy, { remote_address: {} }, consumer] },
      { actions: [policy, { generic_key: { descriptor_key: "route", descriptor_value: "r-p" } }, consumer] },
    ]);
  });

  it("puts the ratelimit filter only on listeners whose routes use the service, failing as configured", () => {
    const cfg = config([
      {
        name: "p",
        limits: [{ requests: 1, per: "second", enforce: "service" }],
        local: { requests: 50, per: "minute" },
      },
    ]);
    const ctx = {
      config: cfg,
      gateway: { ...cfg.gateways[0]!, rateLimit: { ...cfg.gateways[0]!.rateLimit!, failClosed: true } },
    };
    expect(localRateLimitHttpFilters(ctx, cfg.routes).map((f: any) => f.name)).toEqual([
      "envoy.filters.http.local_ratelimit",
    ]);
    const filters = rateLimitHttpFilters(ctx, cfg.routes) as any[];
    expect(filters.map((f) => f.name)).toEqual(["envoy.filters.http.ratelimit"]);
    expect(filters[0].typed_config).toMatchObject({
      domain: "edge",
      timeout: { seconds: 0, nanos: 20_000_000 },
      failure_mode_deny: true,
      status_on_error: { code: "ServiceUnavailable" },
      enable_x_ratelimit_headers: "DRAFT_VERSION_03",
      rate_limit_service: {
        grpc_service: { envoy_grpc: { cluster_name: "rls" } },
        transport_api_version: "V3",
      },
    });
    expect(rateLimitHttpFilters(ctx, [])).toEqual([]);
    const local = rateLimitPerRoute(ctx, cfg.routes[0]!)["envoy.filters.http.local_ratelimit"] as any;
    expect(local.token_bucket).toEqual({
      max_tokens: 50,
      tokens_per_fill: { value: 50 },
      fill_interval: { seconds: 60, nanos: 0 },
    });
    expect(local.response_headers_to_add).toEqual([
      { header: { key: "retry-after", value: "60" }, append_action: "OVERWRITE_IF_EXISTS_OR_ADD" },
    ]);
  });
});

describe("rate-limit policies: the domain config", () => {
  it("is one full-state resource per domain, with the policies its gateways' routes use", () => {
    const cfg = config([
      { name: "b", limits: [{ requests: 1, per: "second", enforce: "service" }] },
      { name: "a", local: { requests: 1, per: "second" } },
      { name: "c", limits: [{ requests: 1, per: "second" }] },
    ]);
    const res = rateLimitPolicyResources(cfg);
    expect(res.map((r) => [r.typeUrl, r.name])).toEqual([[RATE_LIMIT_CONFIG_TYPE_URL, "edge"]]);
    expect(isFullStateType(RATE_LIMIT_CONFIG_TYPE_URL)).toBe(true);
    expect((res[0]!.message as any).descriptors.map((d: any) => d.value)).toEqual(["b"]);
  });

  it("maps periods, windows, algorithms, calendar quotas and shadow mode onto the service's limits", () => {
    const cfg = config([
      {
        name: "p",
        timeZone: "Europe/Paris",
        shadow: false,
        limits: [
          // Counted by the service (the control plane would count it from access logs by default).
          { requests: 1_000_000, per: "month", callers: "identified", enforce: "service" },
          { requests: 20, window: "30s", algorithm: "sliding_window", callers: "identified" },
          {
            requests: 5,
            per: "second",
            algorithm: "token_bucket",
            burst: 8,
            callers: "identified",
            shadow: true,
          },
        ],
      },
    ]);
    const [policy] = (rateLimitPolicyResources(cfg)[0]!.message as any).descriptors;
    expect(policy.descriptors).toEqual([
      { key: "consumer", value: "anonymous" },
      {
        key: "consumer",
        count_refused: { value: false },
        rate_limits: [
          {
            name: "p.limits[0]",
            requests_per_unit: 1_000_000,
            unit: "MONTH",
            calendar: true,
            time_zone: "Europe/Paris",
          },
          { name: "p.limits[1]", requests_per_unit: 20, window: "30s", algorithm: "SLIDING_WINDOW" },
          {
            name: "p.limits[2]",
            requests_per_unit: 5,
            unit: "SECOND",
            algorithm: "TOKEN_BUCKET",
            burst: 8,
            shadow_mode: { value: true },
          },
        ],
      },
    ]);
  });
});

describe("rate-limit policies: decisions of the rate-limit service", () => {
  it("classic policy: identified callers per consumer, anonymous ones per address, none escapes", async () => {
    const s = service(
      config([
        {
          name: "classic",
          limits: [
            { requests: 5, per: "second", callers: "identified", enforce: "service" },
            { requests: 2, per: "second", by: "ip", callers: "anonymous", enforce: "service" },
            { requests: 8, per: "day", callers: "identified", enforce: "service" },
          ],
        },
      ]),
    );
    const ip1 = { ip: "10.0.0.1" };
    expect(await s.admitted("classic", ip1, 4)).toBe(2);
    expect(await s.admitted("classic", { ip: "10.0.0.2" }, 4)).toBe(2);
    // Identified callers are not held by the anonymous per-IP limit, nor by each other.
    expect(await s.admitted("classic", { consumer: "acme", plan: "gold", ip: "10.0.0.1" }, 7)).toBe(5);
    expect(await s.admitted("classic", { consumer: "globex", plan: "default", ip: "10.0.0.1" }, 7)).toBe(5);
    s.clock.advance(1_000);
    // The daily quota (8) runs out before the per-second limit; refused requests did not use it up.
    expect(await s.admitted("classic", { consumer: "acme", plan: "gold", ip: "10.0.0.9" }, 5)).toBe(3);
    s.clock.advance(1_000);
    expect(await s.admitted("classic", { consumer: "acme", plan: "gold", ip: "10.0.0.9" }, 1)).toBe(0);
    expect(await s.admitted("classic", ip1, 1)).toBe(1);
  });

  it("by: consumer for all callers holds each anonymous address to the limit too", async () => {
    const s = service(config([{ name: "p", limits: [{ requests: 3, per: "minute", enforce: "service" }] }]));
    expect(await s.admitted("p", { ip: "10.0.0.1" }, 5)).toBe(3);
    expect(await s.admitted("p", { ip: "10.0.0.2" }, 5)).toBe(3);
    expect(await s.admitted("p", { consumer: "acme", plan: "gold", ip: "10.0.0.1" }, 5)).toBe(3);
  });

  it("a plan's limit replaces the general one of the same window for consumers on that plan", async () => {
    const s = service(
      config([
        {
          name: "p",
          limits: [
            { requests: 4, per: "minute", callers: "identified" },
            { requests: 2, per: "minute", plan: "free" },
          ],
        },
      ]),
    );
    expect(await s.admitted("p", { consumer: "a", plan: "free", ip: "10.0.0.1" }, 5)).toBe(2);
    expect(await s.admitted("p", { consumer: "b", plan: "pro", ip: "10.0.0.1" }, 5)).toBe(4);
  });

  it("counts ip limits of identified callers per address across consumers, apart from anonymous ones", async () => {
    const s = service(
      config([
        {
          name: "p",
          limits: [
            { requests: 3, per: "minute", by: "ip", callers: "identified" },
            { requests: 1, per: "minute", by: "ip", callers: "anonymous", enforce: "service" },
          ],
        },
      ]),
    );
    expect(await s.admitted("p", { consumer: "a", ip: "10.0.0.1" }, 2)).toBe(2);
    expect(await s.admitted("p", { consumer: "b", ip: "10.0.0.1" }, 2)).toBe(1);
    expect(await s.admitted("p", { consumer: "b", ip: "10.0.0.2" }, 1)).toBe(1);
    expect(await s.admitted("p", { ip: "10.0.0.1" }, 2)).toBe(1);
  });

  it("limits a route for all its callers together; shadow limits count but admit", async () => {
    const s = service(
      config([
        { name: "r", limits: [{ requests: 3, per: "minute", by: "route" }] },
        { name: "s", shadow: true, limits: [{ requests: 1, per: "minute", by: "ip" }] },
      ]),
    );
    expect(await s.admitted("r", { ip: "10.0.0.1" }, 2)).toBe(2);
    expect(await s.admitted("r", { consumer: "a", ip: "10.0.0.2" }, 2)).toBe(1);
    expect(await s.admitted("s", { ip: "10.0.0.1" }, 5)).toBe(5);
  });
});
