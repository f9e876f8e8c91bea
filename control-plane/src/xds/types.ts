import type { PolicyRole } from "@portico/common";
import { TYPE_PREFIX } from "@portico/contract";

export const TypeUrl = {
  Cluster: TYPE_PREFIX + "envoy.config.cluster.v3.Cluster",
  Endpoint: TYPE_PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment",
  Listener: TYPE_PREFIX + "envoy.config.listener.v3.Listener",
  Route: TYPE_PREFIX + "envoy.config.route.v3.RouteConfiguration",
  Secret: TYPE_PREFIX + "envoy.extensions.transport_sockets.tls.v3.Secret",
  /** ECDS: the config of an HTTP filter that a listener names in `config_discovery`. */
  ExtensionConfig: TYPE_PREFIX + "envoy.config.core.v3.TypedExtensionConfig",
} as const;

/**
 * Make-before-break: clusters before the endpoints that warm them, listeners before the filter
 * configs and routes they wait for, filter configs before the routes that name what they hold (a
 * route naming a new limit finds its buckets there), secrets last. Types not listed here
 * (Portico's policy types) follow in the order they were registered.
 */
export const PUSH_ORDER: readonly string[] = [
  TypeUrl.Cluster,
  TypeUrl.Endpoint,
  TypeUrl.Listener,
  TypeUrl.ExtensionConfig,
  TypeUrl.Route,
  TypeUrl.Secret,
];

/**
 * Removals go the other way round: first what refers (listeners, then their route tables), then
 * what is referred to (clusters, then their endpoints).
 */
export const REMOVAL_ORDER: readonly string[] = [
  TypeUrl.Listener,
  TypeUrl.Route,
  TypeUrl.ExtensionConfig,
  TypeUrl.Cluster,
  TypeUrl.Endpoint,
  TypeUrl.Secret,
];

/**
 * Registered types are pushed in the order they were registered, so a type registers after the
 * types its resources refer to; their removals go the other way round, referrers first.
 */
export function removalOrder(): string[] {
  return [...REMOVAL_ORDER, ...[...extraOrder].reverse()];
}

/**
 * Types whose SotW responses carry the full set, so that absence means deletion. The others are
 * asked for by name and disappear when nothing references them.
 */
const fullStateTypes = new Set<string>([TypeUrl.Listener, TypeUrl.Cluster]);
const knownTypes = new Set<string>(PUSH_ORDER);
const extraOrder: string[] = [];
/** The policy role that may read each registered type; Envoy's own types are for gateways only. */
const readers = new Map<string, PolicyRole>();

/**
 * Registers a further resource type (a Portico policy type) served over the same streams, to the
 * policy service of role `readBy` only.
 */
export function registerResourceType(
  typeUrl: string,
  opts: { fullState: boolean; readBy: PolicyRole },
): void {
  if (!knownTypes.has(typeUrl)) {
    knownTypes.add(typeUrl);
    extraOrder.push(typeUrl);
  }
  if (opts.fullState) fullStateTypes.add(typeUrl);
  readers.set(typeUrl, opts.readBy);
}

/** Envoy's resource types: what a gateway may read of its group's snapshot. */
export function isEnvoyType(typeUrl: string): boolean {
  return (PUSH_ORDER as readonly string[]).includes(typeUrl);
}

/** The policy role a registered type is for; undefined for Envoy's types and unknown ones. */
export function policyReader(typeUrl: string): PolicyRole | undefined {
  return readers.get(typeUrl);
}

export function isKnownType(typeUrl: string): boolean {
  return knownTypes.has(typeUrl);
}

export function isFullStateType(typeUrl: string): boolean {
  return fullStateTypes.has(typeUrl);
}

export function pushOrder(): string[] {
  return [...PUSH_ORDER, ...extraOrder];
}

/** `type.googleapis.com/envoy.config.cluster.v3.Cluster` → `Cluster`, for logs and metric labels. */
export function shortType(typeUrl: string): string {
  return typeUrl.slice(typeUrl.lastIndexOf(".") + 1);
}
