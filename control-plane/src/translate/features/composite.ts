/**
 * Composite routes in Envoy. The client's call reaches the aggregator through an ordinary route
 * (authenticated and limited like any other, by the route's policies), and the aggregator calls
 * each part back through Envoy, on the gateway's parts listener, so that the parts' clusters
 * apply their retries, circuit breakers, TLS and outlier detection:
 *
 * ```
 * client ─► <gateway>/<listener>: route <name> ─► aggregator ─┬─► <gateway>/~aggregator-parts ─► users
 *           (ext-authz, rate limit, x-portico-composite)      └─► (x-portico-part: <name>/<key>) ─► orders
 * ```
 *
 * The aggregator passes on the identity ext-authz set on the client's call. The parts listener
 * keeps it only on calls that carry the gateway's parts token, which Envoy sets on the calls it
 * forwards to the aggregator (overwriting any a client sent) and the aggregator passes back; any
 * other call gets 403 and reaches no upstream. A gateway without a token (a config that did not go
 * through the control plane's writes) serves no part at all.
 */
import {
  duration,
  struct,
  TYPE_PREFIX,
  COMPOSITE_HEADER,
  PART_HEADER,
  PARTS_TOKEN_HEADER,
} from "@portico/contract";
import { compositeMatch } from "../../model/route-order.js";
import type { CompositeRoute, Config, GatewayAggregator, Route } from "../../model/schema.js";
import type { ResourceInput } from "../../xds/snapshot.js";
import { TypeUrl } from "../../xds/types.js";
import type { GatewayContext } from "../context.js";
import { ads, type HttpFeature } from "../feature.js";
import { INTERNAL_REQUEST_HEADERS, QUIET_ROUTER } from "./internal-headers.js";
import { retryPolicy } from "./retries.js";

const HCM = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const ROUTER = "envoy.extensions.filters.http.router.v3.Router";
const STDOUT_LOG = "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog";

/**
 * Envoy waits this much longer than the route's timeout, so the aggregator's own answer at its
 * deadline (a partial 200, or a 504 naming the part) reaches the client rather than Envoy's.
 */
export const AGGREGATOR_GRACE_MS = 1_000;

/** The parts listener and its route table; `~` keeps it apart from every listener a user can name. */
export function partsListenerName(gateway: string): string {
  return `${gateway}/~aggregator-parts`;
}

/** The routes that stand for composite routes. */
const compositeEntries = new WeakSet<Route>();

/** The route a composite route is to Envoy: to the gateway's aggregator, naming itself. */
function envoyRoute(c: CompositeRoute, aggregator: GatewayAggregator): Route {
  const token = aggregator.partsToken;
  const r: Route = {
    name: c.name,
    gateway: c.gateway,
    ...(c.listener !== undefined ? { listener: c.listener } : {}),
    match: compositeMatch(c).match,
    upstream: aggregator.upstream,
    timeoutMs: c.timeoutMs + AGGREGATOR_GRACE_MS,
    requestHeaders: {
      set: { [COMPOSITE_HEADER]: c.name, ...(token !== undefined ? { [PARTS_TOKEN_HEADER]: token } : {}) },
      // Without a token of the gateway's, none a client sent may reach the aggregator.
      ...(token === undefined ? { remove: [PARTS_TOKEN_HEADER] } : {}),
    },
    ...(c.authPolicy !== undefined ? { authPolicy: c.authPolicy } : {}),
    ...(c.rateLimitPolicy !== undefined ? { rateLimitPolicy: c.rateLimitPolicy } : {}),
  };
  compositeEntries.add(r);
  return r;
}

/**
 * The config with each composite route added as a route to its gateway's aggregator, so every
 * part of the translator (authentication, rate limits, guards, clusters, the rate-limit service's
 * policies) treats it like any route. The same config when there are none.
 */
export function withCompositeRoutes(config: Config): Config {
  if (config.compositeRoutes.length === 0) return config;
  const gateways = new Map(config.gateways.map((g) => [g.name, g]));
  const extra: Route[] = [];
  for (const c of config.compositeRoutes) {
    const aggregator = gateways.get(c.gateway)?.aggregator;
    if (aggregator !== undefined) extra.push(envoyRoute(c, aggregator));
  }
  return { ...config, routes: [...config.routes, ...extra] };
}

function compositesOf(ctx: GatewayContext): CompositeRoute[] {
  if (!ctx.gateway.aggregator) return [];
  return ctx.config.compositeRoutes.filter((c) => c.gateway === ctx.gateway.name);
}

/** The upstreams the gateway's parts listener routes to. */
function partUpstreams(ctx: GatewayContext): string[] {
  return compositesOf(ctx).flatMap((c) => c.parts.map((p) => p.upstream));
}

const jsonHeader = [
  { header: { key: "content-type", value: "application/json" }, append_action: "OVERWRITE_IF_EXISTS_OR_ADD" },
];

