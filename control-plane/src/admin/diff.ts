import { KIND_NAMES, type Config, type Kind } from "../model/schema.js";

export interface Change {
  kind: Kind;
  name: string;
  op: "create" | "update" | "delete";
}

/** What applying `next` over `current` would do, resource by resource. */
export function diffConfigs(current: Config, next: Config): Change[] {
  const changes: Change[] = [];
  for (const kind of KIND_NAMES) {
    const before = new Map((current[kind] as { name: string }[]).map((x) => [x.name, JSON.stringify(x)]));
    const after = new Map((next[kind] as { name: string }[]).map((x) => [x.name, JSON.stringify(x)]));
    for (const [name, value] of after) {
      const old = before.get(name);
      if (old === undefined) changes.push({ kind, name, op: "create" });
      else if (old !== value) changes.push({ kind, name, op: "update" });
    }
    for (const name of before.keys()) if (!after.has(name)) changes.push({ kind, name, op: "delete" });
  }
  return changes;
}
