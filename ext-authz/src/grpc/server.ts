import * as grpc from "@grpc/grpc-js";
import {
  SpanStatusCode,
  traceIdOf,
  type RpcTracing,
  type Span,
  HealthService,
  DEFAULT_REFUSAL_LOGS_PER_SECOND,
  LogBudget,
  type Logger,
} from "@portico/common";
import type { Authorizer } from "../authorizer.js";
import { internalErrorDecision, type Decision } from "../decide/decide.js";
import type { RequestAttributes } from "../decide/request.js";
import { decodeCheckRequest } from "./check-request.js";
import { encodeCheckResponse } from "./check-response.js";
import { AUTHORIZATION_SERVICE } from "./protos.js";

const asIs = (b: Buffer) => b;

/**
 * Check with the request and the answer as bytes: the handler reads the few fields it needs from
 * the wire (`decodeCheckRequest`) and writes an answer whose shared parts are encoded once
 * (`encodeCheckResponse`), instead of a reflective decode and encode of whole messages.
 */
const CHECK: grpc.MethodDefinition<Buffer, Buffer> = {
  path: `/${AUTHORIZATION_SERVICE}/Check`,
  requestStream: false,
  responseStream: false,
  requestSerialize: asIs,
  requestDeserialize: asIs,
  responseSerialize: asIs,
  responseDeserialize: asIs,
};

export interface AuthzServerOptions {
  authorizer: Authorizer;
  /** host:port; port 0 picks a free one (see `port` after `start`). */
  address: string;
  logger?: Logger;
  /** Called with the handler's time (request attributes in, response object out), in milliseconds. */
  onCheckDone?: (ms: number, decision: Decision) => void;
  /** A span per Check, the child of Envoy's; none when undefined. */
  tracing?: RpcTracing;
  /** Refusal lines logged a second at most (`DEFAULT_REFUSAL_LOGS_PER_SECOND`). */
  refusalLogsPerSecond?: number;
  /**
   * mTLS (`serviceTls` from @portico/common): the credentials to bind with and the check that lets
   * only gateways call. Plaintext when unset.
   */
  tls?: { credentials: grpc.ServerCredentials; interceptor: grpc.ServerInterceptor };
}

/**
 * `envoy.service.auth.v3.Authorization/Check` and `grpc.health.v1.Health` on one gRPC server.
 * Health says SERVING once started with a policy (or, without one, once `health.set("SERVING")`
 * is called when the first policy arrives) and NOT_SERVING while stopping, so Envoy's health
 * checks move traffic away before the listener closes.
 */
export class AuthzServer {
  readonly health = new HealthService([AUTHORIZATION_SERVICE]);
  private readonly server: grpc.Server;
  private boundPort = 0;
  private readonly refusalLogs: LogBudget;

  constructor(private readonly opts: AuthzServerOptions) {
    this.server = new grpc.Server({
      "grpc.max_receive_message_length": 4 * 1024 * 1024,
      // Channelz bookkeeping costs a few percent of every call on the hot path; Prometheus metrics
      // cover what operators need.
      "grpc.enable_channelz": 0,
      ...(opts.tls ? { interceptors: [opts.tls.interceptor] } : {}),
    });
    this.refusalLogs = new LogBudget(
      opts.refusalLogsPerSecond ?? DEFAULT_REFUSAL_LOGS_PER_SECOND,
      Date.now,
      () => opts.authorizer.metrics.logsDropped.inc(),
    );
    this.server.addService({ Check: CHECK }, { Check: this.onCheck });
    this.server.addService(this.health.definition(), this.health.implementation());
  }

