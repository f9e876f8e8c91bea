import * as grpc from "@grpc/grpc-js";
import type { Decision, Header } from "../src/decide/decide.js";
import { grpcCode, withRequestId } from "../src/grpc/check-response.js";
import { authTypes } from "../src/grpc/protos.js";

// The CheckResponse for a decision as a plain object for protobufjs `fromObject` (snake_case
// fields): the reference `encodeCheckResponse` is tested against. It needs Envoy's ext_authz
// messages loaded by reflection, which the service itself never loads.

/** What the encoder writes as HeaderAppendAction 2. */
const OVERWRITE = "OVERWRITE_IF_EXISTS_OR_ADD";

const STRING = authTypes().structStringField;

function headerOptionObjects(headers: readonly Header[]) {
  return headers.map(([key, value]) => ({ header: { key, value }, append_action: OVERWRITE }));
}

export function toCheckResponse(d: Decision, requestId?: string): Record<string, unknown> {
  if (d.allowed) {
    const m = d.metadata!;
    return {
      status: { code: grpc.status.OK },
      ok_response: {
        headers: headerOptionObjects(d.headersToSet),
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
      headers: headerOptionObjects(d.responseHeaders),
      body: withRequestId(d.body, requestId),
    },
  };
}
