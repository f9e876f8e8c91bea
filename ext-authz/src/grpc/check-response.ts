import * as grpc from "@grpc/grpc-js";
import type { Decision, Header } from "../decide/decide.js";
import { authTypes } from "./protos.js";

/** The filter namespace Envoy files ext_authz dynamic metadata under (what the rate limit `metadata` action reads). */
export const METADATA_NAMESPACE = "envoy.filters.http.ext_authz";

/**
 * Overwrite, not append: a client-sent `x-portico-consumer` must be replaced, never joined
 * (Envoy #42857 is about exactly this ambiguity).
 */
const OVERWRITE = "OVERWRITE_IF_EXISTS_OR_ADD";

const STRING = authTypes().structStringField;

function headerOptions(headers: readonly Header[]) {
  return headers.map(([key, value]) => ({ header: { key, value }, append_action: OVERWRITE }));
}

function grpcCode(status: number): number {
  if (status === 401) return grpc.status.UNAUTHENTICATED;
  if (status === 403) return grpc.status.PERMISSION_DENIED;
  if (status === 400) return grpc.status.INVALID_ARGUMENT;
  if (status === 503) return grpc.status.UNAVAILABLE;
  return grpc.status.INTERNAL;
}

/**
 * A denial's JSON body with the request's id, so a caller can quote it like every other error
 * body of the gateway's. The decision's body is always one JSON object.
 */
function withRequestId(body: string, requestId: string | undefined): string {
  if (!requestId || !body.endsWith("}")) return body;
  return `${body.slice(0, -1)},"request_id":${JSON.stringify(requestId)}}`;
}

/** The CheckResponse for a decision, as a plain object for protobufjs `fromObject` (snake_case fields). */
export function toCheckResponse(d: Decision, requestId?: string): Record<string, unknown> {
  if (d.allowed) {
    const m = d.metadata!;
    return {
      status: { code: grpc.status.OK },
      ok_response: {
        headers: headerOptions(d.headersToSet),
        headers_to_remove: d.headersToRemove,
        query_parameters_to_remove: d.queryParamsToRemove,
      },
      dynamic_metadata: {
        fields: {
          consumer: { [STRING]: m.consumer },
          plan: { [STRING]: m.plan },
          ip: { [STRING]: m.ip },
          provider: { [STRING]: m.provider },
        },
      },
    };
  }
  return {
    status: { code: grpcCode(d.status), message: d.code },
    denied_response: {
      status: { code: d.status },
      headers: headerOptions(d.responseHeaders),
      body: withRequestId(d.body, requestId),
    },
  };
}
