import { Counter, Gauge, Histogram, Registry } from "prom-client";

export class RedisBackendMetrics {
  readonly up: Gauge;
  readonly stateChanges: Counter<"state">;
  readonly instances: Gauge;
  readonly syncs: Counter<"result">;
  readonly syncKeys: Counter;
  readonly syncSeconds: Histogram;
  readonly shareWaits: Counter<"result">;
  readonly evictedKeys: Counter<"store">;

  constructor(readonly registry: Registry = new Registry()) {
    const registers = [registry];
    this.up = new Gauge({
      name: "portico_ratelimit_redis_up",
      help: "1 while Redis answers, 0 while decisions fall back",
      registers,
    });
    this.stateChanges = new Counter({
      name: "portico_ratelimit_redis_state_changes_total",
      help: "Redis became reachable (up) or unreachable (down)",
      labelNames: ["state"],
      registers,
    });
    this.instances = new Gauge({
      name: "portico_ratelimit_instances",
      help: "Live rate-limit instances sharing this Redis (the N of each instance's share)",
      registers,
    });
    this.syncs = new Counter({
      name: "portico_ratelimit_sync_batches_total",
      help: "Local-first sync batches sent to Redis, by result",
      labelNames: ["result"],
      registers,
    });
    this.syncKeys = new Counter({
      name: "portico_ratelimit_sync_keys_total",
      help: "Counters carried by sync batches",
      registers,
    });
    this.syncSeconds = new Histogram({
      name: "portico_ratelimit_sync_seconds",
      help: "Duration of a sync batch",
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25],
      registers,
    });
    this.shareWaits = new Counter({
      name: "portico_ratelimit_share_waits_total",
      help: "Local-first decisions that used up the instance's share and waited for a sync",
      labelNames: ["result"],
      registers,
    });
    this.evictedKeys = new Counter({
      name: "portico_ratelimit_evicted_keys_total",
      help: "Per-key state forgotten, least recently used first, to stay under maxKeys (by store)",
      labelNames: ["store"],
      registers,
    });
  }
}
