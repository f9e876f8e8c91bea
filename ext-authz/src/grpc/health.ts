import * as grpc from "@grpc/grpc-js";
import { HEALTH_SERVICE, healthTypes, method } from "./protos.js";

export type ServingStatus = "SERVING" | "NOT_SERVING";

interface HealthRequest {
  service?: string;
}
interface HealthResponse {
  status: ServingStatus | "SERVICE_UNKNOWN";
}

/**
 * The standard gRPC health service (grpc/grpc-proto health.proto): `Check` answers the status of
 * a service name (`""` is the whole server), `Watch` streams it and every change.
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
        call.on("cancelled", () => set.delete(call));
        call.write({ status: this.statuses.get(service) ?? "SERVICE_UNKNOWN" });
      },
    };
  }
}
