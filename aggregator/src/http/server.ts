import { randomUUID } from "node:crypto";
import http, { type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { Registry } from "prom-client";
import type { Logger } from "@portico/common";
import { EMPTY_CONFIG, findRoute, type AggregatorConfig } from "../config/compile.js";
import type { PartCaller } from "../compose/call.js";
import { fanOut } from "../compose/fanout.js";
import { merge } from "../compose/merge.js";
import { COMPOSITE_HEADER } from "@portico/contract";
import type { StaleStore } from "../compose/stale.js";
import type { AggregatorMetrics } from "../metrics.js";

export interface AggregatorServerOptions {
  host?: string;
  /** 0 for any free port. */
  port: number;
  log: Logger;
  registry: Registry;
  metrics: AggregatorMetrics;
  caller: PartCaller;
  stale: StaleStore;
}

/** The request's id: Envoy's (kept or made by it), or the aggregator's own for a direct call. */
const REQUEST_ID = "x-request-id";

function send(res: ServerResponse, status: number, headers: Record<string, string>, body: string): void {
  res.writeHead(status, { ...headers, "content-length": Buffer.byteLength(body) });
  res.end(body);
}

/** A JSON answer that names the request it answers, in its body and in `x-request-id`. */
function sendJson(
  res: ServerResponse,
  status: number,
  body: object,
  requestId: string,
  headers: Record<string, string> = {},
): void {
  send(
    res,
    status,
    { "content-type": "application/json", [REQUEST_ID]: requestId, ...headers },
    JSON.stringify({ ...body, request_id: requestId }),
  );
}

function headerOf(req: IncomingMessage): (name: string) => string | undefined {
  return (name) => {
    const v = req.headers[name];
    return Array.isArray(v) ? v.join(", ") : v;
  };
}

/**
 * The aggregator's HTTP side: composite routes, and /healthz, /readyz and /metrics for calls that
 * are not composite (Envoy marks every composite call, so a route's path never hides these).
 */
export class AggregatorServer {
  private config: AggregatorConfig = EMPTY_CONFIG;
  private loaded = false;
  private readonly server: http.Server;

  constructor(private readonly opts: AggregatorServerOptions) {
    this.server = http.createServer((req, res) => {
      const requestId = headerOf(req)(REQUEST_ID) ?? randomUUID();
      this.handle(req, res, requestId).catch((err: Error) => {
        opts.log.error({ err: err.message, request_id: requestId }, "request failed");
        if (!res.headersSent)
          sendJson(res, 500, { code: "internal", message: "the aggregator failed" }, requestId);
        else res.destroy();
      });
    });
    // Envoy keeps connections open; a shorter idle timeout than Envoy's would race its reuse.
    this.server.keepAliveTimeout = 65_000;
  }

  /** Ready once a first config is in: before that, every composite call would be a 404. */
  get ready(): boolean {
    return this.loaded;
  }

  setConfig(config: AggregatorConfig): void {
    this.config = config;
    this.loaded = true;
  }

  async start(): Promise<number> {
    await new Promise<void>((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(this.opts.port, this.opts.host ?? "127.0.0.1", () => {
        this.server.off("error", reject);
        resolve();
      });
    });
    return (this.server.address() as AddressInfo).port;
  }

  stop(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeIdleConnections();
    });
  }

  private async handle(req: IncomingMessage, res: ServerResponse, requestId: string): Promise<void> {
    const url = new URL(req.url ?? "/", "http://aggregator");
    const named = headerOf(req)(COMPOSITE_HEADER);
    if (named === undefined && this.admin(url.pathname, res)) return;
    const log = this.opts.log.child({ request_id: requestId });
    const found = findRoute(this.config, named, url.pathname);
    if (!found) {
      sendJson(res, 404, { code: "no_route", message: `no composite route for ${url.pathname}` }, requestId);
      return;
    }
    const { route, params } = found;
    if (!route.methods.has(req.method ?? "")) {
      const allow = [...route.methods].join(", ");
      sendJson(res, 405, { code: "method_not_allowed", message: `use ${allow}` }, requestId, { allow });
      return;
    }
    // The parts are worth nothing once the client has gone.
    const gone = new AbortController();
    res.on("close", () => {
      if (!res.writableFinished) gone.abort();
    });
    const header = headerOf(req);
    const incoming = {
      params,
      header: (name: string) => (name === REQUEST_ID ? requestId : header(name)),
      signal: gone.signal,
    };
    const results = await fanOut(route, incoming, {
      caller: this.opts.caller,
      stale: this.opts.stale,
      observer: this.opts.metrics,
    });
    const answer = merge(results, requestId);
    this.opts.metrics.requests.inc({ route: route.name, status: String(answer.status) });
    const degraded = results.filter((r) => r.state !== "ok");
    if (degraded.length) {
      log.warn(
        {
          route: route.name,
          status: answer.status,
          parts: degraded.map((r) => ({
            key: r.key,
            state: r.state,
            reason: r.reason,
            ...(r.state === "failed" ? { detail: r.detail } : { age_ms: r.ageMs }),
          })),
        },
        "composite answered with degraded parts",
      );
    } else {
      log.debug({ route: route.name, status: answer.status }, "composite answered");
    }
    if (res.destroyed) return;
    send(res, answer.status, { ...answer.headers, [REQUEST_ID]: requestId }, JSON.stringify(answer.body));
  }

  /** /healthz, /readyz and /metrics; false for any other path. */
  private admin(path: string, res: ServerResponse): boolean {
    if (path === "/healthz") send(res, 200, { "content-type": "text/plain" }, "ok\n");
    else if (path === "/readyz") {
      if (this.ready) send(res, 200, { "content-type": "text/plain" }, "ready\n");
      else send(res, 503, { "content-type": "text/plain" }, "waiting for config\n");
    } else if (path === "/metrics") {
      const { registry } = this.opts;
      registry.metrics().then(
        (text) => send(res, 200, { "content-type": registry.contentType }, text),
        (err: Error) => send(res, 500, { "content-type": "text/plain" }, err.message),
      );
    } else return false;
    return true;
  }
}
