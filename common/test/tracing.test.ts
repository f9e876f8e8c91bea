import { Metadata } from "@grpc/grpc-js";
import { SpanKind } from "@opentelemetry/api";
import type { ReadableSpan, SpanExporter } from "@opentelemetry/sdk-trace";
import { describe, expect, it } from "vitest";
import { createTracing, samplerFromEnv } from "../src/tracing-sdk.js";
import { traceIdOf, tracingFromEnv } from "../src/tracing.js";

const TRACE = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT = "00f067aa0ba902b7";

/** Keeps what it is given, also after shutdown (the SDK's in-memory exporter forgets then). */
class Collector implements SpanExporter {
  readonly spans: ReadableSpan[] = [];
  export(spans: ReadableSpan[], done: (r: { code: number }) => void): void {
    this.spans.push(...spans);
    done({ code: 0 });
  }
  async shutdown(): Promise<void> {}
  getFinishedSpans(): ReadableSpan[] {
    return this.spans;
  }
}

function metadataWith(traceparent?: string): Metadata {
  const md = new Metadata();
  if (traceparent !== undefined) md.set("traceparent", traceparent);
  return md;
}

describe("server spans from gRPC metadata", () => {
  it("makes the call's span a child of the caller's, in the caller's trace", async () => {
    const exporter = new Collector();
    const tracing = createTracing({ serviceName: "svc", exporter });
    tracing
      .serverSpan("pkg.Service", "Call", metadataWith(`00-${TRACE}-${PARENT}-01`))
      .setAttribute("x", 1)
      .end();
    await tracing.shutdown();
    const [span, ...rest] = exporter.getFinishedSpans();
    expect(rest).toHaveLength(0);
    expect(span!.name).toBe("pkg.Service/Call");
    expect(span!.kind).toBe(SpanKind.SERVER);
    expect(span!.spanContext().traceId).toBe(TRACE);
    expect(span!.parentSpanContext?.spanId).toBe(PARENT);
    expect(span!.attributes).toMatchObject({ "rpc.system": "grpc", "rpc.method": "Call", x: 1 });
    expect(span!.resource.attributes["service.name"]).toBe("svc");
  });

  it("records nothing for calls outside a sampled trace, by default", async () => {
    const exporter = new Collector();
    const tracing = createTracing({ serviceName: "svc", exporter });
    tracing.serverSpan("pkg.Service", "Call", metadataWith()).end();
    tracing.serverSpan("pkg.Service", "Call", metadataWith(`00-${TRACE}-${PARENT}-00`)).end();
    tracing.serverSpan("pkg.Service", "Call", metadataWith("garbage")).end();
    await tracing.shutdown();
    expect(exporter.getFinishedSpans()).toHaveLength(0);
  });

  it("starts traces of its own when the sampler says so", async () => {
    const exporter = new Collector();
    const tracing = createTracing({
      serviceName: "svc",
      exporter,
      sampler: samplerFromEnv({ OTEL_TRACES_SAMPLER: "parentbased_always_on" }),
    });
    tracing.serverSpan("pkg.Service", "Call", metadataWith()).end();
    await tracing.shutdown();
    const spans = exporter.getFinishedSpans();
    expect(spans).toHaveLength(1);
    expect(spans[0]!.parentSpanContext).toBeUndefined();
  });
});

describe("tracing from the OpenTelemetry environment", () => {
  it("is off without an OTLP endpoint, or when disabled", async () => {
    expect(await tracingFromEnv("svc", undefined, {})).toBeUndefined();
    expect(await tracingFromEnv("svc", undefined, { OTEL_EXPORTER_OTLP_ENDPOINT: " " })).toBeUndefined();
    const endpoint = { OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4317" };
    expect(
      await tracingFromEnv("svc", undefined, { ...endpoint, OTEL_SDK_DISABLED: "true" }),
    ).toBeUndefined();
    expect(
      await tracingFromEnv("svc", undefined, { ...endpoint, OTEL_TRACES_EXPORTER: "none" }),
    ).toBeUndefined();
  });

  it("is on with either endpoint variable", async () => {
    for (const env of [
      { OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4317" },
      { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://127.0.0.1:4317" },
    ]) {
      const t = await tracingFromEnv("svc", undefined, env);
      expect(t).toBeDefined();
      await t!.shutdown();
    }
  });

  it("reads the standard sampler names and refuses others", () => {
    expect(samplerFromEnv({}).toString()).toMatch(/ParentBased\{root=AlwaysOffSampler/);
    expect(samplerFromEnv({ OTEL_TRACES_SAMPLER: "always_on" }).toString()).toBe("AlwaysOnSampler");
    expect(
      samplerFromEnv({
        OTEL_TRACES_SAMPLER: "parentbased_traceidratio",
        OTEL_TRACES_SAMPLER_ARG: "0.25",
      }).toString(),
    ).toMatch(/TraceIdRatioBased\{0\.25\}/);
    expect(() => samplerFromEnv({ OTEL_TRACES_SAMPLER: "jaeger_remote" })).toThrow(/not one of/);
  });
});

describe("traceIdOf", () => {
  it("reads the trace id of a valid traceparent, and nothing else", () => {
    expect(traceIdOf(metadataWith(`00-${TRACE}-${PARENT}-01`))).toBe(TRACE);
    expect(traceIdOf(metadataWith(`00-${"0".repeat(32)}-${PARENT}-01`))).toBeUndefined();
    expect(traceIdOf(metadataWith("00-xyz"))).toBeUndefined();
    expect(traceIdOf(metadataWith())).toBeUndefined();
  });
});
