/**
 * Composite routes from Portico's control plane over xDS: an ADS client in the `portico:policy`
 * group subscribes to every `portico.aggregator.v1.CompositeRoute`. Each response is compiled
 * whole; one that does not compile is refused (a NACK naming every problem) and the running
 * config stays.
 */
import {
  XdsConfigSource as PolicyConfigSource,
  type XdsConfigSourceOptions,
  type ClientResource,
} from "@portico/common";
import type protobuf from "protobufjs";
import {
  loadProtoRoot,
  POLICY_GROUP,
  COMPOSITE_ROUTE_TYPE,
  COMPOSITE_ROUTE_TYPE_URL,
  type CompositeRouteMessage,
  formatProblems,
} from "@portico/contract";
import { compileRoutes, type AggregatorConfig } from "./compile.js";

export { POLICY_GROUP };

let routeType: protobuf.Type | undefined;

function decode(bytes: Uint8Array): CompositeRouteMessage {
  routeType ??= loadProtoRoot(["portico/aggregator/v1/aggregator.proto"]).lookupType(COMPOSITE_ROUTE_TYPE);
  return routeType.toObject(routeType.decode(bytes), {
    longs: Number,
    defaults: false,
  }) as CompositeRouteMessage;
}

/**
 * Where the aggregator reaches a gateway's parts listener. A listener bound to every interface is
 * reached on loopback (the aggregator beside its Envoy); `partsHost` overrides the host for
 * other layouts.
 */
export function partsUrl(m: CompositeRouteMessage, partsHost?: string): string {
  const bound = m.parts_address || "127.0.0.1";
  const host = partsHost ?? (bound === "0.0.0.0" || bound === "::" ? "127.0.0.1" : bound);
  return `http://${host.includes(":") ? `[${host}]` : host}:${m.parts_port}`;
}

/** A resource → the spec the YAML file would hold for it. */
export function specOf(m: CompositeRouteMessage, partsHost?: string): Record<string, unknown> {
  return {
    name: m.name,
    gateway: m.gateway ?? "",
    match: { path: m.path, methods: m.methods?.length ? m.methods : undefined },
    timeoutMs: m.timeout_ms,
    partsUrl: partsUrl(m, partsHost),
    parts: (m.parts ?? []).map((p) => ({
      key: p.key,
      upstream: p.upstream,
      path: p.path,
      method: p.method || undefined,
      timeoutMs: p.timeout_ms,
      required: p.required ?? false,
      ...(p.stale_fallback
        ? { staleFallback: { maxAgeSeconds: p.stale_fallback.max_age_seconds ?? 0 } }
        : {}),
    })),
  };
}

/** The resources of one xDS state → a config; throws with every problem, each as `xds:<name>.<field>`. */
export function configFromResources(
  resources: readonly ClientResource[],
  partsHost?: string,
): AggregatorConfig {
  const inputs = [...resources]
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
    .map((r) => {
      const at = `xds:${r.name}`;
      if (r.any.type_url !== COMPOSITE_ROUTE_TYPE_URL)
        throw new Error(`${at}: unexpected resource type ${r.any.type_url}`);
      try {
        return { at, value: specOf(decode(r.any.value), partsHost) };
      } catch (err) {
        throw new Error(`${at}: cannot decode: ${(err as Error).message}`, { cause: err });
      }
    });
  const compiled = compileRoutes(inputs);
  if (!compiled.ok) throw new Error(formatProblems(compiled.problems));
  return compiled.value;
}

/** The aggregator's composite routes over xDS: one `portico.aggregator.v1.CompositeRoute` each. */
export class XdsConfigSource extends PolicyConfigSource<AggregatorConfig> {
  constructor(opts: XdsConfigSourceOptions<AggregatorConfig> & { partsHost?: string }) {
    super(
      {
        typeUrl: COMPOSITE_ROUTE_TYPE_URL,
        userAgent: "portico-aggregator",
        what: "composite routes",
        build: (resources) => configFromResources(resources, opts.partsHost),
        describe: (c) => ({ routes: [...c.routes.keys()] }),
      },
      opts,
    );
  }
}
