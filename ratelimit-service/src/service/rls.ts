/**
 * ShouldRateLimit, independent of the transport: match each descriptor, drop replaced rules, ask
 * the limiter once for the whole request, and answer the way envoyproxy/ratelimit does.
 */
import { BoundedMap } from "@portico/common";
import { RATE_LIMIT_UNIT } from "@portico/contract";
import { matchInDomain } from "../config/match.js";
import type { LimitRule, LimitSet, RateLimitConfig, Unit } from "../config/types.js";
import { UNIT_MS } from "../config/units.js";
import type { CheckResult, LimitCheck, LimitOutcome, RateLimiter } from "../limiter/types.js";
import type {
  Code,
  DescriptorStatus,
  ProtoUnit,
  RateLimitDescriptor,
  RateLimitRequest,
  RateLimitResponse,
} from "./codec.js";
import { RateLimitMetrics } from "./metrics.js";

import {
  headlineStatus,
  limitHeaders,
  overallCode,
  retryAfterSeconds,
  type Judged,
  type LimitHeaderNames,
} from "./verdict.js";

export const UNLIMITED_REMAINING = 4_294_967_295;

/** The statuses that depend on no count: shared by every answer, and encoded once. */
const UNLIMITED_STATUS: DescriptorStatus = Object.freeze({
  code: "OK",
  limit_remaining: UNLIMITED_REMAINING,
});
const NO_RULE_STATUS: DescriptorStatus = Object.freeze({ code: "OK", limit_remaining: 0 });

/** Distinct request-carried limits remembered at once; a caller cannot make more live by inventing them. */
const MAX_OVERRIDE_RULES = 10_000;

export class InvalidRequestError extends Error {
  readonly code = "invalid_argument";
}

export interface RateLimitHandlerOptions {
  limiter: RateLimiter;
  metrics?: RateLimitMetrics;
  /** Every answer is OK, while counting and reporting as usual (upstream's SHADOW_MODE). */
  shadowMode?: boolean;
  /** Usage above this share of a limit counts as "near limit" (upstream's 0.8). */
  nearLimitRatio?: number;
  /** Add `retry-after` to refused answers (Envoy copies it onto the 429). Default on. */
  retryAfter?: boolean;
  /**
   * Add RateLimit-Limit, -Remaining and -Reset (these names, or others) to every answer, for the
   * descriptor closest to its limit (upstream's LIMIT_RESPONSE_HEADERS_ENABLED). Default off.
   */
  limitHeaders?: LimitHeaderNames;
}

const PROTO_UNIT: Readonly<Record<Unit, ProtoUnit>> = RATE_LIMIT_UNIT;
/** A request-carried limit's unit back to the config's name for it. */
const UNIT_OF = new Map(Object.entries(PROTO_UNIT).map(([unit, proto]) => [proto, unit as Unit]));

interface Item {
  hits: number;
  /** Names the descriptor's counters; undefined when no rule matched. */
  key?: string;
  set?: LimitSet;
  countRefused: boolean;
  /** Its rule has quota_mode. */
  quotaMode: boolean;
  /** The descriptor's values, for rules with detailed_metric. */
  detailed?: string;
}

export class RateLimitHandler {
  readonly metrics: RateLimitMetrics;
  private config: RateLimitConfig;
  /** Rules for the `limit` a request carries: keyed by what the caller sends, so bounded. */
  private readonly overrides = new BoundedMap<string, LimitRule>(MAX_OVERRIDE_RULES);

  constructor(
    config: RateLimitConfig,
    private readonly opts: RateLimitHandlerOptions,
  ) {
    this.config = config;
    this.metrics = opts.metrics ?? new RateLimitMetrics();
  }

  /** Swaps the config; requests already being decided finish with the one they started with. */
  setConfig(config: RateLimitConfig): void {
    this.config = config;
  }

