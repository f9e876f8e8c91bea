/**
 * REST/JSON to gRPC in Envoy: the `grpc_json_transcoder` filter. It is off on the listener and
 * turned on by the routes that transcode, each with its own descriptors and services, so a REST
 * path served by another route is never taken for a gRPC method.
 */
import { TYPE_PREFIX } from "@portico/contract";
import { buildDescriptors } from "../../model/grpc-transcode.js";
import type { Route } from "../../model/schema.js";
import type { GatewayContext } from "../context.js";
import type { HttpFeature, HttpFilter, HttpFilterName } from "../feature.js";

const TRANSCODER = "envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder";
export const TRANSCODER_FILTER: HttpFilterName = "envoy.filters.http.grpc_json_transcoder";

/** The transcoder on listeners with transcoding routes. */
export function transcodeHttpFilters(routes: readonly Route[]): HttpFilter[] {
  if (!routes.some((r) => r.grpcTranscode)) return [];
  return [
    {
      name: TRANSCODER_FILTER,
      disabled: true,
      // Envoy requires a descriptor set here even though every route brings its own: an empty one.
      typed_config: { "@type": TYPE_PREFIX + TRANSCODER, proto_descriptor_bin: "" },
    },
  ];
}

/** The route's transcoder config, which also turns the filter on for it. */
export function transcodePerRoute(ctx: GatewayContext, r: Route): Record<string, object> {
  const t = r.grpcTranscode;
  if (!t) return {};
  const res = ctx.config.protoDescriptors.find((d) => d.name === t.descriptors);
  const built = res && buildDescriptors(res);
  if (!built?.ok) return {}; // validation reports it; the translator stays total
  const p = t.printOptions ?? {};
  const print = {
    ...(p.addWhitespace !== undefined ? { add_whitespace: p.addWhitespace } : {}),
    ...(p.alwaysPrintPrimitiveFields !== undefined
      ? { always_print_primitive_fields: p.alwaysPrintPrimitiveFields }
      : {}),
    ...(p.alwaysPrintEnumsAsInts !== undefined
      ? { always_print_enums_as_ints: p.alwaysPrintEnumsAsInts }
      : {}),
    ...(p.preserveProtoFieldNames !== undefined
      ? { preserve_proto_field_names: p.preserveProtoFieldNames }
      : {}),
  };
  return {
    [TRANSCODER_FILTER]: {
      "@type": TYPE_PREFIX + TRANSCODER,
      proto_descriptor_bin: Buffer.from(built.bytes).toString("base64"),
      services: t.services,
      ...(Object.keys(print).length ? { print_options: print } : {}),
      match_incoming_request_route: t.matchIncomingRequestRoute,
      ignore_unknown_query_parameters: t.ignoreUnknownQueryParameters,
      // A gRPC error becomes its HTTP status with a JSON body (NOT_FOUND → 404), not a 200 with trailers.
      convert_grpc_status: true,
      request_validation_options: {
        // The upstream speaks only gRPC: a REST request no method takes, or with a query parameter no
        // field takes, is answered here rather than passed on as it is.
        reject_unknown_method: t.rejectUnknownMethods,
        reject_unknown_query_parameters: !t.ignoreUnknownQueryParameters,
      },
    },
  };
}

export const transcoding: HttpFeature = {
  name: "transcoding",
  listener: (ctx, _listener, routes) => ({
    httpFilters: transcodeHttpFilters(routes),
    route: (r) => (r.grpcTranscode ? { perFilterConfig: transcodePerRoute(ctx, r) } : undefined),
  }),
};
