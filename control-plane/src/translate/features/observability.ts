import { duration, IDENTITY_HEADERS, struct, TYPE_PREFIX } from "@portico/contract";
import type { Gateway } from "../../model/schema.js";
import type { HttpFeature } from "../feature.js";
import { EXT_AUTHZ_NAMESPACE, identityInHeaders } from "./authentication.js";

const STDOUT_LOG = "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog";
const FILE_LOG = "envoy.extensions.access_loggers.file.v3.FileAccessLog";
const OTEL_TRACER = "envoy.config.trace.v3.OpenTelemetryConfig";
const UUID_REQUEST_ID = "envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig";

/**
 * Access log fields (JSON): what an operator greps for when a request went wrong, and what joins
 * a line to the other services' logs and to the trace. The outcome of authentication and rate
 * limiting is in `flags` (UAEX: ext-authz refused; RL: rate limited, by the service or a local
 * bucket; RLSE: the rate-limit service failed) and, spelled out, in `details` (`ext_authz_denied`,
 * `request_rate_limited`, `local_rate_limited`…).
 */
export function accessLogFields(gateway: string): Record<string, string> {
  return {
    time: "%START_TIME%",
    gateway,
    request_id: "%REQ(X-REQUEST-ID)%",
    trace_id: "%TRACE_ID%",
    method: "%REQ(:METHOD)%",
    path: "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    status: "%RESPONSE_CODE%",
    flags: "%RESPONSE_FLAGS%",
    details: "%RESPONSE_CODE_DETAILS%",
    route: "%ROUTE_NAME%",
    // Set by ext-authz, or the checks after jwt_authn, for every request they let through
    // (`anonymous` for anonymous callers); see accessLog for routes that keep it in headers.
    consumer: `%DYNAMIC_METADATA(${EXT_AUTHZ_NAMESPACE}:consumer)%`,
    client_ip: "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
    upstream: "%UPSTREAM_CLUSTER%",
    duration_ms: "%DURATION%",
    bytes_sent: "%BYTES_SENT%",
  };
}

/** Where the consumer is in dynamic metadata, for an access log filter. */
const CONSUMER_IN_METADATA = { filter: EXT_AUTHZ_NAMESPACE, path: [{ key: "consumer" }] };

/**
 * The HCM's access log: JSON lines on stdout, or in the gateway's file. On a listener with routes
 * whose identity stays in headers (`identityInHeaders`), a request without a consumer in metadata
 * is logged by a second logger of the same format that reads it from `x-portico-consumer`: each
 * request meets exactly one of the two filters, and its line is the one it would be if the consumer
 * were in metadata. (Envoy's formatter has no fall-back from metadata to a header.)
 */
export function accessLog(gateway: Gateway, consumerInHeaders = false): object[] {
  const fields = accessLogFields(gateway.name);
  const logger = (f: Record<string, string>, filter?: object) => {
    const log_format = { json_format: struct(f) };
    const path = gateway.accessLog?.path;
    return {
      ...(path
        ? {
            name: "envoy.access_loggers.file",
            typed_config: { "@type": TYPE_PREFIX + FILE_LOG, path, log_format },
          }
        : {
            name: "envoy.access_loggers.stdout",
            typed_config: { "@type": TYPE_PREFIX + STDOUT_LOG, log_format },
          }),
      ...(filter ? { filter } : {}),
    };
  };
  if (!consumerInHeaders) return [logger(fields)];
  return [
    logger(fields, {
      metadata_filter: {
        matcher: { ...CONSUMER_IN_METADATA, value: { present_match: true } },
        match_if_key_not_found: { value: false },
      },
    }),
    logger(
      { ...fields, consumer: `%REQ(${IDENTITY_HEADERS.consumer.toUpperCase()})%` },
      // A consumer in metadata is a string, which never matches null: this one logs only without it.
      {
        metadata_filter: {
          matcher: { ...CONSUMER_IN_METADATA, value: { null_match: {} } },
          match_if_key_not_found: { value: true },
        },
      },
    ),
  ];
}

/**
 * The HCM fields for OpenTelemetry tracing, when the gateway asks for it: Envoy starts a trace (or
 * continues the caller's `traceparent`), sends its spans over OTLP/gRPC to the collector's
 * cluster, and passes the context on in `traceparent` to upstreams and to the ext_authz and
 * ratelimit gRPC calls, whose services make their spans children of Envoy's.
 */
export function hcmTracing(gateway: Gateway): { tracing?: object; request_id_extension?: object } {
  const t = gateway.tracing;
  if (!t) return {};
  return {
    tracing: {
      random_sampling: { value: t.samplingPercent },
      // A gateway is a hop of its own: the upstream call gets its own span, under the request's.
      spawn_upstream_span: { value: true },
      custom_tags: [{ tag: "portico.gateway", literal: { value: gateway.name } }],
      provider: {
        name: "envoy.tracers.opentelemetry",
        typed_config: {
          "@type": TYPE_PREFIX + OTEL_TRACER,
          grpc_service: { envoy_grpc: { cluster_name: t.upstream }, timeout: duration(1_000) },
          service_name: t.serviceName ?? gateway.name,
        },
      },
    },
    // Envoy would otherwise write its sampling decision into the x-request-id UUID, changing the id
    // a client sent (and that upstream logs are searched by); the traceparent carries the decision.
    request_id_extension: {
      typed_config: {
        "@type": TYPE_PREFIX + UUID_REQUEST_ID,
        pack_trace_reason: { value: false },
        use_request_id_for_trace_sampling: { value: false },
      },
    },
  };
}

/** Access logs and tracing on every connection manager, and the cluster of the collector spans go to. */
export const observability: HttpFeature = {
  name: "observability",
  listener: (ctx, _listener, routes) => ({
    connectionManager: {
      access_log: accessLog(
        ctx.gateway,
        routes.some((r) => identityInHeaders(ctx, r)),
      ),
      ...hcmTracing(ctx.gateway),
    },
  }),
  upstreams: (ctx) => (ctx.gateway.tracing ? [ctx.gateway.tracing.upstream] : []),
};
