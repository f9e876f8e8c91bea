/**
 * What a route answers when its upstream fails: another upstream (an aggregate cluster that fails
 * over from one to the other), or a static answer in place of any 5xx (Envoy's `custom_response`).
 */
import { duration, TYPE_PREFIX } from "@portico/contract";
import type { Route } from "../../model/schema.js";
import type { ResourceInput } from "../../xds/snapshot.js";
import { TypeUrl } from "../../xds/types.js";
import type { GatewayContext } from "../context.js";
import type { HttpFeature, HttpFilterName } from "../feature.js";

const CUSTOM_RESPONSE = "envoy.extensions.filters.http.custom_response.v3.CustomResponse";
const CUSTOM_RESPONSE_FILTER: HttpFilterName = "envoy.filters.http.custom_response";
const LOCAL_RESPONSE_POLICY =
  "envoy.extensions.http.custom_response.local_response_policy.v3.LocalResponsePolicy";
const STATUS_CLASS_INPUT = "envoy.type.matcher.v3.HttpResponseStatusCodeClassMatchInput";
const AGGREGATE = "envoy.extensions.clusters.aggregate.v3.ClusterConfig";

/** The name of the aggregate cluster that fails over from one upstream to another. */
export function aggregateName(primary: string, fallback: string): string {
  return `${primary}~or~${fallback}`;
}

function aggregateCluster(primary: string, fallback: string): object {
  return {
    name: aggregateName(primary, fallback),
    connect_timeout: duration(1000),
    lb_policy: "CLUSTER_PROVIDED",
    cluster_type: {
      name: "envoy.clusters.aggregate",
      typed_config: { "@type": TYPE_PREFIX + AGGREGATE, clusters: [primary, fallback] },
    },
  };
}

/** The gateway's routes that fail over to another upstream, as [primary, fallback]. */
function failovers(ctx: GatewayContext): [string, string][] {
  const out: [string, string][] = [];
  for (const r of ctx.config.routes) {
    if (r.gateway === ctx.gateway.name && r.upstream !== undefined && r.fallback?.upstream !== undefined) {
      out.push([r.upstream, r.fallback.upstream]);
    }
  }
  return out;
}

function aggregateClusters(ctx: GatewayContext): ResourceInput[] {
  const aggregates = new Map(failovers(ctx).map(([p, f]) => [aggregateName(p, f), [p, f] as const]));
  return [...aggregates].sort().map(([name, [primary, fallback]]) => ({
    typeUrl: TypeUrl.Cluster,
    name,
    message: aggregateCluster(primary, fallback),
  }));
}

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
                    {
                      header: { key: "x-portico-degraded", value: "fallback" },
                      append_action: "OVERWRITE_IF_EXISTS_OR_ADD",
                    },
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
      return {
        ...(f.status !== undefined
          ? { perFilterConfig: { [CUSTOM_RESPONSE_FILTER]: staticFallback(f) } }
          : {}),
        ...(r.upstream !== undefined && f.upstream !== undefined
          ? { action: { cluster: aggregateName(r.upstream, f.upstream) } }
          : {}),
      };
    },
  }),
  upstreams: (ctx) => failovers(ctx).map(([, f]) => f),
  clusters: aggregateClusters,
};
