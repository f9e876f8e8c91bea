import { COMPOSITE_ROUTE_TYPE_URL, type CompositeRouteMessage } from "@portico/contract";
import type { CompositeRoute, Config, Gateway } from "../model/schema.js";
import type { ResourceInput } from "../xds/snapshot.js";
import { registerResourceType } from "../xds/types.js";

// Full state: a SotW response lists every composite route, so a missing one is a deleted one.
registerResourceType(COMPOSITE_ROUTE_TYPE_URL, { fullState: true, readBy: "aggregator" });

function message(c: CompositeRoute, g: Gateway): CompositeRouteMessage {
  const parts = g.aggregator!.partsListener;
  return {
    name: c.name,
    gateway: c.gateway,
    path: c.match.path,
    methods: c.match.methods,
    timeout_ms: c.timeoutMs,
    parts: c.parts.map((p) => ({
      key: p.key,
      upstream: p.upstream,
      path: p.path,
      method: p.method,
      timeout_ms: p.timeoutMs,
      required: p.required,
      ...(p.staleFallback ? { stale_fallback: { max_age_seconds: p.staleFallback.maxAgeSeconds } } : {}),
    })),
    parts_address: parts.address,
    parts_port: parts.port,
  };
}

/**
 * Composite routes → the aggregator's config, one `portico.aggregator.v1.CompositeRoute` per
 * route whose gateway has an aggregator. Retries are not in it: Envoy's parts listener applies them.
 */
export function aggregatorPolicyResources(config: Config): ResourceInput[] {
  const gateways = new Map(config.gateways.map((g) => [g.name, g]));
  return [...config.compositeRoutes]
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
    .flatMap((c) => {
      const g = gateways.get(c.gateway);
      return g?.aggregator
        ? [{ typeUrl: COMPOSITE_ROUTE_TYPE_URL, name: c.name, message: message(c, g) }]
        : [];
    });
}
