import {
  DEFAULT_REFUSAL_LOGS_PER_SECOND,
  LogBudget,
  silentLogger,
  type Logger,
  SpanStatusCode,
  traceIdOf,
  type RpcTracing,
  HealthService,
} from "@portico/common";
import * as grpc from "@grpc/grpc-js";
import type { RateLimitConfig } from "../config/types.js";
import type { RateLimiter } from "../limiter/types.js";
import {
  rateLimitServiceDefinition,
  RLS_SERVICE,
  type RateLimitRequest,
  type RateLimitResponse,
} from "./codec.js";
import { decodeRateLimitRequest, encodeRateLimitResponse } from "./wire-codec.js";
import { RateLimitMetrics } from "./metrics.js";
import { InvalidRequestError, RateLimitHandler } from "./rls.js";
import type { LimitHeaderNames } from "./verdict.js";

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
  /** RateLimit-Limit, -Remaining and -Reset on every answer, under these names; none when undefined. */
  limitHeaders?: LimitHeaderNames;
  /**
   * mTLS (`serviceTls` from @portico/common): the credentials to bind with and the check that lets
   * only gateways call, so no other workload can spend a consumer's quota. Plaintext when unset.
   */
  tls?: { credentials: grpc.ServerCredentials; interceptor: grpc.ServerInterceptor };
  /**
   * Close connections after this long (GOAWAY, ±10 % jitter), so that clients resolve the
   * service's address again and spread over new instances (upstream's GRPC_MAX_CONNECTION_AGE).
   */
  maxConnectionAgeMs?: number;
  /** How long a closing connection may finish its calls (upstream's GRPC_MAX_CONNECTION_AGE_GRACE). */
  maxConnectionAgeGraceMs?: number;
  /** A span per ShouldRateLimit, the child of Envoy's; none when undefined. */
  tracing?: RpcTracing;
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
    limitHeaders: opts.limitHeaders,
  });
  const health = new HealthService([RLS_SERVICE]);
  // Over-limit answers are what a flood is made of: their lines are capped, their metrics are not.
  const overLimitLines = new LogBudget(DEFAULT_REFUSAL_LOGS_PER_SECOND);
  const server = new grpc.Server({
    "grpc.keepalive_time_ms": 30_000,
    "grpc.keepalive_permit_without_calls": 1,
    "grpc.http2.max_ping_strikes": 0,
    // Channelz bookkeeping costs a few percent of every call on the hot path; Prometheus metrics
    // cover what operators need.
    "grpc.enable_channelz": 0,
    ...(opts.maxConnectionAgeMs ? { "grpc.max_connection_age_ms": opts.maxConnectionAgeMs } : {}),
    ...(opts.maxConnectionAgeGraceMs
      ? { "grpc.max_connection_age_grace_ms": opts.maxConnectionAgeGraceMs }
      : {}),
    ...(opts.tls ? { interceptors: [opts.tls.interceptor] } : {}),
  });
  // The server reads and writes the wire format by hand (wire-codec.ts); clients keep protobufjs.
  const definition = rateLimitServiceDefinition();
  const service: grpc.ServiceDefinition = {
    ShouldRateLimit: {
      ...definition.ShouldRateLimit!,
      requestDeserialize: decodeRateLimitRequest,
      responseSerialize: encodeRateLimitResponse,
    },
  };
  server.addService(service, {
    ShouldRateLimit: (
      call: grpc.ServerUnaryCall<RateLimitRequest, RateLimitResponse>,
      cb: grpc.sendUnaryData<RateLimitResponse>,
    ) => {
      const span = opts.tracing?.serverSpan(RLS_SERVICE, "ShouldRateLimit", call.metadata);
      span?.setAttribute("portico.ratelimit.domain", call.request.domain ?? "");
      if (!ready) {
        span?.setStatus({ code: SpanStatusCode.ERROR, message: "no config" }).end();
        cb({ code: grpc.status.UNAVAILABLE, details: "no rate-limit config received yet" });
        return;
      }
      const started = performance.now();
      const end = () => metrics.hot.seconds.observe((performance.now() - started) / 1000);
      handler.shouldRateLimit(call.request).then(
        (res) => {
          end();
          if (overLimit(res)) logOverLimit(log, overLimitLines, call.request, res, call.metadata);
          span?.setAttribute("portico.ratelimit.code", res.overall_code).end();
          cb(null, res);
        },
        (err: Error) => {
          end();
          span?.setStatus({ code: SpanStatusCode.ERROR, message: err.message }).end();
          if (err instanceof InvalidRequestError) {
            metrics.invalidRequests.inc();
            cb({ code: grpc.status.INVALID_ARGUMENT, details: err.message });
            return;
          }
          log.error(
            { err: err.message, domain: call.request.domain, trace_id: traceIdOf(call.metadata) },
            "ShouldRateLimit failed",
          );
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
      opts.tls?.credentials ?? grpc.ServerCredentials.createInsecure(),
      (err, bound) => (err ? reject(err) : resolve(bound)),
    ),
  );
  if (ready) health.set("SERVING");
  log.info(
    { host, port, limiter: opts.limiter.kind, transport: opts.tls ? "mtls" : "plaintext" },
    "rate-limit service listening",
  );

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

/** Whether a descriptor went over a limit (the overall code stays OK in shadow mode). */
function overLimit(res: RateLimitResponse): boolean {
  return res.overall_code === "OVER_LIMIT" || res.statuses.some((s) => s.code === "OVER_LIMIT");
}

/**
 * One line per refused request. Envoy sends no request headers to the rate limiter, so the line
 * carries what joins it to the rest: the trace id (Envoy's `traceparent` on the call, when tracing
 * is on) and the descriptor keys. The values are left out: they are API-key owners and client
 * addresses, and the access log line of the same request has them.
 */
function logOverLimit(
  log: Logger,
  budget: LogBudget,
  req: RateLimitRequest,
  res: RateLimitResponse,
  metadata: grpc.Metadata,
): void {
  if (!log.isLevelEnabled("info")) return;
  const room = budget.take();
  if (!room) return;
  log.info(
    {
      ...(room.dropped ? { dropped: room.dropped } : {}),
      domain: req.domain,
      trace_id: traceIdOf(metadata),
      code: res.overall_code,
      descriptors: req.descriptors.map((d, i) => ({
        keys: (d.entries ?? []).map((e) => e.key),
        code: res.statuses[i]?.code,
        limit: res.statuses[i]?.current_limit?.name,
      })),
    },
    "over limit",
  );
}
