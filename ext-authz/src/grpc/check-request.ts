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