  async shouldRateLimit(req: RateLimitRequest): Promise<RateLimitResponse> {
    if (!req.domain) throw new InvalidRequestError("rate limit domain must not be empty");
    if (!req.descriptors || req.descriptors.length === 0) {
      throw new InvalidRequestError("rate limit descriptor list must not be empty");
    }
    const domain = this.config.domains.get(req.domain);
    const requestHits = req.hits_addend && req.hits_addend > 0 ? req.hits_addend : 1;

    const items: Item[] = req.descriptors.map((d) => {
      const hits = d.hits_addend != null ? Number(d.hits_addend.value ?? 0) : requestHits;
      if (!domain) return { hits, countRefused: true, quotaMode: false };
      const entries = d.entries ?? [];
      const match = matchInDomain(domain, entries);
      const override = d.limit ? this.override(req.domain, d.limit) : undefined;
      if (override) {
        // A limit sent by Envoy (from dynamic metadata) applies to any descriptor of a known
        // domain, configured or not, as upstream.
        return {
          hits,
          key: match?.counterKey ?? overrideKey(req.domain, entries),
          set: { limits: [override], unlimited: false, replaces: [] },
          countRefused: match?.node.countRefused ?? true,
          // As upstream, a limit sent by Envoy is never in quota mode.
          quotaMode: false,
        };
      }
      if (!match) return { hits, countRefused: true, quotaMode: false };
      return {
        hits,
        key: match.counterKey,
        set: match.set,
        countRefused: match.node.countRefused,
        quotaMode: match.node.quotaMode,
        detailed: match.node.detailedMetric ? entryLabel(d) : undefined,
      };
    });

    const replaced = new Set<string>();
    for (const it of items) for (const r of it.set?.replaces ?? []) replaced.add(r);

    const checks: LimitCheck[] = [];
    const checkOf: (number | undefined)[] = [];
    const unlimited: boolean[] = [];
    items.forEach((it, i) => {
      const set = it.set;
      if (!set || it.key === undefined) return;
      unlimited[i] = set.unlimited;
      const limits = set.limits.filter((r) => !r.name || !replaced.has(r.name));
      if (unlimited[i] || limits.length === 0) return;
      checkOf[i] = checks.length;
      checks.push({ key: it.key, limits, hits: it.hits, countRefused: it.countRefused });
    });

    const results = checks.length > 0 ? await this.opts.limiter.check(checks) : [];
    const judged: Judged[] = items.map((it, i): Judged => {
      if (unlimited[i]) return { status: UNLIMITED_STATUS, quotaMode: false };
      const c = checkOf[i];
      if (c === undefined) return { status: NO_RULE_STATUS, quotaMode: false };
      const result = results[c]!;
      this.record(result, it);
      return { status: toStatus(result), quotaMode: it.quotaMode };
    });
    const refused = overallCode(judged) === "OVER_LIMIT";
    if (refused && this.opts.shadowMode) this.metrics.globalShadowMode.inc();
    const overall: Code = refused && !this.opts.shadowMode ? "OVER_LIMIT" : "OK";
    (overall === "OK" ? this.metrics.hot.ok : this.metrics.hot.overLimit).inc();
    const response: RateLimitResponse = { overall_code: overall, statuses: judged.map((j) => j.status) };
    const headline = this.opts.limitHeaders ? headlineStatus(judged) : undefined;
    if (headline) response.response_headers_to_add = limitHeaders(headline, this.opts.limitHeaders!);
    if (overall === "OVER_LIMIT" && this.opts.retryAfter !== false) {
      (response.response_headers_to_add ??= []).push({
        key: "retry-after",
        value: String(retryAfterSeconds(judged)),
      });
    }
    return response;
  }

  private record(result: CheckResult, it: Item): void {
    const m = this.metrics;
    const ratio = this.opts.nearLimitRatio ?? 0.8;
    if (result.degraded) m.hot.degraded[result.degraded].inc();
    for (const o of result.outcomes) {
      const series = m.forRule(o.rule, it.detailed);
      series.total.inc(it.hits);
      if (o.over) {
        series.over.inc(it.hits);
        if (result.cached) series.cached.inc(it.hits);
        if (o.rule.shadowMode) series.shadow.inc(it.hits);
      } else {
        series.within.inc(it.hits);
        if (o.used > ratio * o.limit) series.near.inc(it.hits);
      }
    }
  }

  private override(domain: string, limit: NonNullable<RateLimitDescriptor["limit"]>): LimitRule | undefined {
    const unit = UNIT_OF.get(limit.unit);
    if (!unit) return undefined;
    const id = `${domain}\u0000${unit}\u0000${limit.requests_per_unit}`;
    let rule = this.overrides.get(id);
    if (!rule) {
      rule = {
        source: "request limit override",
        domain,
        metricName: `override:${limit.requests_per_unit}/${unit}`,
        replaces: [],
        requestsPerUnit: limit.requests_per_unit,
        unit,
        unitMultiplier: 1,
        windowMs: UNIT_MS[unit],
        algorithm: "fixed_window",
        burst: limit.requests_per_unit,
        shadowMode: false,
        counterId: `fw.${UNIT_MS[unit]}`,
      };
      this.overrides.set(id, rule);
    }
    return rule;
  }
}

/**
 * One status per descriptor. Refused: the refusing limit that resets last (so Retry-After is
 * enough for all of them). Admitted: the limit with the least left, which is the one Envoy's
 * RateLimit headers should show.
 */
export function toStatus(result: CheckResult): DescriptorStatus {
  let pick: LimitOutcome | undefined;
  if (!result.admitted) {
    for (const o of result.outcomes) {
      if (o.over && !o.rule.shadowMode && (!pick || o.resetMs > pick.resetMs)) pick = o;
    }
  } else {
    for (const o of result.outcomes) {
      if (
        !pick ||
        o.remaining < pick.remaining ||
        (o.remaining === pick.remaining && o.resetMs > pick.resetMs)
      ) {
        pick = o;
      }
    }
  }
  const o = pick!;
  return {
    code: result.admitted ? "OK" : "OVER_LIMIT",
    current_limit: currentLimit(o.rule),
    limit_remaining: Math.min(UNLIMITED_REMAINING, Math.max(0, Math.floor(o.remaining))),
    // Whole seconds rounded up, as upstream reports them and Envoy's headers use them.
    duration_until_reset: { seconds: Math.max(0, Math.ceil(o.resetMs / 1000)) },
  };
}

/** A rule's `current_limit`, built once per rule (and so encoded once). */
const currentLimits = new WeakMap<LimitRule, NonNullable<DescriptorStatus["current_limit"]>>();

function currentLimit(rule: LimitRule): NonNullable<DescriptorStatus["current_limit"]> {
  let limit = currentLimits.get(rule);
  if (!limit) {
    limit = Object.freeze({
      requests_per_unit: rule.requestsPerUnit,
      unit: PROTO_UNIT[rule.unit],
      ...(rule.name ? { name: rule.name } : {}),
    });
    currentLimits.set(rule, limit);
  }
  return limit;
}

function entryLabel(d: RateLimitDescriptor): string {
  return (d.entries ?? []).map((e) => `${e.key}=${e.value}`).join(",");
}

function overrideKey(domain: string, entries: readonly { key: string; value: string }[]): string {
  return `${domain}|override|${entries.map((e) => `${e.key}=${e.value}`).join("|")}`;
}
