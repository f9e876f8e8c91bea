/**
 * A gateway's listener as an Envoy listener: one HTTP connection manager, whose route table comes
 * over RDS and whose filters and fields the features bring, behind TLS for https listeners (mTLS
 * from gateways only for gatewayIdentity listeners).
 */
import { TYPE_PREFIX } from "@portico/contract";
import type { Listener } from "../model/schema.js";
import type { GatewayContext } from "./context.js";
import {
  ads,
  HTTP_FILTER_ORDER,
  type ConnectionManagerField,
  type HttpFilter,
  type HttpFilterName,
  type ListenerPatch,
} from "./feature.js";
import { downstreamTls, gatewayIdentityDownstreamTls } from "./tls.js";

const HCM = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const ROUTER = "envoy.extensions.filters.http.router.v3.Router";
const TLS_INSPECTOR = "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector";

/** Envoy resource names: listeners and their route tables are `<gateway>/<listener>`. */
export function listenerName(gateway: string, listener: string): string {
  return `${gateway}/${listener}`;
}

const FILTER_RANK = new Map<HttpFilterName, number>(HTTP_FILTER_ORDER.map((name, i) => [name, i]));

/** The features' filters in HTTP_FILTER_ORDER, and the router last, with the fields features set. */
function httpFilters(patches: readonly ListenerPatch[]): HttpFilter[] {
  const filters: HttpFilter[] = patches.flatMap((p) => p.httpFilters ?? []);
  const router = Object.assign({}, ...patches.map((p) => p.router)) as Record<string, unknown>;
  filters.push({
    name: "envoy.filters.http.router",
    typed_config: { "@type": TYPE_PREFIX + ROUTER, ...router },
  });
  return filters.sort((a, b) => FILTER_RANK.get(a.name)! - FILTER_RANK.get(b.name)!);
}

type Place = "before filters" | "after filters";

/** Where each connection manager field a feature may set goes, in this order: around the filters. */
const FIELD_PLACE: Record<ConnectionManagerField, Place> = {
  max_request_headers_kb: "before filters",
  early_header_mutation_extensions: "after filters",
  access_log: "after filters",
  tracing: "after filters",
  request_id_extension: "after filters",
  always_set_request_id_in_response: "after filters",
  local_reply_config: "after filters",
};

/** Fields that several features add entries to, joined in registry order (the others: last one set wins). */
const JOINED_FIELDS: readonly ConnectionManagerField[] = ["access_log"];

function featureFields(patches: readonly ListenerPatch[], place: Place): Record<string, unknown> {
  const set: Record<string, unknown> = Object.assign({}, ...patches.map((p) => p.connectionManager));
  for (const field of JOINED_FIELDS) {
    const joined = patches.flatMap((p) => (p.connectionManager?.[field] as unknown[] | undefined) ?? []);
    if (joined.length > 0) set[field] = joined;
  }
  const out: Record<string, unknown> = {};
  for (const [field, at] of Object.entries(FIELD_PLACE)) {
    if (at === place && set[field] !== undefined) out[field] = set[field];
  }
  return out;
}

/**
 * Plaintext: one chain. https: one per SNI certificate (chosen by the TLS inspector), then the
 * default one. gatewayIdentity: one, with the Envoy's own certificate and only gateways as clients.
 */
function filterChains(ctx: GatewayContext, listener: Listener, filters: object[]): object[] {
  if (listener.gatewayIdentity) return [{ transport_socket: gatewayIdentityDownstreamTls(), filters }];
  if (listener.protocol !== "https") return [{ filters }];
  return [
    ...(listener.sniCertificates ?? []).map((s) => ({
      filter_chain_match: { server_names: s.hostnames },
      transport_socket: downstreamTls(ctx.config, s.certificate),
      filters,
    })),
    { transport_socket: downstreamTls(ctx.config, listener.certificate!), filters },
  ];
}

/** The listener, with the filters and connection manager fields its features' patches bring. */
export function listenerResource(
  ctx: GatewayContext,
  listener: Listener,
  patches: readonly ListenerPatch[],
): object {
  const { gateway } = ctx;
  const name = listenerName(gateway.name, listener.name);
  const tls = listener.protocol === "https";
  const filters = [
    {
      name: "envoy.filters.network.http_connection_manager",
      typed_config: {
        "@type": TYPE_PREFIX + HCM,
        stat_prefix: `${gateway.name}_${listener.name}`,
        codec_type: "AUTO",
        rds: { route_config_name: name, config_source: ads },
        ...featureFields(patches, "before filters"),
        http_filters: httpFilters(patches),
        ...featureFields(patches, "after filters"),
        generate_request_id: { value: true },
        preserve_external_request_id: listener.requestId === "keep",
        normalize_path: { value: true },
        merge_slashes: true,
        use_remote_address: { value: true },
      },
    },
  ];
  const chains = filterChains(ctx, listener, filters);
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
