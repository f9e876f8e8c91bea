/** The rate-limit configuration after loading: what the matcher and the limiters read. */
import type { WildcardPattern } from "./wildcard.js";

export type Unit = "second" | "minute" | "hour" | "day" | "week" | "month" | "year";

export type Algorithm = "fixed_window" | "sliding_window" | "token_bucket";

export interface LimitRule {
  /** Where the rule was written (`file: descriptors[0].rate_limits[1]`), for logs and errors. */
  readonly source: string;
  readonly domain: string;
  /**
   * The rule's label in metrics: its `name` when it has one, otherwise its descriptor path
   * (`message_type=marketing.to_number`). Bounded by the size of the config, never by traffic.
   */
  readonly metricName: string;
  /** Upstream's `name`: what other rules' `replaces` refer to. */
  readonly name?: string;
  readonly replaces: readonly string[];
  readonly requestsPerUnit: number;
  /** The unit reported to Envoy in `current_limit`. */
  readonly unit: Unit;
  readonly unitMultiplier: number;
  /** Window length for the epoch-aligned algorithms (upstream's 30-day month and 365-day year). */
  readonly windowMs: number;
  readonly algorithm: Algorithm;
  /** Token bucket capacity; requests_per_unit when not given. */
  readonly burst: number;
  /** Set for calendar-aligned quotas: periods of `unit` × `unitMultiplier` in this IANA time zone. */
  readonly calendar?: { readonly timeZone: string };
  readonly shadowMode: boolean;
  /**
   * Identifies the counter within a descriptor's key, so that two limits on one descriptor never
   * share a counter, while a reload that only changes `requests_per_unit` keeps the counts.
   */
  readonly counterId: string;
}

/** The limits one descriptor node (or one of its plans) applies. */
export interface LimitSet {
  readonly limits: readonly LimitRule[];
  /** Upstream's `unlimited: true`: matched, answered OK, never counted. */
  readonly unlimited: boolean;
  /** Names of rules this set's rules replace, from every rule in it (an unlimited one included). */
  readonly replaces: readonly string[];
}

export interface PlanSelector {
  /** The request entry that names the plan; it follows the entry of the node that has `plans`. */
  readonly key: string;
  readonly plans: ReadonlyMap<string, LimitSet>;
}

export interface DescriptorNode extends LimitSet {
  readonly key: string;
  /** The value as written; undefined for a key-only rule. */
  readonly value?: string;
  /** Set when the value has a `*` (anywhere, several allowed): what it matches. */
  readonly wildcard?: WildcardPattern;
  readonly detailedMetric: boolean;
  /** Upstream's share_threshold: every value a wildcard matches shares one counter. */
  readonly shareThreshold: boolean;
  /**
   * Upstream's quota_mode: over its limit, this descriptor reports OVER_LIMIT but refuses the
   * request only if every quota-mode descriptor of the request is over too.
   */
  readonly quotaMode: boolean;
  /** Whether refused hits still count (upstream behaviour, the default). */
  readonly countRefused: boolean;
  readonly plans?: PlanSelector;
  /** Config path of the node, used in metric names of its limits. */
  readonly path: string;
  readonly children: DescriptorLevel;
}

/** One level of nested descriptors, indexed the way the matcher looks them up. */
export interface DescriptorLevel {
  /** `exactKey(key, value)` → node. */
  readonly exact: ReadonlyMap<string, DescriptorNode>;
  /** Wildcard values in config order: the first that matches wins, as upstream. */
  readonly wildcards: readonly DescriptorNode[];
  readonly keyOnly: ReadonlyMap<string, DescriptorNode>;
}

export interface DomainConfig {
  readonly domain: string;
  readonly file: string;
  readonly root: DescriptorLevel;
}

export interface RateLimitConfig {
  readonly domains: ReadonlyMap<string, DomainConfig>;
  /** The files it was read from, in load order. */
  readonly files: readonly string[];
}

export const EMPTY_LEVEL: DescriptorLevel = { exact: new Map(), wildcards: [], keyOnly: new Map() };

export function levelIsEmpty(level: DescriptorLevel): boolean {
  return level.exact.size === 0 && level.wildcards.length === 0 && level.keyOnly.size === 0;
}

/** Where an exact rule is in `DescriptorLevel.exact`. */
export function exactKey(key: string, value: string): string {
  return `${key}\u0000${value}`;
}

/** The level that holds these rules (wildcards keep their order). */
export function levelOf(nodes: readonly DescriptorNode[]): DescriptorLevel {
  const exact = new Map<string, DescriptorNode>();
  const keyOnly = new Map<string, DescriptorNode>();
  const wildcards: DescriptorNode[] = [];
  for (const node of nodes) {
    if (node.value === undefined) keyOnly.set(node.key, node);
    else if (node.wildcard) wildcards.push(node);
    else exact.set(exactKey(node.key, node.value), node);
  }
  return { exact, wildcards, keyOnly };
}

/** Upstream's name of a rule within its level, `key` or `key_value`: no two rules of a level share one. */
export function compositeKey(node: DescriptorNode): string {
  return node.value === undefined ? node.key : `${node.key}_${node.value}`;
}

/** A level's rules; wildcards in config order. */
export function levelNodes(level: DescriptorLevel): DescriptorNode[] {
  return [...level.exact.values(), ...level.wildcards, ...level.keyOnly.values()];
}
