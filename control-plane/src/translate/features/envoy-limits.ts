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
 * Where the buckets live: in the filter's own config, which Envoy fetches by ECDS, one per gateway
 * group, holding the descriptors of every limit the group's routes use. A route only names its
 * limits, in its metadata (`portico.caller_limits`: the limit of each slot the filter's actions
 * read, and the Retry-After of its refusals). So a route table pushed again (a route added,
 * changed or removed) leaves every bucket as it is, and the routes of one policy share them, as
 * they share the service's count. What starts the buckets full again is a change of the filter's
 * config: a limit added, removed or changed, or a re-division.
 *
 * What that costs in exactness, against the service's one count for the group: a caller whose
 * requests land unevenly on the Envoys gets less than the limit (down to one Envoy's share when
 * all land on one), and each re-division or change of the group's limits starts the buckets
 * full. bench/native-ratelimit.ts measures each. Until an Envoy has the filter's config its
 * listener waits (warms); if it never comes, the filter limits nothing.
 *
 * What the answers say: Envoy's own `X-RateLimit-*` headers describe its bucket, its share of the
 * limit, and cost every answer three header writes. So by default (`rateLimitHeaders: exact`) only
 * refusals carry them, from the route's metadata, with the group's numbers: the limit as
 * configured, 0 remaining, and the seconds until a token is back (as Retry-After).
 */
import { duration, IDENTITY_HEADERS, TYPE_PREFIX } from "@portico/contract";
import { ANONYMOUS, windowSeconds } from "../../model/ratelimit.js";
import { envoyLimits, hasServiceLimits } from "../../model/ratelimit-enforcement.js";
import type { RateLimit, Route } from "../../model/schema.js";
import type { ResourceInput } from "../../xds/snapshot.js";
import { rateLimitPolicyOf, type GatewayContext } from "../context.js";
import {
  discoveredFilter,
  FILTER_OFF,
  filterConfig,
  type HttpFilter,
  type HttpFilterName,
  type RoutePatch,
} from "../feature.js";
import { DESCRIPTOR_KEY } from "../ratelimit-policy.js";
import { identityInHeaders, identityMetadataKey } from "./authentication.js";
import { authPath } from "./jwt-authn.js";

const LOCAL_RATE_LIMIT = "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit";
export const CALLER_LIMITS_FILTER: HttpFilterName = "portico.caller_limits";

/** The descriptor key naming the limit (`<policy>.limits[<i>]`). */
export const LIMIT_KEY = "limit";

/** The route metadata namespace naming the route's limits (and the filter's ECDS resource). */
export const CALLER_LIMITS_METADATA = CALLER_LIMITS_FILTER;

/** The route metadata key of the Retry-After that this filter's refusals on the route carry. */
export const RETRY_AFTER_KEY = "retry_after";

/**
 * The route metadata key of the X-RateLimit-Limit that this filter's refusals on the route carry,
 * unless the gateway's `rateLimitHeaders` is `off`.
 */
export const LIMIT_HEADER_KEY = "limit_header";

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

/** The route's limits each Envoy counts, with the policy they belong to. */
function limitsOf(ctx: GatewayContext, r: Route) {
  const p = rateLimitPolicyOf(ctx, r);
  return p ? { policy: p, limits: envoyLimits(p) } : { policy: undefined, limits: [] };
}

function members(ctx: GatewayContext): number {
  return Math.max(1, ctx.members ?? 1);
}

/**
 * What Envoy sends for a limit, after the entry naming it: the caller's consumer, its address, or
 * both. Each shape is one action list of the filter per slot; a route fills a slot with a limit.
 */
type Shape = "consumer" | "consumer_header" | "address" | "address_consumer" | "route";
const SHAPES: readonly Shape[] = ["consumer", "consumer_header", "address", "address_consumer", "route"];

