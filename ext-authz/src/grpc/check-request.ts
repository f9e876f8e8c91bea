import { WIRE, WireReader } from "@portico/common";
import type { RequestAttributes } from "../decide/request.js";

/** The parts of a decoded `envoy.service.auth.v3.CheckRequest` that are read (snake_case, as in the .proto). */
export interface CheckRequestMessage {
  attributes?: {
    source?: { address?: { socket_address?: { address?: string } | null } | null } | null;
    request?: {
      http?: {
        method?: string;
        path?: string;
        headers?: Record<string, string> | null;
        header_map?: { headers?: Array<{ key?: string; value?: string; raw_value?: Uint8Array }> } | null;
      } | null;
    } | null;
    context_extensions?: Record<string, string> | null;
  } | null;
}

const EMPTY: Readonly<Record<string, string>> = Object.freeze({});

/**
 * Request attributes from a CheckRequest. Envoy sends headers either as the `headers` map or, with
 * `encode_raw_headers`, as `header_map` with raw bytes; both are read.
 */
export function toRequestAttributes(msg: CheckRequestMessage): RequestAttributes {
  const attrs = msg.attributes ?? undefined;
  const http = attrs?.request?.http ?? undefined;
  const headers = new Map<string, string>();
  if (http?.headers) {
    for (const name of Object.keys(http.headers)) headers.set(name.toLowerCase(), http.headers[name]!);
  }
  for (const h of http?.header_map?.headers ?? []) {
    if (!h.key) continue;
    const value =
      h.raw_value && h.raw_value.length > 0 ? Buffer.from(h.raw_value).toString("utf8") : (h.value ?? "");
    const name = h.key.toLowerCase();
    const prior = headers.get(name);
    headers.set(name, prior === undefined ? value : `${prior},${value}`);
  }
  const ext = attrs?.context_extensions;
  const sourceIp = attrs?.source?.address?.socket_address?.address;
  return {
    headers,
    path: http?.path || headers.get(":path") || "/",
    method: http?.method || headers.get(":method") || "",
    sourceIp: sourceIp ? sourceIp : undefined,
    contextExtensions: ext && Object.keys(ext).length > 0 ? ext : EMPTY,
  };
}

/*
 * Tags (field number << 3 | wire type 2) of what is read, from envoy/service/auth/v3/
 * {external_auth,attribute_context}.proto and envoy/config/core/v3/{address,base}.proto.
 * Everything else (the destination, the request's time, id, host, scheme, body, the TLS session,
 * metadata) is skipped unread.
 */
const tag = (field: number) => (field << 3) | WIRE.bytes;
const CHECK_REQUEST_ATTRIBUTES = tag(1);
const ATTRS_SOURCE = tag(1);
const ATTRS_REQUEST = tag(4);
const ATTRS_CONTEXT_EXTENSIONS = tag(10);
const PEER_ADDRESS = tag(1);
const ADDRESS_SOCKET_ADDRESS = tag(1);
const SOCKET_ADDRESS_ADDRESS = tag(2);
const REQUEST_HTTP = tag(2);
const HTTP_METHOD = tag(2);
const HTTP_HEADERS = tag(3);
const HTTP_PATH = tag(4);
const HTTP_HEADER_MAP = tag(13);
const HEADER_MAP_HEADERS = tag(1);
const HEADER_KEY = tag(1);
const HEADER_VALUE = tag(2);
const HEADER_RAW_VALUE = tag(3);
const MAP_KEY = tag(1);
const MAP_VALUE = tag(2);

interface Decoded {
  readonly headers: Map<string, string>;
  headerMap: Array<[string, string]> | undefined;
  method: string;
  path: string;
  sourceIp: string;
  ext: Record<string, string> | undefined;
}

/**
 * Request attributes straight from a CheckRequest's bytes: the same as `toRequestAttributes` of
 * the decoded message, reading only the fields the decision reads. Throws `WireError` on bytes
 * that are no CheckRequest.
 */
