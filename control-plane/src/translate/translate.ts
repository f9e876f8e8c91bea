import { isIP } from "node:net";
import { duration, TYPE_PREFIX } from "../../../protos/src/envoy.js";
import type { Certificate, Config, Gateway, Listener, Route, Upstream } from "../model/schema.js";
import type { ResourceInput } from "../xds/snapshot.js";
import { TypeUrl } from "../xds/types.js";
import { aggregatorResources, isCompositeRoute, partUpstreams, withCompositeRoutes } from "./aggregator.js";
import type { GatewayContext } from "./context.js";
import { retryPolicy } from "./retry.js";
import { authClusters, authHttpFilters, authRouteFields, identityHeaderStrip } from "./ext-authz.js";
import { accessLog, hcmTracing, observabilityUpstreams } from "./observability.js";
import {
  localRateLimitHttpFilters,
  rateLimitHttpFilters,
  rateLimitPerRoute,
  routeRateLimits,
} from "./ratelimit.js";
import { transcodeHttpFilters, transcodePerRoute } from "./transcode.js";

const HCM = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const ROUTER = "envoy.extensions.filters.http.router.v3.Router";
const HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
const DOWNSTREAM_TLS = "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";
const CORS = "envoy.extensions.filters.http.cors.v3.Cors";
const CORS_POLICY = "envoy.extensions.filters.http.cors.v3.CorsPolicy";
const CORS_FILTER = "envoy.filters.http.cors";
const BUFFER = "envoy.extensions.filters.http.buffer.v3.Buffer";
const BUFFER_PER_ROUTE = "envoy.extensions.filters.http.buffer.v3.BufferPerRoute";
const BUFFER_FILTER = "envoy.filters.http.buffer";
/** The buffer filter needs a ceiling even where only some routes set one. */
const MAX_BUFFER = 1_073_741_824;
const CUSTOM_RESPONSE = "envoy.extensions.filters.http.custom_response.v3.CustomResponse";
const CUSTOM_RESPONSE_FILTER = "envoy.filters.http.custom_response";
const LOCAL_RESPONSE_POLICY =
  "envoy.extensions.http.custom_response.local_response_policy.v3.LocalResponsePolicy";
const STATUS_CLASS_INPUT = "envoy.type.matcher.v3.HttpResponseStatusCodeClassMatchInput";
const AGGREGATE = "envoy.extensions.clusters.aggregate.v3.ClusterConfig";
const TLS_INSPECTOR = "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector";
const UPSTREAM_TLS = "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";

const ads = { ads: {}, resource_api_version: "V3" };

/** Envoy resource names: listeners and their route tables are `<gateway>/<listener>`. */
export function listenerName(gateway: string, listener: string): string {
  return `${gateway}/${listener}`;
}

