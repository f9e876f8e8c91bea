import { describe, expect, it } from "vitest";
import { openApiDocument } from "../src/admin/openapi.js";
import { ConfigError } from "../src/model/errors.js";
import type { ConfigInput } from "../src/model/schema.js";
import { validateConfig } from "../src/model/validate.js";
import { translate } from "../src/translate/translate.js";
import { TypeUrl } from "../src/xds/types.js";

const config = (route: object, upstream: object = {}): ConfigInput =>
  ({
    gateways: [{ name: "edge", listeners: [{ name: "http", port: 10000 }] }],
    upstreams: [{ name: "u", endpoints: [{ host: "127.0.0.1", port: 8080 }], ...upstream }],
    routes: [{ name: "r", gateway: "edge", match: { pathPrefix: "/" }, upstream: "u", ...route }],
  }) as ConfigInput;

function refusal(input: ConfigInput): { field: string; reason: string }[] {
  try {
    validateConfig(input);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).details;
  }
  throw new Error("expected the config to be refused");
}

function envoyRoute(input: ConfigInput): any {
  const rc = translate(validateConfig(input))
    .get("edge")!
    .find((r) => r.typeUrl === TypeUrl.Route)!.message as any;
  return rc.virtual_hosts[0].routes[0];
}

function envoyCluster(input: ConfigInput): any {
  return translate(validateConfig(input))
    .get("edge")!
    .find((r) => r.typeUrl === TypeUrl.Cluster && r.name === "u")!.message;
}

describe("resilience fields named for what Envoy does", () => {
  it("counts retries after the first try as maxRetries; attempts is the same number under its old name", () => {
    const now = validateConfig(config({ retries: { maxRetries: 2 } }));
    const old = validateConfig(config({ retries: { attempts: 2 } }));
    // Stored under the new name, whichever was written.
    expect(now.routes[0]!.retries).toEqual(old.routes[0]!.retries);
    expect(old.routes[0]!.retries).toEqual({ maxRetries: 2, on: ["5xx", "reset", "connect-failure"] });
    expect(envoyRoute(config({ retries: { attempts: 2 } })).route.retry_policy.num_retries).toEqual({
      value: 2,
    });
    expect(refusal(config({ retries: { maxRetries: 2, attempts: 2 } }))).toEqual([
      {
        field: "routes[0].retries",
        reason:
          "give maxRetries, the number of retries after the first try (attempts is its old name; not both)",
      },
    ]);
  });

  it("names circuit breaker limits for what they count, the old names still working", () => {
    const old = validateConfig(
      config(
        {},
        { circuitBreaker: { maxRequests: 1, maxPendingRequests: 1, maxRetries: 0, maxConnections: 5 } },
      ),
    );
    expect(old.upstreams[0]!.circuitBreaker).toEqual({
      maxConnections: 5,
      maxConcurrentRequests: 1,
      maxRequestsWaitingForConnection: 1,
      maxConcurrentRetries: 0,
    });
    expect(
      envoyCluster(
        config({}, { circuitBreaker: { maxConcurrentRequests: 1, maxRequestsWaitingForConnection: 2 } }),
      ).circuit_breakers.thresholds,
    ).toEqual([{ priority: "DEFAULT", max_pending_requests: { value: 2 }, max_requests: { value: 1 } }]);
    expect(refusal(config({}, { circuitBreaker: { maxRequests: 1, maxConcurrentRequests: 1 } }))).toEqual([
      {
        field: "upstreams[0].circuitBreaker.maxRequests",
        reason: "the old name of maxConcurrentRequests; give only maxConcurrentRequests",
      },
    ]);
  });

  it("says in the API document what Envoy does with each resilience field, with an example", () => {
    const schemas = (openApiDocument().components as any).schemas;
    const route = schemas.Route.properties;
    const retries = route.retries.properties;
    expect(retries.maxRetries.description).toMatch(/Retries after the first try.*2 means at most 3 calls/);
    expect(retries.maxRetries.examples).toEqual([2]);
    expect(retries.attempts).toMatchObject({ deprecated: true });
    for (const field of ["on", "perTryTimeoutMs", "statusCodes", "backoff"])
      expect(retries[field].description, field).toMatch(/\S/);
    expect(route.timeoutMs.description).toMatch(/retries included/);
    expect(route.priority.description).toMatch(/higher first/);
    expect(route.fallback.properties.upstream.description).toMatch(/x-portico-degraded: fallback/);
    const upstream = schemas.Upstream.properties;
    const cb = upstream.circuitBreaker.properties;
    expect(cb.maxConcurrentRequests.description).toMatch(/refused at once with 503.*does not wait/);
    expect(cb.maxConcurrentRequests.examples).toEqual([200]);
    for (const old of ["maxRequests", "maxPendingRequests", "maxRetries"])
      expect(cb[old].deprecated).toBe(true);
    for (const field of ["consecutive5xx", "intervalMs", "baseEjectionMs", "maxEjectionPercent"]) {
      expect(upstream.outlierDetection.properties[field].description, field).toMatch(/`\w+`/);
      expect(upstream.outlierDetection.properties[field].examples, field).toHaveLength(1);
    }
    for (const field of ["path", "intervalMs", "timeoutMs", "unhealthyThreshold", "healthyThreshold"])
      expect(upstream.healthCheck.properties[field].examples, field).toHaveLength(1);
    expect(upstream.connectTimeoutMs.description).toMatch(/connect failure/);
    expect(schemas.Gateway.properties.listeners.items.properties.returnRequestId.description).toMatch(
      /request_id/,
    );
  });
});
