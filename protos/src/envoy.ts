import type protobuf from "protobufjs";
import { loadProtoRoot } from "./loader.js";

export const TYPE_PREFIX = "type.googleapis.com/";

/** The Envoy API files Portico speaks; each pulls in its own imports. */
export const ENVOY_PROTO_FILES = [
  "envoy/service/discovery/v3/ads.proto",
  "envoy/service/discovery/v3/discovery.proto",
  "envoy/service/listener/v3/lds.proto",
  "envoy/service/route/v3/rds.proto",
  "envoy/service/cluster/v3/cds.proto",
  "envoy/service/endpoint/v3/eds.proto",
  "envoy/service/secret/v3/sds.proto",
  "envoy/config/listener/v3/listener.proto",
  "envoy/config/cluster/v3/cluster.proto",
  "envoy/config/route/v3/route.proto",
  "envoy/config/endpoint/v3/endpoint.proto",
  "envoy/config/bootstrap/v3/bootstrap.proto",
  "envoy/extensions/transport_sockets/tls/v3/secret.proto",
  "envoy/extensions/transport_sockets/tls/v3/tls.proto",
  "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto",
  "envoy/extensions/filters/http/router/v3/router.proto",
  "envoy/extensions/filters/http/cors/v3/cors.proto",
  "envoy/extensions/filters/http/ext_authz/v3/ext_authz.proto",
  "envoy/extensions/filters/http/jwt_authn/v3/config.proto",
  "envoy/extensions/http/early_header_mutation/header_mutation/v3/header_mutation.proto",
  "envoy/extensions/filters/http/buffer/v3/buffer.proto",
  "envoy/extensions/filters/http/ratelimit/v3/rate_limit.proto",
  "envoy/extensions/filters/http/local_ratelimit/v3/local_rate_limit.proto",
  "envoy/extensions/filters/http/custom_response/v3/custom_response.proto",
  "envoy/extensions/filters/http/grpc_json_transcoder/v3/transcoder.proto",
  "envoy/extensions/http/custom_response/local_response_policy/v3/local_response_policy.proto",
  "envoy/extensions/clusters/aggregate/v3/cluster.proto",
  "envoy/type/matcher/v3/status_code_input.proto",
  "envoy/extensions/filters/listener/tls_inspector/v3/tls_inspector.proto",
  "envoy/extensions/upstreams/http/v3/http_protocol_options.proto",
  "envoy/extensions/access_loggers/stream/v3/stream.proto",
  "envoy/extensions/access_loggers/file/v3/file.proto",
  "envoy/extensions/access_loggers/grpc/v3/als.proto",
  "envoy/config/trace/v3/opentelemetry.proto",
  "envoy/extensions/request_id/uuid/v3/uuid.proto",
  "envoy/extensions/access_loggers/filters/cel/v3/cel.proto",
  "envoy/extensions/filters/http/header_mutation/v3/header_mutation.proto",
  "envoy/extensions/filters/http/lua/v3/lua.proto",
  "envoy/extensions/filters/http/header_to_metadata/v3/header_to_metadata.proto",
  "envoy/extensions/retry/priority/previous_priorities/v3/previous_priorities_config.proto",
  "google/rpc/status.proto",
  "portico/ratelimit/v1/ratelimit.proto",
  "portico/auth/v1/auth.proto",
  "portico/aggregator/v1/aggregator.proto",
];

let shared: protobuf.Root | undefined;

/** The one Root holding Envoy's API, loaded on first use (about 100 ms). */
export function envoyRoot(): protobuf.Root {
  shared ??= loadProtoRoot(ENVOY_PROTO_FILES);
  return shared;
}

const typeCache = new Map<string, protobuf.Type>();

/** Looks up a message type by its full name, e.g. `envoy.config.cluster.v3.Cluster`. */
export function messageType(fullName: string): protobuf.Type {
  let t = typeCache.get(fullName);
  if (!t) {
    t = envoyRoot().lookupType(fullName);
    typeCache.set(fullName, t);
  }
  return t;
}

/**
 * Encodes a plain object as the named message. Nested `google.protobuf.Any` fields may be written
 * the way Envoy's YAML writes them, `{"@type": "type.googleapis.com/<name>", ...fields}`, and are
 * packed with the right type URL and bytes. Unknown fields are an error, not silently dropped.
 */
export function encodeMessage(fullName: string, value: object): Uint8Array {
  const type = messageType(fullName);
  checkFields(type, value, fullName);
  return type.encode(type.fromObject(value)).finish();
}

