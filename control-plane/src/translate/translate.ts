/**
 * The model → Envoy resources. The walk is here: gateways, their listeners, the routes each
 * listener serves, the upstreams and certificates they use. Everything an HTTP feature adds
 * comes from its module in features/, through the HttpFeature seam.
 */
import type { FetchedKeys } from "../model/jwks.js";
import type { Config, Listener, Route } from "../model/schema.js";
import type { QuotaDeny } from "../model/usage-quota.js";
import type { ResourceInput } from "../xds/snapshot.js";
import { TypeUrl } from "../xds/types.js";
import { upstreamCertificates, upstreamResources } from "./clusters.js";
import { routesOf, type GatewayContext } from "./context.js";
import {
  combineRoutePatches,
  combineRouteTableFields,
  prepareConfig,
  type ListenerPatch,
  type RoutePatch,
} from "./feature.js";
import { dividesLimits } from "./features/envoy-limits.js";
import { HTTP_FEATURES } from "./features/index.js";
import { listenerName, listenerResource } from "./listener.js";
import { routeConfiguration } from "./route-table.js";
import { secretResources } from "./tls.js";

export { usesEds } from "./clusters.js";
export { aggregateName } from "./features/fallback.js";
export { listenerName } from "./listener.js";
export { secretName } from "./tls.js";

function upstreamsOf(r: Route): string[] {
  if (r.upstream !== undefined) return [r.upstream];
  return r.upstreams?.map((w) => w.name) ?? [];
}

/** The listener and its route table, each feature asked once for the listener and once per route. */
function listenerResources(ctx: GatewayContext, listener: Listener): ResourceInput[] {
  const routes = routesOf(ctx.gateway, listener, ctx.config.routes);
  const patches = HTTP_FEATURES.flatMap((f): ListenerPatch[] =>
    f.listener ? [f.listener(ctx, listener, routes)] : [],
  );
  const byRoute = new Map<Route, RoutePatch>();
  const patchOf = (r: Route): RoutePatch => {
    let patch = byRoute.get(r);
    if (!patch) {
      patch = combineRoutePatches(patches.map((p) => p.route?.(r)));
      byRoute.set(r, patch);
    }
    return patch;
  };
  const name = listenerName(ctx.gateway.name, listener.name);
  return [
    { typeUrl: TypeUrl.Listener, name, message: listenerResource(ctx, listener, patches) },
    {
      typeUrl: TypeUrl.Route,
      name,
      message: routeConfiguration(ctx, listener, routes, patchOf, combineRouteTableFields(patches)),
    },
  ];
}

/**
 * The whole model → Envoy resources, per gateway group. Pure: same config (and member counts) in,
 * same resources out, which is what makes snapshot versions content hashes. A group gets only the
 * clusters its routes and features use and only the secrets its listeners and clusters use, in a
 * stable order: listeners (the gateway's, then the features'), clusters (the upstreams', then each
 * feature's variants of upstreams and clusters of its own), secrets. `membersOf` says how many
 * Envoys of a group are connected, among which the limits they count are divided (1 when absent);
 * `quotaDenies`, who has used up a calendar quota the control plane counts (the ECDS deny filter's);
 * `keys`, the signing keys the control plane fetched, with which Envoy verifies JWTs itself.
 */
export function translate(
  input: Config,
  membersOf?: (group: string) => number,
  quotaDenies: readonly QuotaDeny[] = [],
  keys?: FetchedKeys,
): Map<string, ResourceInput[]> {
  const config = prepareConfig(input, HTTP_FEATURES);
  const upstreams = new Map(config.upstreams.map((u) => [u.name, u]));
  const certs = new Map(config.certificates.map((c) => [c.name, c]));
  const out = new Map<string, ResourceInput[]>();
  for (const gateway of config.gateways) {
    const ctx: GatewayContext = {
      config,
      gateway,
      members: membersOf?.(gateway.name) ?? 1,
      quotaDenies,
      keys,
    };
    const resources: ResourceInput[] = [];
    const secrets = new Set<string>();
    for (const listener of gateway.listeners) {
      resources.push(...listenerResources(ctx, listener));
      if (listener.certificate) secrets.add(listener.certificate);
      for (const sni of listener.sniCertificates ?? []) secrets.add(sni.certificate);
    }
    for (const f of HTTP_FEATURES) resources.push(...(f.listeners?.(ctx) ?? []));
    for (const f of HTTP_FEATURES) resources.push(...(f.extensionConfigs?.(ctx) ?? []));
    const used = new Set(config.routes.filter((r) => r.gateway === gateway.name).flatMap(upstreamsOf));
    for (const f of HTTP_FEATURES) for (const name of f.upstreams?.(ctx) ?? []) used.add(name);
    for (const name of [...used].sort()) {
      const u = upstreams.get(name);
      if (!u) continue; // validation reports it; the translator stays total
      resources.push(...upstreamResources(u));
      for (const c of upstreamCertificates(u)) secrets.add(c);
    }
    for (const f of HTTP_FEATURES) {
      for (const v of f.upstreamVariants?.(ctx) ?? []) {
        const u = upstreams.get(v.upstream);
        if (!u) continue;
        resources.push(...upstreamResources(u, v));
        for (const c of upstreamCertificates(u)) secrets.add(c);
      }
      resources.push(...(f.clusters?.(ctx) ?? []));
    }
    for (const name of [...secrets].sort()) {
      const cert = certs.get(name);
      if (cert) resources.push(...secretResources(cert));
    }
    out.set(gateway.name, resources);
  }
  return out;
}

/**
 * The gateway groups with limits their Envoys count, divided among them: the groups whose
 * resources depend on how many of their Envoys are connected.
 */
export function groupsDividingLimits(input: Config): string[] {
  const config = prepareConfig(input, HTTP_FEATURES);
  return config.gateways.filter((gateway) => dividesLimits({ config, gateway })).map((g) => g.name);
}
