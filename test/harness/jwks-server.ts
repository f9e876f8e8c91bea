import fs from "node:fs";
import http from "node:http";
import https from "node:https";
import type { AddressInfo } from "node:net";
import type { CertFiles } from "./certs.js";

export interface RecordedRequest {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** A real HTTP server (HTTPS with `tls`) on a free loopback port that records every request. */
export class TestServer {
  readonly requests: RecordedRequest[] = [];
  private readonly server: http.Server;
  url = "";

  constructor(
    private handler: (req: RecordedRequest, res: http.ServerResponse) => void,
    private readonly tls?: CertFiles,
  ) {
    const listener = (req: http.IncomingMessage, res: http.ServerResponse) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        const recorded = {
          method: req.method ?? "",
          url: req.url ?? "",
          headers: req.headers,
          body: Buffer.concat(chunks).toString(),
        };
        this.requests.push(recorded);
        this.handler(recorded, res);
      });
    };
    this.server = tls
      ? https.createServer({ cert: fs.readFileSync(tls.cert), key: fs.readFileSync(tls.key) }, listener)
      : http.createServer(listener);
  }

  setHandler(handler: (req: RecordedRequest, res: http.ServerResponse) => void): void {
    this.handler = handler;
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    this.url = `${this.tls ? "https" : "http"}://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/**
 * A JWKS endpoint whose key set can be changed while it serves, counting fetches; over HTTPS with
 * `tls` (a certificate for 127.0.0.1, such as makeTestPki's `server`), with the Cache-Control
 * header `cacheControl` when set.
 */
export class JwksServer extends TestServer {
  keys: object[];
  cacheControl: string | undefined;

  constructor(keys: object[], tls?: CertFiles) {
    super((_req, res) => {
      res
        .writeHead(200, {
          "content-type": "application/jwk-set+json",
          ...(this.cacheControl ? { "cache-control": this.cacheControl } : {}),
        })
        .end(JSON.stringify({ keys: this.keys }));
    }, tls);
    this.keys = keys;
  }

  get fetches(): number {
    return this.requests.length;
  }

  get jwksUri(): string {
    return `${this.url}/.well-known/jwks.json`;
  }
}

export function json(res: http.ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));
}
