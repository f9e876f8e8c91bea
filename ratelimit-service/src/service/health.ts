/**
 * The standard gRPC health service (grpc.health.v1.Health: Check and Watch). Its two messages are
 * declared here because no health.proto ships with the project's dependencies.
 */
import * as grpc from "@grpc/grpc-js";
import protobuf from "protobufjs";

export type ServingStatus = "UNKNOWN" | "SERVING" | "NOT_SERVING" | "SERVICE_UNKNOWN";

const root = protobuf.Root.fromJSON({
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
});
const Req = root.lookupType("grpc.health.v1.HealthCheckRequest");
const Res = root.lookupType("grpc.health.v1.HealthCheckResponse");

interface HealthRequest {
  service: string;
}
interface HealthResponse {
  status: ServingStatus;
}

export const HEALTH_SERVICE = "grpc.health.v1.Health";

export function healthServiceDefinition(): grpc.ServiceDefinition {
  const codec = {
    requestSerialize: (m: HealthRequest) => Buffer.from(Req.encode(Req.fromObject(m)).finish()),
    requestDeserialize: (b: Buffer) => Req.toObject(Req.decode(b), { defaults: true }) as HealthRequest,
    responseSerialize: (m: HealthResponse) => Buffer.from(Res.encode(Res.fromObject(m)).finish()),
    responseDeserialize: (b: Buffer) =>
      Res.toObject(Res.decode(b), { enums: String, defaults: true }) as HealthResponse,
  };
  return {
    Check: { path: `/${HEALTH_SERVICE}/Check`, requestStream: false, responseStream: false, ...codec },
    Watch: { path: `/${HEALTH_SERVICE}/Watch`, requestStream: false, responseStream: true, ...codec },
  };
}

/** Serving status per service name; "" is the server as a whole. */
export class HealthService {
  private readonly statuses = new Map<string, ServingStatus>();
  private readonly watchers = new Set<{
    service: string;
    call: grpc.ServerWritableStream<HealthRequest, HealthResponse>;
  }>();

  set(service: string, status: ServingStatus): void {
    if (this.statuses.get(service) === status) return;
    this.statuses.set(service, status);
    for (const w of this.watchers) if (w.service === service) w.call.write({ status });
  }

  get(service: string): ServingStatus {
    return this.statuses.get(service) ?? "SERVICE_UNKNOWN";
  }

  /** Ends the Watch streams (on shutdown), after telling them NOT_SERVING. */
  shutdown(): void {
    for (const s of this.statuses.keys()) this.set(s, "NOT_SERVING");
    for (const w of this.watchers) w.call.end();
    this.watchers.clear();
  }

  handlers(): grpc.UntypedServiceImplementation {
    return {
      Check: (
        call: grpc.ServerUnaryCall<HealthRequest, HealthResponse>,
        cb: grpc.sendUnaryData<HealthResponse>,
      ) => {
        const status = this.statuses.get(call.request.service);
        if (!status)
          cb({ code: grpc.status.NOT_FOUND, details: `unknown service '${call.request.service}'` });
        else cb(null, { status });
      },
      Watch: (call: grpc.ServerWritableStream<HealthRequest, HealthResponse>) => {
        const w = { service: call.request.service, call };
        this.watchers.add(w);
        call.write({ status: this.get(w.service) });
        call.on("cancelled", () => this.watchers.delete(w));
        call.on("close", () => this.watchers.delete(w));
      },
    };
  }
}
