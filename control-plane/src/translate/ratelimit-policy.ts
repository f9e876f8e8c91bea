/**
 * Rate-limit policies → the rate-limit service's config, one `portico.ratelimit.v1.RateLimitConfig`
 * per domain (a gateway's `rateLimit.domain`, or its name), holding every policy its routes use.
 * Only the limits the service counts are here: those each Envoy counts (`enforce`, see
 * model/ratelimit-enforcement.ts) are in the routes' `local_ratelimit` config (features/envoy-limits.ts).
 *
 * The descriptors. Envoy sends, for a route R with policy P, one descriptor per kind of limit the
 * policy has, each starting with ("policy", P) so that one domain holds all of a gateway's policies:
 *
 * | limit                                  | descriptor entries                                 |
 * | -------------------------------------- | -------------------------------------------------- |
 * | by consumer (all / identified callers) | (policy, P) (consumer, C) [(plan, PL)]             |
 * | by ip, all callers                     | (policy, P) (remote_address, IP)                   |
 * | by ip, anonymous or identified callers | (policy, P) (remote_address, IP) (consumer, C)     |
 * | by route, all callers                  | (policy, P) (route, R)                             |
 * | by route, anonymous or identified      | (policy, P) (route, R) (consumer, C)               |
 *
 * C and PL come from ext-authz's dynamic metadata, `anonymous` when absent (no credentials, or no
 * auth policy on the route), so every entry always has a value. The domain config matches them
 * most specific first (an exact value beats a wildcard beats a key-only rule):
 *
 * ```yaml
 * - key: policy
 *   value: P
 *   descriptors:
 *     - { key: consumer, value: anonymous }      # anonymous callers have no per-consumer counter…
 *     - key: consumer                            # …identified ones have one each, with plan limits
 *       rate_limits: [...]
 *       plans: { gold: { rate_limits: [...] } }
 *     - key: remote_address                      # per address, all callers
 *       rate_limits: [...]
 *       descriptors:
 *         - key: consumer                        # per address, anonymous callers; also their
 *           value: anonymous                     # `by: consumer` limits: an anonymous caller is
 *           rate_limits: [...]                   # its address
 *         - key: consumer                        # per address, identified callers together
 *           value: "*"
 *           share_threshold: true
 *           rate_limits: [...]
 *     - key: route                               # the same shape per route
 * ```
 *
 * Limits that land on one node and would count on the same counter (same algorithm and window)
 * are merged: the smaller decides, which is what two such counters would do anyway. A plan's
 * limit replaces the plan-less limit of the same window for consumers on that plan. Every node
 * with limits has `count_refused: false`: a request one limit refuses uses up none of the others.
 */
import { TYPE_PREFIX, RATE_LIMIT_UNIT } from "@portico/contract";
import { ANONYMOUS, CALENDAR_PERIODS, counterIdentity } from "../model/ratelimit.js";
import { enforcedBy, hasServiceLimits } from "../model/ratelimit-enforcement.js";
import type { Config, Gateway, RateLimit, RateLimitPolicy } from "../model/schema.js";
import type { ResourceInput } from "../xds/snapshot.js";
import { registerResourceType } from "../xds/types.js";

export const RATE_LIMIT_CONFIG_TYPE = "portico.ratelimit.v1.RateLimitConfig";
export const RATE_LIMIT_CONFIG_TYPE_URL = TYPE_PREFIX + RATE_LIMIT_CONFIG_TYPE;

// The rate-limit service reads the whole set: a domain missing from a response is deleted.
registerResourceType(RATE_LIMIT_CONFIG_TYPE_URL, { fullState: true, readBy: "ratelimit" });

/** Descriptor keys; `remote_address` is the key Envoy's `remote_address` action writes. */
export const DESCRIPTOR_KEY = {
  policy: "policy",
  consumer: "consumer",
  plan: "plan",
  ip: "remote_address",
  route: "route",
} as const;

/** The entries after ("policy", P) of one descriptor Envoy sends. */
export type DescriptorShape = readonly ("consumer" | "plan" | "ip" | "route")[];

