/**
 * Wildcard descriptor values, matched as envoyproxy/ratelimit matches them: a `*` anywhere in the
 * value, as many as wanted, each standing for any run of characters (the empty one included).
 * `files/*` asks for a prefix, `t*prod` for a prefix and a suffix, and `svc*ep*rpc` also for `ep`
 * somewhere between them.
 */

/** A wildcard value split at each `*`: its literal parts in order (`a*b*` → "a", "b", ""). */
export type WildcardPattern = readonly string[];

/** The pattern of a value that has a `*`; undefined for a literal value. */
export function wildcardPattern(value: string): WildcardPattern | undefined {
  return value.includes("*") ? value.split("*") : undefined;
}

/**
 * Whether `value` matches: it starts with the first part, ends with the last, and holds the
 * middle parts in order between them. Taking each middle part at its first place is enough,
 * since every `*` may stretch: a later place never leaves more room for the parts after it.
 */
export function matchesWildcard(parts: WildcardPattern, value: string): boolean {
  const first = parts[0]!;
  const last = parts[parts.length - 1]!;
  if (parts.length === 1) return value === first;
  if (!value.startsWith(first) || !value.endsWith(last)) return false;
  // The prefix and the suffix must not overlap (`ab*ba` does not match `aba`).
  const end = value.length - last.length;
  if (end < first.length) return false;
  let at = first.length;
  for (let i = 1; i < parts.length - 1; i++) {
    const found = value.indexOf(parts[i]!, at);
    if (found < 0 || found + parts[i]!.length > end) return false;
    at = found + parts[i]!.length;
  }
  return true;
}