  private readonly onCheck = (
    call: grpc.ServerUnaryCall<Buffer, Buffer>,
    callback: grpc.sendUnaryData<Buffer>,
  ): void => {
    const started = this.opts.onCheckDone ? performance.now() : 0;
    const span = this.opts.tracing?.serverSpan(AUTHORIZATION_SERVICE, "Check", call.metadata);
    let attrs: RequestAttributes;
    try {
      attrs = decodeCheckRequest(call.request);
    } catch (err) {
      this.opts.logger?.error({ err, trace_id: traceIdOf(call.metadata) }, "unreadable CheckRequest");
      span?.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error).message }).end();
      callback(null, encodeCheckResponse(internalErrorDecision((err as Error).message)));
      return;
    }
    // Every failure becomes a 5xx decision, so Envoy gets an answer, not a gRPC error whose fate
    // would depend on failure_mode_allow.
    let decided: Decision | Promise<Decision>;
    try {
      decided = this.opts.authorizer.checkNow(attrs);
    } catch (err) {
      decided = Promise.reject(err as Error);
    }
    if (!(decided instanceof Promise)) {
      this.answer(call, callback, attrs, decided, span, started);
      return;
    }
    decided.then(
      (d) => this.answer(call, callback, attrs, d, span, started),
      (err: Error) => {
        this.opts.logger?.error({ err, trace_id: traceIdOf(call.metadata) }, "check failed");
        span?.setStatus({ code: SpanStatusCode.ERROR, message: err.message }).end();
        callback(
          null,
          encodeCheckResponse(internalErrorDecision(err.message), attrs.headers.get("x-request-id")),
        );
      },
    );
  };

  private answer(
    call: grpc.ServerUnaryCall<Buffer, Buffer>,
    callback: grpc.sendUnaryData<Buffer>,
    attrs: RequestAttributes,
    d: Decision,
    span: Span | undefined,
    started: number,
  ): void {
    let response: Buffer;
    try {
      // Only a refusal's body carries the request id.
      response = encodeCheckResponse(d, d.allowed ? undefined : attrs.headers.get("x-request-id"));
      this.opts.onCheckDone?.(performance.now() - started, d);
      this.logDecision(d, attrs, call.metadata);
      if (span) endSpan(span, d, attrs);
    } catch (err) {
      this.opts.logger?.error({ err, trace_id: traceIdOf(call.metadata) }, "check failed");
      response = encodeCheckResponse(internalErrorDecision((err as Error).message));
    }
    callback(null, response);
  }

  /**
   * One line per refusal, at info, within the log budget (the first line after a cut says how many
   * were left out), with what joins it to Envoy's access log (`request_id`) and to the trace
   * (`trace_id`); admitted requests only at debug, as they are the bulk of the traffic.
   */
  private logDecision(d: Decision, attrs: RequestAttributes, metadata: grpc.Metadata): void {
    const log = this.opts.logger;
    if (!log || (d.allowed && !log.isLevelEnabled("debug"))) return;
    const budget = d.allowed ? { dropped: 0 } : this.refusalLogs.take();
    if (budget === undefined) return;
    const fields = {
      request_id: attrs.headers.get("x-request-id"),
      trace_id: traceIdOf(metadata),
      status: d.status,
      code: d.code,
      // The path without its query, which may carry a credential.
      path: attrs.path.split("?")[0],
      method: attrs.method,
      // The route's rules as Envoy sent them (accept, scopes, consumers…).
      policy: attrs.contextExtensions,
    };
    if (d.allowed) log.debug({ ...fields, consumer: d.metadata?.consumer }, "allowed");
    else
      log.info(
        { ...fields, reason: d.reason, ...(budget.dropped ? { dropped: budget.dropped } : {}) },
        "denied",
      );
  }

  get port(): number {
    return this.boundPort;
  }

  async start(): Promise<number> {
    this.boundPort = await new Promise<number>((resolve, reject) =>
      this.server.bindAsync(
        this.opts.address,
        this.opts.tls?.credentials ?? grpc.ServerCredentials.createInsecure(),
        (err, port) => (err ? reject(err) : resolve(port)),
      ),
    );
    if (this.opts.authorizer.ready) this.health.set("SERVING");
    return this.boundPort;
  }

  /** Says NOT_SERVING, lets in-flight checks finish (up to `graceMs`), then closes. */
  async stop(graceMs = 5_000): Promise<void> {
    this.health.set("NOT_SERVING");
    this.health.close();
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.server.forceShutdown();
        resolve();
      }, graceMs);
      timer.unref();
      this.server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
}

function endSpan(span: Span, d: Decision, attrs: RequestAttributes): void {
  span.setAttributes({
    "portico.auth.code": d.code,
    "portico.auth.status": d.status,
    ...(d.metadata ? { "portico.consumer": d.metadata.consumer } : {}),
    ...(attrs.headers.has("x-request-id")
      ? { "portico.request_id": attrs.headers.get("x-request-id")! }
      : {}),
  });
  // A refusal is the service doing its job; only a failure to decide is an error.
  if (d.status >= 500) span.setStatus({ code: SpanStatusCode.ERROR, message: d.code });
  span.end();
}