/** The rate-limit domain of a gateway's descriptors. */
export function rateLimitDomain(g: Gateway): string {
  return g.rateLimit?.domain ?? g.name;
}

interface Indexed {
  limit: RateLimit;
  index: number;
}

/** A policy's limits the service counts, sorted onto the nodes of its descriptor tree. */
interface Scopes {
  /** Per consumer, identified callers; plan-specific ones included. */
  consumer: Indexed[];
  ip: { all: Indexed[]; anonymous: Indexed[]; identified: Indexed[] };
  route: { all: Indexed[]; anonymous: Indexed[]; identified: Indexed[] };
}

function scopes(p: RateLimitPolicy): Scopes {
  const s: Scopes = {
    consumer: [],
    ip: { all: [], anonymous: [], identified: [] },
    route: { all: [], anonymous: [], identified: [] },
  };
  p.limits.forEach((limit, index) => {
    if (enforcedBy(limit, p) !== "service") return;
    const it = { limit, index };
    if (limit.by === "consumer") {
      s.consumer.push(it);
      // An anonymous caller has no consumer: its address stands for it.
      if (limit.callers === "all" && limit.plan === undefined) s.ip.anonymous.push(it);
    } else {
      s[limit.by][limit.callers].push(it);
    }
  });
  return s;
}

/** The descriptors a route with this policy sends, in a stable order. */
export function descriptorShapes(p: RateLimitPolicy): DescriptorShape[] {
  const s = scopes(p);
  const out: DescriptorShape[] = [];
  if (s.consumer.length) {
    out.push(s.consumer.some((i) => i.limit.plan !== undefined) ? ["consumer", "plan"] : ["consumer"]);
  }
  for (const dim of ["ip", "route"] as const) {
    if (s[dim].all.length) out.push([dim]);
    if (s[dim].anonymous.length || s[dim].identified.length) out.push([dim, "consumer"]);
  }
  return out;
}

const ALGORITHM: Record<RateLimit["algorithm"], string> = {
  fixed_window: "FIXED_WINDOW",
  sliding_window: "SLIDING_WINDOW",
  token_bucket: "TOKEN_BUCKET",
};

/** One limit as the service's `RateLimitPolicy`; named after its place in the model. */
function limitMessage(p: RateLimitPolicy, { limit: l, index }: Indexed): object {
  const calendar = l.per !== undefined && l.algorithm === "fixed_window" && CALENDAR_PERIODS.has(l.per);
  return {
    name: `${p.name}.limits[${index}]`,
    requests_per_unit: l.requests,
    ...(l.per !== undefined ? { unit: RATE_LIMIT_UNIT[l.per] } : { window: l.window }),
    ...(l.algorithm !== "fixed_window" ? { algorithm: ALGORITHM[l.algorithm] } : {}),
    ...(l.burst !== undefined ? { burst: l.burst } : {}),
    ...(calendar ? { calendar: true, time_zone: p.timeZone } : {}),
    ...(l.shadow || p.shadow ? { shadow_mode: { value: true } } : {}),
  };
}

/**
 * Keeps one limit per counter: the smallest of those that refuse (a shadow limit only when every
 * one of its counter is shadow), in model order.
 */
function merge(p: RateLimitPolicy, items: Indexed[]): Indexed[] {
  const best = new Map<string, Indexed>();
  const enforced = (x: Indexed) => !x.limit.shadow && !p.shadow;
  for (const it of items) {
    const id = counterIdentity(it.limit, p.timeZone);
    const cur = best.get(id);
    const better =
      !cur ||
      (enforced(it) && !enforced(cur)) ||
      (enforced(it) === enforced(cur) && it.limit.requests < cur.limit.requests);
    if (better) best.set(id, it);
  }
  return [...best.values()].sort((a, b) => a.index - b.index);
}

function limitsField(p: RateLimitPolicy, items: Indexed[]): object {
  const merged = merge(p, items);
  return merged.length ? { rate_limits: merged.map((it) => limitMessage(p, it)) } : {};
}

