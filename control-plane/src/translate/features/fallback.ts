/**
 * What a route answers when its upstream fails: another upstream (an aggregate cluster that fails
 * over from one to the other), or a static answer in place of any 5xx (Envoy's `custom_response`).
 * Either way the answer is marked `x-portico-degraded: fallback`.
 *
 * A failover works by itself: unless its upstream has active health checks (or outlier detection
 * of the user's), the primary side is a variant of the upstream's cluster that ejects an endpoint
 * on its first refused connection (and on 3 5xx answers in a row), and a call whose connection is
 * refused is retried on the next priority, the fallback, so no call waits for an ejection.
 */
import { DEGRADED_HEADER, duration, TYPE_PREFIX } from "@portico/contract";
import type { Route, Upstream } from "../../model/schema.js";
import type { ResourceInput } from "../../xds/snapshot.js";
import { TypeUrl } from "../../xds/types.js";
import type { GatewayContext } from "../context.js";
import type { HttpFeature, HttpFilterName, UpstreamVariant } from "../feature.js";
import { retryPolicy } from "./retries.js";

const CUSTOM_RESPONSE = "envoy.extensions.filters.http.custom_response.v3.CustomResponse";
const CUSTOM_RESPONSE_FILTER: HttpFilterName = "envoy.filters.http.custom_response";
const LOCAL_RESPONSE_POLICY =
  "envoy.extensions.http.custom_response.local_response_policy.v3.LocalResponsePolicy";
const STATUS_CLASS_INPUT = "envoy.type.matcher.v3.HttpResponseStatusCodeClassMatchInput";
const AGGREGATE = "envoy.extensions.clusters.aggregate.v3.ClusterConfig";
const PREVIOUS_PRIORITIES = "envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig";

/** The name of the aggregate cluster that fails over from one upstream to another. */
export function aggregateName(primary: string, fallback: string): string {
  return `${primary}~or~${fallback}`;
}

/** The fallback's endpoints as a failover's second choice: each carries the degraded marker. */
const fallbackVariantName = (fallback: string) => `${fallback}~fallback`;

/** The primary's endpoints with passive detection, for failovers whose upstream has no detection of its own. */
const primaryVariantName = (primary: string) => `${primary}~primary`;

/** Where the marker is read from: the metadata of the endpoint that answered. */
const MARKER = { portico: { degraded: "fallback" } };

/**
 * Passive detection for a failover's primary: a refused connection (or a reset, a timeout) ejects
 * the endpoint at once, three 5xx answers in a row too; every endpoint may be ejected, which is
 * what sends the traffic to the fallback.
 */
const PASSIVE_DETECTION = {
  split_external_local_origin_errors: true,
  consecutive_local_origin_failure: { value: 1 },
  consecutive_5xx: { value: 3 },
  interval: duration(5_000),
  base_ejection_time: duration(10_000),
  max_ejection_percent: { value: 100 },
};

/** Whether the upstream already finds its failing endpoints by itself. */
const detects = (u: Upstream | undefined) => !!(u?.healthCheck || u?.outlierDetection);

interface Failover {
  primary: string;
  fallback: string;
  /** The aggregate's first cluster: the primary upstream's own, or its variant with passive detection. */
  primaryCluster: string;
}

/** The gateway's routes that fail over to another upstream. */
function failovers(ctx: GatewayContext): Failover[] {
  const upstreams = new Map(ctx.config.upstreams.map((u) => [u.name, u]));
  const out: Failover[] = [];
  for (const r of ctx.config.routes) {
    if (r.gateway !== ctx.gateway.name || r.upstream === undefined || r.fallback?.upstream === undefined)
      continue;
    out.push({
      primary: r.upstream,
      fallback: r.fallback.upstream,
      primaryCluster: detects(upstreams.get(r.upstream)) ? r.upstream : primaryVariantName(r.upstream),
    });
  }
  return out;
}

function aggregateCluster(f: Failover): object {
  return {
    name: aggregateName(f.primary, f.fallback),
    connect_timeout: duration(1000),
    lb_policy: "CLUSTER_PROVIDED",
    cluster_type: {
      name: "envoy.clusters.aggregate",
      typed_config: {
        "@type": TYPE_PREFIX + AGGREGATE,
        clusters: [f.primaryCluster, fallbackVariantName(f.fallback)],
      },
    },
  };
}

