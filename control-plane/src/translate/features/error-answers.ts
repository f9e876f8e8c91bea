/**
 * The gateway's own error answers (Envoy's local replies: no route, refused by a limit, the
 * upstream unreachable or too slow, a request the transcoder cannot read) as JSON in Portico's
 * error shape, `{"code", "message", "detail", "request_id"}`, instead of Envoy's plain text.
 * Answers that already have their shape are left as they are: direct responses (guards and the
 * routes' own), ext-authz's refusals (and the same refusals by the checks after jwt_authn),
 * static fallbacks, and answers to gRPC callers.
 */
import { struct, TYPE_PREFIX, DEGRADED_HEADER } from "@portico/contract";
import type { Listener } from "../../model/schema.js";
import type { HttpFeature } from "../feature.js";
import { JWT_CHECKS_FILTER } from "./jwt-checks-lua.js";
import { otherIdHeader, REQUEST_ID_VALUE } from "./request-ids.js";

const CEL_FILTER = "envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter";

/** Code and message of each status the gateway answers by itself. */
const STATUSES: readonly (readonly [number, string, string])[] = [
  [400, "invalid_request", "the request is not valid"],
  [403, "forbidden", "the request is not allowed"],
  [404, "not_found", "nothing here answers this request"],
  [408, "request_timeout", "the request took too long to arrive"],
  [413, "payload_too_large", "the request body is too large"],
  [429, "rate_limited", "too many requests; try again later"],
  [431, "headers_too_large", "the request headers are too large"],
  [500, "internal", "the gateway failed to answer"],
  [502, "bad_gateway", "the upstream failed to answer"],
  [503, "unavailable", "the service is unavailable; try again later"],
  [504, "upstream_timeout", "the upstream did not answer in time"],
];

interface Answer {
  /** Envoy's access log filter of the local replies it applies to; the first that matches applies. */
  filter: object;
  code: string;
  message: string;
  /** Whether Envoy's own text goes in `detail` (a missing route has none). */
  detail: boolean;
}

/** A status comparison (Envoy's filter needs a runtime key, which no runtime sets). */
const status = (op: "EQ" | "GE", value: number) => ({
  status_code_filter: {
    comparison: { op, value: { default_value: value, runtime_key: "portico.local_reply.status" } },
  },
});

const ANSWERS: readonly Answer[] = [
  {
    filter: { response_flag_filter: { flags: ["NR"] } },
    code: "no_route",
    message: "no route of the gateway matches this request",
    detail: false,
  },
  ...STATUSES.map(([s, code, message]) => ({ filter: status("EQ", s), code, message, detail: true })),
  { filter: status("GE", 400), code: "error", message: "the request failed", detail: true },
];

/**
 * The local replies kept as they are (CEL over Envoy's attributes): those that are no error, the
 * ones with a shape of their own, and answers to gRPC callers, whose errors travel in grpc-status.
 * A transcoded REST call carries a gRPC content-type once the transcoder has seen it, and
 * `x-envoy-original-method` too: it is no gRPC caller.
 */
const KEPT = [
  "response.code < 400",
  'response.code_details == "direct_response"',
  'response.code_details == "ext_authz_denied"',
  // The refusals of the checks after jwt_authn, in ext-authz's words, are marked in dynamic metadata.
  `"${JWT_CHECKS_FILTER}" in metadata.filter_metadata`,
  `"${DEGRADED_HEADER}" in response.headers`,
  '("content-type" in request.headers && request.headers["content-type"].startsWith("application/grpc") && !("x-envoy-original-method" in request.headers))',
].join(" || ");

function cel(expression: string): object {
  return {
    extension_filter: {
      name: "envoy.access_loggers.extension_filters.cel",
      typed_config: { "@type": TYPE_PREFIX + CEL_FILTER, expression },
    },
  };
}

function jsonBody(a: Answer, withId: boolean): object {
  return {
    json_format: struct({
      code: a.code,
      message: a.message,
      // Envoy's own words (the transcoder's reason, the reset's cause).
      ...(a.detail ? { detail: "%LOCAL_REPLY_BODY%" } : {}),
      ...(withId ? { request_id: REQUEST_ID_VALUE } : {}),
    }),
  };
}

/**
 * The connection manager's `local_reply_config`: the replies kept as they are first, then a mapper
 * per answer. A request id header other than `x-request-id` is added by each.
 */
export function localReplyConfig(listener: Listener): object {
  const header = otherIdHeader(listener);
  const headers = header ? { headers_to_add: [header] } : {};
  const withId = listener.returnRequestId !== false;
  return {
    mappers: [
      { filter: cel(KEPT), ...headers },
      ...ANSWERS.map((a) => ({ filter: a.filter, ...headers, body_format_override: jsonBody(a, withId) })),
    ],
  };
}

export const errorAnswers: HttpFeature = {
  name: "error answers",
  listener: (_ctx, listener) => ({ connectionManager: { local_reply_config: localReplyConfig(listener) } }),
};
