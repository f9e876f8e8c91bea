/**
 * Rate limiting in Envoy: the `local_ratelimit` filter (a token bucket per route in each Envoy, no
 * call out), the limits each Envoy counts per caller (envoy-limits.ts), and the `ratelimit` filter,
 * which asks Portico's rate-limit service with the descriptors ratelimit-policy.ts describes, on
 * the routes whose policy has limits the service counts.
 */
import { duration, TYPE_PREFIX } from "@portico/contract";
import { ANONYMOUS } from "../../model/ratelimit.js";
import { hasServiceLimits } from "../../model/ratelimit-enforcement.js";
import type { RateLimitPolicy, Route } from "../../model/schema.js";
import { rateLimitPolicyOf, type GatewayContext } from "../context.js";
import type { HttpFeature, HttpFilter, HttpFilterName } from "../feature.js";
import {
  DESCRIPTOR_KEY,
  descriptorShapes,
  rateLimitDomain,
  type DescriptorShape,
} from "../ratelimit-policy.js";
import { identityMetadataKey } from "./authentication.js";
import {
  envoyLimitsExtensionConfigs,
  envoyLimitsHttpFilters,
  envoyLimitsRoutePatch,
} from "./envoy-limits.js";

const RATE_LIMIT = "envoy.extensions.filters.http.ratelimit.v3.RateLimit";
const LOCAL_RATE_LIMIT = "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit";
export const RATE_LIMIT_FILTER: HttpFilterName = "envoy.filters.http.ratelimit";
export const LOCAL_RATE_LIMIT_FILTER: HttpFilterName = "envoy.filters.http.local_ratelimit";

const PER_MS = { second: 1_000, minute: 60_000, hour: 3_600_000 } as const;
const ALWAYS = { default_value: { numerator: 100, denominator: "HUNDRED" } };

/** Whether the route's policy has limits the rate-limit service decides. */
function usesService(ctx: GatewayContext, p: RateLimitPolicy | undefined): p is RateLimitPolicy {
  return !!p && hasServiceLimits(p) && ctx.gateway.rateLimit !== undefined;
}

/**
 * Envoy's `local_ratelimit`, placed before authentication: a flood is cut off by a token bucket
 * in the proxy before it costs an ext-authz call or a call to the rate-limit service.
 */
export function localRateLimitHttpFilters(ctx: GatewayContext, routes: readonly Route[]): HttpFilter[] {
  // Without a bucket here the filter acts only on routes that carry one.
  if (!routes.some((r) => rateLimitPolicyOf(ctx, r)?.local)) return [];
  return [
    {
      name: LOCAL_RATE_LIMIT_FILTER,
      typed_config: { "@type": TYPE_PREFIX + LOCAL_RATE_LIMIT, stat_prefix: "local_rate_limit" },
    },
  ];
}

/** Envoy's draft-03 `X-RateLimit-*` headers on every answer, unless the gateway says `off`. */
function limitHeaders(ctx: GatewayContext): object {
  return ctx.gateway.rateLimitHeaders === "off" ? {} : { enable_x_ratelimit_headers: "DRAFT_VERSION_03" };
}

/** The global `ratelimit` filter, after authentication so descriptors carry the caller's identity. */
export function rateLimitHttpFilters(ctx: GatewayContext, routes: readonly Route[]): HttpFilter[] {
  const policies = routes.map((r) => rateLimitPolicyOf(ctx, r));
  const out: HttpFilter[] = [];
  const rl = ctx.gateway.rateLimit;
  if (rl && policies.some((p) => usesService(ctx, p))) {
    out.push({
      name: RATE_LIMIT_FILTER,
      typed_config: {
        "@type": TYPE_PREFIX + RATE_LIMIT,
        domain: rateLimitDomain(ctx.gateway),
        timeout: duration(rl.timeoutMs),
        failure_mode_deny: rl.failClosed,
        // 503 rather than Envoy's 500: the gateway is fine, a dependency is not.
        ...(rl.failClosed ? { status_on_error: { code: "ServiceUnavailable" } } : {}),
        // The service's count is the group's: its numbers hold on every answer.
        ...limitHeaders(ctx),
        // gRPC clients retry UNAVAILABLE (what a 429 maps to); RESOURCE_EXHAUSTED tells them to back off.
        rate_limited_as_resource_exhausted: true,
        rate_limit_service: {
          grpc_service: { envoy_grpc: { cluster_name: rl.upstream } },
          transport_api_version: "V3",
        },
      },
    });
  }
  return out;
}