function shapeActions(shape: Shape): object[] {
  const consumer = {
    metadata: {
      descriptor_key: DESCRIPTOR_KEY.consumer,
      metadata_key: identityMetadataKey("consumer"),
      // No identity (no credentials, or no auth on the route): still a value, so still limited.
      default_value: ANONYMOUS,
      source: "DYNAMIC",
    },
  };
  const address = { remote_address: {} };
  switch (shape) {
    case "consumer":
      return [consumer];
    case "consumer_header":
      // Where the identity stays in headers (`identityInHeaders`): every request that reaches the
      // filter carries the consumer the checks set, the same value the metadata would hold.
      return [
        {
          request_headers: {
            header_name: IDENTITY_HEADERS.consumer,
            descriptor_key: DESCRIPTOR_KEY.consumer,
          },
        },
      ];
    case "address":
      return [address];
    case "address_consumer":
      return [address, consumer];
    case "route":
      return [];
  }
}

/** The route metadata key of a slot: which limit the route puts in it. */
const slotKey = (shape: Shape, slot: number) => `${shape}.${slot}`;

/** One limit's shapes (what Envoy sends for it) and descriptors (its buckets). */
function limitParts(
  ctx: GatewayContext,
  id: string,
  l: RateLimit,
): { shapes: Shape[]; descriptors: object[] } {
  const name = { key: LIMIT_KEY, value: id };
  const anyConsumer = { key: DESCRIPTOR_KEY.consumer, value: "" };
  const anonymous = { key: DESCRIPTOR_KEY.consumer, value: ANONYMOUS };
  const anyAddress = { key: DESCRIPTOR_KEY.ip, value: "" };
  const token_bucket = tokenBucket(envoyShare(l, members(ctx)));
  switch (l.by) {
    case "consumer": {
      const shapes: Shape[] = ["consumer"];
      const descriptors: object[] = [
        { entries: [name, anyConsumer], token_bucket },
        // An exact value is looked up before the wildcard: anonymous callers get no shared bucket
        // here, which would hold all of them together.
        { entries: [name, anonymous], token_bucket: UNLIMITED },
      ];
      // An anonymous caller has no consumer: its address stands for it.
      if (l.callers === "all") {
        shapes.push("address_consumer");
        descriptors.push({ entries: [name, anyAddress, anonymous], token_bucket });
      }
      return { shapes, descriptors };
    }
    case "ip":
      return l.callers === "anonymous"
        ? {
            shapes: ["address_consumer"],
            descriptors: [{ entries: [name, anyAddress, anonymous], token_bucket }],
          }
        : { shapes: ["address"], descriptors: [{ entries: [name, anyAddress], token_bucket }] };
    case "route":
      return l.callers === "anonymous"
        ? { shapes: ["consumer"], descriptors: [{ entries: [name, anonymous], token_bucket }] }
        : { shapes: ["route"], descriptors: [{ entries: [name], token_bucket }] };
  }
}

/** The route's limits each Envoy counts, by id (`<policy>.limits[<i>]`). */
function routeLimits(ctx: GatewayContext, r: Route): { id: string; limit: RateLimit }[] {
  const { policy, limits } = limitsOf(ctx, r);
  if (!policy) return [];
  return limits.map(({ limit, index }) => ({ id: `${policy.name}.limits[${index}]`, limit }));
}

/** One slot a route fills: the `slot`th action list of `shape` sends limit `id` for it. */
interface Slot {
  shape: Shape;
  slot: number;
  id: string;
}

/** Whether only authenticated callers reach the route's limits: its policy refuses anyone else first. */
function onlyAuthenticated(ctx: GatewayContext, r: Route): boolean {
  const path = authPath(ctx, r);
  if (path.kind === "public" || path.policy.allowAnonymous) return false;
  // A failing ext-authz lets callers through unauthenticated when the gateway says so.
  return path.kind === "native" || (ctx.gateway.extAuthz !== undefined && !ctx.gateway.extAuthz.failOpen);
}

/** Whether a limit's shape sends descriptors that only an anonymous caller's can match. */
function forAnonymousOnly(l: RateLimit, shape: Shape): boolean {
  return shape === "address_consumer" || (l.by === "route" && l.callers === "anonymous");
}

