/** Upstreams as Envoy clusters: EDS for upstreams given by IP, STRICT_DNS for hostnames. */
import { isIP } from "node:net";
import { duration, struct, TYPE_PREFIX } from "@portico/contract";
import type { Upstream } from "../model/schema.js";
import type { ResourceInput } from "../xds/snapshot.js";
import { TypeUrl } from "../xds/types.js";
import { ads, type UpstreamVariant } from "./feature.js";
import { upstreamTls } from "./tls.js";

const HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

const LB_POLICY: Record<Upstream["loadBalancing"], string> = {
  round_robin: "ROUND_ROBIN",
  least_request: "LEAST_REQUEST",
  random: "RANDOM",
  ring_hash: "RING_HASH",
  maglev: "MAGLEV",
};

/** What a cluster of an upstream changes from the upstream's own: see UpstreamVariant. */
type Variant = Omit<UpstreamVariant, "upstream">;

function loadAssignment(u: Upstream, v?: Variant): object {
  return {
    cluster_name: v?.name ?? u.name,
    endpoints: [
      {
        lb_endpoints: u.endpoints.map((e) => ({
          endpoint: { address: { socket_address: { address: e.host, port_value: e.port } } },
          ...(e.weight !== undefined ? { load_balancing_weight: { value: e.weight } } : {}),
          ...(v?.endpointMetadata ? { metadata: { filter_metadata: structs(v.endpointMetadata) } } : {}),
        })),
      },
    ],
  };
}

function structs(m: Readonly<Record<string, Readonly<Record<string, string>>>>): Record<string, object> {
  return Object.fromEntries(Object.entries(m).map(([ns, fields]) => [ns, struct(fields)]));
}

/** Upstreams given by IP get their endpoints over EDS; any hostname makes it a STRICT_DNS cluster. */
export function usesEds(u: Upstream): boolean {
  return u.endpoints.every((e) => isIP(e.host) !== 0);
}

function clusterResource(u: Upstream, v?: Variant): object {
  const http2 = u.protocol === "http2" || u.protocol === "grpc";
  const hc = u.healthCheck;
  const cb = u.circuitBreaker;
  const od = u.outlierDetection;
  return {
    name: v?.name ?? u.name,
    connect_timeout: duration(u.connectTimeoutMs),
    lb_policy: LB_POLICY[u.loadBalancing],
    ...(usesEds(u)
      ? { type: "EDS", eds_cluster_config: { eds_config: ads } }
      : { type: "STRICT_DNS", load_assignment: loadAssignment(u, v), dns_lookup_family: "V4_PREFERRED" }),
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
                ...(cb.maxRequestsWaitingForConnection !== undefined
                  ? { max_pending_requests: { value: cb.maxRequestsWaitingForConnection } }
                  : {}),
                ...(cb.maxConcurrentRequests !== undefined
                  ? { max_requests: { value: cb.maxConcurrentRequests } }
                  : {}),
                ...(cb.maxConcurrentRetries !== undefined
                  ? { max_retries: { value: cb.maxConcurrentRetries } }
                  : {}),
              },
            ],
          },
        }
      : {}),
    ...(v?.outlierDetection
      ? { outlier_detection: v.outlierDetection }
      : od
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

/** An upstream's cluster (or a feature's variant of it), and its endpoints when they go over EDS. */
export function upstreamResources(u: Upstream, v?: Variant): ResourceInput[] {
  const name = v?.name ?? u.name;
  const cluster = { typeUrl: TypeUrl.Cluster, name, message: clusterResource(u, v) };
  return usesEds(u)
    ? [cluster, { typeUrl: TypeUrl.Endpoint, name, message: loadAssignment(u, v) }]
    : [cluster];
}

/** The certificates an upstream's TLS names: its CA and its client certificate. */
export function upstreamCertificates(u: Upstream): string[] {
  return [u.tls?.ca, u.tls?.clientCertificate].filter((c): c is string => !!c);
}