export function decodeMessage<T = Record<string, unknown>>(fullName: string, bytes: Uint8Array): T {
  const type = messageType(fullName);
  return type.toObject(type.decode(bytes), { longs: Number, enums: String, bytes: Buffer }) as T;
}

export interface PackedAny {
  type_url: string;
  value: Uint8Array;
}

/** Packs a message into `google.protobuf.Any` (for `typed_config` and xDS resources). */
export function packAny(fullName: string, value: object): PackedAny {
  return { type_url: TYPE_PREFIX + fullName, value: encodeMessage(fullName, value) };
}

/** Encodes a `google.protobuf.Any` message itself (the bytes that go on the wire as a resource). */
export function encodeAny(any: PackedAny): Uint8Array {
  return messageType("google.protobuf.Any").encode(any).finish();
}

/** Decodes an Any's payload using its type URL. */
export function unpackAny<T = Record<string, unknown>>(any: PackedAny): T {
  return decodeMessage<T>(any.type_url.slice(any.type_url.lastIndexOf("/") + 1), any.value);
}

/** `google.protobuf.Duration` from milliseconds. */
export function duration(ms: number): { seconds: number; nanos: number } {
  const seconds = Math.floor(ms / 1000);
  return { seconds, nanos: Math.round((ms - seconds * 1000) * 1e6) };
}

/**
 * protobufjs' fromObject() drops unknown fields and its verify() does not look inside the "@type"
 * shorthand, so a typo in a field name would vanish silently. This walks the object against the
 * schema and names the first field that does not exist or has the wrong kind of value.
 */
function checkFields(type: protobuf.Type, value: unknown, where: string): void {
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new Error(`${where}: expected an object for ${type.fullName.slice(1)}`);
  }
  const obj = value as Record<string, unknown>;
  if (type.fullName === ".google.protobuf.Any" && typeof obj["@type"] === "string") {
    const url = obj["@type"];
    const inner = messageType(url.slice(url.lastIndexOf("/") + 1));
    const { "@type": _tag, ...fields } = obj;
    checkFields(inner, fields, `${where}<${inner.name}>`);
    return;
  }
  for (const [key, v] of Object.entries(obj)) {
    const field = type.fields[key];
    if (!field) throw new Error(`${where}.${key}: no such field in ${type.fullName.slice(1)}`);
    if (v === undefined || v === null) continue;
    const resolved = field.resolve().resolvedType;
    if (resolved && !("fields" in resolved)) {
      const values = (resolved as protobuf.Enum).values;
      const items = field.repeated && Array.isArray(v) ? v : [v];
      for (const item of items) {
        const ok = typeof item === "string" ? item in values : Object.values(values).includes(item as number);
        if (!ok)
          throw new Error(`${where}.${key}: ${String(item)} is not a value of ${resolved.fullName.slice(1)}`);
      }
      continue;
    }
    if (!resolved) {
      const problem = type.verify({ [key]: v });
      if (problem) throw new Error(`${where}.${problem}`);
      continue;
    }
    const sub = resolved as protobuf.Type;
    if (field.map) {
      for (const [mk, mv] of Object.entries(v as Record<string, unknown>))
        checkFields(sub, mv, `${where}.${key}[${mk}]`);
    } else if (field.repeated) {
      if (!Array.isArray(v)) throw new Error(`${where}.${key}: expected a list`);
      v.forEach((item, i) => checkFields(sub, item, `${where}.${key}[${i}]`));
    } else if (!(v instanceof Uint8Array)) {
      checkFields(sub, v, `${where}.${key}`);
    }
  }
}

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/**
 * `google.protobuf.Value` from plain JSON (protobufjs has no JSON mapping for Struct). protobufjs
 * holds the well-known types with camelCase field names, hence `stringValue` here.
 */
export function structValue(v: Json): object {
  if (v === null) return { nullValue: "NULL_VALUE" };
  if (typeof v === "boolean") return { boolValue: v };
  if (typeof v === "number") return { numberValue: v };
  if (typeof v === "string") return { stringValue: v };
  if (Array.isArray(v)) return { listValue: { values: v.map(structValue) } };
  return { structValue: struct(v) };
}

/** `google.protobuf.Struct` from a plain JSON object, e.g. for an access log's `json_format`. */
export function struct(obj: { [k: string]: Json }): object {
  return { fields: Object.fromEntries(Object.entries(obj).map(([k, v]) => [k, structValue(v)])) };
}
