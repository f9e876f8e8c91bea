/**
 * One route table per listener. Routes with a host get a virtual host per host (and also carry the
 * host-less routes, after their own); the rest go to the catch-all virtual host, restricted to the
 * listener's hostnames when it has any.
 */
import { inMatchOrder, matchRank } from "../model/route-order.js";
import type { Listener, Route } from "../model/schema.js";
import type { GatewayContext } from "./context.js";
import type { RoutePatch } from "./feature.js";
import { guardsBefore, methodGuard } from "./guards.js";
import { listenerName } from "./listener.js";
import { routeEntry, routeMetadata } from "./route.js";

/** What the listener's features add to one of its routes, all of them combined. */
export type PatchOf = (r: Route) => RoutePatch;

/** In the model's match order (model/route-order.ts): the most specific route first. */
function sortRoutes(routes: Route[], patchOf: PatchOf): Route[] {
  return inMatchOrder(routes, (r) => matchRank(r.match, r.priority, patchOf(r).pathTemplate));
}

/** `*.example.com` and `example.com` match with or without a port in the Host header. */
function domainsFor(host: string): string[] {
  return host.includes(":") || host === "*" ? [host] : [host, `${host}:*`];
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
function entries(sorted: Route[], patchOf: PatchOf): object[] {
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
    const patch = patchOf(r);
    const onGuards = patch.guardPerFilterConfig ?? {};
    const guarded = (g: object) => ({
      ...g,
      ...routeMetadata(patch.guardMetadata),
      ...(Object.keys(onGuards).length ? { typed_per_filter_config: onGuards } : {}),
    });
    out.push(...guardsBefore(r, patch).map(guarded), routeEntry(r, patch));
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

/** The listener's route table, from the routes it serves. */
export function routeConfiguration(
  ctx: GatewayContext,
  listener: Listener,
  routes: readonly Route[],
  patchOf: PatchOf,
  tableFields: Readonly<Record<string, unknown[]>> = {},
): object {
  const { gateway } = ctx;
  const hostless = routes.filter((r) => r.match.host === undefined);
  const hosts = [
    ...new Set(routes.map((r) => r.match.host).filter((h): h is string => h !== undefined)),
  ].sort();
  const vhosts = hosts.map((host) => ({
    name: `${gateway.name}_${listener.name}_${host.replace(/[^a-zA-Z0-9]/g, "_")}`,
    domains: domainsFor(host),
    routes: entries(
      [
        ...sortRoutes(
          routes.filter((r) => r.match.host === host),
          patchOf,
        ),
        ...sortRoutes(hostless, patchOf),
      ],
      patchOf,
    ),
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
      routes: entries(sortRoutes(hostless, patchOf), patchOf),
    });
  }
  return { name: listenerName(gateway.name, listener.name), virtual_hosts: vhosts, ...tableFields };
}