export function decodeCheckRequest(buf: Buffer): RequestAttributes {
  const r = new WireReader(buf);
  const out: Decoded = {
    headers: new Map(),
    headerMap: undefined,
    method: "",
    path: "",
    sourceIp: "",
    ext: undefined,
  };
  while (r.pos < r.end) {
    const t = r.varint();
    if (t === CHECK_REQUEST_ATTRIBUTES) nested(r, attributes, out);
    else r.skip(t & 7);
  }
  const headers = out.headers;
  // Envoy sends one of the two forms; were both there, the map is read first, as before.
  if (out.headerMap) {
    for (const [key, value] of out.headerMap) {
      const name = key.toLowerCase();
      const prior = headers.get(name);
      headers.set(name, prior === undefined ? value : `${prior},${value}`);
    }
  }
  return {
    headers,
    path: out.path || headers.get(":path") || "/",
    method: out.method || headers.get(":method") || "",
    sourceIp: out.sourceIp ? out.sourceIp : undefined,
    contextExtensions: out.ext ?? EMPTY,
  };
}

/**
 * Reads the length-delimited message that starts at the cursor with `read`, which sees the
 * message's end as the reader's end (so nothing inside can run past it); the cursor ends after it.
 */
function nested(r: WireReader, read: (r: WireReader, out: Decoded) => void, out: Decoded): void {
  const end = r.delimited();
  const outer = r.end;
  r.end = end;
  read(r, out);
  r.pos = end;
  r.end = outer;
}

function attributes(r: WireReader, out: Decoded): void {
  while (r.pos < r.end) {
    const t = r.varint();
    if (t === ATTRS_REQUEST) nested(r, request, out);
    else if (t === ATTRS_CONTEXT_EXTENSIONS) nested(r, contextExtension, out);
    else if (t === ATTRS_SOURCE) nested(r, peer, out);
    else r.skip(t & 7);
  }
}

/** A reader of a message in which one nested field alone matters: it descends into that field. */
function into(field: number, read: (r: WireReader, out: Decoded) => void) {
  return (r: WireReader, out: Decoded): void => {
    while (r.pos < r.end) {
      const t = r.varint();
      if (t === field) nested(r, read, out);
      else r.skip(t & 7);
    }
  };
}

const request = into(REQUEST_HTTP, http);
const address = into(ADDRESS_SOCKET_ADDRESS, socketAddress);
const peer = into(PEER_ADDRESS, address);

function socketAddress(r: WireReader, out: Decoded): void {
  while (r.pos < r.end) {
    const t = r.varint();
    if (t === SOCKET_ADDRESS_ADDRESS) out.sourceIp = r.string();
    else r.skip(t & 7);
  }
}

function http(r: WireReader, out: Decoded): void {
  while (r.pos < r.end) {
    const t = r.varint();
    if (t === HTTP_HEADERS) nested(r, header, out);
    else if (t === HTTP_PATH) out.path = r.string();
    else if (t === HTTP_METHOD) out.method = r.string();
    else if (t === HTTP_HEADER_MAP) nested(r, headerMap, out);
    else r.skip(t & 7);
  }
}

/** One entry of the `headers` map; a repeated name keeps its last value, as a map does. */
function header(r: WireReader, out: Decoded): void {
  let key = "";
  let value = "";
  while (r.pos < r.end) {
    const t = r.varint();
    if (t === MAP_KEY) key = r.string();
    else if (t === MAP_VALUE) value = r.string();
    else r.skip(t & 7);
  }
  out.headers.set(key.toLowerCase(), value);
}

function contextExtension(r: WireReader, out: Decoded): void {
  let key = "";
  let value = "";
  while (r.pos < r.end) {
    const t = r.varint();
    if (t === MAP_KEY) key = r.string();
    else if (t === MAP_VALUE) value = r.string();
    else r.skip(t & 7);
  }
  const ext = (out.ext ??= {});
  // An own property whatever the name, `__proto__` included, so that an unknown key is refused.
  if (key === "__proto__")
    Object.defineProperty(ext, key, { value, enumerable: true, writable: true, configurable: true });
  else ext[key] = value;
}

function headerMap(r: WireReader, out: Decoded): void {
  while (r.pos < r.end) {
    const t = r.varint();
    if (t === HEADER_MAP_HEADERS) nested(r, headerValue, out);
    else r.skip(t & 7);
  }
}

/** A `HeaderValue`: its raw bytes when set (as UTF-8), else its value; none without a key. */
function headerValue(r: WireReader, out: Decoded): void {
  let key = "";
  let value = "";
  let raw: Buffer | undefined;
  while (r.pos < r.end) {
    const t = r.varint();
    if (t === HEADER_KEY) key = r.string();
    else if (t === HEADER_VALUE) value = r.string();
    else if (t === HEADER_RAW_VALUE) raw = r.bytes();
    else r.skip(t & 7);
  }
  if (key) (out.headerMap ??= []).push([key, raw && raw.length > 0 ? raw.toString("utf8") : value]);
}