function listenerResource(ctx: GatewayContext, listener: Listener): object {
  const { gateway } = ctx;
  const routes = ctx.config.routes;
  const name = listenerName(gateway.name, listener.name);
  const served = routesOf(gateway, listener, routes);
  const bodyLimits = listener.maxBodyBytes !== undefined || served.some((r) => r.maxBodyBytes !== undefined);
  const fallbacks = served.some((r) => r.fallback?.status !== undefined);
  const tls = listener.protocol === "https";
  const filters = [
    {
      name: "envoy.filters.network.http_connection_manager",
      typed_config: {
        "@type": TYPE_PREFIX + HCM,
        stat_prefix: `${gateway.name}_${listener.name}`,
        codec_type: "AUTO",
        rds: { route_config_name: name, config_source: ads },
        ...(listener.maxRequestHeadersKb !== undefined
          ? { max_request_headers_kb: { value: listener.maxRequestHeadersKb } }
          : {}),
        http_filters: [
          // CORS acts only on routes that carry a policy.
          { name: CORS_FILTER, typed_config: { "@type": TYPE_PREFIX + CORS } },
          ...(bodyLimits
            ? [
                {
                  name: BUFFER_FILTER,
                  typed_config: {
                    "@type": TYPE_PREFIX + BUFFER,
                    max_request_bytes: { value: listener.maxBodyBytes ?? MAX_BUFFER },
                  },
                },
              ]
            : []),
          // A local token bucket first (floods cost no call out), then who the caller is, then how
          // much they may do: the rate limiter reads the identity authentication found.
          ...localRateLimitHttpFilters(ctx, served),
          ...authHttpFilters(ctx, served),
          ...rateLimitHttpFilters(ctx, served),
          ...transcodeHttpFilters(served),
          // Static fallbacks: acts only on routes that carry one.
          ...(fallbacks
            ? [
                {
                  name: CUSTOM_RESPONSE_FILTER,
                  typed_config: { "@type": TYPE_PREFIX + CUSTOM_RESPONSE },
                },
              ]
            : []),
          { name: "envoy.filters.http.router", typed_config: { "@type": TYPE_PREFIX + ROUTER } },
        ],
        ...(listener.trustIdentityHeaders
          ? {}
          : { early_header_mutation_extensions: [identityHeaderStrip()] }),
        access_log: accessLog(gateway),
        ...hcmTracing(gateway),
        generate_request_id: { value: true },
        preserve_external_request_id: listener.requestId === "keep",
        normalize_path: { value: true },
        merge_slashes: true,
        use_remote_address: { value: true },
      },
    },
  ];
  const tlsSocket = (certificate: string) => ({
    name: "envoy.transport_sockets.tls",
    typed_config: {
      "@type": TYPE_PREFIX + DOWNSTREAM_TLS,
      common_tls_context: {
        tls_certificate_sds_secret_configs: [sdsSecret(secretName(certificate, "cert"))],
        alpn_protocols: ["h2", "http/1.1"],
      },
      // Shared ticket keys let a client resume its session on any Envoy of the group.
      ...(ctx.config.certificates.find((c) => c.name === certificate)?.sessionTicketKeys?.length
        ? { session_ticket_keys_sds_secret_config: sdsSecret(secretName(certificate, "tickets")) }
        : {}),
    },
  });
  // One filter chain per SNI certificate (chosen by the TLS inspector), then the default one.
  const chains = tls
    ? [
        ...(listener.sniCertificates ?? []).map((s) => ({
          filter_chain_match: { server_names: s.hostnames },
          transport_socket: tlsSocket(s.certificate),
          filters,
        })),
        { transport_socket: tlsSocket(listener.certificate!), filters },
      ]
    : [{ filters }];
  return {
    name,
    address: { socket_address: { address: listener.address, port_value: listener.port } },
    ...(tls
      ? {
          listener_filters: [
            {
              name: "envoy.filters.listener.tls_inspector",
              typed_config: { "@type": TYPE_PREFIX + TLS_INSPECTOR },
            },
          ],
        }
      : {}),
    filter_chains: chains,
  };
}

/**
 * Exact paths first (composite routes with parameters just after them), then prefixes longest
 * first, then regexes; ties keep the order written.
 */
function specificity(r: Route): [number, number] {
  if (r.match.path !== undefined) return [0, 0];
  if (isCompositeRoute(r)) return [0, 1];
  if (r.match.pathPrefix !== undefined) return [1, -r.match.pathPrefix.length];
  return [2, 0];
}

function stringMatch(m: { exact?: string; prefix?: string; regex?: string }): object {
  if (m.exact !== undefined) return { exact: m.exact };
  if (m.prefix !== undefined) return { prefix: m.prefix };
  return { safe_regex: { regex: m.regex } };
}

type Matcher = NonNullable<Route["match"]["headers"]>[number];

function headerMatcher(h: Matcher): object {
  return {
    name: h.name,
    ...(h.present !== undefined ? { present_match: h.present } : { string_match: stringMatch(h) }),
    ...(h.invert ? { invert_match: true } : {}),
  };
}

function queryMatcher(q: Matcher): object {
  return {
    name: q.name,
    ...(q.present !== undefined ? { present_match: q.present } : { string_match: stringMatch(q) }),
  };
}

function headerEdits(edits: Route["requestHeaders"], prefix: "request" | "response"): object {
  if (!edits) return {};
  return {
    ...(edits.set
      ? {
          [`${prefix}_headers_to_add`]: Object.entries(edits.set).map(([key, value]) => ({
            header: { key, value },
            append_action: "OVERWRITE_IF_EXISTS_OR_ADD",
          })),
        }
      : {}),
    ...(edits.remove ? { [`${prefix}_headers_to_remove`]: edits.remove } : {}),
  };
}

