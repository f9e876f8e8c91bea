/**
 * The seam between the translator's walk (gateways, listeners, routes) and the HTTP features it
 * translates: each feature says what it adds to a listener's connection manager, to each route
 * the listener serves, and to the gateway's resources, and reads nothing the others produce.
 */
import { TYPE_PREFIX } from "@portico/contract";
import type { Config, Listener, Route } from "../model/schema.js";
import type { ResourceInput } from "../xds/snapshot.js";
import { TypeUrl } from "../xds/types.js";
import type { GatewayContext } from "./context.js";

/**
 * The order of the HTTP filters in every connection manager, whichever features bring them.
 * A local token bucket comes before authentication (floods cost no call out), authentication
 * (jwt_authn and the checks that decide on its verdict, or ext_authz) before the limits Envoy
 * counts per caller and the rate limiter (both read the identity authentication found); the
 * router is last.
 * Answers pass the filters in the reverse order, so the header mutation sees the transcoder's
 * answer, and the body check (lua) sees the JSON before the transcoder turns it into gRPC.
 */
export const HTTP_FILTER_ORDER = [
  "envoy.filters.http.cors",
  "envoy.filters.http.buffer",
  "envoy.filters.http.local_ratelimit",
  "envoy.filters.http.jwt_authn",
  "portico.jwt_checks",
  "portico.jwt_identity",
  "envoy.filters.http.ext_authz",
  "portico.quota",
  "portico.caller_limits",
  "envoy.filters.http.ratelimit",
  "envoy.filters.http.header_mutation",
  "envoy.filters.http.lua",
  "envoy.filters.http.grpc_json_transcoder",
  "envoy.filters.http.custom_response",
  "envoy.filters.http.router",
] as const;

export type HttpFilterName = (typeof HTTP_FILTER_ORDER)[number];

/** One entry of a connection manager's `http_filters`. */
export interface HttpFilter {
  readonly name: HttpFilterName;
  /** The filter's config; or, in `config_discovery`, where Envoy fetches it (ECDS, by the filter's name). */
  readonly typed_config?: object;
  readonly config_discovery?: object;
  readonly disabled?: boolean;
}

/**
 * A route's `typed_per_filter_config` entry that turns a listener's filter off there: Envoy's own,
 * for filters whose per-route config cannot say it (header_to_metadata, ECDS-discovered filters).
 */
export const FILTER_OFF = { "@type": TYPE_PREFIX + "envoy.config.route.v3.FilterConfig", disabled: true };

/** ADS: where a Portico Envoy fetches every resource it is not given in its bootstrap. */
export const ads = { ads: {}, resource_api_version: "V3" };

/**
 * A filter whose config Envoy fetches by ECDS, under the filter's name, from the gateway group's
 * `filterConfig` resource. Until the first arrives the listener waits (warms); if it never does,
 * `defaultConfig` applies.
 */
export function discoveredFilter(name: HttpFilterName, defaultConfig: { "@type": string }): HttpFilter {
  return {
    name,
    config_discovery: {
      config_source: ads,
      default_config: defaultConfig,
      type_urls: [defaultConfig["@type"]],
    },
  };
}

/** The gateway group's ECDS resource for a filter of `discoveredFilter`. */
export function filterConfig(name: HttpFilterName, typedConfig: { "@type": string }): ResourceInput {
  return { typeUrl: TypeUrl.ExtensionConfig, name, message: { name, typed_config: typedConfig } };
}

/** The connection manager fields a feature may set, beside the ones every listener has. */
export type ConnectionManagerField =
  | "max_request_headers_kb"
  | "early_header_mutation_extensions"
  | "access_log"
  | "tracing"
  | "request_id_extension"
  | "always_set_request_id_in_response"
  | "local_reply_config";

/** The router filter's fields a feature may set. */
export type RouterField = "suppress_envoy_headers";

/** The route table fields a feature may set, for every route of the listener. */
export type RouteTableField = "request_headers_to_remove" | "response_headers_to_add";

/**
 * An answer the gateway gives in a route's place, before the route: to the requests of the
 * route's match that also match `headers`. Its body is JSON, like Portico's other errors.
 */
export interface RouteGuard {
  /** The entry is named `<route>/<name>`. */
  readonly name: string;
  readonly headers: readonly object[];
  readonly status: number;
  readonly body: Readonly<Record<string, unknown>>;
}

/**
 * An upstream's cluster under another name, for one feature's use, with what the feature changes:
 * metadata on every endpoint (read back in headers with `%UPSTREAM_METADATA%`), or Envoy's
 * `outlier_detection` in place of the upstream's own.
 */
export interface UpstreamVariant {
  readonly upstream: string;
  readonly name: string;
  readonly endpointMetadata?: Readonly<Record<string, Readonly<Record<string, string>>>>;
  readonly outlierDetection?: object;
}

