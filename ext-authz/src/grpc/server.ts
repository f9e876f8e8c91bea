import * as grpc from "@grpc/grpc-js";
import type { Logger } from "../../../common/src/log.js";
import type { Authorizer } from "../authorizer.js";
import { internalErrorDecision, type Decision } from "../decide/decide.js";
import { toRequestAttributes, type CheckRequestMessage } from "./check-request.js";
import { toCheckResponse } from "./check-response.js";
import { HealthService } from "../../../common/src/grpc-health.js";
import { AUTHORIZATION_SERVICE, authTypes, method } from "./protos.js";

export interface AuthzServerOptions {
  authorizer: Authorizer;
  /** host:port; port 0 picks a free one (see `port` after `start`). */
  address: string;
  logger?: Logger;
  /** Called with the handler's time (request attributes in, response object out), in milliseconds. */
  onCheckDone?: (ms: number, decision: Decision) => void;
}

/**
 * `envoy.service.auth.v3.Authorization/Check` and `grpc.health.v1.Health` on one gRPC server.
 * Health says SERVING once started with a policy (or, without one, once `health.set("SERVING")`
 * is called when the first policy arrives) and NOT_SERVING while stopping, so Envoy's health
 * checks move traffic away before the listener closes.
 */
export class AuthzServer {
  readonly health = new HealthService([AUTHORIZATION_SERVICE]);
  private readonly server = new grpc.Server({
    "grpc.max_receive_message_length": 4 * 1024 * 1024,
    // Channelz bookkeeping costs a few percent of every call on the hot path; Prometheus metrics
    // cover what operators need.
    "grpc.enable_channelz": 0,
  });
  private boundPort = 0;

  constructor(private readonly opts: AuthzServerOptions) {
    const { CheckRequest, CheckResponse } = authTypes();
    this.server.addService(
      {
        Check: method<CheckRequestMessage, Record<string, unknown>>(
          AUTHORIZATION_SERVICE,
          "Check",
          CheckRequest,
          CheckResponse,
        ),
      },
      { Check: this.onCheck },
    );
    this.server.addService(this.health.definition(), this.health.implementation());
  }

  private readonly onCheck = (
    call: grpc.ServerUnaryCall<CheckRequestMessage, Record<string, unknown>>,
    callback: grpc.sendUnaryData<Record<string, unknown>>,
  ): void => {
    const started = performance.now();
    let attrs;
    try {
      attrs = toRequestAttributes(call.request);
    } catch (err) {
      this.opts.logger?.error({ err }, "unreadable CheckRequest");
      callback(null, toCheckResponse(internalErrorDecision((err as Error).message)));
      return;
    }
    // Every failure becomes a 5xx decision, so Envoy gets an answer, not a gRPC error whose fate
    // would depend on failure_mode_allow.
    this.opts.authorizer
      .check(attrs)
      .then((d) => {
        const response = toCheckResponse(d);
        this.opts.onCheckDone?.(performance.now() - started, d);
        callback(null, response);
      })
      .catch((err: Error) => {
        this.opts.logger?.error({ err }, "check failed");
        callback(null, toCheckResponse(internalErrorDecision(err.message)));
      });
  };

  get port(): number {
    return this.boundPort;
  }

  async start(): Promise<number> {
    this.boundPort = await new Promise<number>((resolve, reject) =>
      this.server.bindAsync(this.opts.address, grpc.ServerCredentials.createInsecure(), (err, port) =>
        err ? reject(err) : resolve(port),
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
