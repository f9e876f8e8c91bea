import { isIP } from "node:net";
import { duration, struct, TYPE_PREFIX } from "../../../protos/src/envoy.js";
import type { Config, Gateway, Listener, Route, Upstream } from "../model/schema.js";
import type { ResourceInput } from "../xds/snapshot.js";
import { TypeUrl } from "../xds/types.js";

const HCM = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const ROUTER = "envoy.extensions.filters.http.router.v3.Router";
const HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
const STDOUT_LOG = "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog";

const ads = { ads: {}, resource_api_version: "V3" };

/** Envoy resource names: listeners and their route tables are `<gateway>/<listener>`. */
export function listenerName(gateway: string, listener: string): string {
  return `${gateway}/${listener}`;
}

/**
 * Access log fields (JSON): what an operator greps for when a request went wrong. The gateway
 * group is in the stat prefix and in each line.
 */
function accessLog(gateway: string) {
  return [
    {
      name: "envoy.access_loggers.stdout",
      typed_config: {
        "@type": TYPE_PREFIX + STDOUT_LOG,
        log_format: {
          json_format: struct({
            time: "%START_TIME%",
            gateway,
            request_id: "%REQ(X-REQUEST-ID)%",
            method: "%REQ(:METHOD)%",
            path: "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
            status: "%RESPONSE_CODE%",
            flags: "%RESPONSE_FLAGS%",
            route: "%ROUTE_NAME%",
            upstream: "%UPSTREAM_CLUSTER%",
            duration_ms: "%DURATION%",
            bytes_sent: "%BYTES_SENT%",
          }),
        },
      },
    },
  ];
}

function listenerResource(gateway: Gateway, listener: Listener): object {
  const name = listenerName(gateway.name, listener.name);
  return {
    name,
    address: { socket_address: { address: listener.address, port_value: listener.port } },
    filter_chains: [
      {
        filters: [
          {
            name: "envoy.filters.network.http_connection_manager",
            typed_config: {
              "@type": TYPE_PREFIX + HCM,
              stat_prefix: `${gateway.name}_${listener.name}`,
              codec_type: "AUTO",
              rds: { route_config_name: name, config_source: ads },
              http_filters: [
                { name: "envoy.filters.http.router", typed_config: { "@type": TYPE_PREFIX + ROUTER } },
              ],
              access_log: accessLog(gateway.name),
              normalize_path: { value: true },
              merge_slashes: true,
              use_remote_address: { value: true },
            },
          },
        ],
      },
    ],
  };
}

/** Exact paths first, then prefixes longest first, then regexes; ties keep the order written. */
function specificity(r: Route): [number, number] {
  if (r.match.path !== undefined) return [0, 0];
  if (r.match.pathPrefix !== undefined) return [1, -r.match.pathPrefix.length];
  return [2, 0];
}

function routeEntry(r: Route): object {
  const match =
    r.match.path !== undefined
      ? { path: r.match.path }
      : r.match.pathPrefix !== undefined
        ? { prefix: r.match.pathPrefix }
        : { safe_regex: { regex: r.match.pathRegex } };
  return {
    name: r.name,
    match,
    route: {
      cluster: r.upstream,
      ...(r.prefixRewrite !== undefined ? { prefix_rewrite: r.prefixRewrite } : {}),
      ...(r.timeoutMs !== undefined ? { timeout: duration(r.timeoutMs) } : {}),
    },
  };
}

function routeConfiguration(gateway: Gateway, listener: Listener, routes: Route[]): object {
  const mine = routes
    .map((r, i) => ({ r, i }))
    .filter(
      ({ r }) => r.gateway === gateway.name && (r.listener === undefined || r.listener === listener.name),
    )
    .sort((a, b) => {
      const [ka, la] = specificity(a.r);
      const [kb, lb] = specificity(b.r);
      return ka - kb || la - lb || a.i - b.i;
    })
    .map(({ r }) => routeEntry(r));
  return {
    name: listenerName(gateway.name, listener.name),
    virtual_hosts: [{ name: `${gateway.name}_${listener.name}`, domains: ["*"], routes: mine }],
  };
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

function clusterResource(u: Upstream): object {
  const http2 = u.protocol === "http2" || u.protocol === "grpc";
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
  };
}

/**
 * The whole model → Envoy resources, per gateway group. Pure: same config in, same resources out,
 * which is what makes snapshot versions content hashes. A group gets only the clusters its routes
 * use.
 */
export function translate(config: Config): Map<string, ResourceInput[]> {
  const upstreams = new Map(config.upstreams.map((u) => [u.name, u]));
  const out = new Map<string, ResourceInput[]>();
  for (const gateway of config.gateways) {
    const resources: ResourceInput[] = [];
    for (const listener of gateway.listeners) {
      const name = listenerName(gateway.name, listener.name);
      resources.push({ typeUrl: TypeUrl.Listener, name, message: listenerResource(gateway, listener) });
      resources.push({
        typeUrl: TypeUrl.Route,
        name,
        message: routeConfiguration(gateway, listener, config.routes),
      });
    }
    const used = [
      ...new Set(config.routes.filter((r) => r.gateway === gateway.name).map((r) => r.upstream)),
    ].sort();
    for (const name of used) {
      const u = upstreams.get(name);
      if (!u) continue; // validation reports it; the translator stays total
      resources.push({ typeUrl: TypeUrl.Cluster, name, message: clusterResource(u) });
      if (usesEds(u)) resources.push({ typeUrl: TypeUrl.Endpoint, name, message: loadAssignment(u) });
    }
    out.set(gateway.name, resources);
  }
  return out;
}
