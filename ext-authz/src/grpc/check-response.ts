import * as grpc from "@grpc/grpc-js";
import { encodeOnce, WireWriter } from "@portico/common";
import type { Decision, Grant, Header, Refusal } from "../decide/decide.js";

/** The filter namespace Envoy files ext_authz dynamic metadata under (what the rate limit `metadata` action reads). */
export const METADATA_NAMESPACE = "envoy.filters.http.ext_authz";

/** The gRPC status of a refusal's CheckResponse, from its HTTP status. */
export function grpcCode(status: number): number {
  if (status === 401) return grpc.status.UNAUTHENTICATED;
  if (status === 403) return grpc.status.PERMISSION_DENIED;
  if (status === 400) return grpc.status.INVALID_ARGUMENT;
  if (status === 503) return grpc.status.UNAVAILABLE;
  return grpc.status.INTERNAL;
}

/**
 * A denial's JSON body with the request's id, so a caller can quote it like every other error
 * body of the gateway's. The decision's body is always one JSON object.
 */
export function withRequestId(body: string, requestId: string | undefined): string {
  if (!requestId || !body.endsWith("}")) return body;
  return `${body.slice(0, -1)},"request_id":${JSON.stringify(requestId)}}`;
}

/*
 * Field numbers, from envoy/service/auth/v3/external_auth.proto, envoy/config/core/v3/base.proto,
 * envoy/type/v3/http_status.proto, google/rpc/status.proto and google/protobuf/struct.proto.
 */
const RESPONSE_STATUS = 1;
const RESPONSE_DENIED = 2;
const RESPONSE_OK = 3;
const RESPONSE_DYNAMIC_METADATA = 4;
const RPC_STATUS_CODE = 1;
const RPC_STATUS_MESSAGE = 2;
const DENIED_STATUS = 1;
const DENIED_HEADERS = 2;
const DENIED_BODY = 3;
const HTTP_STATUS_CODE = 1;
const OK_HEADERS = 2;
const OK_HEADERS_TO_REMOVE = 5;
const OK_QUERY_PARAMETERS_TO_REMOVE = 8;
const OPTION_HEADER = 1;
const OPTION_APPEND_ACTION = 3;
const HEADER_KEY = 1;
const HEADER_VALUE = 2;
const STRUCT_FIELDS = 1;
const ENTRY_KEY = 1;
const ENTRY_VALUE = 2;
const VALUE_STRING = 3;
/**
 * HeaderValueOption.HeaderAppendAction OVERWRITE_IF_EXISTS_OR_ADD. Overwrite, not append: a
 * client-sent `x-portico-consumer` must be replaced, never joined (Envoy #42857 is about exactly
 * this ambiguity).
 */
const OVERWRITE_ACTION = 2;

/** `status { code: 0 }`, OK (the code written out, as clients that read defaults as absent expect). */
const STATUS_OK = encodeOnce((w) => {
  const s = w.begin(RESPONSE_STATUS);
  w.uint(RPC_STATUS_CODE, 0);
  w.end(s);
});

const writer = new WireWriter(4_096);

/** Encoded parts that decisions share (frozen lists, grants, refusals), each encoded once. */
const headerOptionsOf = new WeakMap<readonly Header[], Buffer>();
const removalsOf = new WeakMap<readonly string[], Buffer>();
const deniedHeadersOf = new WeakMap<readonly Header[], Buffer>();
const grantMetadataOf = new WeakMap<Grant, Buffer>();
const refusalOf = new WeakMap<Refusal, { status: Buffer; fixed: Buffer }>();

/**
 * The CheckResponse for a decision, in wire bytes. What decisions share is encoded once and
 * copied in: an allowed caller's identity headers and keys (its grant), a refusal's status and
 * headers; only the client address, a request id in a refusal's body and any per-request
 * credential edits are encoded per answer.
 */
