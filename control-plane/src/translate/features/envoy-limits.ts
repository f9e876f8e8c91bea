/**
 * The limits each Envoy of a gateway group counts itself (`enforce: envoy`, the default for short
 * windows per consumer or address): a second `local_ratelimit` filter, after authentication so it
 * knows the caller, with the route's limits as dynamic descriptors. A descriptor entry with an
 * empty value makes one token bucket per distinct value (per consumer, per address), the least
 * recently seen dropped beyond `max_dynamic_descriptors`. No call out: the request never leaves Envoy.
 *
 * One limit, its descriptors (the first entry names the limit, so limits never share a bucket):
 *
 * | limit                       | Envoy sends                            | buckets                                   |
 * | --------------------------- | -------------------------------------- | ----------------------------------------- |
 * | by consumer                 | (limit, L) (consumer, C)               | one per C; none for `anonymous`           |
 * | by consumer, all callers    | also (limit, L) (remote_address, A) (consumer, C) | one per A when C is `anonymous` |
 * | by ip                       | (limit, L) (remote_address, A)         | one per A                                 |
 * | by ip, anonymous callers    | (limit, L) (remote_address, A) (consumer, C) | one per A when C is `anonymous`     |
 * | by route (all / anonymous)  | (limit, L) [(consumer, C)]             | one [when C is `anonymous`]               |
 *
 * Each bucket is this Envoy's share of the limit: the group's limit divided among the Envoys of
 * the group the control plane sees connected (`GatewayContext.members`), re-divided and pushed
 * when one joins or leaves.
 *
 * What that costs in exactness, against the service's one count for the group: a caller whose
 * requests land unevenly on the Envoys gets less than the limit (down to one Envoy's share when
 * all land on one); the buckets belong to the route's config, so two routes of one policy count
 * apart, and every push of the route table (a re-division, any route change of the listener)
 * starts them full again. bench/native-ratelimit.ts measures each.
 */
import { duration, TYPE_PREFIX } from "@portico/contract";
import { ANONYMOUS, windowSeconds } from "../../model/ratelimit.js";
import { envoyLimits, hasServiceLimits } from "../../model/ratelimit-enforcement.js";
import type { RateLimit, RateLimitPolicy, Route } from "../../model/schema.js";
import type { GatewayContext } from "../context.js";
import type { HttpFilter, HttpFilterName } from "../feature.js";
import { DESCRIPTOR_KEY } from "../ratelimit-policy.js";
import { identityMetadataKey } from "./authentication.js";

const LOCAL_RATE_LIMIT = "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit";
export const CALLER_LIMITS_FILTER: HttpFilterName = "portico.caller_limits";

/** The descriptor key naming the limit (`<policy>.limits[<i>]`). */
export const LIMIT_KEY = "limit";

/**
 * Callers (consumers, addresses) each Envoy keeps a bucket for, per limit of a route. A caller
 * dropped as least recently seen starts again with a full bucket when it comes back: beyond this
 * many callers active at once, a limit admits more than its share.
 */
export const MAX_CALLERS_PER_LIMIT = 10_000;

const MAX_U32 = 4_294_967_295;
const ALWAYS = { default_value: { numerator: 100, denominator: "HUNDRED" } };
/** A bucket that never runs out: where a request must match a descriptor that does not limit it. */
const UNLIMITED = {
  max_tokens: MAX_U32,
  tokens_per_fill: { value: MAX_U32 },
  fill_interval: duration(1_000),
};

/** An Envoy's token bucket for its share of a limit. */
export interface EnvoyShare {
  maxTokens: number;
  tokensPerFill: number;
  fillIntervalMs: number;
}

/**
 * One Envoy's share of a limit when `members` Envoys count it. The rate is the group's limit
 * divided exactly: `requests` tokens every window × members (Envoy refills continuously, at
 * tokens_per_fill / fill_interval). The capacity (`requests`, or a token bucket's `burst`) is
 * divided rounding down, so that the group's full buckets together never hold more than the
 * limit; at least 1, so that no Envoy refuses everything (a limit smaller than the group then
 * admits up to one request per Envoy at once).
 */
export function envoyShare(l: RateLimit, members: number): EnvoyShare {
  const n = Math.max(1, Math.floor(members));
  const capacity = l.algorithm === "token_bucket" ? (l.burst ?? l.requests) : l.requests;
  return {
    maxTokens: Math.max(1, Math.floor(capacity / n)),
    tokensPerFill: l.requests,
    fillIntervalMs: windowSeconds(l) * 1_000 * n,
  };
}

function tokenBucket(s: EnvoyShare): object {
  return {
    max_tokens: s.maxTokens,
    tokens_per_fill: { value: s.tokensPerFill },
    fill_interval: duration(s.fillIntervalMs),
  };
}

function policyOf(ctx: GatewayContext, r: Route): RateLimitPolicy | undefined {
  return r.rateLimitPolicy === undefined
    ? undefined
    : ctx.config.rateLimitPolicies.find((p) => p.name === r.rateLimitPolicy);
}

