import http from "node:http";
import type { AddressInfo } from "node:net";

export interface RecordedRequest {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** A real HTTP server on a free loopback port that records every request. */
export class TestServer {
  readonly requests: RecordedRequest[] = [];
  private readonly server: http.Server;
  url = "";

  constructor(private handler: (req: RecordedRequest, res: http.ServerResponse) => void) {
    this.server = http.createServer((req, res) => {
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
    });
  }

  setHandler(handler: (req: RecordedRequest, res: http.ServerResponse) => void): void {
    this.handler = handler;
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** A JWKS endpoint whose key set can be changed while it serves, counting fetches. */
export class JwksServer extends TestServer {
  keys: object[];

  constructor(keys: object[]) {
    super((_req, res) => {
      res
        .writeHead(200, { "content-type": "application/jwk-set+json" })
        .end(JSON.stringify({ keys: this.keys }));
    });
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