export function encodeCheckResponse(d: Decision, requestId?: string): Buffer {
  const w = writer.reset();
  if (d.allowed) {
    w.raw(STATUS_OK);
    const ok = w.begin(RESPONSE_OK);
    headerOptions(w, d.headersToSet);
    removals(w, d.headersToRemove);
    for (const q of d.queryParamsToRemove) w.string(OK_QUERY_PARAMETERS_TO_REMOVE, q);
    w.end(ok);
    const m = d.metadata!;
    const meta = w.begin(RESPONSE_DYNAMIC_METADATA);
    const g = d.grant;
    if (g && g.consumer === m.consumer && g.plan === m.plan && g.provider === m.provider) {
      let bytes = grantMetadataOf.get(g);
      if (!bytes) grantMetadataOf.set(g, (bytes = encodeOnce((x) => identityEntries(x, g))));
      w.raw(bytes);
    } else identityEntries(w, m);
    structString(w, "ip", m.ip);
    w.end(meta);
    return w.finish();
  }
  const r = d.refusal;
  const parts = r ? refusalParts(r) : undefined;
  if (parts) w.raw(parts.status);
  else deniedStatus(w, d);
  const denied = w.begin(RESPONSE_DENIED);
  if (parts) w.raw(parts.fixed);
  else deniedFixed(w, d);
  const body = withRequestId(d.body, requestId);
  if (body) w.string(DENIED_BODY, body);
  w.end(denied);
  return w.finish();
}

function refusalParts(r: Refusal): { status: Buffer; fixed: Buffer } {
  let parts = refusalOf.get(r);
  if (!parts) {
    parts = { status: encodeOnce((w) => deniedStatus(w, r)), fixed: encodeOnce((w) => deniedFixed(w, r)) };
    refusalOf.set(r, parts);
  }
  return parts;
}

function deniedStatus(w: WireWriter, d: { status: number; code: string }): void {
  const s = w.begin(RESPONSE_STATUS);
  w.uint(RPC_STATUS_CODE, grpcCode(d.status));
  w.string(RPC_STATUS_MESSAGE, d.code);
  w.end(s);
}

/** The denied response's HTTP status and headers (its body follows). */
function deniedFixed(w: WireWriter, d: { status: number; responseHeaders: readonly Header[] }): void {
  const s = w.begin(DENIED_STATUS);
  w.uint(HTTP_STATUS_CODE, d.status);
  w.end(s);
  headerOptions(w, d.responseHeaders, DENIED_HEADERS);
}

function headerOptions(w: WireWriter, headers: readonly Header[], field = OK_HEADERS): void {
  if (headers.length === 0) return;
  if (!Object.isFrozen(headers)) {
    for (const h of headers) headerOption(w, field, h);
    return;
  }
  // A frozen list is shared by many decisions: encoded once (per field it is written in).
  const memo = field === OK_HEADERS ? headerOptionsOf : deniedHeadersOf;
  let bytes = memo.get(headers);
  if (!bytes) {
    bytes = encodeOnce((x) => {
      for (const h of headers) headerOption(x, field, h);
    });
    memo.set(headers, bytes);
  }
  w.raw(bytes);
}

function headerOption(w: WireWriter, field: number, [key, value]: Header): void {
  const option = w.begin(field);
  const header = w.begin(OPTION_HEADER);
  if (key) w.string(HEADER_KEY, key);
  if (value) w.string(HEADER_VALUE, value);
  w.end(header);
  w.uint(OPTION_APPEND_ACTION, OVERWRITE_ACTION);
  w.end(option);
}

function removals(w: WireWriter, names: readonly string[]): void {
  if (names.length === 0) return;
  if (!Object.isFrozen(names)) {
    for (const n of names) w.string(OK_HEADERS_TO_REMOVE, n);
    return;
  }
  let bytes = removalsOf.get(names);
  if (!bytes) {
    bytes = encodeOnce((x) => {
      for (const n of names) x.string(OK_HEADERS_TO_REMOVE, n);
    });
    removalsOf.set(names, bytes);
  }
  w.raw(bytes);
}

function identityEntries(w: WireWriter, m: { consumer: string; plan: string; provider: string }): void {
  structString(w, "consumer", m.consumer);
  structString(w, "plan", m.plan);
  structString(w, "provider", m.provider);
}

/** One `fields` entry of a Struct whose value is a string. */
function structString(w: WireWriter, key: string, value: string): void {
  const entry = w.begin(STRUCT_FIELDS);
  w.string(ENTRY_KEY, key);
  const v = w.begin(ENTRY_VALUE);
  w.string(VALUE_STRING, value);
  w.end(v);
  w.end(entry);
}
