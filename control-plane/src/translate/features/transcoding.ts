/**
 * REST/JSON to gRPC in Envoy: the `grpc_json_transcoder` filter. It is off on the listener and
 * turned on by the routes that transcode, each with its own descriptors and services, so a REST
 * path served by another route is never taken for a gRPC method. Around it, on the same routes:
 * a body check (`lua`) refuses JSON fields no message has, and a header mutation removes the
 * `grpc-*` headers from the REST answer.
 */
import { TYPE_PREFIX } from "@portico/contract";
import { buildDescriptors } from "../../model/grpc-transcode.js";
import type { Route } from "../../model/schema.js";
import { bodyShapes } from "../../model/transcode-body.js";
import type { GatewayContext } from "../context.js";
import type { HttpFeature, HttpFilter, HttpFilterName } from "../feature.js";
import { bodyCheckScript } from "./transcode-lua.js";

const TRANSCODER = "envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder";
export const TRANSCODER_FILTER: HttpFilterName = "envoy.filters.http.grpc_json_transcoder";
const LUA = "envoy.extensions.filters.http.lua.v3.Lua";
const LUA_PER_ROUTE = "envoy.extensions.filters.http.lua.v3.LuaPerRoute";
const LUA_FILTER: HttpFilterName = "envoy.filters.http.lua";
const HEADER_MUTATION = "envoy.extensions.filters.http.header_mutation.v3.HeaderMutation";
const HEADER_MUTATION_PER_ROUTE = "envoy.extensions.filters.http.header_mutation.v3.HeaderMutationPerRoute";
const HEADER_MUTATION_FILTER: HttpFilterName = "envoy.filters.http.header_mutation";

/** gRPC's own headers, which a REST client has no use for. */
const GRPC_RESPONSE_HEADERS = ["grpc-status", "grpc-message", "grpc-accept-encoding", "grpc-encoding"];

/** The route's descriptor set, built (memoised by content in the model), or undefined. */
function descriptorsOf(ctx: GatewayContext, r: Route): Uint8Array | undefined {
  const t = r.grpcTranscode;
  const res = t && ctx.config.protoDescriptors.find((d) => d.name === t.descriptors);
  const built = res && buildDescriptors(res);
  return built?.ok ? built.bytes : undefined; // validation reports it; the translator stays total
}

/** Scripts by set and services: the listener and each route ask for the same one. */
const scripts = new WeakMap<Uint8Array, Map<string, string | undefined>>();

/** The route's body check, unless it allows unknown fields or none of its methods takes a body. */
function bodyCheck(ctx: GatewayContext, r: Route): string | undefined {
  const t = r.grpcTranscode;
  const bytes = descriptorsOf(ctx, r);
  if (!t || t.allowUnknownFields || !bytes) return undefined;
  let bySet = scripts.get(bytes);
  if (!bySet) scripts.set(bytes, (bySet = new Map()));
  const key = t.services.join(",");
  if (!bySet.has(key)) {
    const shapes = bodyShapes(bytes, t.services);
    bySet.set(key, shapes.bindings.length ? bodyCheckScript(shapes) : undefined);
  }
  return bySet.get(key);
}

/**
 * The transcoder on listeners with transcoding routes, and the filters that work beside it; each
 * off on the listener and on for the routes that carry its config.
 */
export function transcodeHttpFilters(ctx: GatewayContext, routes: readonly Route[]): HttpFilter[] {
  if (!routes.some((r) => r.grpcTranscode)) return [];
  return [
    {
      name: HEADER_MUTATION_FILTER,
      disabled: true,
      typed_config: { "@type": TYPE_PREFIX + HEADER_MUTATION },
    },
    ...(routes.some((r) => bodyCheck(ctx, r) !== undefined)
      ? [{ name: LUA_FILTER, disabled: true, typed_config: { "@type": TYPE_PREFIX + LUA } }]
      : []),
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
  const bytes = descriptorsOf(ctx, r);
  if (!t || !bytes) return {};
  const check = bodyCheck(ctx, r);
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
    [HEADER_MUTATION_FILTER]: {
      "@type": TYPE_PREFIX + HEADER_MUTATION_PER_ROUTE,
      mutations: { response_mutations: GRPC_RESPONSE_HEADERS.map((h) => ({ remove: h })) },
    },
    ...(check
      ? { [LUA_FILTER]: { "@type": TYPE_PREFIX + LUA_PER_ROUTE, source_code: { inline_string: check } } }
      : {}),
    [TRANSCODER_FILTER]: {
      "@type": TYPE_PREFIX + TRANSCODER,
      proto_descriptor_bin: Buffer.from(bytes).toString("base64"),
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
    httpFilters: transcodeHttpFilters(ctx, routes),
    route: (r) => (r.grpcTranscode ? { perFilterConfig: transcodePerRoute(ctx, r) } : undefined),
  }),
};
