import { Counter, Gauge, Histogram, Registry } from "prom-client";
import { REFUSAL_REASONS } from "./authorize.js";

/** xDS metrics. Labels are the short type name and the protocol, so cardinality stays fixed. */
export class XdsMetrics {
  readonly responses: Counter<"type" | "protocol">;
  readonly responseBytes: Counter<"type" | "protocol">;
  readonly acks: Counter<"type">;
  readonly nacks: Counter<"type">;
  readonly streams: Gauge<"protocol">;
  readonly nodes: Gauge;
  readonly snapshotBuild: Histogram;
  readonly staleNonces: Counter<"protocol">;
  readonly refusedStreams: Counter<"reason">;
  readonly refusalLogsDropped: Counter;

  constructor(readonly registry: Registry = new Registry()) {
    this.responses = new Counter({
      name: "portico_xds_responses_total",
      help: "xDS responses sent, by resource type and protocol",
      labelNames: ["type", "protocol"],
      registers: [registry],
    });
    this.responseBytes = new Counter({
      name: "portico_xds_response_bytes_total",
      help: "Bytes of xDS responses sent",
      labelNames: ["type", "protocol"],
      registers: [registry],
    });
    this.acks = new Counter({
      name: "portico_xds_acks_total",
      help: "Responses accepted by a node",
      labelNames: ["type"],
      registers: [registry],
    });
    this.nacks = new Counter({
      name: "portico_xds_nacks_total",
      help: "Responses refused by a node (NACK)",
      labelNames: ["type"],
      registers: [registry],
    });
    this.streams = new Gauge({
      name: "portico_xds_streams",
      help: "Open xDS streams",
      labelNames: ["protocol"],
      registers: [registry],
    });
    this.nodes = new Gauge({
      name: "portico_xds_connected_nodes",
      help: "Connected nodes",
      registers: [registry],
    });
    this.snapshotBuild = new Histogram({
      name: "portico_snapshot_build_seconds",
      help: "Time to translate and encode one gateway group's snapshot",
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    });
    this.staleNonces = new Counter({
      name: "portico_xds_stale_requests_total",
      help: "SotW requests ignored because their nonce was not the latest",
      labelNames: ["protocol"],
      registers: [registry],
    });
    this.refusedStreams = new Counter({
      name: "portico_xds_refused_streams_total",
      help: "xDS streams ended with PERMISSION_DENIED because the client's certificate does not allow what it asked for",
      labelNames: ["reason"],
      registers: [registry],
    });
    // Every reason shows from the start, at 0: an alert on its rise needs a series to rise from.
    for (const reason of REFUSAL_REASONS) this.refusedStreams.inc({ reason }, 0);
    this.refusalLogsDropped = new Counter({
      name: "portico_xds_refusal_logs_dropped_total",
      help: "Refused xDS streams not logged because the refusal log budget was spent (each is still counted)",
      registers: [registry],
    });
  }
}