const REDIRECT_CODE: Record<number, string> = {
  301: "MOVED_PERMANENTLY",
  302: "FOUND",
  303: "SEE_OTHER",
  307: "TEMPORARY_REDIRECT",
  308: "PERMANENT_REDIRECT",
};

function routeAction(r: Route): object {
  if (r.redirect) {
    const rd = r.redirect;
    return {
      redirect: {
        ...(rd.host !== undefined ? { host_redirect: rd.host } : {}),
        ...(rd.path !== undefined ? { path_redirect: rd.path } : {}),
        ...(rd.prefix !== undefined ? { prefix_rewrite: rd.prefix } : {}),
        ...(rd.https ? { https_redirect: true } : {}),
        response_code: REDIRECT_CODE[rd.status],
      },
    };
  }
  if (r.directResponse) {
    const d = r.directResponse;
    return {
      direct_response: {
        status: d.status,
        ...(d.body !== undefined ? { body: { inline_string: d.body } } : {}),
      },
      ...(d.contentType
        ? {
            response_headers_to_add: [
              {
                header: { key: "content-type", value: d.contentType },
                append_action: "OVERWRITE_IF_EXISTS_OR_ADD",
              },
            ],
          }
        : {}),
    };
  }
  const target =
    r.upstream !== undefined && r.fallback?.upstream !== undefined
      ? { cluster: aggregateName(r.upstream, r.fallback.upstream) }
      : r.upstream !== undefined
        ? { cluster: r.upstream }
        : {
            weighted_clusters: {
              clusters: r.upstreams!.map((w) => ({ name: w.name, weight: { value: w.weight } })),
            },
          };
  return {
    route: {
      ...target,
      ...(r.rewrite?.prefix !== undefined ? { prefix_rewrite: r.rewrite.prefix } : {}),
      ...(r.rewrite?.regex
        ? {
            regex_rewrite: {
              pattern: { regex: r.rewrite.regex.pattern },
              substitution: r.rewrite.regex.substitution,
            },
          }
        : {}),
      ...(r.rewrite?.host !== undefined ? { host_rewrite_literal: r.rewrite.host } : {}),
      ...(r.timeoutMs !== undefined ? { timeout: duration(r.timeoutMs) } : {}),
      ...(r.retries ? { retry_policy: retryPolicy(r.retries) } : {}),
    },
  };
}

function routeEntry(ctx: GatewayContext, r: Route, bodyLimited: boolean, listenerLimited: boolean): object {
  const action = routeAction(r) as Record<string, unknown>;
  const limits = routeRateLimits(ctx, r);
  if (limits?.length && action.route) (action.route as Record<string, unknown>).rate_limits = limits;
  const auth = authRouteFields(ctx, r);
  const edits = {
    ...headerEdits(r.requestHeaders, "request"),
    ...headerEdits(r.responseHeaders, "response"),
  } as Record<string, unknown>;
  // A direct response may already carry a content-type header to add.
  if (action.response_headers_to_add && edits.response_headers_to_add) {
    edits.response_headers_to_add = [
      ...(action.response_headers_to_add as unknown[]),
      ...(edits.response_headers_to_add as unknown[]),
    ];
    delete action.response_headers_to_add;
  }
  const perFilter: Record<string, object> = {
    ...auth.perFilter,
    ...rateLimitPerRoute(ctx, r),
    ...transcodePerRoute(ctx, r),
    ...(r.cors ? { [CORS_FILTER]: corsPolicy(r.cors) } : {}),
    ...(r.fallback?.status !== undefined ? { [CUSTOM_RESPONSE_FILTER]: staticFallback(r.fallback) } : {}),
    ...(bodyLimited
      ? {
          [BUFFER_FILTER]:
            r.maxBodyBytes !== undefined
              ? {
                  "@type": TYPE_PREFIX + BUFFER_PER_ROUTE,
                  buffer: { max_request_bytes: { value: r.maxBodyBytes } },
                }
              : listenerLimited
                ? undefined
                : { "@type": TYPE_PREFIX + BUFFER_PER_ROUTE, disabled: true },
        }
      : {}),
  };
  for (const k of Object.keys(perFilter)) if (perFilter[k] === undefined) delete perFilter[k];
  return {
    name: r.name,
    match: routeMatch(r),
    ...action,
    ...edits,
    ...(Object.keys(perFilter).length ? { typed_per_filter_config: perFilter } : {}),
  };
}