/**
 * A node's limits. A refused request counts on none of them: a caller held by a per-second limit
 * does not use up its monthly quota with requests that were never served.
 */
function nodeLimits(p: RateLimitPolicy, items: Indexed[]): object {
  return items.length ? { ...limitsField(p, items), count_refused: { value: false } } : {};
}

function consumerNodes(p: RateLimitPolicy, items: Indexed[]): object[] {
  const general = items.filter((i) => i.limit.plan === undefined);
  const plans = [
    ...new Set(items.map((i) => i.limit.plan).filter((x): x is string => x !== undefined)),
  ].sort();
  const planSets = plans.map((plan) => {
    const own = items.filter((i) => i.limit.plan === plan);
    const taken = new Set(own.map((i) => counterIdentity(i.limit, p.timeZone)));
    const rest = general.filter((i) => !taken.has(counterIdentity(i.limit, p.timeZone)));
    return [plan, limitsField(p, [...own, ...rest])] as const;
  });
  return [
    // Anonymous callers stop here: they are limited per address instead.
    { key: DESCRIPTOR_KEY.consumer, value: ANONYMOUS },
    {
      key: DESCRIPTOR_KEY.consumer,
      ...limitsField(p, general),
      ...(planSets.length ? { plans: Object.fromEntries(planSets), plan_key: DESCRIPTOR_KEY.plan } : {}),
      count_refused: { value: false },
    },
  ];
}

function dimensionNode(
  p: RateLimitPolicy,
  key: string,
  s: { all: Indexed[]; anonymous: Indexed[]; identified: Indexed[] },
): object | undefined {
  if (!s.all.length && !s.anonymous.length && !s.identified.length) return undefined;
  const children = [
    // Also when only identified callers have limits here: it keeps anonymous ones off the wildcard.
    ...(s.anonymous.length || s.identified.length
      ? [{ key: DESCRIPTOR_KEY.consumer, value: ANONYMOUS, ...nodeLimits(p, s.anonymous) }]
      : []),
    ...(s.identified.length
      ? [
          {
            key: DESCRIPTOR_KEY.consumer,
            // Every consumer but `anonymous` (an exact value wins over a wildcard), on one counter.
            value: "*",
            share_threshold: true,
            ...nodeLimits(p, s.identified),
          },
        ]
      : []),
  ];
  return { key, ...nodeLimits(p, s.all), ...(children.length ? { descriptors: children } : {}) };
}

/** A policy's subtree of the domain config. */
export function policyDescriptor(p: RateLimitPolicy): object {
  const s = scopes(p);
  const nodes = [
    ...(s.consumer.length ? consumerNodes(p, s.consumer) : []),
    dimensionNode(p, DESCRIPTOR_KEY.ip, s.ip),
    dimensionNode(p, DESCRIPTOR_KEY.route, s.route),
  ].filter((n): n is object => n !== undefined);
  return { key: DESCRIPTOR_KEY.policy, value: p.name, descriptors: nodes };
}

/** Rate-limit policies as the rate-limit service's resource type, one resource per domain. */
export function rateLimitPolicyResources(config: Config): ResourceInput[] {
  const policies = new Map(config.rateLimitPolicies.map((p) => [p.name, p]));
  const domains = new Map<string, Set<string>>();
  for (const g of config.gateways) {
    if (!g.rateLimit) continue;
    const domain = rateLimitDomain(g);
    const used = domains.get(domain) ?? new Set<string>();
    domains.set(domain, used);
    for (const r of config.routes) {
      const p = r.gateway === g.name && r.rateLimitPolicy ? policies.get(r.rateLimitPolicy) : undefined;
      if (p && hasServiceLimits(p)) used.add(p.name);
    }
  }
  return [...domains.keys()].sort().map((domain) => ({
    typeUrl: RATE_LIMIT_CONFIG_TYPE_URL,
    name: domain,
    message: {
      name: domain,
      domain,
      descriptors: [...domains.get(domain)!].sort().map((n) => policyDescriptor(policies.get(n)!)),
    },
  }));
}
