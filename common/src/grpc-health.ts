import * as grpc from "@grpc/grpc-js";
import protobuf from "protobufjs";

export const HEALTH_SERVICE = "grpc.health.v1.Health";

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

export type ServingStatus = "SERVING" | "NOT_SERVING";

interface HealthRequest {
  service?: string;
}
interface HealthResponse {
  status: ServingStatus | "SERVICE_UNKNOWN";
}

/** The Health service's definition, for servers and for clients (tests, probes). */
export function healthServiceDefinition(): grpc.ServiceDefinition {
  const { HealthCheckRequest, HealthCheckResponse } = healthTypes();
  return {
    Check: method<HealthRequest, HealthResponse>(
      HEALTH_SERVICE,
      "Check",
      HealthCheckRequest,
      HealthCheckResponse,
    ),
    Watch: method<HealthRequest, HealthResponse>(
      HEALTH_SERVICE,
      "Watch",
      HealthCheckRequest,
      HealthCheckResponse,
      true,
    ),
  };
}

/**
 * The standard gRPC health service shared by Portico's gRPC services: `Check` answers the status
 * of a service name (`""` is the whole server), `Watch` streams it and every change.
 */
export class HealthService {
  private readonly statuses = new Map<string, ServingStatus>();
  private readonly watchers = new Map<
    string,
    Set<grpc.ServerWritableStream<HealthRequest, HealthResponse>>
  >();

  constructor(services: readonly string[], initial: ServingStatus = "NOT_SERVING") {
    for (const s of ["", ...services]) this.statuses.set(s, initial);
  }

  /** Sets one service's status, or every service's when none is named. */
  set(status: ServingStatus, service?: string): void {
    const names = service === undefined ? [...this.statuses.keys()] : [service];
    for (const name of names) {
      if (this.statuses.get(name) === status) continue;
      this.statuses.set(name, status);
      for (const call of this.watchers.get(name) ?? []) call.write({ status });
    }
  }

  get(service = ""): ServingStatus | undefined {
    return this.statuses.get(service);
  }

  /** Ends every Watch stream, so a graceful shutdown is not held open by health watchers. */
  close(): void {
    for (const set of this.watchers.values()) for (const call of set) call.end();
    this.watchers.clear();
  }

  definition(): grpc.ServiceDefinition {
    return healthServiceDefinition();
  }

  implementation(): grpc.UntypedServiceImplementation {
    return {
      Check: (
        call: grpc.ServerUnaryCall<HealthRequest, HealthResponse>,
        callback: grpc.sendUnaryData<HealthResponse>,
      ) => {
        const status = this.statuses.get(call.request.service ?? "");
        if (status === undefined) callback({ code: grpc.status.NOT_FOUND, details: "unknown service" });
        else callback(null, { status });
      },
      Watch: (call: grpc.ServerWritableStream<HealthRequest, HealthResponse>) => {
        const service = call.request.service ?? "";
        let set = this.watchers.get(service);
        if (!set) {
          set = new Set();
          this.watchers.set(service, set);
        }
        set.add(call);
        const forget = () => set.delete(call);
        call.on("cancelled", forget);
        call.on("close", forget);
        call.write({ status: this.statuses.get(service) ?? "SERVICE_UNKNOWN" });
      },
    };
  }
}
