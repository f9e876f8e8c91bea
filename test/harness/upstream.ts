import http, { type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

export interface UpstreamReply {
  upstream: string;
  method: string;
  path: string;
  headers: Record<string, string | string[] | undefined>;
}

export interface HttpUpstream {
  readonly name: string;
  readonly port: number;
  /** http://127.0.0.1:<port> */
  readonly url: string;
  /** Requests answered so far. */
  readonly requests: number;
  setStatus(status: number): void;
  /** Answer every request this much later (a slow upstream); 0 for at once. */
  setDelay(ms: number): void;
  close(): Promise<void>;
}

/**
 * A backend that echoes what reached it, so a test can tell which upstream Envoy picked and
 * what Envoy added to or stripped from the request.
 */
export function startHttpUpstream(
  name: string,
  opts: { port?: number; status?: number; delayMs?: number } = {},
): Promise<HttpUpstream> {
  const checkStatus = (n: number): number => {
    if (!Number.isInteger(n) || n < 100 || n > 599) throw new Error(`invalid HTTP status ${n}`);
    return n;
  };
  let status = checkStatus(opts.status ?? 200);
  let delayMs = opts.delayMs ?? 0;
  let requests = 0;
  const server = http.createServer((req: IncomingMessage, res: ServerResponse) => {
    // Drain the body so a POST does not leave the connection half-read.
    req.resume();
    req.on("end", () => (delayMs > 0 ? setTimeout(answer, delayMs) : answer()));
    function answer(): void {
      requests++;
      if (res.destroyed) return; // the caller gave up waiting
      const reply: UpstreamReply = {
        upstream: name,
        method: req.method ?? "",
        path: req.url ?? "",
        headers: req.headers,
      };
      const body = JSON.stringify(reply);
      res.writeHead(status, {
        "content-type": "application/json",
        "content-length": Buffer.byteLength(body),
        "x-upstream": name,
      });
      res.end(body);
    }
  });
  // Idle keep-alive connections from Envoy would otherwise hold close() open.
  server.keepAliveTimeout = 1000;

  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port ?? 0, "127.0.0.1", () => {
      server.off("error", reject);
      const port = (server.address() as AddressInfo).port;
      let closing: Promise<void> | undefined;
      resolve({
        name,
        port,
        url: `http://127.0.0.1:${port}`,
        get requests() {
          return requests;
        },
        setStatus(n: number) {
          status = checkStatus(n);
        },
        setDelay(ms: number) {
          delayMs = ms;
        },
        close() {
          closing ??= new Promise<void>((done) => {
            server.close(() => done());
            server.closeAllConnections();
          });
          return closing;
        },
      });
    });
  });
}