function aggregateClusters(ctx: GatewayContext): ResourceInput[] {
  const aggregates = new Map(failovers(ctx).map((f) => [aggregateName(f.primary, f.fallback), f]));
  return [...aggregates.keys()].sort().map((name) => ({
    typeUrl: TypeUrl.Cluster,
    name,
    message: aggregateCluster(aggregates.get(name)!),
  }));
}

/** The primaries' variants with passive detection and the fallbacks' marked variants, each once. */
function variants(ctx: GatewayContext): UpstreamVariant[] {
  const out = new Map<string, UpstreamVariant>();
  for (const f of failovers(ctx)) {
    if (f.primaryCluster !== f.primary) {
      out.set(f.primaryCluster, {
        upstream: f.primary,
        name: f.primaryCluster,
        outlierDetection: PASSIVE_DETECTION,
      });
    }
    const marked = fallbackVariantName(f.fallback);
    out.set(marked, { upstream: f.fallback, name: marked, endpointMetadata: MARKER });
  }
  return [...out.keys()].sort().map((name) => out.get(name)!);
}

/**
 * The route's retries, with a refused connection always retried on the next priority (the
 * fallback): the route's own policy when it has one, else a single retry of refused connections.
 */
function failoverRetries(r: Route): object {
  const own = r.retries ? (retryPolicy(r.retries) as { retry_on: string }) : undefined;
  const on = own?.retry_on.split(",") ?? ["connect-failure", "refused-stream"];
  const covered = on.includes("connect-failure") || on.includes("5xx");
  return {
    ...(own ?? { num_retries: { value: 1 } }),
    retry_on: (covered ? on : [...on, "connect-failure"]).join(","),
    retry_priority: {
      name: "envoy.retry_priorities.previous_priorities",
      typed_config: { "@type": TYPE_PREFIX + PREVIOUS_PRIORITIES, update_frequency: 1 },
    },
  };
}

const degradedHeader = (value: string) => ({
  header: { key: DEGRADED_HEADER, value },
  append_action: "OVERWRITE_IF_EXISTS_OR_ADD",
});

/** Replaces any 5xx answer for the route, Envoy's own (no healthy upstream, reset) or the upstream's. */
function staticFallback(f: NonNullable<Route["fallback"]>): object {
  return {
    "@type": TYPE_PREFIX + CUSTOM_RESPONSE,
    custom_response_matcher: {
      matcher_list: {
        matchers: [
          {
            predicate: {
              single_predicate: {
                input: { name: "status-class", typed_config: { "@type": TYPE_PREFIX + STATUS_CLASS_INPUT } },
                value_match: { exact: "5xx" },
              },
            },
            on_match: {
              action: {
                name: "fallback",
                typed_config: {
                  "@type": TYPE_PREFIX + LOCAL_RESPONSE_POLICY,
                  status_code: { value: f.status },
                  ...(f.body !== undefined ? { body: { inline_string: f.body } } : {}),
                  response_headers_to_add: [
                    ...(f.contentType
                      ? [
                          {
                            header: { key: "content-type", value: f.contentType },
                            append_action: "OVERWRITE_IF_EXISTS_OR_ADD",
                          },
                        ]
                      : []),
                    degradedHeader("fallback"),
                  ],
                },
              },
            },
          },
        ],
      },
    },
  };
}

export const fallback: HttpFeature = {
  name: "fallback",
  listener: (_ctx, _listener, routes) => ({
    // The filter acts only on routes that carry a static fallback.
    httpFilters: routes.some((r) => r.fallback?.status !== undefined)
      ? [{ name: CUSTOM_RESPONSE_FILTER, typed_config: { "@type": TYPE_PREFIX + CUSTOM_RESPONSE } }]
      : [],
    route: (r) => {
      const f = r.fallback;
      if (!f) return undefined;
      if (f.status !== undefined) return { perFilterConfig: { [CUSTOM_RESPONSE_FILTER]: staticFallback(f) } };
      if (r.upstream === undefined || f.upstream === undefined) return undefined;
      return {
        action: { cluster: aggregateName(r.upstream, f.upstream), retry_policy: failoverRetries(r) },
        // Empty (so left out) unless the fallback's endpoint answered.
        responseHeadersToAdd: [degradedHeader("%UPSTREAM_METADATA(portico:degraded)%")],
      };
    },
  }),
  upstreamVariants: variants,
  clusters: aggregateClusters,
};