function routeMatch(r: Route, extraHeaders: object[] = []): object {
  const m = r.match;
  const path =
    m.path !== undefined
      ? { path: m.path }
      : m.pathPrefix !== undefined
        ? { prefix: m.pathPrefix }
        : { safe_regex: { regex: m.pathRegex } };
  // A CORS preflight is an OPTIONS request: it must reach the route whose policy answers it.
  const methods =
    m.methods && r.cors && !m.methods.includes("OPTIONS") ? [...m.methods, "OPTIONS"] : m.methods;
  const headers = [
    ...(methods
      ? [{ name: ":method", string_match: { safe_regex: { regex: `^(${methods.join("|")})$` } } }]
      : []),
    ...(m.headers ?? []).map(headerMatcher),
    ...extraHeaders,
  ];
  return {
    ...path,
    ...(headers.length ? { headers } : {}),
    ...(m.query?.length ? { query_parameters: m.query.map(queryMatcher) } : {}),
  };
}

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

function corsPolicy(c: NonNullable<Route["cors"]>): object {
  return {
    "@type": TYPE_PREFIX + CORS_POLICY,
    allow_origin_string_match: c.allowOrigins.map((o) =>
      o === "*"
        ? { safe_regex: { regex: ".*" } }
        : o.startsWith("~")
          ? { safe_regex: { regex: o.slice(1) } }
          : { exact: o },
    ),
    ...(c.allowMethods ? { allow_methods: c.allowMethods.join(",") } : {}),
    ...(c.allowHeaders ? { allow_headers: c.allowHeaders.join(",") } : {}),
    ...(c.exposeHeaders ? { expose_headers: c.exposeHeaders.join(",") } : {}),
    ...(c.maxAgeSeconds !== undefined ? { max_age: String(c.maxAgeSeconds) } : {}),
    ...(c.allowCredentials !== undefined ? { allow_credentials: { value: c.allowCredentials } } : {}),
  };
}

const jsonHeader = [
  { header: { key: "content-type", value: "application/json" }, append_action: "OVERWRITE_IF_EXISTS_OR_ADD" },
];

/** Answers 400 naming the header when a required one is absent; placed just before its route. */
function requiredHeaderGuards(r: Route): object[] {
  return (r.requiredHeaders ?? []).map((h) => ({
    name: `${r.name}/missing-${h}`,
    match: routeMatch(r, [
      { name: h, present_match: true, invert_match: true },
      // Preflights carry no application headers; they go on to the route, whose CORS policy answers
      // them (Envoy's CORS filter does not act on direct responses).
      ...(r.cors ? [{ name: ":method", string_match: { exact: "OPTIONS" }, invert_match: true }] : []),
    ]),
    direct_response: {
      status: 400,
      body: {
        inline_string: JSON.stringify({
          code: "missing_header",
          message: `the ${h} header is required`,
          header: h,
        }),
      },
    },
    response_headers_to_add: jsonHeader,
  }));
}

/** Answers 405 with Allow for a path served only for some methods; placed after that path's last route. */
function methodGuard(r: Route, methods: string[]): object {
  const { methods: _omit, ...match } = r.match;
  return {
    name: `${r.name}/method-not-allowed`,
    match: routeMatch({ ...r, match }),
    direct_response: {
      status: 405,
      body: {
        inline_string: JSON.stringify({
          code: "method_not_allowed",
          message: `use ${methods.join(", ")}`,
          allow: methods,
        }),
      },
    },
    response_headers_to_add: [
      ...jsonHeader,
      { header: { key: "allow", value: methods.join(", ") }, append_action: "OVERWRITE_IF_EXISTS_OR_ADD" },
    ],
  };
}

function sortRoutes(routes: Route[]): Route[] {
  return routes
    .map((r, i) => ({ r, i }))
    .sort((a, b) => {
      const [ka, la] = specificity(a.r);
      const [kb, lb] = specificity(b.r);
      return ka - kb || la - lb || a.i - b.i;
    })
    .map(({ r }) => r);
}

/** `*.example.com` and `example.com` match with or without a port in the Host header. */
function domainsFor(host: string): string[] {
  return host.includes(":") || host === "*" ? [host] : [host, `${host}:*`];
}

