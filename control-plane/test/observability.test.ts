import { describe, expect, it } from "vitest";
import { ConfigError } from "../src/model/errors.js";
import { parseConfigText, references } from "../src/model/validate.js";
import { translate } from "../src/translate/translate.js";
import { TypeUrl } from "../src/xds/types.js";

const base = (gatewayExtra = "", otelProtocol = "grpc") => `
gateways:
  - name: edge
    listeners: [{ name: http, port: 10000 }]
${gatewayExtra}
  - name: plain
    listeners: [{ name: http, port: 10001 }]
upstreams:
  - name: users
    endpoints: [{ host: 10.0.0.1, port: 8080 }]
  - name: otel
    protocol: ${otelProtocol}
    endpoints: [{ host: 10.0.0.2, port: 4317 }]
routes:
  - { name: users, gateway: edge, match: { pathPrefix: /users }, upstream: users }
  - { name: plain-users, gateway: plain, match: { pathPrefix: /users }, upstream: users }
`;

function problems(text: string): { field: string; reason: string }[] {
  try {
    parseConfigText(text);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).details;
  }
  throw new Error("expected the config to be refused");
}

/** The HCM of the gateway's first listener. */
function hcm(text: string, group: string): Record<string, any> {
  const resources = translate(parseConfigText(text)).get(group)!;
  const listener = resources.find((r) => r.typeUrl === TypeUrl.Listener)!.message as any;
  return listener.filter_chains[0].filters[0].typed_config;
}

function clusters(text: string, group: string): string[] {
  return translate(parseConfigText(text))
    .get(group)!
    .filter((r) => r.typeUrl === TypeUrl.Cluster)
    .map((r) => r.name);
}

const fields = (log: any) =>
  Object.fromEntries(
    Object.entries(log.typed_config.log_format.json_format.fields).map(([k, v]: [string, any]) => [
      k,
      v.stringValue,
    ]),
  );

describe("gateway tracing", () => {
  const traced = "    tracing: { upstream: otel, samplingPercent: 5 }";

  it("configures Envoy's OpenTelemetry tracer on the gateway's listeners, and only there", () => {
    const t = hcm(base(traced), "edge");
    expect(t.tracing).toMatchObject({
      random_sampling: { value: 5 },
      spawn_upstream_span: { value: true },
      provider: {
        name: "envoy.tracers.opentelemetry",
        typed_config: {
          "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
          grpc_service: { envoy_grpc: { cluster_name: "otel" } },
          service_name: "edge",
        },
      },
    });
    // The client's x-request-id is not rewritten to carry the sampling decision.
    expect(t.request_id_extension.typed_config.pack_trace_reason).toEqual({ value: false });
    expect(hcm(base(traced), "plain").tracing).toBeUndefined();
    expect(hcm(base(traced), "plain").request_id_extension).toBeUndefined();
  });

  it("sends the collector's cluster to the traced gateway only", () => {
    expect(clusters(base(traced), "edge")).toEqual(["otel", "users"]);
    expect(clusters(base(traced), "plain")).toEqual(["users"]);
  });

  it("defaults to every request and the gateway's name, and takes a service name", () => {
    const t = hcm(base("    tracing: { upstream: otel, serviceName: edge-eu }"), "edge").tracing;
    expect(t.random_sampling).toEqual({ value: 100 });
    expect(t.provider.typed_config.service_name).toBe("edge-eu");
  });

  it("refuses a collector that is missing or not gRPC, and sampling outside 0-100", () => {
    expect(problems(base("    tracing: { upstream: nope }"))).toEqual([
      { field: "gateways[0].tracing.upstream", reason: "no upstream named 'nope'" },
    ]);
    expect(problems(base(traced, "http1"))).toEqual([
      { field: "gateways[0].tracing.upstream", reason: "upstream 'otel' must have protocol grpc" },
    ]);
    expect(problems(base("    tracing: { upstream: otel, samplingPercent: 101 }"))[0]!.field).toBe(
      "gateways[0].tracing.samplingPercent",
    );
  });

  it("counts as a use of the upstream, so the collector cannot be deleted under it", () => {
    const refs = references(parseConfigText(base(traced)));
    expect(refs).toContainEqual({
      from: { kind: "gateways", name: "edge", field: "gateways[0].tracing.upstream" },
      to: { kind: "upstreams", name: "otel" },
    });
  });
});

describe("gateway access log", () => {
  it("writes JSON to stdout with the consumer, route, ids and outcome", () => {
    const [log] = hcm(base(), "edge").access_log;
    expect(log.name).toBe("envoy.access_loggers.stdout");
    expect(fields(log)).toMatchObject({
      gateway: "edge",
      request_id: "%REQ(X-REQUEST-ID)%",
      trace_id: "%TRACE_ID%",
      route: "%ROUTE_NAME%",
      consumer: "%DYNAMIC_METADATA(envoy.filters.http.ext_authz:consumer)%",
      flags: "%RESPONSE_FLAGS%",
      details: "%RESPONSE_CODE_DETAILS%",
    });
  });

  it("writes to a file when the gateway names one", () => {
    const [log] = hcm(base("    accessLog: { path: /var/log/envoy/edge.json }"), "edge").access_log;
    expect(log.name).toBe("envoy.access_loggers.file");
    expect(log.typed_config.path).toBe("/var/log/envoy/edge.json");
    expect(fields(log).route).toBe("%ROUTE_NAME%");
    expect(hcm(base("    accessLog: { path: /var/log/envoy/edge.json }"), "plain").access_log[0].name).toBe(
      "envoy.access_loggers.stdout",
    );
  });

  it("refuses a relative path", () => {
    expect(problems(base("    accessLog: { path: logs/edge.json }"))).toEqual([
      { field: "gateways[0].accessLog.path", reason: "must be an absolute path" },
    ]);
  });
});
