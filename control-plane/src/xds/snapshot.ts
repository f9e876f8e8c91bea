import { createHash } from "node:crypto";
import protobuf from "protobufjs";
import { encodeAny, packAny } from "@portico/contract";
import { isKnownType, pushOrder } from "./types.js";

/** One resource, encoded once per change and shared by every stream that sends it. */
export interface EncodedResource {
  readonly name: string;
  /** Content hash: equal bytes give equal versions on every replica and after every restart. */
  readonly version: string;
  /** The `google.protobuf.Any` message, as it goes into a SotW `DiscoveryResponse`. */
  readonly any: Uint8Array;
  /** The `envoy.service.discovery.v3.Resource` message, as it goes into a `DeltaDiscoveryResponse`. */
  readonly delta: Uint8Array;
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

function encodeDeltaResource(name: string, version: string, any: Uint8Array): Uint8Array {
  // envoy.service.discovery.v3.Resource: version = 1, resource = 2, name = 3.
  return protobuf.Writer.create()
    .uint32((1 << 3) | 2)
    .string(version)
    .uint32((2 << 3) | 2)
    .bytes(any)
    .uint32((3 << 3) | 2)
    .string(name)
    .finish();
}

export function encodeResource(typeUrl: string, name: string, message: object): EncodedResource {
  const typeName = typeUrl.slice(typeUrl.lastIndexOf("/") + 1);
  const any = encodeAny(packAny(typeName, message));
  const version = hashHex(any);
  return { name, version, any, delta: encodeDeltaResource(name, version, any) };
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
  private readonly sotwBodies = new Map<string, Uint8Array>();
  private readonly views = new Map<string, unknown>();

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
   * A memo for pre-assembled response bodies, keyed by whatever the caller chooses. Lives and dies
   * with the snapshot, so a change never serves a stale body.
   */
  memo(key: string, build: () => Uint8Array): Uint8Array {
    let body = this.sotwBodies.get(key);
    if (!body) {
      body = build();
      this.sotwBodies.set(key, body);
    }
    return body;
  }

  /** Like `memo`, for derived objects (per-subscription views) that every stream can share. */
  memoView<T>(key: string, build: () => T): T {
    let v = this.views.get(key) as T | undefined;
    if (v === undefined) {
      v = build();
      this.views.set(key, v);
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

/** Builds a snapshot: every resource encoded and hashed exactly once. */
export function buildSnapshot(group: string, inputs: ResourceInput[], source = ""): Snapshot {
  const grouped = new Map<string, Map<string, EncodedResource>>();
  for (const t of pushOrder()) grouped.set(t, new Map());
  for (const input of inputs) {
    if (!isKnownType(input.typeUrl)) throw new Error(`unknown resource type ${input.typeUrl}`);
    const m = grouped.get(input.typeUrl)!;
    if (m.has(input.name)) throw new Error(`duplicate ${input.typeUrl} resource named ${input.name}`);
    m.set(input.name, encodeResource(input.typeUrl, input.name, input.message));
  }
  const types = new Map<string, TypeResources>();
  for (const [typeUrl, resources] of grouped)
    types.set(typeUrl, { typeUrl, version: typeVersion(resources), resources });
  return new Snapshot(group, types, source);
}