/**
 * One route table per listener. Routes with a host get a virtual host per host (and also carry the
 * host-less routes, after their own); the rest go to the catch-all virtual host, restricted to the
 * listener's hostnames when it has any.
 */
function routesOf(gateway: Gateway, listener: Listener, routes: Route[]): Route[] {
  return routes.filter(
    (r) => r.gateway === gateway.name && (r.listener === undefined || r.listener === listener.name),
  );
}

/** Path match as a key: routes with equal keys serve the same paths. */
function pathKey(r: Route): string | undefined {
  if (r.match.path !== undefined) return `=${r.match.path}`;
  if (r.match.pathPrefix !== undefined) return `^${r.match.pathPrefix}`;
  return undefined;
}

/**
 * Route entries in match order, with their guards: required-header checks before a route, and a
 * 405 after the last route of a path that is served only for some methods.
 */
function entries(
  ctx: GatewayContext,
  sorted: Route[],
  bodyLimited: boolean,
  listenerLimited: boolean,
): object[] {
  const lastOfPath = new Map<string, number>();
  const byPath = new Map<string, Route[]>();
  sorted.forEach((r, i) => {
    const k = pathKey(r);
    if (!k) return;
    lastOfPath.set(k, i);
    const same = byPath.get(k);
    if (same) same.push(r);
    else byPath.set(k, [r]);
  });
  const out: object[] = [];
  sorted.forEach((r, i) => {
    // Guards authenticate like their route: a caller learns nothing about a protected route unauthenticated.
    const auth = authRouteFields(ctx, r).perFilter;
    const guarded = (g: object) => (Object.keys(auth).length ? { ...g, typed_per_filter_config: auth } : g);
    out.push(...requiredHeaderGuards(r).map(guarded), routeEntry(ctx, r, bodyLimited, listenerLimited));
    const k = pathKey(r);
    if (k === undefined || lastOfPath.get(k) !== i) return;
    const samePath = byPath.get(k)!;
    // Only when every route of the path is method-restricted (and has no other conditions).
    if (samePath.every((x) => x.match.methods && !x.match.headers?.length && !x.match.query?.length)) {
      out.push(guarded(methodGuard(r, [...new Set(samePath.flatMap((x) => x.match.methods!))])));
    }
  });
  return out;
}

function routeConfiguration(ctx: GatewayContext, listener: Listener): object {
  const { gateway } = ctx;
  const mine = routesOf(gateway, listener, ctx.config.routes);
  const listenerLimited = listener.maxBodyBytes !== undefined;
  const bodyLimited = listenerLimited || mine.some((r) => r.maxBodyBytes !== undefined);
  const toEntries = (rs: Route[]) => entries(ctx, rs, bodyLimited, listenerLimited);
  const hostless = mine.filter((r) => r.match.host === undefined);
  const hosts = [
    ...new Set(mine.map((r) => r.match.host).filter((h): h is string => h !== undefined)),
  ].sort();
  const vhosts = hosts.map((host) => ({
    name: `${gateway.name}_${listener.name}_${host.replace(/[^a-zA-Z0-9]/g, "_")}`,
    domains: domainsFor(host),
    routes: toEntries([...sortRoutes(mine.filter((r) => r.match.host === host)), ...sortRoutes(hostless)]),
  }));
  // Envoy refuses a domain listed in two virtual hosts.
  const taken = new Set(vhosts.flatMap((v) => v.domains));
  const catchAll = (listener.hostnames?.length ? listener.hostnames.flatMap(domainsFor) : ["*"]).filter(
    (d) => !taken.has(d),
  );
  if (catchAll.length > 0) {
    vhosts.push({
      name: `${gateway.name}_${listener.name}`,
      domains: catchAll,
      routes: toEntries(sortRoutes(hostless)),
    });
  }
  return { name: listenerName(gateway.name, listener.name), virtual_hosts: vhosts };
}

const LB_POLICY: Record<Upstream["loadBalancing"], string> = {
  round_robin: "ROUND_ROBIN",
  least_request: "LEAST_REQUEST",
  random: "RANDOM",
  ring_hash: "RING_HASH",
  maglev: "MAGLEV",
};

