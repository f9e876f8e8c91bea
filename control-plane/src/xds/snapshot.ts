import { createHash } from "node:crypto";
import protobuf from "protobufjs";
import { encodeAny, packAny } from "@portico/contract";
import { isKnownType, pushOrder, TypeUrl } from "./types.js";

/** One resource, encoded once per change and shared by every stream that sends it. */
export interface EncodedResource {
  readonly name: string;
  /** Content hash: equal bytes give equal versions on every replica and after every restart. */
  readonly version: string;
  /** The `google.protobuf.Any` message, as it goes into a SotW `DiscoveryResponse`. */
  readonly any: Uint8Array;
  /** The `envoy.service.discovery.v3.Resource` message, as it goes into a `DeltaDiscoveryResponse`. */
  readonly delta: Uint8Array;
  /**
   * For an EDS cluster: the ClusterLoadAssignment it warms on. Envoy keeps a new cluster out of
   * service until those endpoints arrived, so nothing that routes to it may go before them.
   */
  readonly warmsOn?: string;
  /** Hash of the plain object it was encoded from: an unchanged one is not encoded again. */
  readonly input?: string;
}

export interface TypeResources {
  readonly typeUrl: string;
  /** Hash of every (name, version) pair of this type. */
  readonly version: string;
  readonly resources: ReadonlyMap<string, EncodedResource>;
}

/** What the translator hands to the snapshot builder: a message per resource, by type. */
export interface ResourceInput {
  typeUrl: string;
  name: string;
  /** Either a plain object of the type (packed here), or an already packed Any. */
  message: object;
}

const HASH_HEX = 20;

function hashHex(...parts: (string | Uint8Array)[]): string {
  const h = createHash("sha256");
  for (const p of parts) h.update(p);
  return h.digest("hex").slice(0, HASH_HEX);
}

function varintSize(n: number): number {
  let size = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 0x80);
    size++;
  }
  return size;
}

/**
 * The `envoy.service.discovery.v3.Resource` of `any` (resource = 2 first, then version = 1,
 * name = 3), and `any` as a view into it: each resource's bytes are held once, not once per protocol.
 */
function encodeDeltaResource(
  name: string,
  version: string,
  any: Uint8Array,
): { delta: Uint8Array; any: Uint8Array } {
  const delta = protobuf.Writer.create()
    .uint32((2 << 3) | 2)
    .bytes(any)
    .uint32((1 << 3) | 2)
    .string(version)
    .uint32((3 << 3) | 2)
    .string(name)
    .finish();
  const start = 1 + varintSize(any.length);
  return { delta, any: delta.subarray(start, start + any.length) };
}

/** The endpoints an EDS cluster (as a plain object) is served from: its service_name, else its name. */
function edsServiceOf(typeUrl: string, name: string, message: object): string | undefined {
  if (typeUrl !== TypeUrl.Cluster) return undefined;
  const c = message as { type?: unknown; eds_cluster_config?: { service_name?: string } };
  if (c.type !== "EDS" && c.type !== 3) return undefined;
  return c.eds_cluster_config?.service_name || name;
}

export function encodeResource(
  typeUrl: string,
  name: string,
  message: object,
  input?: string,
): EncodedResource {
  const typeName = typeUrl.slice(typeUrl.lastIndexOf("/") + 1);
  const packed = encodeAny(packAny(typeName, message));
  const version = hashHex(packed);
  const warmsOn = edsServiceOf(typeUrl, name, message);
  return {
    name,
    version,
    ...encodeDeltaResource(name, version, packed),
    ...(warmsOn ? { warmsOn } : {}),
    ...(input ? { input } : {}),
  };
}

/**
 * The hash of a resource's plain object, or undefined for one JSON cannot tell apart from another
 * (a number that is not finite, a bigint): equal JSON is equal content, so equal bytes.
 */
function inputHash(message: object): string | undefined {
  let json: string;
  try {
    json = JSON.stringify(message);
    // JSON writes NaN and ±Infinity as null: only a text with a null in it may hide one.
    if (json.includes("null")) {
      let exact = true;
      JSON.stringify(message, (_k, v: unknown) => {
        if (typeof v === "number" && !Number.isFinite(v)) exact = false;
        return v;
      });
      if (!exact) return undefined;
    }
  } catch {
    return undefined;
  }
  return hashHex(json);
}

