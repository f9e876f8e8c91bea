import type { Snapshot } from "./snapshot.js";

export type SnapshotListener = (snapshot: Snapshot) => void;

/**
 * The current snapshot of each gateway group (`node.cluster`), and who is waiting for changes.
 * Setting a snapshot whose revision equals the current one is a no-op, so re-translating an
 * unchanged config pushes nothing.
 */
export class SnapshotCache {
  private readonly snapshots = new Map<string, Snapshot>();
  private readonly listeners = new Map<string, Set<SnapshotListener>>();

  get(group: string): Snapshot | undefined {
    return this.snapshots.get(group);
  }

  groups(): string[] {
    return [...this.snapshots.keys()];
  }

  /** Returns true when the group's snapshot changed. */
  set(snapshot: Snapshot): boolean {
    const current = this.snapshots.get(snapshot.group);
    if (current && current.revision === snapshot.revision) return false;
    if (current) snapshot.inherit(current);
    this.snapshots.set(snapshot.group, snapshot);
    for (const l of this.listeners.get(snapshot.group) ?? []) l(snapshot);
    return true;
  }

  delete(group: string): void {
    this.snapshots.delete(group);
  }

  /** Calls `listener` on every change of the group; returns the unsubscribe function. */
  watch(group: string, listener: SnapshotListener): () => void {
    let set = this.listeners.get(group);
    if (!set) this.listeners.set(group, (set = new Set()));
    set.add(listener);
    return () => {
      set.delete(listener);
      if (set.size === 0) this.listeners.delete(group);
    };
  }
}