function loadAssignment(u: Upstream): object {
  return {
    cluster_name: u.name,
    endpoints: [
      {
        lb_endpoints: u.endpoints.map((e) => ({
          endpoint: { address: { socket_address: { address: e.host, port_value: e.port } } },
          ...(e.weight !== undefined ? { load_balancing_weight: { value: e.weight } } : {}),
        })),
      },
    ],
  };
}

/** Upstreams given by IP get their endpoints over EDS; any hostname makes it a STRICT_DNS cluster. */
export function usesEds(u: Upstream): boolean {
  return u.endpoints.every((e) => isIP(e.host) !== 0);
}

/** SDS secret names: certificates travel as secrets, never inline in listeners or clusters. */
export function secretName(certificate: string, part: "cert" | "ca" | "tickets"): string {
  return `${certificate}/${part}`;
}

function sdsSecret(name: string): object {
  return { name, sds_config: ads };
}

function upstreamTls(u: Upstream): object {
  const tls = u.tls!;
  const sni = tls.sni ?? (isIP(u.endpoints[0]!.host) ? undefined : u.endpoints[0]!.host);
  return {
    name: "envoy.transport_sockets.tls",
    typed_config: {
      "@type": TYPE_PREFIX + UPSTREAM_TLS,
      ...(sni ? { sni } : {}),
      common_tls_context: {
        ...(tls.clientCertificate
          ? { tls_certificate_sds_secret_configs: [sdsSecret(secretName(tls.clientCertificate, "cert"))] }
          : {}),
        ...(tls.ca
          ? {
              combined_validation_context: {
                default_validation_context: sni
                  ? { match_typed_subject_alt_names: [{ san_type: "DNS", matcher: { exact: sni } }] }
                  : {},
                validation_context_sds_secret_config: sdsSecret(secretName(tls.ca, "ca")),
              },
            }
          : {}),
        ...(u.protocol !== "http1" ? { alpn_protocols: ["h2"] } : {}),
      },
    },
  };
}

function clusterResource(u: Upstream): object {
  const http2 = u.protocol === "http2" || u.protocol === "grpc";
  const hc = u.healthCheck;
  const cb = u.circuitBreaker;
  const od = u.outlierDetection;
  return {
    name: u.name,
    connect_timeout: duration(u.connectTimeoutMs),
    lb_policy: LB_POLICY[u.loadBalancing],
    ...(usesEds(u)
      ? { type: "EDS", eds_cluster_config: { eds_config: ads } }
      : { type: "STRICT_DNS", load_assignment: loadAssignment(u), dns_lookup_family: "V4_PREFERRED" }),
    ...(http2
      ? {
          typed_extension_protocol_options: {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
              "@type": TYPE_PREFIX + HTTP_OPTIONS,
              explicit_http_config: { http2_protocol_options: {} },
            },
          },
        }
      : {}),
    ...(hc
      ? {
          health_checks: [
            {
              timeout: duration(hc.timeoutMs),
              interval: duration(hc.intervalMs),
              unhealthy_threshold: { value: hc.unhealthyThreshold },
              healthy_threshold: { value: hc.healthyThreshold },
              http_health_check: { path: hc.path, ...(http2 ? { codec_client_type: "HTTP2" } : {}) },
            },
          ],
        }
      : {}),
    ...(cb
      ? {
          circuit_breakers: {
            thresholds: [
              {
                priority: "DEFAULT",
                ...(cb.maxConnections !== undefined ? { max_connections: { value: cb.maxConnections } } : {}),
                ...(cb.maxPendingRequests !== undefined
                  ? { max_pending_requests: { value: cb.maxPendingRequests } }
                  : {}),
                ...(cb.maxRequests !== undefined ? { max_requests: { value: cb.maxRequests } } : {}),
                ...(cb.maxRetries !== undefined ? { max_retries: { value: cb.maxRetries } } : {}),
              },
            ],
          },
        }
      : {}),
    ...(od
      ? {
          outlier_detection: {
            consecutive_5xx: { value: od.consecutive5xx },
            interval: duration(od.intervalMs),
            base_ejection_time: duration(od.baseEjectionMs),
            max_ejection_percent: { value: od.maxEjectionPercent },
          },
        }
      : {}),
    ...(u.tls ? { transport_socket: upstreamTls(u) } : {}),
  };
}