/** The route's limits each Envoy counts, with the policy they belong to. */
function limitsOf(ctx: GatewayContext, r: Route) {
  const p = policyOf(ctx, r);
  return p ? { policy: p, limits: envoyLimits(p) } : { policy: undefined, limits: [] };
}

function members(ctx: GatewayContext): number {
  return Math.max(1, ctx.members ?? 1);
}

interface Descriptors {
  rateLimits: object[];
  descriptors: object[];
}

/** One limit's actions (what Envoy sends) and descriptors (its buckets). */
function limitDescriptors(ctx: GatewayContext, r: Route, id: string, l: RateLimit, out: Descriptors): void {
  const named = { generic_key: { descriptor_key: LIMIT_KEY, descriptor_value: id } };
  const name = { key: LIMIT_KEY, value: id };
  const consumer = {
    metadata: {
      descriptor_key: DESCRIPTOR_KEY.consumer,
      metadata_key: identityMetadataKey(ctx, r, "consumer"),
      // No identity (no credentials, or no auth on the route): still a value, so still limited.
      default_value: ANONYMOUS,
      source: "DYNAMIC",
    },
  };
  const address = { remote_address: {} };
  const anyConsumer = { key: DESCRIPTOR_KEY.consumer, value: "" };
  const anonymous = { key: DESCRIPTOR_KEY.consumer, value: ANONYMOUS };
  const anyAddress = { key: DESCRIPTOR_KEY.ip, value: "" };
  const bucket = tokenBucket(envoyShare(l, members(ctx)));
  const add = (actions: object[], entries: object[], token_bucket: object) => {
    out.rateLimits.push({ actions });
    out.descriptors.push({ entries, token_bucket });
  };
  switch (l.by) {
    case "consumer":
      add([named, consumer], [name, anyConsumer], bucket);
      // An exact value is looked up before the wildcard: anonymous callers get no shared bucket
      // here, which would hold all of them together.
      out.descriptors.push({ entries: [name, anonymous], token_bucket: UNLIMITED });
      // An anonymous caller has no consumer: its address stands for it.
      if (l.callers === "all") add([named, address, consumer], [name, anyAddress, anonymous], bucket);
      return;
    case "ip":
      if (l.callers === "anonymous") add([named, address, consumer], [name, anyAddress, anonymous], bucket);
      else add([named, address], [name, anyAddress], bucket);
      return;
    case "route":
      if (l.callers === "anonymous") add([named, consumer], [name, anonymous], bucket);
      else add([named], [name], bucket);
      return;
  }
}

/** The listener's filter, when one of its routes has limits its Envoys count. */
export function envoyLimitsHttpFilters(ctx: GatewayContext, routes: readonly Route[]): HttpFilter[] {
  // Without a bucket here the filter acts only on routes that carry one.
  if (!routes.some((r) => limitsOf(ctx, r).limits.length > 0)) return [];
  return [
    {
      name: CALLER_LIMITS_FILTER,
      typed_config: { "@type": TYPE_PREFIX + LOCAL_RATE_LIMIT, stat_prefix: "caller_limits" },
    },
  ];
}

/** The route's `local_ratelimit` config for the limits each Envoy counts, by filter name. */
export function envoyLimitsPerRoute(ctx: GatewayContext, r: Route): Record<string, object> {
  const { policy, limits } = limitsOf(ctx, r);
  if (!policy || limits.length === 0) return {};
  const out: Descriptors = { rateLimits: [], descriptors: [] };
  for (const { limit, index } of limits)
    limitDescriptors(ctx, r, `${policy.name}.limits[${index}]`, limit, out);
  // A refused caller gets a token back within this time, whichever limit refused it.
  const retryAfter = Math.max(
    ...limits.map(({ limit }) => {
      const s = envoyShare(limit, members(ctx));
      return Math.max(1, Math.ceil(s.fillIntervalMs / s.tokensPerFill / 1_000));
    }),
  );
  return {
    [CALLER_LIMITS_FILTER]: {
      "@type": TYPE_PREFIX + LOCAL_RATE_LIMIT,
      stat_prefix: `caller_limits_${r.name}`,
      // Required on a route; used only by a request that matches no descriptor, and every one does.
      token_bucket: UNLIMITED,
      always_consume_default_token_bucket: { value: false },
      filter_enabled: ALWAYS,
      filter_enforced: ALWAYS,
      // The rate-limit service's headers, when it counts limits of the route too, say more (quotas).
      ...(hasServiceLimits(policy) ? {} : { enable_x_ratelimit_headers: "DRAFT_VERSION_03" }),
      rate_limited_as_resource_exhausted: true,
      response_headers_to_add: [
        {
          header: { key: "retry-after", value: String(retryAfter) },
          append_action: "OVERWRITE_IF_EXISTS_OR_ADD",
        },
      ],
      rate_limits: out.rateLimits,
      descriptors: out.descriptors,
      max_dynamic_descriptors: { value: MAX_CALLERS_PER_LIMIT },
    },
  };
}

/** Whether any route of the config has limits its gateway's Envoys count (and so divide among them). */
export function dividesLimits(ctx: GatewayContext): boolean {
  return ctx.config.routes.some((r) => r.gateway === ctx.gateway.name && limitsOf(ctx, r).limits.length > 0);
}
