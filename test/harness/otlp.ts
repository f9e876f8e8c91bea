import { createRequire } from "node:module";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import type protobuf from "protobufjs";
import { loadProtoRoot } from "@portico/contract";
import { waitFor } from "./wait.js";

const require = createRequire(import.meta.url);

/** One span as a receiver sees it; ids in lower-case hex, `parentSpanId` "" for a root span. */
export interface ReceivedSpan {
  service: string;
  name: string;
  kind: string;
  traceId: string;
  spanId: string;
  parentSpanId: string;
  attributes: Record<string, string | number | boolean>;
}

export interface OtlpReceiver {
  readonly port: number;
  /** `http://127.0.0.1:<port>`, for an OTLP/gRPC exporter. */
  readonly endpoint: string;
  /** Every span received so far, in arrival order. */
  readonly spans: readonly ReceivedSpan[];
  /** Export calls answered so far. */
  readonly exports: number;
  /** Resolves with the spans once `predicate` holds for them (checked on each arrival). */
  waitForSpans(
    predicate: (spans: readonly ReceivedSpan[]) => boolean,
    what: string,
    timeoutMs?: number,
  ): Promise<readonly ReceivedSpan[]>;
  close(): Promise<void>;
}

const SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService";

/** The OTLP protos as opentelemetry-proto publishes them (shipped in an npm package's build). */
function otlpTypes(): { request: protobuf.Type; response: protobuf.Type } {
  const pkg = path.dirname(require.resolve("otlp-protos/package.json"));
  const root = loadProtoRoot(
    ["opentelemetry/proto/collector/trace/v1/trace_service.proto"],
    [path.join(pkg, "build", "protos")],
  );
  return {
    request: root.lookupType(`opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest`),
    response: root.lookupType(`opentelemetry.proto.collector.trace.v1.ExportTraceServiceResponse`),
  };
}

type AnyValue = {
  string_value?: string;
  int_value?: number;
  bool_value?: boolean;
  double_value?: number;
};
type KeyValue = { key: string; value?: AnyValue };
interface DecodedSpan {
  trace_id?: Buffer;
  span_id?: Buffer;
  parent_span_id?: Buffer;
  name?: string;
  kind?: string;
  attributes?: KeyValue[];
}
interface DecodedRequest {
  resource_spans?: {
    resource?: { attributes?: KeyValue[] };
    scope_spans?: { spans?: DecodedSpan[] }[];
  }[];
}

function attributeMap(kvs: KeyValue[] | undefined): Record<string, string | number | boolean> {
  const out: Record<string, string | number | boolean> = {};
  for (const kv of kvs ?? []) {
    const v = kv.value ?? {};
    const value = v.string_value ?? v.int_value ?? v.bool_value ?? v.double_value;
    if (value !== undefined) out[kv.key] = value;
  }
  return out;
}

const hex = (b: Buffer | undefined) => (b ? Buffer.from(b).toString("hex") : "");

/**
 * A minimal OpenTelemetry collector: `TraceService/Export` over gRPC, decoding each request with
 * the published OTLP protos, keeping the spans in memory for a test to inspect.
 */
export async function startOtlpReceiver(): Promise<OtlpReceiver> {
  const { request, response } = otlpTypes();
  const spans: ReceivedSpan[] = [];
  let exports = 0;
  const server = new grpc.Server();
  server.addService(
    {
      Export: {
        path: `/${SERVICE}/Export`,
        requestStream: false,
        responseStream: false,
        requestDeserialize: (b: Buffer) =>
          request.toObject(request.decode(b), { enums: String, longs: Number, bytes: Buffer }),
        requestSerialize: (v: object) => Buffer.from(request.encode(request.fromObject(v)).finish()),
        responseSerialize: (v: object) => Buffer.from(response.encode(response.fromObject(v)).finish()),
        responseDeserialize: (b: Buffer) => response.toObject(response.decode(b)),
      },
    },
    {
      Export: (call: grpc.ServerUnaryCall<DecodedRequest, object>, cb: grpc.sendUnaryData<object>) => {
        exports++;
        for (const rs of call.request.resource_spans ?? []) {
          const service = String(attributeMap(rs.resource?.attributes)["service.name"] ?? "");
          for (const ss of rs.scope_spans ?? []) {
            for (const s of ss.spans ?? []) {
              spans.push({
                service,
                name: s.name ?? "",
                kind: s.kind ?? "SPAN_KIND_UNSPECIFIED",
                traceId: hex(s.trace_id),
                spanId: hex(s.span_id),
                parentSpanId: hex(s.parent_span_id),
                attributes: attributeMap(s.attributes),
              });
            }
          }
        }
        cb(null, {});
      },
    },
  );
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    ),
  );
  return {
    port,
    endpoint: `http://127.0.0.1:${port}`,
    get spans() {
      return spans;
    },
    get exports() {
      return exports;
    },
    waitForSpans: (predicate, what, timeoutMs = 20_000) =>
      waitFor(() => (predicate(spans) ? [...spans] : undefined), { what, timeoutMs, intervalMs: 50 }),
    close: () =>
      new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, 2_000);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      }),
  };
}