function secretResources(cert: Certificate): ResourceInput[] {
  const out: ResourceInput[] = [];
  if (cert.certificatePem && cert.privateKeyPem) {
    const name = secretName(cert.name, "cert");
    out.push({
      typeUrl: TypeUrl.Secret,
      name,
      message: {
        name,
        tls_certificate: {
          certificate_chain: { inline_string: cert.certificatePem },
          private_key: { inline_string: cert.privateKeyPem },
        },
      },
    });
  }
  if (cert.sessionTicketKeys?.length) {
    const name = secretName(cert.name, "tickets");
    out.push({
      typeUrl: TypeUrl.Secret,
      name,
      message: {
        name,
        session_ticket_keys: {
          keys: cert.sessionTicketKeys.map((k) => ({ inline_bytes: Buffer.from(k, "base64") })),
        },
      },
    });
  }
  if (cert.caPem) {
    const name = secretName(cert.name, "ca");
    out.push({
      typeUrl: TypeUrl.Secret,
      name,
      message: { name, validation_context: { trusted_ca: { inline_string: cert.caPem } } },
    });
  }
  return out;
}

function upstreamsOf(r: Route): string[] {
  if (r.upstream !== undefined)
    return r.fallback?.upstream ? [r.upstream, r.fallback.upstream] : [r.upstream];
  return r.upstreams?.map((w) => w.name) ?? [];
}

/**
 * The whole model → Envoy resources, per gateway group. Pure: same config in, same resources out,
 * which is what makes snapshot versions content hashes. A group gets only the clusters its routes
 * use and only the secrets its listeners and clusters use.
 */
export function translate(input: Config): Map<string, ResourceInput[]> {
  const config = withCompositeRoutes(input);
  const upstreams = new Map(config.upstreams.map((u) => [u.name, u]));
  const certs = new Map(config.certificates.map((c) => [c.name, c]));
  const out = new Map<string, ResourceInput[]>();
  for (const gateway of config.gateways) {
    const ctx: GatewayContext = { config, gateway };
    const resources: ResourceInput[] = [];
    const secrets = new Set<string>();
    for (const listener of gateway.listeners) {
      const name = listenerName(gateway.name, listener.name);
      resources.push({
        typeUrl: TypeUrl.Listener,
        name,
        message: listenerResource(ctx, listener),
      });
      resources.push({
        typeUrl: TypeUrl.Route,
        name,
        message: routeConfiguration(ctx, listener),
      });
      if (listener.certificate) secrets.add(listener.certificate);
      for (const sni of listener.sniCertificates ?? []) secrets.add(sni.certificate);
    }
    resources.push(...aggregatorResources(ctx));
    const used = [
      ...new Set([
        ...config.routes.filter((r) => r.gateway === gateway.name).flatMap(upstreamsOf),
        ...partUpstreams(ctx),
        // The policy services the gateway's filters call.
        ...[gateway.extAuthz?.upstream, gateway.rateLimit?.upstream].filter((u): u is string => !!u),
        ...observabilityUpstreams(gateway),
      ]),
    ].sort();
    for (const name of used) {
      const u = upstreams.get(name);
      if (!u) continue; // validation reports it; the translator stays total
      resources.push({ typeUrl: TypeUrl.Cluster, name, message: clusterResource(u) });
      if (usesEds(u)) resources.push({ typeUrl: TypeUrl.Endpoint, name, message: loadAssignment(u) });
      if (u.tls?.ca) secrets.add(u.tls.ca);
      if (u.tls?.clientCertificate) secrets.add(u.tls.clientCertificate);
    }
    const aggregates = new Map<string, [string, string]>();
    for (const r of config.routes) {
      if (r.gateway === gateway.name && r.upstream !== undefined && r.fallback?.upstream !== undefined) {
        aggregates.set(aggregateName(r.upstream, r.fallback.upstream), [r.upstream, r.fallback.upstream]);
      }
    }
    for (const { name, message } of authClusters(ctx))
      resources.push({ typeUrl: TypeUrl.Cluster, name, message });
    for (const [name, [primary, fallback]] of [...aggregates].sort()) {
      resources.push({ typeUrl: TypeUrl.Cluster, name, message: aggregateCluster(primary, fallback) });
    }
    for (const name of [...secrets].sort()) {
      const cert = certs.get(name);
      if (cert) resources.push(...secretResources(cert));
    }
    out.set(gateway.name, resources);
  }
  return out;
}
