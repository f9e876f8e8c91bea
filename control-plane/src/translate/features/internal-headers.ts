/**
 * Envoy's own headers stay in the gateway: the router adds none (no `x-envoy-expected-rq-timeout-ms`
 * on any try, no `x-envoy-upstream-service-time` on answers), and the addresses the connection
 * manager classified are removed before a request leaves, since upstreams learn the caller from
 * `x-forwarded-for`. What tracing needs (`x-request-id`, `traceparent`, `tracestate`) goes on, and a
 * rewritten route still passes the path the client asked for in `x-envoy-original-path`, which the
 * access log reads.
 */
import type { Route } from "../../model/schema.js";
import type { HttpFeature } from "../feature.js";

/** Removed by every route table of the gateway's, before a request leaves for an upstream. */
export const INTERNAL_REQUEST_HEADERS: readonly string[] = ["x-envoy-external-address", "x-envoy-internal"];

/** The router's own `x-envoy-*` headers, to upstreams and to clients, are not added. */
export const QUIET_ROUTER = { suppress_envoy_headers: true };

const rewrites = (r: Route) => r.rewrite?.prefix !== undefined || r.rewrite?.regex !== undefined;

/** Route headers are set before the path is rewritten, so this is the path the client asked for. */
const ORIGINAL_PATH = {
  header: { key: "x-envoy-original-path", value: "%REQ(:PATH)%" },
  append_action: "OVERWRITE_IF_EXISTS_OR_ADD",
};

export const internalHeaders: HttpFeature = {
  name: "internal headers",
  listener: () => ({
    router: QUIET_ROUTER,
    routeTable: { request_headers_to_remove: INTERNAL_REQUEST_HEADERS },
    route: (r) => (rewrites(r) ? { requestHeadersToAdd: [ORIGINAL_PATH] } : undefined),
  }),
};