function typeVersion(resources: ReadonlyMap<string, EncodedResource>): string {
  const names = [...resources.keys()].sort();
  const h = createHash("sha256");
  for (const n of names) h.update(n).update("\0").update(resources.get(n)!.version).update("\n");
  return h.digest("hex").slice(0, HASH_HEX);
}

/**
 * An immutable set of resources for one gateway group. Built once per change; every stream of the
 * group reads the same encoded bytes.
 */
export class Snapshot {
  /** Hash of every type's version: the same config yields the same revision anywhere. */
  readonly revision: string;
  private readonly byType: Map<string, TypeResources>;
  /** Per type: what streams derive from its resources (views, diffs, response bodies). */
  private readonly memos = new Map<string, Map<string, unknown>>();

  constructor(
    readonly group: string,
    types: Map<string, TypeResources>,
    /** The config revision this snapshot was translated from, for operators (not compared). */
    readonly source: string = "",
  ) {
    this.byType = types;
    const h = createHash("sha256");
    for (const t of [...types.keys()].sort())
      h.update(t).update("\0").update(types.get(t)!.version).update("\n");
    this.revision = h.digest("hex").slice(0, HASH_HEX);
  }

  types(): string[] {
    return pushOrder().filter((t) => this.byType.has(t));
  }

  get(typeUrl: string): TypeResources {
    return this.byType.get(typeUrl) ?? emptyType(typeUrl);
  }

  has(typeUrl: string): boolean {
    return this.byType.has(typeUrl);
  }

  /**
   * Takes over what the previous snapshot of the group holds for every type whose version did not
   * change: the same resources and the same derived views, so streams holding them see no change
   * and a change of one type touches only the streams of that type.
   */
  inherit(previous: Snapshot): void {
    for (const [typeUrl, mine] of this.byType) {
      const theirs = previous.byType.get(typeUrl);
      if (!theirs || theirs.version !== mine.version) continue;
      this.byType.set(typeUrl, theirs);
      const memo = previous.memos.get(typeUrl);
      if (memo) this.memos.set(typeUrl, memo);
    }
  }

  /**
   * A memo for what is derived from one type's resources (views, diffs, response bodies), keyed by
   * whatever the caller chooses. It follows the type: carried over while the type is unchanged,
   * dropped with it when it changes, so a change never serves a stale result.
   */
  memoType<T>(typeUrl: string, key: string, build: () => T): T {
    let memo = this.memos.get(typeUrl);
    if (!memo) this.memos.set(typeUrl, (memo = new Map()));
    let v = memo.get(key) as T | undefined;
    if (v === undefined) {
      v = build();
      memo.set(key, v);
    }
    return v;
  }

  /** Total encoded bytes, for metrics and benchmarks. */
  byteSize(): number {
    let n = 0;
    for (const t of this.byType.values()) for (const r of t.resources.values()) n += r.any.length;
    return n;
  }
}

const emptyTypes = new Map<string, TypeResources>();
function emptyType(typeUrl: string): TypeResources {
  let t = emptyTypes.get(typeUrl);
  if (!t) {
    t = { typeUrl, version: typeVersion(new Map()), resources: new Map() };
    emptyTypes.set(typeUrl, t);
  }
  return t;
}

/**
 * Builds a snapshot: every resource encoded and hashed exactly once. A resource whose plain object
 * is the one `previous` (the group's snapshot now) was built from keeps its encoding there: a
 * change of one route re-encodes the route table, not the group's thousands of clusters.
 */
export function buildSnapshot(
  group: string,
  inputs: ResourceInput[],
  source = "",
  previous?: Snapshot,
): Snapshot {
  const grouped = new Map<string, Map<string, EncodedResource>>();
  for (const t of pushOrder()) grouped.set(t, new Map());
  for (const input of inputs) {
    if (!isKnownType(input.typeUrl)) throw new Error(`unknown resource type ${input.typeUrl}`);
    const m = grouped.get(input.typeUrl)!;
    if (m.has(input.name)) throw new Error(`duplicate ${input.typeUrl} resource named ${input.name}`);
    const hash = inputHash(input.message);
    const before = previous?.get(input.typeUrl).resources.get(input.name);
    m.set(
      input.name,
      hash !== undefined && before?.input === hash
        ? before
        : encodeResource(input.typeUrl, input.name, input.message, hash),
    );
  }
  const types = new Map<string, TypeResources>();
  for (const [typeUrl, resources] of grouped)
    types.set(typeUrl, { typeUrl, version: typeVersion(resources), resources });
  return new Snapshot(group, types, source);
}
