import protobuf from "protobufjs";
import { loadProtoRoot } from "../../../protos/src/loader.js";

export const AUTHORIZATION_SERVICE = "envoy.service.auth.v3.Authorization";
export const HEALTH_SERVICE = "grpc.health.v1.Health";

let authRoot: protobuf.Root | undefined;

/** Envoy's ext_authz v3 messages, loaded once from the API protos shipped with @grpc/grpc-js-xds. */
export function authTypes(): {
  CheckRequest: protobuf.Type;
  CheckResponse: protobuf.Type;
  structStringField: string;
} {
  authRoot ??= loadProtoRoot(["envoy/service/auth/v3/external_auth.proto"]);
  // google.protobuf.Value comes from protobufjs's built-in copy, whose field names are camelCase even
  // though every other message here keeps the .proto's snake_case; find the name by field number.
  const value = authRoot.lookupType("google.protobuf.Value");
  return {
    CheckRequest: authRoot.lookupType("envoy.service.auth.v3.CheckRequest"),
    CheckResponse: authRoot.lookupType("envoy.service.auth.v3.CheckResponse"),
    structStringField: value.fieldsArray.find((f) => f.id === 3)!.name,
  };
}

/**
 * grpc.health.v1 (grpc/grpc-proto `grpc/health/v1/health.proto`), written out here because no
 * installed package ships the file. Field numbers and enum values are the standard ones.
 */
const HEALTH_DESCRIPTOR = {
  nested: {
    grpc: {
      nested: {
        health: {
          nested: {
            v1: {
              nested: {
                HealthCheckRequest: { fields: { service: { type: "string", id: 1 } } },
                HealthCheckResponse: {
                  fields: { status: { type: "ServingStatus", id: 1 } },
                  nested: {
                    ServingStatus: { values: { UNKNOWN: 0, SERVING: 1, NOT_SERVING: 2, SERVICE_UNKNOWN: 3 } },
                  },
                },
                Health: {
                  methods: {
                    Check: { requestType: "HealthCheckRequest", responseType: "HealthCheckResponse" },
                    Watch: {
                      requestType: "HealthCheckRequest",
                      responseType: "HealthCheckResponse",
                      responseStream: true,
                    },
                  },
                },
              },
            },
          },
        },
      },
    },
  },
};

let healthRoot: protobuf.Root | undefined;

export function healthTypes(): { HealthCheckRequest: protobuf.Type; HealthCheckResponse: protobuf.Type } {
  healthRoot ??= protobuf.Root.fromJSON(HEALTH_DESCRIPTOR as protobuf.INamespace);
  return {
    HealthCheckRequest: healthRoot.lookupType("grpc.health.v1.HealthCheckRequest"),
    HealthCheckResponse: healthRoot.lookupType("grpc.health.v1.HealthCheckResponse"),
  };
}

/** grpc-js method definitions whose (de)serialisers are protobufjs types. */
export function method<Req extends object, Res extends object>(
  service: string,
  name: string,
  req: protobuf.Type,
  res: protobuf.Type,
  responseStream = false,
) {
  return {
    path: `/${service}/${name}`,
    requestStream: false,
    responseStream,
    requestSerialize: (v: Req) => Buffer.from(req.encode(req.fromObject(v)).finish()),
    requestDeserialize: (b: Buffer) => req.decode(b) as unknown as Req,
    responseSerialize: (v: Res) => Buffer.from(res.encode(res.fromObject(v)).finish()),
    responseDeserialize: (b: Buffer) =>
      res.toObject(res.decode(b), { enums: String, longs: Number, defaults: false }) as Res,
  } as const;
}