/**
 * The route's slots, and the descriptors (buckets) of its limits by id. A route only authenticated
 * callers reach leaves out the slots for anonymous callers: Envoy would work out, on each request,
 * a descriptor that matches no bucket.
 */
function routeSlots(ctx: GatewayContext, r: Route): { slots: Slot[]; descriptors: Map<string, object[]> } {
  const used = new Map<Shape, number>();
  const slots: Slot[] = [];
  const descriptors = new Map<string, object[]>();
  const known = onlyAuthenticated(ctx, r);
  const inHeaders = identityInHeaders(ctx, r);
  for (const { id, limit } of routeLimits(ctx, r)) {
    const parts = limitParts(ctx, id, limit);
    descriptors.set(id, parts.descriptors);
    for (const limitShape of parts.shapes) {
      if (known && forAnonymousOnly(limit, limitShape)) continue;
      const shape = inHeaders && limitShape === "consumer" ? "consumer_header" : limitShape;
      const slot = used.get(shape) ?? 0;
      used.set(shape, slot + 1);
      slots.push({ shape, slot, id });
    }
  }
  return { slots, descriptors };
}

/**
 * What the route's refusals say, whichever of its limits refused: Retry-After (seconds), within
 * which a token of every limit is back in an Envoy's bucket; and X-RateLimit-Limit (draft 03), the
 * limits as configured for the group, not an Envoy's share of them, first the one Retry-After waits
 * for, then each as a quota policy: `100, 100;w=1, 5000;w=3600`.
 */
function refusalOf(ctx: GatewayContext, r: Route): { retryAfter: number; limitHeader: string } {
  const limits = routeLimits(ctx, r).map(({ limit }) => limit);
  const waits = limits.map((l) => {
    const s = envoyShare(l, members(ctx));
    return Math.max(1, Math.ceil(s.fillIntervalMs / s.tokensPerFill / 1_000));
  });
  const longest = waits.indexOf(Math.max(...waits));
  return {
    retryAfter: waits[longest]!,
    limitHeader: [
      String(limits[longest]!.requests),
      ...limits.map((l) => `${l.requests};w=${windowSeconds(l)}`),
    ].join(", "),
  };
}

/**
 * The filter's answer headers, which Envoy adds to its refusals only: Retry-After, and unless the
 * gateway says `off` or Envoy adds its own (`envoysOwn`), the draft-03 ones with the group's
 * numbers. The config is the group's, so the values are the refused request's route's, from its
 * metadata.
 */
function refusalHeaders(ctx: GatewayContext, envoysOwn: boolean): object[] {
  const fromRoute = (key: string) => `%METADATA(ROUTE:${CALLER_LIMITS_METADATA}:${key})%`;
  const headers: [string, string][] = [["retry-after", fromRoute(RETRY_AFTER_KEY)]];
  if (ctx.gateway.rateLimitHeaders !== "off" && !envoysOwn) {
    headers.push(
      ["x-ratelimit-limit", fromRoute(LIMIT_HEADER_KEY)],
      ["x-ratelimit-remaining", "0"],
      ["x-ratelimit-reset", fromRoute(RETRY_AFTER_KEY)],
    );
  }
  return headers.map(([key, value]) => ({
    header: { key, value },
    append_action: "OVERWRITE_IF_EXISTS_OR_ADD",
  }));
}

/** The group's routes whose limits its Envoys count. */
function limitedRoutes(ctx: GatewayContext): Route[] {
  return ctx.config.routes.filter((r) => r.gateway === ctx.gateway.name && routeLimits(ctx, r).length > 0);
}

/**
 * The filter's config for the gateway group: the buckets of every limit its routes use (each
 * once, however many routes use it), and one action list per slot the routes fill.
 */
