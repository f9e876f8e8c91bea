/**
 * Calendar quotas counted off the request path (`enforce: usage`, quota/usage-counter.ts): what
 * each listener serving such routes adds.
 *
 * - An access log to the control plane (`envoy.access_loggers.http_grpc`), over the bootstrap's
 *   xDS cluster, so under mTLS Envoy speaks as its gateway identity: one entry per request the
 *   upstream answered on a usage-counted route, buffered and flushed every second (or sooner,
 *   when 16 KiB are waiting). The entry carries what counting reads (route, caller's address,
 *   the dynamic metadata naming the consumer); nothing is asked of the request on its way.
 * - The deny filter, `portico.quota`, after authentication (it reads the consumer) and before the
 *   limits (a denied caller costs no call to the rate limiter). Its config comes by ECDS, one
 *   `TypedExtensionConfig` per gateway group: a Lua script with the subjects denied now
 *   (quota-lua.ts). A deny and its lifting change that one resource: no listener is drained, no
 *   route table is pushed again, so the buckets Envoy counts per caller (envoy-limits.ts) keep
 *   their tokens. Routes of the listener without such quotas turn the filter off.
 */
import { duration, TYPE_PREFIX } from "@portico/contract";
import type { Config, Route } from "../../model/schema.js";
import { policyCounters, type UsageCounter } from "../../model/usage-quota.js";
import type { ResourceInput } from "../../xds/snapshot.js";
import { rateLimitPolicyOf, type GatewayContext } from "../context.js";
import {
  discoveredFilter,
  FILTER_OFF,
  filterConfig,
  type HttpFeature,
  type HttpFilter,
  type HttpFilterName,
} from "../feature.js";
import { identityMetadataKey } from "./authentication.js";
import { denyScript, NO_DENIES } from "./quota-lua.js";

const LUA = "envoy.extensions.filters.http.lua.v3.Lua";
const HTTP_GRPC_LOG = "envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig";
const CEL_FILTER = "envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter";

/** The deny filter's name, which is also its ECDS resource's name. */
export const QUOTA_FILTER: HttpFilterName = "portico.quota";

/** The static cluster every Portico bootstrap has to its control plane (envoy/bootstrap.yaml). */
export const XDS_CLUSTER = "xds_cluster";

/** The access log's name, as the control plane sees it on each stream. */
export const USAGE_LOG_NAME = "portico.usage";

/** How long Envoy holds log entries before sending them: the main term of a quota's overshoot. */
export const USAGE_LOG_FLUSH_MS = 1_000;

/** Entries waiting beyond this many bytes go at once: at a high rate, the flush comes sooner. */
export const USAGE_LOG_BUFFER_BYTES = 16_384;

/** Where a value is in a request's dynamic metadata: a namespace and a path of keys. */
export interface MetadataKey {
  readonly key: string;
  readonly path: readonly { key: string }[];
}

/** What a route's served requests count on, and where its requests name their consumer. */
export interface RouteUsage {
  readonly route: string;
  readonly gateway: string;
  readonly policy: string;
  readonly counters: readonly UsageCounter[];
  readonly consumerKey: MetadataKey;
  readonly planKey: MetadataKey;
}

/** The routes of the gateway whose policies have usage-counted quotas, with their counters. */
export function gatewayUsage(ctx: GatewayContext): RouteUsage[] {
  const countersOf = new Map<string, UsageCounter[]>();
  const out: RouteUsage[] = [];
  for (const r of ctx.config.routes) {
    if (r.gateway !== ctx.gateway.name || r.rateLimitPolicy === undefined) continue;
    let counters = countersOf.get(r.rateLimitPolicy);
    if (!counters) {
      const p = rateLimitPolicyOf(ctx, r);
      counters = p ? policyCounters(p) : [];
      countersOf.set(r.rateLimitPolicy, counters);
    }
    if (counters.length > 0) out.push(routeUsage(ctx, r, counters));
  }
  return out;
}

