import type { Metadata } from "@grpc/grpc-js";
import {
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  type Context,
  type Span,
  type TextMapGetter,
} from "@opentelemetry/api";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-grpc";
import { defaultResource, resourceFromAttributes } from "@opentelemetry/resources";
import {
  AlwaysOffSampler,
  AlwaysOnSampler,
  BatchSpanProcessor,
  ParentBasedSampler,
  TraceIdRatioBasedSampler,
  TracerProvider,
  type Sampler,
  type SpanExporter,
} from "@opentelemetry/sdk-trace";
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

export interface TracingOptions {
  /** `service.name` of the spans. */
  serviceName: string;
  /** OTLP/gRPC endpoint, e.g. `http://127.0.0.1:4317`; the exporter reads the standard env when absent. */
  endpoint?: string;
  /** Where spans go instead of OTLP (tests). */
  exporter?: SpanExporter;
  sampler?: Sampler;
  /** Longest a finished span waits before it is sent; default 5 000 ms, the SDK's. */
  flushMs?: number;
}

const metadataGetter: TextMapGetter<Metadata> = {
  keys: (carrier) => Object.keys(carrier.getMap()),
  get: (carrier, key) => {
    const values = carrier.get(key);
    if (values.length === 0) return undefined;
    return values.map((v) => (typeof v === "string" ? v : v.toString("latin1")));
  },
};

export function createTracing(opts: TracingOptions): RpcTracing {
  const exporter = opts.exporter ?? new OTLPTraceExporter(opts.endpoint ? { url: opts.endpoint } : {});
  const provider = new TracerProvider({
    resource: defaultResource().merge(resourceFromAttributes({ "service.name": opts.serviceName })),
    // Envoy makes the sampling decision; a call without a sampled parent costs no span.
    sampler: opts.sampler ?? new ParentBasedSampler({ root: new AlwaysOffSampler() }),
    spanProcessors: [new BatchSpanProcessor({ exporter, scheduledDelayMillis: opts.flushMs ?? 5_000 })],
  });
  const tracer = provider.getTracer(opts.serviceName);
  const propagator = new W3CTraceContextPropagator();
  return {
    serverSpan(service, method, metadata) {
      const parent: Context = propagator.extract(ROOT_CONTEXT, metadata, metadataGetter);
      return tracer.startSpan(
        `${service}/${method}`,
        {
          kind: SpanKind.SERVER,
          attributes: { "rpc.system": "grpc", "rpc.service": service, "rpc.method": method },
        },
        parent,
      );
    },
    async shutdown() {
      await provider.shutdown();
    },
  };
}

/**
 * The standard `OTEL_TRACES_SAMPLER` values that make sense for a service called by Envoy. The
 * default, `parentbased_always_off`, follows Envoy's decision and starts no trace of its own.
 */
export function samplerFromEnv(env: NodeJS.ProcessEnv = process.env): Sampler {
  const name = (env.OTEL_TRACES_SAMPLER ?? "parentbased_always_off").trim().toLowerCase();
  const ratio = () => {
    const n = Number(env.OTEL_TRACES_SAMPLER_ARG ?? "1");
    return Number.isFinite(n) && n >= 0 && n <= 1 ? n : 1;
  };
  switch (name) {
    case "always_on":
      return new AlwaysOnSampler();
    case "always_off":
      return new AlwaysOffSampler();
    case "traceidratio":
      return new TraceIdRatioBasedSampler(ratio());
    case "parentbased_always_on":
      return new ParentBasedSampler({ root: new AlwaysOnSampler() });
    case "parentbased_traceidratio":
      return new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(ratio()) });
    case "parentbased_always_off":
      return new ParentBasedSampler({ root: new AlwaysOffSampler() });
    default:
      throw new Error(
        `OTEL_TRACES_SAMPLER=${name} is not one of always_on, always_off, traceidratio, ` +
          `parentbased_always_on, parentbased_always_off, parentbased_traceidratio`,
      );
  }
}

/**
 * Tracing as the OpenTelemetry environment variables say: on when `OTEL_EXPORTER_OTLP_ENDPOINT`
 * (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, unless `OTEL_SDK_DISABLED=true` or
 * `OTEL_TRACES_EXPORTER=none`. Off, it returns undefined, and the services skip every tracing step.
 */
export function tracingFromEnv(
  serviceName: string,
  log?: Logger,
  env: NodeJS.ProcessEnv = process.env,
): RpcTracing | undefined {
  const endpoint = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ?? env.OTEL_EXPORTER_OTLP_ENDPOINT;
  if (!endpoint?.trim()) return undefined;
  if (env.OTEL_SDK_DISABLED?.trim().toLowerCase() === "true") return undefined;
  if (env.OTEL_TRACES_EXPORTER?.trim().toLowerCase() === "none") return undefined;
  const name = env.OTEL_SERVICE_NAME?.trim() || serviceName;
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