/** An answer of the parts listener's own, in JSON. */
function refusal(name: string, status: number, code: string, message: string): object {
  return {
    name,
    match: { prefix: "/" },
    direct_response: { status, body: { inline_string: JSON.stringify({ code, message }) } },
    response_headers_to_add: jsonHeader,
  };
}

function partsRouteConfiguration(ctx: GatewayContext, name: string): object {
  const token = ctx.gateway.aggregator?.partsToken;
  // Fails closed: without a token no call can prove it comes from the aggregator.
  const fromAggregator =
    token === undefined ? [] : [{ name: PARTS_TOKEN_HEADER, string_match: { exact: token } }];
  const routes =
    token === undefined
      ? []
      : compositesOf(ctx).flatMap((c) =>
          c.parts.map((p) => {
            const marker = `${c.name}/${p.key}`;
            return {
              name: marker,
              match: {
                prefix: "/",
                headers: [{ name: PART_HEADER, string_match: { exact: marker } }, ...fromAggregator],
              },
              route: {
                cluster: p.upstream,
                // A backstop: the aggregator's own deadline for the part comes first, so a late part is
                // always a timeout to it, never a 504 from Envoy that would pass for a failed upstream.
                timeout: duration(p.timeoutMs + AGGREGATOR_GRACE_MS),
                // Upstreams named by hostname see their own name, as when called directly.
                auto_host_rewrite: { value: true },
                ...(p.retries ? { retry_policy: retryPolicy(p.retries) } : {}),
              },
              request_headers_to_remove: [PART_HEADER, PARTS_TOKEN_HEADER],
            };
          }),
        );
  const unknownPart = {
    ...refusal("unknown-part", 404, "unknown_part", `name a part of a composite route in ${PART_HEADER}`),
    match: { prefix: "/", headers: fromAggregator },
  };
  return {
    name,
    virtual_hosts: [
      {
        name: `${ctx.gateway.name}_aggregator_parts`,
        domains: ["*"],
        routes: [
          ...routes,
          ...(token === undefined ? [] : [unknownPart]),
          // A call without the token learns nothing, not even which parts exist.
          token === undefined
            ? refusal("no-parts-token", 403, "forbidden", "the gateway has no parts token")
            : refusal("not-from-aggregator", 403, "forbidden", "only the aggregator calls the parts"),
        ],
      },
    ],
    request_headers_to_remove: INTERNAL_REQUEST_HEADERS,
  };
}

function partsListener(ctx: GatewayContext, name: string): object {
  const { gateway } = ctx;
  const settings = gateway.aggregator!;
  return {
    name,
    address: {
      socket_address: { address: settings.partsListener.address, port_value: settings.partsListener.port },
    },
    filter_chains: [
      {
        filters: [
          {
            name: "envoy.filters.network.http_connection_manager",
            typed_config: {
              "@type": TYPE_PREFIX + HCM,
              stat_prefix: `${gateway.name}_aggregator_parts`,
              codec_type: "AUTO",
              rds: { route_config_name: name, config_source: ads },
              http_filters: [
                {
                  name: "envoy.filters.http.router",
                  typed_config: { "@type": TYPE_PREFIX + ROUTER, ...QUIET_ROUTER },
                },
              ],
              access_log: [
                {
                  name: "envoy.access_loggers.stdout",
                  typed_config: {
                    "@type": TYPE_PREFIX + STDOUT_LOG,
                    log_format: {
                      json_format: struct({
                        time: "%START_TIME%",
                        gateway: gateway.name,
                        request_id: "%REQ(X-REQUEST-ID)%",
                        method: "%REQ(:METHOD)%",
                        path: "%REQ(:PATH)%",
                        status: "%RESPONSE_CODE%",
                        flags: "%RESPONSE_FLAGS%",
                        route: "%ROUTE_NAME%",
                        upstream: "%UPSTREAM_CLUSTER%",
                        duration_ms: "%DURATION%",
                      }),
                    },
                  },
                },
              ],
              // The client's request id, passed on by the aggregator, follows each part.
              generate_request_id: { value: true },
              preserve_external_request_id: true,
              normalize_path: { value: true },
              merge_slashes: true,
            },
          },
        ],
      },
    ],
  };
}

/** The gateway's parts listener and route table; nothing for a gateway without composite routes. */
function aggregatorResources(ctx: GatewayContext): ResourceInput[] {
  if (compositesOf(ctx).length === 0) return [];
  const name = partsListenerName(ctx.gateway.name);
  return [
    { typeUrl: TypeUrl.Listener, name, message: partsListener(ctx, name) },
    { typeUrl: TypeUrl.Route, name, message: partsRouteConfiguration(ctx, name) },
  ];
}

export const composite: HttpFeature = {
  name: "composite routes",
  prepare: withCompositeRoutes,
  listener: () => ({
    // A composite route's path may have parameters (a regex match), yet it is as specific as an
    // exact path: it ranks among exact paths, before any prefix that would otherwise take its calls.
    route: (r) => (compositeEntries.has(r) ? { pathTemplate: true } : undefined),
  }),
  upstreams: partUpstreams,
  listeners: aggregatorResources,
};
