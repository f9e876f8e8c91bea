// The Portico configs the benchmark writes, as plain data; each change is a new config.
import type { ConfigInput } from "@portico/control-plane";
import type { SubscribedNames } from "./fleet.js";
import type { XdsBenchParams } from "./options.js";

/**
 * Section 1: ten routes on one listener, plus `/probe-<probe>` once a change adds it. The probe is
 * an exact path: a prefix /probe-1 would also answer /probe-12 and end the wait early.
 */
export function changeConfig(
  listenPort: number,
  upstreamPort: number,
  probe: number | undefined,
): ConfigInput {
  const upstreams = Array.from({ length: 5 }, (_, k) => ({
    name: k === 0 ? "probe" : `svc-${k}`,
    endpoints: [{ host: "127.0.0.1", port: upstreamPort }],
  }));
  const routes: NonNullable<ConfigInput["routes"]> = [
    { name: "base", gateway: "bench", match: { path: "/base" }, upstream: "probe" },
  ];
  for (let k = 1; k < 10; k++)
    routes.push({
      name: `svc-${k}`,
      gateway: "bench",
      match: { pathPrefix: `/svc-${k}/` },
      upstream: `svc-${(k % 4) + 1}`,
    });
  if (probe !== undefined)
    routes.push({
      name: `probe-${probe}`,
      gateway: "bench",
      match: { path: `/probe-${probe}` },
      upstream: "probe",
    });
  return {
    gateways: [{ name: "bench", listeners: [{ name: "http", port: listenPort, address: "127.0.0.1" }] }],
    upstreams,
    routes,
  };
}

/**
 * Section 2's group "fleet": an endpoint change moves up-0 to `edsPort`, a route change renames
 * r-0's prefix after `routeTag`.
 */
export function fleetConfig(
  p: Pick<XdsBenchParams, "fleetRoutes" | "fleetUpstreams">,
  edsPort: number,
  routeTag: number,
): ConfigInput {
  const upstreams = Array.from({ length: p.fleetUpstreams }, (_, k) => ({
    name: `up-${k}`,
    endpoints: [{ host: "127.0.0.1", port: k === 0 ? edsPort : 20_000 + k }],
  }));
  const routes = Array.from({ length: p.fleetRoutes }, (_, i) => ({
    name: `r-${i}`,
    gateway: "fleet",
    match: { pathPrefix: i === 0 ? `/r-0-v${routeTag}/` : `/r-${i}/` },
    upstream: `up-${i % p.fleetUpstreams}`,
  }));
  return {
    gateways: [{ name: "fleet", listeners: [{ name: "http", port: 10_080, address: "127.0.0.1" }] }],
    upstreams,
    routes,
  };
}

export function fleetNames(p: Pick<XdsBenchParams, "fleetUpstreams">): SubscribedNames {
  return { eds: Array.from({ length: p.fleetUpstreams }, (_, k) => `up-${k}`), rds: ["fleet/http"] };
}

export const bigUpstreamName = (k: number): string => `up-${String(k).padStart(4, "0")}`;

/** Where the big config's listeners and upstream are, and which change it carries. */
export interface BigConfigState {
  bigPort: number;
  onePort: number;
  upstreamPort: number;
  /** Bumped for a one-route change (r-05000's prefix). */
  routeTag: number;
  /** Bumped for a one-endpoint change (up-0007's port). */
  endpointTag: number;
}

/** Sections 3–5: group "big" with the 10k routes and 2k clusters, group "one" with a single route. */
export function bigConfig(
  p: Pick<XdsBenchParams, "bigRoutes" | "bigUpstreams">,
  o: BigConfigState,
): ConfigInput {
  const upstreams = Array.from({ length: p.bigUpstreams }, (_, k) => ({
    name: bigUpstreamName(k),
    // up-0007 carries the one-endpoint change; its port is never used for traffic.
    endpoints: [{ host: "127.0.0.1", port: k === 7 ? 30_000 + o.endpointTag : o.upstreamPort }],
  }));
  const routes = Array.from({ length: p.bigRoutes }, (_, i) => ({
    name: `r-${String(i).padStart(5, "0")}`,
    gateway: "big",
    match: { pathPrefix: i === 5000 ? `/svc-5000-v${o.routeTag}/` : `/svc-${i}/` },
    upstream: bigUpstreamName(i % p.bigUpstreams),
  }));
  routes.push({ name: "one", gateway: "one", match: { pathPrefix: "/one" }, upstream: bigUpstreamName(0) });
  return {
    gateways: [
      { name: "big", listeners: [{ name: "http", port: o.bigPort, address: "127.0.0.1" }] },
      { name: "one", listeners: [{ name: "http", port: o.onePort, address: "127.0.0.1" }] },
    ],
    upstreams,
    routes,
  };
}

export function bigNames(p: Pick<XdsBenchParams, "bigUpstreams">): SubscribedNames {
  return { eds: Array.from({ length: p.bigUpstreams }, (_, k) => bigUpstreamName(k)), rds: ["big/http"] };
}