/** What a feature adds to one route it is asked about. */
export interface RoutePatch {
  /** `typed_per_filter_config` entries, by filter name. */
  readonly perFilterConfig?: Readonly<Record<string, object>>;
  /** Fields of the route's `route` action, over the ones the walk set (a feature may retarget it). */
  readonly action?: Readonly<Record<string, unknown>>;
  /** Methods the route also matches when it names some. */
  readonly alsoMethods?: readonly string[];
  /** Per-filter config the route's guards (400 and 405 answers) carry too, so they act like it. */
  readonly guardPerFilterConfig?: Readonly<Record<string, object>>;
  /** Route metadata the guards carry too, for the filters that read it beside their per-filter config. */
  readonly guardMetadata?: Readonly<Record<string, Readonly<Record<string, string>>>>;
  /** Header matchers of requests that go past the route's required-header guards to the route. */
  readonly guardBypass?: readonly object[];
  /** The route's regex stands for a path template: it ranks with exact paths, just after them. */
  readonly pathTemplate?: boolean;
  /** `request_headers_to_add` entries of the route, after its own. */
  readonly requestHeadersToAdd?: readonly object[];
  /** `response_headers_to_add` entries of the route, after its own. */
  readonly responseHeadersToAdd?: readonly object[];
  /** Answers in the route's place, placed before it. */
  readonly guards?: readonly RouteGuard[];
  /** The route's `metadata.filter_metadata`, by namespace (read by filters and local replies). */
  readonly metadata?: Readonly<Record<string, Readonly<Record<string, string>>>>;
}

/** What a feature adds to one listener and the routes it serves. */
export interface ListenerPatch {
  /** Placed by HTTP_FILTER_ORDER, whatever the order of features. */
  readonly httpFilters?: readonly HttpFilter[];
  readonly connectionManager?: Partial<Readonly<Record<ConnectionManagerField, unknown>>>;
  /** Fields of the router filter (always the last filter). */
  readonly router?: Partial<Readonly<Record<RouterField, unknown>>>;
  /** Route table fields; lists from several features are joined in registry order. */
  readonly routeTable?: Partial<Readonly<Record<RouteTableField, readonly unknown[]>>>;
  /** Asked once per route of the listener; undefined adds nothing. */
  readonly route?: (r: Route) => RoutePatch | undefined;
}

/**
 * One HTTP feature of the translator. Features are asked in registry order, which is also the
 * order of their keys in a route's `typed_per_filter_config`, of their fields in a route action
 * and of their resources; filter order is HTTP_FILTER_ORDER's alone.
 */
export interface HttpFeature {
  readonly name: string;
  /** The config with the routes the feature stands for added, before any gateway is translated. */
  readonly prepare?: (config: Config) => Config;
  readonly listener?: (ctx: GatewayContext, listener: Listener, routes: readonly Route[]) => ListenerPatch;
  /** Upstreams the gateway needs clusters for on this feature's behalf (its services, its parts). */
  readonly upstreams?: (ctx: GatewayContext) => readonly string[];
  /** Listeners of the feature's own, each with its route table: after the gateway's listeners. */
  readonly listeners?: (ctx: GatewayContext) => ResourceInput[];
  /** Upstreams' clusters under other names, for the feature's own use: after the upstreams' clusters. */
  readonly upstreamVariants?: (ctx: GatewayContext) => readonly UpstreamVariant[];
  /** Clusters that are no upstream's: after the upstreams' clusters and the feature's variants. */
  readonly clusters?: (ctx: GatewayContext) => ResourceInput[];
  /** The configs of the feature's filters that Envoy fetches by ECDS (`TypedExtensionConfig`). */
  readonly extensionConfigs?: (ctx: GatewayContext) => ResourceInput[];
}

/** The config as the features see it: each one's `prepare` applied, in registry order. */
export function prepareConfig(config: Config, features: readonly HttpFeature[]): Config {
  return features.reduce((c, f) => f.prepare?.(c) ?? c, config);
}

/** What several features add to one route, in registry order; an undefined entry adds nothing. */
export function combineRoutePatches(patches: readonly (RoutePatch | undefined)[]): RoutePatch {
  const perFilterConfig: Record<string, object> = {};
  const guardPerFilterConfig: Record<string, object> = {};
  let action: Record<string, unknown> | undefined;
  const alsoMethods: string[] = [];
  const guardBypass: object[] = [];
  const requestHeadersToAdd: object[] = [];
  const responseHeadersToAdd: object[] = [];
  const guards: RouteGuard[] = [];
  const metadata: Record<string, Readonly<Record<string, string>>> = {};
  const guardMetadata: Record<string, Readonly<Record<string, string>>> = {};
  let pathTemplate = false;
  for (const p of patches) {
    if (!p) continue;
    Object.assign(perFilterConfig, p.perFilterConfig);
    Object.assign(guardPerFilterConfig, p.guardPerFilterConfig);
    if (p.action) action = Object.assign(action ?? {}, p.action);
    alsoMethods.push(...(p.alsoMethods ?? []));
    guardBypass.push(...(p.guardBypass ?? []));
    requestHeadersToAdd.push(...(p.requestHeadersToAdd ?? []));
    responseHeadersToAdd.push(...(p.responseHeadersToAdd ?? []));
    guards.push(...(p.guards ?? []));
    Object.assign(metadata, p.metadata);
    Object.assign(guardMetadata, p.guardMetadata);
    pathTemplate ||= p.pathTemplate === true;
  }
  return {
    perFilterConfig,
    guardPerFilterConfig,
    action,
    alsoMethods,
    guardBypass,
    pathTemplate,
    requestHeadersToAdd,
    responseHeadersToAdd,
    guards,
    metadata,
    guardMetadata,
  };
}

/** The route table fields of a listener's features, each list joined in registry order. */
export function combineRouteTableFields(patches: readonly ListenerPatch[]): Record<string, unknown[]> {
  const out: Record<string, unknown[]> = {};
  for (const p of patches) {
    for (const [field, values] of Object.entries(p.routeTable ?? {})) {
      if (values?.length) (out[field] ??= []).push(...values);
    }
  }
  return out;
}
