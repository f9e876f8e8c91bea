import type { Metadata } from "@grpc/grpc-js";
import { ROOT_CONTEXT, SpanKind, type Context, type TextMapGetter } from "@opentelemetry/api";
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
import type { RpcTracing } from "./tracing.js";

// The OpenTelemetry SDK and its OTLP exporter, loaded only where tracing is on (`tracingFromEnv`):
// a service without tracing does not keep them in its heap.

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
