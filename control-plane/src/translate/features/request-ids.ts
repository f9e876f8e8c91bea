/**
 * The request's id handed back to the client on every answer, in the listener's `returnRequestId`
 * header: Envoy's own setting for `x-request-id`, a header of the route table for another name
 * (error-answers.ts adds it to the gateway's own answers, which no route table reaches).
 */
import type { Listener } from "../../model/schema.js";
import type { HttpFeature } from "../feature.js";

/** Envoy's request id, as header values format it. */
export const REQUEST_ID_VALUE = "%REQ(X-REQUEST-ID)%";

/** The header that returns the id, when it is not `x-request-id` (which Envoy sets by itself). */
export function otherIdHeader(listener: Listener): object | undefined {
  const name = listener.returnRequestId;
  if (name === false || name === "x-request-id") return undefined;
  return { header: { key: name, value: REQUEST_ID_VALUE }, append_action: "OVERWRITE_IF_EXISTS_OR_ADD" };
}

export const requestIds: HttpFeature = {
  name: "request ids",
  listener: (_ctx, listener) => {
    const other = otherIdHeader(listener);
    if (other) return { routeTable: { response_headers_to_add: [other] } };
    return listener.returnRequestId === false
      ? {}
      : { connectionManager: { always_set_request_id_in_response: true } };
  },
};
