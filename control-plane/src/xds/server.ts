import * as grpc from "@grpc/grpc-js";
import { SnapshotCache } from "./cache.js";
import {
  DEFAULT_REFUSAL_LOGS_PER_SECOND,
  LogBudget,
  serviceDefinition,
  type DeltaDiscoveryRequest,
  type DiscoveryRequest,
  type XdsServiceSpec,
  type Logger,
} from "@portico/common";
import { DeltaStream } from "./delta.js";
import { FleetState } from "./fleet.js";
import { XdsMetrics } from "./metrics.js";
import { SendBudget } from "./send-budget.js";
import { SotwStream } from "./sotw.js";
import type { StreamDeps, XdsStream } from "./stream.js";
import { TypeUrl } from "./types.js";

export const XDS_SERVICES: XdsServiceSpec[] = [
  {
    service: "envoy.service.discovery.v3.AggregatedDiscoveryService",
    sotwMethod: "StreamAggregatedResources",
    deltaMethod: "DeltaAggregatedResources",
  },
  {
    service: "envoy.service.listener.v3.ListenerDiscoveryService",
    sotwMethod: "StreamListeners",
    deltaMethod: "DeltaListeners",
    typeUrl: TypeUrl.Listener,
  },
  {
    service: "envoy.service.route.v3.RouteDiscoveryService",
    sotwMethod: "StreamRoutes",
    deltaMethod: "DeltaRoutes",
    typeUrl: TypeUrl.Route,
  },
  {
    service: "envoy.service.cluster.v3.ClusterDiscoveryService",
    sotwMethod: "StreamClusters",
    deltaMethod: "DeltaClusters",
    typeUrl: TypeUrl.Cluster,
  },
  {
    service: "envoy.service.endpoint.v3.EndpointDiscoveryService",
    sotwMethod: "StreamEndpoints",
    deltaMethod: "DeltaEndpoints",
    typeUrl: TypeUrl.Endpoint,
  },
  {
    service: "envoy.service.secret.v3.SecretDiscoveryService",
    sotwMethod: "StreamSecrets",
    deltaMethod: "DeltaSecrets",
    typeUrl: TypeUrl.Secret,
  },
];

export interface XdsServerOptions {
  log: Logger;
  cache?: SnapshotCache;
  fleet?: FleetState;
  metrics?: XdsMetrics;
  /** Largest response; a 10,000-route config is a few MiB, so the default leaves ample room. */
  maxSendBytes?: number;
  keepaliveMs?: number;
  /** Response bytes in flight across all streams before further responses wait; default 8 MiB. */
  maxBytesInFlight?: number;
  credentials?: grpc.ServerCredentials;
  /**
   * Clients present certificates (`credentials` require them): each stream is served only what
   * the Portico identity its certificate names may read. Without it nothing is authenticated.
   */
  authorizeClients?: boolean;
  /** Refused streams logged per second at most (each is counted regardless). */
  refusalLogsPerSecond?: number;
}

/**
 * The xDS gRPC server: ADS (SotW and delta) and the per-type services, all reading one
 * SnapshotCache and reporting into one FleetState.
 */
export class XdsServer {
  readonly cache: SnapshotCache;
  readonly fleet: FleetState;
  readonly metrics: XdsMetrics;
  private readonly server: grpc.Server;
  private readonly streams = new Set<XdsStream<any>>();
  private readonly deps: StreamDeps;
  private port?: number;

  constructor(private readonly opts: XdsServerOptions) {
    this.cache = opts.cache ?? new SnapshotCache();
    this.fleet = opts.fleet ?? new FleetState();
    this.metrics = opts.metrics ?? new XdsMetrics();
    this.deps = {
      budget: new SendBudget(opts.maxBytesInFlight),
      cache: this.cache,
      fleet: this.fleet,
      log: opts.log,
      metrics: this.metrics,
      ...(opts.authorizeClients
        ? {
            access: {
              refusalLogs: new LogBudget(
                opts.refusalLogsPerSecond ?? DEFAULT_REFUSAL_LOGS_PER_SECOND,
                Date.now,
                () => this.metrics.refusalLogsDropped.inc(),
              ),
            },
          }
        : {}),
    };
    const keepalive = opts.keepaliveMs ?? 30_000;
    this.server = new grpc.Server({
      "grpc.max_send_message_length": opts.maxSendBytes ?? 256 * 1024 * 1024,
      "grpc.max_receive_message_length": 16 * 1024 * 1024,
      "grpc.keepalive_time_ms": keepalive,
      "grpc.keepalive_timeout_ms": 10_000,
      "grpc.keepalive_permit_without_calls": 1,
      "grpc.http2.max_ping_strikes": 0,
      "grpc.max_concurrent_streams": 1_000_000,
      // Channelz keeps per-connection bookkeeping for every Envoy of the fleet and counts every
      // message; the fleet view and Prometheus metrics say what operators need.
      "grpc.enable_channelz": 0,
    });
    for (const spec of XDS_SERVICES) {
      this.server.addService(serviceDefinition(spec), {
        [spec.sotwMethod]: (call: grpc.ServerDuplexStream<DiscoveryRequest, Buffer>) =>
          this.track(new SotwStream(call, this.deps, "sotw", spec.typeUrl)),
        [spec.deltaMethod]: (call: grpc.ServerDuplexStream<DeltaDiscoveryRequest, Buffer>) =>
          this.track(new DeltaStream(call, this.deps, "delta", spec.typeUrl)),
      });
    }
  }

  /**
   * Serves another gRPC service on the xDS port, before `listen`: what Envoys send over the
   * connection they already have to the control plane (their access logs), under the identity
   * their certificate names.
   */
  addService(definition: grpc.ServiceDefinition, implementation: grpc.UntypedServiceImplementation): void {
    this.server.addService(definition, implementation);
  }

  private track(stream: XdsStream<any>): void {
    this.streams.add(stream);
    stream.start(() => this.streams.delete(stream));
  }

  async listen(host: string, port: number): Promise<number> {
    this.port = await new Promise<number>((resolve, reject) =>
      this.server.bindAsync(
        `${host}:${port}`,
        this.opts.credentials ?? grpc.ServerCredentials.createInsecure(),
        (err, bound) => (err ? reject(err) : resolve(bound)),
      ),
    );
    this.opts.log.info({ host, port: this.port }, "xDS server listening");
    return this.port;
  }

  openStreams(): number {
    return this.streams.size;
  }

  /**
   * Ends every stream (nodes reconnect, to another replica if there is one, and keep serving
   * their last config meanwhile), then stops accepting; forces after `graceMs`.
   */
  async close(graceMs = 5_000): Promise<void> {
    for (const s of [...this.streams]) s.end();
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.server.forceShutdown();
        resolve();
      }, graceMs);
      this.server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
}