function callerLimitsConfig(ctx: GatewayContext, routes: readonly Route[]) {
  const descriptors = new Map<string, object[]>();
  const slots = new Map<Shape, number>();
  let serviceToo = false;
  for (const r of routes) {
    const route = routeSlots(ctx, r);
    for (const [id, d] of route.descriptors) if (!descriptors.has(id)) descriptors.set(id, d);
    for (const { shape, slot } of route.slots) slots.set(shape, Math.max(slots.get(shape) ?? 0, slot + 1));
    const p = rateLimitPolicyOf(ctx, r);
    serviceToo ||= p !== undefined && hasServiceLimits(p);
  }
  const rateLimits: object[] = [];
  for (const shape of SHAPES) {
    for (let slot = 0; slot < (slots.get(shape) ?? 0); slot++) {
      const named = {
        metadata: {
          descriptor_key: LIMIT_KEY,
          metadata_key: { key: CALLER_LIMITS_METADATA, path: [{ key: slotKey(shape, slot) }] },
          // A route that leaves the slot empty sends no descriptor for it.
          source: "ROUTE_ENTRY",
        },
      };
      rateLimits.push({ actions: [named, ...shapeActions(shape)] });
    }
  }
  // Envoy's own headers, on every answer, describe its bucket: its share of the limit. Only where
  // the gateway asks for them always; and where the rate-limit service counts limits of a route
  // too, its headers say more (quotas), and Envoy's would come on top of them.
  const envoysOwn = ctx.gateway.rateLimitHeaders === "always" && !serviceToo;
  return {
    "@type": TYPE_PREFIX + LOCAL_RATE_LIMIT,
    stat_prefix: "caller_limits",
    // No default bucket: a request that matches no descriptor is not limited here.
    filter_enabled: ALWAYS,
    filter_enforced: ALWAYS,
    ...(envoysOwn ? { enable_x_ratelimit_headers: "DRAFT_VERSION_03" } : {}),
    rate_limited_as_resource_exhausted: true,
    response_headers_to_add: refusalHeaders(ctx, envoysOwn),
    rate_limits: rateLimits,
    descriptors: [...descriptors.values()].flat(),
    max_dynamic_descriptors: { value: MAX_CALLERS_PER_LIMIT },
  };
}

/** The config before the group's arrives, and if it never does: limits nothing. */
const NO_LIMITS = {
  "@type": TYPE_PREFIX + LOCAL_RATE_LIMIT,
  stat_prefix: "caller_limits",
  filter_enabled: ALWAYS,
  filter_enforced: ALWAYS,
};

/** The listener's filter, its config fetched by ECDS, when one of its routes has limits its Envoys count. */
export function envoyLimitsHttpFilters(ctx: GatewayContext, routes: readonly Route[]): HttpFilter[] {
  if (!routes.some((r) => routeLimits(ctx, r).length > 0)) return [];
  return [discoveredFilter(CALLER_LIMITS_FILTER, NO_LIMITS)];
}

/** The gateway group's ECDS resource for the filter, when a route of it has limits its Envoys count. */
export function envoyLimitsExtensionConfigs(ctx: GatewayContext): ResourceInput[] {
  const routes = limitedRoutes(ctx);
  if (routes.length === 0) return [];
  return [filterConfig(CALLER_LIMITS_FILTER, callerLimitsConfig(ctx, routes))];
}

const OFF = { [CALLER_LIMITS_FILTER]: FILTER_OFF };

/**
 * What a route of a listener with the filter carries: the limits it names, in metadata; or, for a
 * route without any, the filter off (no descriptor to work out).
 */
export function envoyLimitsRoutePatch(ctx: GatewayContext, r: Route): RoutePatch {
  const { slots } = routeSlots(ctx, r);
  if (slots.length === 0) return { perFilterConfig: OFF };
  const { retryAfter, limitHeader } = refusalOf(ctx, r);
  return {
    metadata: {
      [CALLER_LIMITS_METADATA]: {
        ...Object.fromEntries(slots.map((s) => [slotKey(s.shape, s.slot), s.id])),
        [RETRY_AFTER_KEY]: String(retryAfter),
        ...(ctx.gateway.rateLimitHeaders === "off" ? {} : { [LIMIT_HEADER_KEY]: limitHeader }),
      },
    },
  };
}

/** Whether any route of the config has limits its gateway's Envoys count (and so divide among them). */
export function dividesLimits(ctx: GatewayContext): boolean {
  return limitedRoutes(ctx).length > 0;
}
