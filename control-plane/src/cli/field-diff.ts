/** One field that differs between two versions of a resource; `undefined` is an absent field. */
export interface FieldChange {
  path: string;
  before: unknown;
  after: unknown;
}

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);

const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

/** Arrays whose items all have distinct names are compared by name, so an insertion is one change. */
function namedItems(list: unknown[]): Map<string, unknown> | undefined {
  const byName = new Map<string, unknown>();
  for (const item of list) {
    if (!isObject(item) || typeof item.name !== "string" || byName.has(item.name)) return undefined;
    byName.set(item.name, item);
  }
  return byName;
}

const join = (at: string, key: string) => (at ? `${at}.${key}` : key);

/**
 * The fields that differ between two JSON values, deepest first reached: objects key by key,
 * arrays by item name (or by position when they keep their length), anything else whole.
 */
export function fieldChanges(before: unknown, after: unknown, at = ""): FieldChange[] {
  if (same(before, after)) return [];
  if (isObject(before) && isObject(after)) {
    const keys = [...new Set([...Object.keys(after), ...Object.keys(before)])];
    return keys.flatMap((k) => fieldChanges(before[k], after[k], join(at, k)));
  }
  if (Array.isArray(before) && Array.isArray(after)) {
    const b = namedItems(before);
    const a = namedItems(after);
    if (a && b) {
      const names = [...new Set([...a.keys(), ...b.keys()])];
      return names.flatMap((n) => fieldChanges(b.get(n), a.get(n), `${at}[${n}]`));
    }
    if (before.length === after.length)
      return after.flatMap((item, i) => fieldChanges(before[i], item, `${at}[${i}]`));
  }
  return [{ path: at || "(whole)", before, after }];
}

const MAX_VALUE = 60;

/** A value in a diff line: JSON, cut to one short line; `(none)` for an absent field. */
export function shownValue(v: unknown): string {
  if (v === undefined) return "(none)";
  const text = JSON.stringify(v);
  return text.length > MAX_VALUE ? `${text.slice(0, MAX_VALUE - 1)}…` : text;
}

/** `match.pathPrefix "/a" → "/b"` */
export function describeChange(c: FieldChange): string {
  return `${c.path} ${shownValue(c.before)} → ${shownValue(c.after)}`;
}
