import { Counter, Histogram, type Registry } from "prom-client";
import type { PartObserver, PartResult } from "./compose/fanout.js";

/** The aggregator's Prometheus metrics: per route and per part, so a slow or failing part shows. */
export class AggregatorMetrics implements PartObserver {
  readonly requests: Counter<"route" | "status">;
  readonly partRequests: Counter<"route" | "part" | "result">;
  readonly partFailures: Counter<"route" | "part" | "reason">;
  readonly partDuration: Histogram<"route" | "part">;
  readonly configUpdates: Counter<"result">;
  readonly staleStoreErrors: Counter<"op">;

  constructor(registry: Registry) {
    const registers = [registry];
    this.requests = new Counter({
      name: "portico_aggregator_requests_total",
      help: "Composite calls answered, by route and status",
      labelNames: ["route", "status"],
      registers,
    });
    this.partRequests = new Counter({
      name: "portico_aggregator_part_requests_total",
      help: "Part calls, by result: ok, stale (failed, last good answer served) or failed",
      labelNames: ["route", "part", "result"],
      registers,
    });
    this.partFailures = new Counter({
      name: "portico_aggregator_part_failures_total",
      help: "Part calls that failed (stale answers included), by reason",
      labelNames: ["route", "part", "reason"],
      registers,
    });
    this.partDuration = new Histogram({
      name: "portico_aggregator_part_duration_seconds",
      help: "Time from a part's call to its result",
      labelNames: ["route", "part"],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    this.configUpdates = new Counter({
      name: "portico_aggregator_config_updates_total",
      help: "Configs received, by result: accepted or rejected",
      labelNames: ["result"],
      registers,
    });
    this.staleStoreErrors = new Counter({
      name: "portico_aggregator_stale_store_errors_total",
      help: "Stale-store (Redis) calls that failed or timed out",
      labelNames: ["op"],
      registers,
    });
  }

  part(route: string, r: PartResult): void {
    this.partRequests.inc({ route, part: r.key, result: r.state });
    if (r.state !== "ok") this.partFailures.inc({ route, part: r.key, reason: r.reason });
    // A part that was never called (a missing header) has no latency to report.
    if (!(r.state === "failed" && r.reason === "missing_header"))
      this.partDuration.observe({ route, part: r.key }, r.ms / 1000);
  }
}