/** Per-filter settings of a route (its `local_ratelimit` token bucket), by filter name. */
export function rateLimitPerRoute(ctx: GatewayContext, r: Route): Record<string, object> {
  const local = rateLimitPolicyOf(ctx, r)?.local;
  if (!local) return {};
  const intervalMs = PER_MS[local.per];
  return {
    [LOCAL_RATE_LIMIT_FILTER]: {
      "@type": TYPE_PREFIX + LOCAL_RATE_LIMIT,
      stat_prefix: `route_${r.name}`,
      token_bucket: {
        max_tokens: local.burst ?? local.requests,
        tokens_per_fill: { value: local.requests },
        fill_interval: duration(intervalMs),
      },
      filter_enabled: ALWAYS,
      filter_enforced: ALWAYS,
      // This bucket is each Envoy's own (a flood guard, not a share of a limit): its numbers are exact.
      ...limitHeaders(ctx),
      rate_limited_as_resource_exhausted: true,
      // The bucket refills every interval, so a refused caller may try again after one.
      response_headers_to_add: [
        {
          header: { key: "retry-after", value: String(Math.ceil(intervalMs / 1000)) },
          append_action: "OVERWRITE_IF_EXISTS_OR_ADD",
        },
      ],
    },
  };
}

function action(ctx: GatewayContext, r: Route, entry: DescriptorShape[number]): object {
  switch (entry) {
    case "ip":
      // The downstream address Envoy trusts (the HCM uses the peer's, `use_remote_address`).
      return { remote_address: {} };
    case "route":
      return { generic_key: { descriptor_key: DESCRIPTOR_KEY.route, descriptor_value: r.name } };
    case "consumer":
    case "plan":
      return {
        metadata: {
          descriptor_key: DESCRIPTOR_KEY[entry],
          metadata_key: identityMetadataKey(entry),
          // No identity (no credentials, or no auth on the route): still a value, so still limited.
          default_value: ANONYMOUS,
          source: "DYNAMIC",
        },
      };
  }
}

/** The route action's `rate_limits`: the descriptors sent to the rate-limit service. */
export function routeRateLimits(ctx: GatewayContext, r: Route): object[] | undefined {
  const p = rateLimitPolicyOf(ctx, r);
  if (!usesService(ctx, p)) return undefined;
  const policy = { generic_key: { descriptor_key: DESCRIPTOR_KEY.policy, descriptor_value: p.name } };
  return descriptorShapes(p).map((shape) => ({
    actions: [policy, ...shape.map((e) => action(ctx, r, e))],
  }));
}

export const rateLimits: HttpFeature = {
  name: "rate limits",
  listener: (ctx, _listener, routes) => {
    const callerLimits = envoyLimitsHttpFilters(ctx, routes);
    return {
      httpFilters: [
        ...localRateLimitHttpFilters(ctx, routes),
        ...callerLimits,
        ...rateLimitHttpFilters(ctx, routes),
      ],
      route: (r) => {
        const limits = routeRateLimits(ctx, r);
        const caller = callerLimits.length > 0 ? envoyLimitsRoutePatch(ctx, r) : {};
        return {
          perFilterConfig: { ...rateLimitPerRoute(ctx, r), ...caller.perFilterConfig },
          ...(caller.metadata ? { metadata: caller.metadata } : {}),
          ...(limits?.length ? { action: { rate_limits: limits } } : {}),
        };
      },
    };
  },
  // The policy service the gateway's filter calls, whether or not a route uses it yet.
  upstreams: (ctx) => (ctx.gateway.rateLimit ? [ctx.gateway.rateLimit.upstream] : []),
  extensionConfigs: envoyLimitsExtensionConfigs,
};
