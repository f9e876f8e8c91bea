import * as grpc from "@grpc/grpc-js";
import { silentLogger, type Logger } from "../../../common/src/log.js";
import type { RateLimitConfig } from "../config/types.js";
import type { RateLimiter } from "../limiter/types.js";
import {
  rateLimitServiceDefinition,
  RLS_SERVICE,
  type RateLimitRequest,
  type RateLimitResponse,
} from "./codec.js";
import { HealthService } from "../../../common/src/grpc-health.js";
import { RateLimitMetrics } from "./metrics.js";
import { InvalidRequestError, RateLimitHandler } from "./rls.js";

export interface RateLimitServiceOptions {
  /**
   * The config; when absent (config over xDS) the service waits for `setConfig`: health says
   * NOT_SERVING and ShouldRateLimit answers UNAVAILABLE, so Envoy applies its failure mode rather
   * than being told that nothing is limited.
   */
  config?: RateLimitConfig;
  limiter: RateLimiter;
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 8081 (upstream's gRPC port); 0 picks a free one. */
  port?: number;
  log?: Logger;
  metrics?: RateLimitMetrics;
  shadowMode?: boolean;
  nearLimitRatio?: number;
  retryAfter?: boolean;
  credentials?: grpc.ServerCredentials;
}

export interface RateLimitServer {
  readonly port: number;
  /** host:port to give a client. */
  readonly address: string;
  readonly handler: RateLimitHandler;
  readonly health: HealthService;
  readonly metrics: RateLimitMetrics;
  /** Whether a config has been set. */
  readonly ready: boolean;
  setConfig(config: RateLimitConfig): void;
  /** Stops answering (health first says NOT_SERVING); the limiter is the caller's to close. */
  stop(graceMs?: number): Promise<void>;
}

/** Starts the ShouldRateLimit and gRPC health services on one port. */
export async function startRateLimitService(opts: RateLimitServiceOptions): Promise<RateLimitServer> {
  const log = opts.log ?? silentLogger();
  const metrics = opts.metrics ?? new RateLimitMetrics();
  let ready = opts.config !== undefined;
  let stopping = false;
  const handler = new RateLimitHandler(opts.config ?? { domains: new Map(), files: [] }, {
    limiter: opts.limiter,
    metrics,
    shadowMode: opts.shadowMode,
    nearLimitRatio: opts.nearLimitRatio,
    retryAfter: opts.retryAfter,
  });
  const health = new HealthService([RLS_SERVICE]);
  const server = new grpc.Server({
    "grpc.keepalive_time_ms": 30_000,
    "grpc.keepalive_permit_without_calls": 1,
    "grpc.http2.max_ping_strikes": 0,
    // Channelz bookkeeping costs a few percent of every call on the hot path; Prometheus metrics
    // cover what operators need.
    "grpc.enable_channelz": 0,
  });
  server.addService(rateLimitServiceDefinition(), {
    ShouldRateLimit: (
      call: grpc.ServerUnaryCall<RateLimitRequest, RateLimitResponse>,
      cb: grpc.sendUnaryData<RateLimitResponse>,
    ) => {
      if (!ready) {
        cb({ code: grpc.status.UNAVAILABLE, details: "no rate-limit config received yet" });
        return;
      }
      const end = metrics.decisionSeconds.startTimer();
      handler.shouldRateLimit(call.request).then(
        (res) => {
          end();
          cb(null, res);
        },
        (err: Error) => {
          end();
          if (err instanceof InvalidRequestError) {
            metrics.invalidRequests.inc();
            cb({ code: grpc.status.INVALID_ARGUMENT, details: err.message });
            return;
          }
          log.error({ err: err.message, domain: call.request.domain }, "ShouldRateLimit failed");
          cb({ code: grpc.status.INTERNAL, details: err.message });
        },
      );
    },
  });
  server.addService(health.definition(), health.implementation());

  const host = opts.host ?? "127.0.0.1";
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(
      `${host.includes(":") ? `[${host}]` : host}:${opts.port ?? 8081}`,
      opts.credentials ?? grpc.ServerCredentials.createInsecure(),
      (err, bound) => (err ? reject(err) : resolve(bound)),
    ),
  );
  if (ready) health.set("SERVING");
  log.info({ host, port, limiter: opts.limiter.kind }, "rate-limit service listening");

  return {
    port,
    address: `${host.includes(":") ? `[${host}]` : host}:${port}`,
    handler,
    health,
    metrics,
    get ready() {
      return ready;
    },
    setConfig: (c) => {
      handler.setConfig(c);
      if (!ready && !stopping) health.set("SERVING");
      ready = true;
    },
    stop: (graceMs = 5_000) => {
      stopping = true;
      health.set("NOT_SERVING");
      health.close();
      return new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, graceMs);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    },
  };
}
