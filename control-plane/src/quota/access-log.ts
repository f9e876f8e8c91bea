/**
 * Envoy's gRPC access log stream (`envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs`),
 * read for the few fields usage counting needs: the node's group, and of each entry the route, the
 * caller's address and the dynamic metadata that names the consumer. A hand-written reader over
 * the wire bytes: no message objects for the fields it skips (timings, headers, TLS, bytes…).
 */
import type * as grpc from "@grpc/grpc-js";
import protobuf from "protobufjs";
import type { MetadataKey } from "../translate/features/quota.js";

export const ACCESS_LOG_SERVICE = "envoy.service.accesslog.v3.AccessLogService";

/** One served request, as far as counting is concerned. */
export interface LogEntry {
  readonly route: string;
  /** The downstream address Envoy trusts (the one the rate limiter's `remote_address` reads). */
  readonly address: string;
  /** `envoy.config.core.v3.Metadata`, undecoded until a route that counts asks for it. */
  readonly metadata?: Uint8Array;
}

export interface LogMessage {
  /** From the first message of a stream only: the node's id and group (`node.cluster`). */
  readonly node?: { id: string; cluster: string };
  readonly entries: LogEntry[];
}

const LEN = 2;

/** Reads the length of a length-delimited field and returns where it ends. */
function end(r: protobuf.Reader): number {
  const n = r.uint32();
  return r.pos + n;
}

function skip(r: protobuf.Reader, tag: number): void {
  r.skipType(tag & 7);
}

/** `envoy.config.core.v3.Node`: id = 1, cluster = 2. */
function readNode(r: protobuf.Reader, stop: number): { id: string; cluster: string } {
  let id = "";
  let cluster = "";
  while (r.pos < stop) {
    const tag = r.uint32();
    if (tag === ((1 << 3) | LEN)) id = r.string();
    else if (tag === ((2 << 3) | LEN)) cluster = r.string();
    else skip(r, tag);
  }
  return { id, cluster };
}

/** `envoy.config.core.v3.Address` → socket_address (1) → address (2). */
function readAddress(r: protobuf.Reader, stop: number): string {
  let address = "";
  while (r.pos < stop) {
    const tag = r.uint32();
    if (tag === ((1 << 3) | LEN)) {
      const s = end(r);
      while (r.pos < s) {
        const t = r.uint32();
        if (t === ((2 << 3) | LEN)) address = r.string();
        else skip(r, t);
      }
    } else skip(r, tag);
  }
  return address;
}

/** `envoy.data.accesslog.v3.HTTPAccessLogEntry` → common_properties (1). */
function readEntry(r: protobuf.Reader, stop: number): LogEntry {
  let route = "";
  let address = "";
  let metadata: Uint8Array | undefined;
  while (r.pos < stop) {
    const tag = r.uint32();
    if (tag !== ((1 << 3) | LEN)) {
      skip(r, tag);
      continue;
    }
    const common = end(r);
    while (r.pos < common) {
      const t = r.uint32();
      // downstream_remote_address = 2, metadata = 17, route_name = 19
      if (t === ((2 << 3) | LEN)) address = readAddress(r, end(r));
      else if (t === ((17 << 3) | LEN)) metadata = r.bytes();
      else if (t === ((19 << 3) | LEN)) route = r.string();
      else skip(r, t);
    }
  }
  return { route, address, ...(metadata ? { metadata } : {}) };
}

/** Decodes a `StreamAccessLogsMessage`: identifier (1) → node (1); http_logs (2) → log_entry (1). */
export function decodeLogMessage(bytes: Uint8Array): LogMessage {
  const r = protobuf.Reader.create(bytes);
  let node: { id: string; cluster: string } | undefined;
  const entries: LogEntry[] = [];
  while (r.pos < r.len) {
    const tag = r.uint32();
    if (tag === ((1 << 3) | LEN)) {
      const stop = end(r);
      while (r.pos < stop) {
        const t = r.uint32();
        if (t === ((1 << 3) | LEN)) node = readNode(r, end(r));
        else skip(r, t);
      }
    } else if (tag === ((2 << 3) | LEN)) {
      const stop = end(r);
      while (r.pos < stop) {
        const t = r.uint32();
        if (t === ((1 << 3) | LEN)) entries.push(readEntry(r, end(r)));
        else skip(r, t);
      }
    } else skip(r, tag);
  }
  return { ...(node ? { node } : {}), entries };
}

/** The value bytes of the map entry (key = 1, value = 2) of field `field` whose key is `key`. */
function mapValue(bytes: Uint8Array, field: number, key: string): Uint8Array | undefined {
  const r = protobuf.Reader.create(bytes);
  while (r.pos < r.len) {
    const tag = r.uint32();
    if (tag !== ((field << 3) | LEN)) {
      skip(r, tag);
      continue;
    }
    const stop = end(r);
    let k: string | undefined;
    let v: Uint8Array | undefined;
    while (r.pos < stop) {
      const t = r.uint32();
      if (t === ((1 << 3) | LEN)) k = r.string();
      else if (t === ((2 << 3) | LEN)) v = r.bytes();
      else skip(r, t);
    }
    if (k === key) return v ?? new Uint8Array(0);
  }
  return undefined;
}

/**
 * The string at `key` in dynamic metadata (`filter_metadata[key.key]`, then the path through its
 * Struct), or undefined when it is absent or no string.
 */
export function metadataString(metadata: Uint8Array | undefined, key: MetadataKey): string | undefined {
  if (!metadata) return undefined;
  // Metadata.filter_metadata = 1 (map<string, Struct>); Struct.fields = 1 (map<string, Value>).
  let struct = mapValue(metadata, 1, key.key);
  for (let i = 0; struct && i < key.path.length; i++) {
    const value = mapValue(struct, 1, key.path[i]!.key);
    if (!value) return undefined;
    const last = i === key.path.length - 1;
    struct = undefined;
    const r = protobuf.Reader.create(value);
    while (r.pos < r.len) {
      const t = r.uint32();
      // Value.string_value = 3, struct_value = 5
      if (last && t === ((3 << 3) | LEN)) return r.string();
      if (!last && t === ((5 << 3) | LEN)) struct = r.bytes();
      else skip(r, t);
    }
  }
  return undefined;
}

/** The service's definition for grpc-js: messages stay bytes, the answer is the empty message. */
export const ACCESS_LOG_DEFINITION: grpc.ServiceDefinition = {
  StreamAccessLogs: {
    path: `/${ACCESS_LOG_SERVICE}/StreamAccessLogs`,
    requestStream: true,
    responseStream: false,
    requestSerialize: (b: Buffer) => b,
    requestDeserialize: (b: Buffer) => b,
    responseSerialize: () => Buffer.alloc(0),
    responseDeserialize: () => ({}),
    originalName: "streamAccessLogs",
  },
};
