import type { DescriptorLevel, DescriptorNode, DomainConfig, LimitSet, RateLimitConfig } from "./types.js";
import { exactKey, levelIsEmpty } from "./types.js";
import { matchesWildcard } from "./wildcard.js";

export interface DescriptorEntry {
  readonly key: string;
  readonly value: string;
}

export interface Match {
  readonly node: DescriptorNode;
  readonly set: LimitSet;
  /**
   * Names the counters: domain and the request's entries (a plan entry left out, so a caller who
   * changes plan keeps what they used; a share_threshold wildcard's pattern instead of the value).
   */
  readonly counterKey: string;
}

/**
 * The most specific rule for a descriptor, matched level by level as envoyproxy/ratelimit does:
 * at each level an exact key/value beats a wildcard value (the first of the level, in config
 * order, that matches) beats a key-only rule, there is no backtracking, and a limit applies only
 * at the level of the request's last entry.
 *
 * Portico's `plans`: when a matched node has plans and the next entry is its plan key, that entry
 * picks the plan's limits (an unknown plan falls back to the node's own) and is consumed.
 */
export function matchDescriptor(
  config: RateLimitConfig,
  domain: string,
  entries: readonly DescriptorEntry[],
): Match | undefined {
  const d = config.domains.get(domain);
  return d ? matchInDomain(d, entries) : undefined;
}

export function matchInDomain(d: DomainConfig, entries: readonly DescriptorEntry[]): Match | undefined {
  let level: DescriptorLevel = d.root;
  let key = domainPrefix(d);
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i]!;
    const node = lookup(level, e);
    if (!node) return undefined;
    // A shared wildcard's part is the same for every value: held whole, like every key's prefix.
    key += node.shareThreshold ? sharedPart(node) : keyPart(node) + escape(e.value);
    let set: LimitSet = node;
    const plans = node.plans;
    const next = entries[i + 1];
    if (plans && next && next.key === plans.key) {
      set = plans.plans.get(next.value) ?? node;
      i++;
    }
    if (i === entries.length - 1) {
      return set.limits.length > 0 || set.unlimited ? { node, set, counterKey: key } : undefined;
    }
    if (levelIsEmpty(node.children)) return undefined;
    level = node.children;
  }
  return undefined;
}

function lookup(level: DescriptorLevel, e: DescriptorEntry): DescriptorNode | undefined {
  const exact = level.exact.get(exactKey(e.key, e.value));
  if (exact) return exact;
  for (const w of level.wildcards) {
    if (w.key === e.key && matchesWildcard(w.wildcard!, e.value)) return w;
  }
  return level.keyOnly.get(e.key);
}

/*
 * The fixed parts of counter keys, escaped once per config (its domains and nodes live as long as
 * it does): a decision only escapes and appends the request's values.
 */
const domainPrefixes = new WeakMap<DomainConfig, string>();
const keyParts = new WeakMap<DescriptorNode, string>();
const sharedParts = new WeakMap<DescriptorNode, string>();

function domainPrefix(d: DomainConfig): string {
  let p = domainPrefixes.get(d);
  if (p === undefined) domainPrefixes.set(d, (p = escape(d.domain)));
  return p;
}

/** `|key=`: what precedes the request's value (a matched node's key is the entry's key). */
function keyPart(node: DescriptorNode): string {
  let p = keyParts.get(node);
  if (p === undefined) keyParts.set(node, (p = `|${escape(node.key)}=`));
  return p;
}

function sharedPart(node: DescriptorNode): string {
  let p = sharedParts.get(node);
  if (p === undefined) sharedParts.set(node, (p = keyPart(node) + escape(node.value!)));
  return p;
}

/** Keeps `|` and `=` as separators, so no two descriptors share a counter by accident. */
function escape(s: string): string {
  return /[%|=]/.test(s) ? s.replace(/%/g, "%25").replace(/\|/g, "%7C").replace(/=/g, "%3D") : s;
}
