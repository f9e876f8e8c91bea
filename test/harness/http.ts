import http, { type IncomingHttpHeaders } from "node:http";

export interface HttpResponse {
  status: number;
  /** Lower-cased names; repeated headers joined with ", " (set-cookie with "\n"). */
  headers: Record<string, string>;
  body: string;
  json<T = unknown>(): T;
}

export interface HttpRequestOptions {
  method?: string;
  headers?: Record<string, string>;
  body?: string | Buffer;
  /** Whole-exchange limit; default 2000 ms. */
  timeoutMs?: number;
  /** The client socket's address, e.g. 127.0.0.2, so that Envoy sees distinct callers. */
  localAddress?: string;
}

function flattenHeaders(h: IncomingHttpHeaders): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(h)) {
    if (v === undefined) continue;
    out[k] = Array.isArray(v) ? v.join(k === "set-cookie" ? "\n" : ", ") : v;
  }
  return out;
}

/**
 * One request on a fresh connection (`agent: false`). Pooled keep-alive connections would
 * survive an Envoy listener drain or an upstream swap and make tests see stale routing.
 */
export function httpRequest(url: string, opts: HttpRequestOptions = {}): Promise<HttpResponse> {
  const u = new URL(url);
  if (u.protocol !== "http:") throw new Error(`httpRequest supports http: URLs only, got ${url}`);
  const timeoutMs = opts.timeoutMs ?? 2000;
  const method = opts.method ?? "GET";
  return new Promise((resolve, reject) => {
    const req = http.request(
      u,
      {
        method,
        headers: { connection: "close", ...opts.headers },
        agent: false,
        ...(opts.localAddress ? { localAddress: opts.localAddress } : {}),
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("error", fail);
        res.on("end", () => {
          clearTimeout(timer);
          const body = Buffer.concat(chunks).toString("utf8");
          resolve({
            status: res.statusCode ?? 0,
            headers: flattenHeaders(res.headers),
            body,
            json<T>() {
              try {
                return JSON.parse(body) as T;
              } catch {
                throw new Error(
                  `${method} ${url} → ${res.statusCode}: body is not JSON: ${body.slice(0, 300)}`,
                );
              }
            },
          });
        });
      },
    );
    const timer = setTimeout(
      () => req.destroy(new Error(`${method} ${url} timed out after ${timeoutMs}ms`)),
      timeoutMs,
    );
    function fail(err: Error): void {
      clearTimeout(timer);
      reject(err.message.includes(url) ? err : new Error(`${method} ${url}: ${err.message}`, { cause: err }));
    }
    req.on("error", fail);
    req.end(opts.body);
  });
}

export function httpGet(
  url: string,
  headers?: Record<string, string>,
  timeoutMs?: number,
): Promise<HttpResponse> {
  return httpRequest(url, { headers, timeoutMs });
}
