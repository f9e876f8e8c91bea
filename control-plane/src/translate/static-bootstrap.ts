import type { ResourceInput } from "../xds/snapshot.js";
import { bootstrapSecretStandIns } from "./bootstrap-secret-stand-ins.js";
import { TypeUrl } from "../xds/types.js";

function withoutSdsSources(value: unknown): any {
  if (Array.isArray(value)) return value.map(withoutSdsSources);
  if (value === null || typeof value !== "object" || value instanceof Uint8Array) return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) if (k !== "sds_config") out[k] = withoutSdsSources(v);
  return out;
}

/**
 * The cluster every Envoy's bootstrap has to its control plane, which access logs for usage
 * counting are sent over; here only so that the loggers naming it can be built.
 */
function xdsClusterStandIn(): object {
  return {
    name: "xds_cluster",
    type: "STATIC",
    connect_timeout: { seconds: 1 },
    typed_extension_protocol_options: {
      "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        explicit_http_config: { http2_protocol_options: {} },
      },
    },
    load_assignment: {
      cluster_name: "xds_cluster",
      endpoints: [
        {
          lb_endpoints: [
            { endpoint: { address: { socket_address: { address: "127.0.0.1", port_value: 18000 } } } },
          ],
        },
      ],
    },
  };
}

/**
 * One group's resources as a static bootstrap: routes inline in their listeners, filter configs
 * (ECDS) inline in their filters, endpoints inline in their clusters, secrets static. Envoy then
 * checks exactly what it would receive over xDS.
 */
export function staticBootstrap(group: string, resources: ResourceInput[]): object {
  const of = (t: string) => resources.filter((r) => r.typeUrl === t);
  const routes = new Map(of(TypeUrl.Route).map((r) => [r.name, r.message]));
  const filterConfigs = new Map(
    of(TypeUrl.ExtensionConfig).map((r) => [r.name, (r.message as { typed_config?: object }).typed_config]),
  );
  const endpoints = new Map(of(TypeUrl.Endpoint).map((r) => [r.name, r.message]));
  const listeners = of(TypeUrl.Listener).map((l) => {
    const listener = structuredClone(l.message) as any;
    for (const chain of listener.filter_chains ?? []) {
      for (const filter of chain.filters ?? []) {
        const hcm = filter.typed_config;
        if (hcm?.rds) {
          hcm.route_config = routes.get(hcm.rds.route_config_name);
          delete hcm.rds;
        }
        for (const f of hcm?.http_filters ?? []) {
          if (f.config_discovery) {
            f.typed_config = filterConfigs.get(f.name) ?? f.config_discovery.default_config;
            delete f.config_discovery;
          }
        }
      }
    }
    return listener;
  });
  const clusters = of(TypeUrl.Cluster).map((c) => {
    const cluster = structuredClone(c.message) as any;
    if (cluster.type === "EDS") {
      cluster.type = "STATIC";
      delete cluster.eds_cluster_config;
      cluster.load_assignment = endpoints.get(cluster.name);
    }
    return cluster;
  });
  // Clusters with tls.gatewayIdentity name secrets each Envoy's bootstrap holds.
  const secrets = [...of(TypeUrl.Secret).map((s) => s.message), ...bootstrapSecretStandIns()];
  return {
    node: { id: "validate", cluster: group },
    // An SDS reference without a config source names a static secret.
    static_resources: withoutSdsSources({
      listeners,
      clusters: JSON.stringify(listeners).includes('"xds_cluster"')
        ? [...clusters, xdsClusterStandIn()]
        : clusters,
      secrets,
    }),
  };
}