function routeUsage(ctx: GatewayContext, r: Route, counters: UsageCounter[]): RouteUsage {
  return {
    route: r.name,
    gateway: r.gateway,
    policy: r.rateLimitPolicy!,
    counters,
    consumerKey: identityMetadataKey("consumer"),
    planKey: identityMetadataKey("plan"),
  };
}

/**
 * Every gateway's usage-counted routes, by route name (names are unique across the config), for
 * counting the access logs; `config` is prepared by the features, as the translator sees it.
 */
export function usageRoutes(config: Config): Map<string, RouteUsage> {
  const routes = new Map<string, RouteUsage>();
  for (const gateway of config.gateways) {
    for (const u of gatewayUsage({ config, gateway })) routes.set(u.route, u);
  }
  return routes;
}

const usageByGateway = new WeakMap<GatewayContext, RouteUsage[]>();

/** The gateway's usage-counted routes: worked out once per gateway, not per listener or route. */
function usageOf(ctx: GatewayContext): RouteUsage[] {
  let u = usageByGateway.get(ctx);
  if (!u) {
    u = gatewayUsage(ctx);
    usageByGateway.set(ctx, u);
  }
  return u;
}

function luaConfig(script: string) {
  return { "@type": TYPE_PREFIX + LUA, default_source_code: { inline_string: script } };
}

/**
 * The filter, its config fetched by ECDS: the listener waits for it (warms), so denies in force
 * apply from the first request; if it never arrives, the filter denies nobody.
 */
const denyFilter = (): HttpFilter => discoveredFilter(QUOTA_FILTER, luaConfig(NO_DENIES));

/** The access log entry that reports served requests of the listener's usage-counted routes. */
function usageLog(counted: readonly string[], all: boolean): object {
  // Only what the upstream answered counts; the route list is left out when every route counts.
  const served = 'response.code_details == "via_upstream"';
  const expression = all
    ? served
    : `${served} && xds.route_name in [${counted.map((n) => JSON.stringify(n)).join(", ")}]`;
  return {
    name: "envoy.access_loggers.http_grpc",
    filter: {
      extension_filter: {
        name: "envoy.access_loggers.extension_filters.cel",
        typed_config: { "@type": TYPE_PREFIX + CEL_FILTER, expression },
      },
    },
    typed_config: {
      "@type": TYPE_PREFIX + HTTP_GRPC_LOG,
      common_config: {
        log_name: USAGE_LOG_NAME,
        grpc_service: { envoy_grpc: { cluster_name: XDS_CLUSTER } },
        transport_api_version: "V3",
        buffer_flush_interval: duration(USAGE_LOG_FLUSH_MS),
        buffer_size_bytes: { value: USAGE_LOG_BUFFER_BYTES },
      },
    },
  };
}

/** The gateway's ECDS resource for the deny filter, when a listener of it has the filter. */
export function quotaExtensionConfigs(ctx: GatewayContext): ResourceInput[] {
  const usage = usageOf(ctx);
  if (usage.length === 0) return [];
  const limitHeaders = ctx.gateway.rateLimitHeaders !== "off";
  return [filterConfig(QUOTA_FILTER, luaConfig(denyScript(usage, ctx.quotaDenies ?? [], limitHeaders)))];
}

const OFF = { [QUOTA_FILTER]: FILTER_OFF };

export const quota: HttpFeature = {
  name: "quota",
  listener: (ctx, _listener, routes) => {
    const counted = new Set(usageOf(ctx).map((u) => u.route));
    const here = routes.filter((r) => counted.has(r.name)).map((r) => r.name);
    if (here.length === 0) return {};
    return {
      httpFilters: [denyFilter()],
      connectionManager: { access_log: [usageLog(here, here.length === routes.length)] },
      route: (r) => (counted.has(r.name) ? undefined : { perFilterConfig: OFF }),
    };
  },
  extensionConfigs: quotaExtensionConfigs,
};
