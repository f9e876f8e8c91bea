import { createHash } from "node:crypto";
import type { EncodedResource, Snapshot } from "./snapshot.js";

/**
 * What a stream asked for of one type: everything (wildcard), named resources, or both. Interned:
 * the streams of a group ask for the same names, so they share one object and one key.
 */
export interface Subscription {
  /** Short and stable: the memo key of everything derived from this subscription. */
  readonly key: string;
  readonly wildcard: boolean;
  readonly names: ReadonlySet<string>;
}

const interned = new Map<string, WeakRef<Subscription>>();
const forget = new FinalizationRegistry<string>((key) => {
  if (interned.get(key)?.deref() === undefined) interned.delete(key);
});

export function subscription(wildcard: boolean, names: Iterable<string>): Subscription {
  const set = new Set(names);
  const h = createHash("sha256").update(wildcard ? "*\n" : "\n");
  for (const n of [...set].sort()) h.update(n).update("\n");
  const key = h.digest("hex").slice(0, 20);
  const known = interned.get(key)?.deref();
  if (known) return known;
  const sub: Subscription = { key, wildcard, names: set };
  interned.set(key, new WeakRef(sub));
  forget.register(sub, key);
  return sub;
}

export const WILDCARD = subscription(true, []);

/** Whether `names` is exactly the subscription's named set (Envoy repeats every name on every ACK). */
export function sameNames(sub: Subscription, names: readonly string[]): boolean {
  if (sub.names.size !== names.length) return false;
  for (const n of names) if (!sub.names.has(n)) return false;
  return true;
}

/**
 * The resources of one type that one subscription covers in one snapshot: name → resource, or null
 * for a name asked for that does not exist. Shared by every stream with that subscription, and
 * carried over to the next snapshot while the type does not change, so a stream that holds a view
 * holds no per-stream copy of it.
 */
export interface View {
  readonly id: number;
  readonly typeUrl: string;
  /** Hash of the (name, version) pairs: what a SotW response of this view is versioned by. */
  readonly version: string;
  readonly entries: ReadonlyMap<string, EncodedResource | null>;
  /** The resources, sorted by name (SotW sends them all). */
  readonly resources: readonly EncodedResource[];
}

let viewCounter = 0;

export function viewOf(snapshot: Snapshot, typeUrl: string, sub: Subscription): View {
  return snapshot.memoType(typeUrl, `view\0${sub.key}`, () => buildView(snapshot, typeUrl, sub));
}

function buildView(snapshot: Snapshot, typeUrl: string, sub: Subscription): View {
  const all = snapshot.get(typeUrl);
  if (sub.wildcard && sub.names.size === 0) {
    return {
      id: ++viewCounter,
      typeUrl,
      version: all.version,
      entries: all.resources,
      resources: [...all.resources.values()],
    };
  }
  const entries = new Map<string, EncodedResource | null>();
  if (sub.wildcard) for (const [name, r] of all.resources) entries.set(name, r);
  for (const name of sub.names) entries.set(name, all.resources.get(name) ?? null);
  const resources: EncodedResource[] = [];
  for (const r of entries.values()) if (r) resources.push(r);
  resources.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const h = createHash("sha256");
  for (const r of resources) h.update(r.name).update("\0").update(r.version).update("\n");
  return { id: ++viewCounter, typeUrl, version: h.digest("hex").slice(0, 20), entries, resources };
}

/** What brings a node from one view to another: resources to send, names to remove. */
export interface Change {
  readonly send: readonly EncodedResource[];
  readonly remove: readonly string[];
}

export const NO_CHANGE: Change = { send: [], remove: [] };

/**
 * The change from `from` (what the node holds; undefined when it holds nothing) to `to`. Computed
 * once per pair and kept on `to`'s snapshot, so a push costs one diff per subscription, not one
 * per stream. A name that `to` says does not exist is removed unless the node was told so already.
 */
export function changeBetween(snapshot: Snapshot, from: View | undefined, to: View): Change {
  if (from === to) return NO_CHANGE;
  return snapshot.memoType(to.typeUrl, `change\0${from?.id ?? 0}\0${to.id}`, () => {
    const send: EncodedResource[] = [];
    const remove: string[] = [];
    for (const [name, r] of to.entries) {
      const held = from?.entries.get(name);
      if (r) {
        if (!held || held.version !== r.version) send.push(r);
      } else if (held !== null) remove.push(name);
    }
    if (from) for (const [name, held] of from.entries) if (held && !to.entries.has(name)) remove.push(name);
    return send.length === 0 && remove.length === 0 ? NO_CHANGE : { send, remove };
  });
}
