import type { Metadata } from "@grpc/grpc-js";
import { SpanStatusCode, type Span } from "@opentelemetry/api";
import type { Logger } from "./log.js";

export type { Span };
export { SpanStatusCode };

/**
 * Server spans for Portico's gRPC services. A call from Envoy carries the W3C `traceparent` of
 * Envoy's span in its metadata; the service's span becomes that span's child, so one request is
 * one trace from the gateway through authentication and rate limiting to the upstream.
 */
export interface RpcTracing {
  /** Starts the span of one call, as the child of the caller's span when the metadata carries one. */
  serverSpan(service: string, method: string, metadata: Metadata): Span;
  /** Sends what is still buffered and stops; call once, on shutdown. */
  shutdown(): Promise<void>;
}

/**
 * Tracing as the OpenTelemetry environment variables say: on when `OTEL_EXPORTER_OTLP_ENDPOINT`
 * (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, unless `OTEL_SDK_DISABLED=true` or
 * `OTEL_TRACES_EXPORTER=none`. Off, it returns undefined, and the services skip every tracing step.
 * The SDK (`./tracing-sdk.js`) is loaded only when tracing is on: off, the services' heaps hold
 * none of it (about 2.8 MB, more objects for every full collection to mark).
 */
export async function tracingFromEnv(
  serviceName: string,
  log?: Logger,
  env: NodeJS.ProcessEnv = process.env,
): Promise<RpcTracing | undefined> {
  const endpoint = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ?? env.OTEL_EXPORTER_OTLP_ENDPOINT;
  if (!endpoint?.trim()) return undefined;
  if (env.OTEL_SDK_DISABLED?.trim().toLowerCase() === "true") return undefined;
  if (env.OTEL_TRACES_EXPORTER?.trim().toLowerCase() === "none") return undefined;
  const name = env.OTEL_SERVICE_NAME?.trim() || serviceName;
  const { createTracing, samplerFromEnv } = await import("./tracing-sdk.js");
  const sampler = samplerFromEnv(env);
  log?.info({ endpoint, serviceName: name, sampler: sampler.toString() }, "tracing to OTLP");
  return createTracing({ serviceName: name, sampler });
}

const TRACEPARENT = /^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}/;

/**
 * The trace id of the caller's `traceparent`, for log lines: a log line and a trace can be joined
 * even when this service exports no spans itself. Undefined without a valid header.
 */
export function traceIdOf(metadata: Metadata): string | undefined {
  const v = metadata.get("traceparent")[0];
  const m = typeof v === "string" ? TRACEPARENT.exec(v) : null;
  return m && m[1] !== "0".repeat(32) ? m[1] : undefined;
}
