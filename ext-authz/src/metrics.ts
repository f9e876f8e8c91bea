import { Counter, Gauge, Registry } from "prom-client";
import { SeriesCounter, SeriesHistogram, type CounterSeries, type HistogramSeries } from "@portico/common";

export type CacheName = "jwt" | "introspection";
export type CheckResult = "allow" | "deny" | "error";

/**
 * ext-authz's Prometheus metrics, on a registry of its own so several instances (tests, one
 * process serving twice) do not collide on prom-client's global registry.
 */
export class AuthzMetrics {
  readonly registry = new Registry();

  /** Every Check answer, by outcome and body code (`ok`, `invalid_token`, `auth_unavailable`…). */
  readonly decisions = new SeriesCounter({
    name: "portico_ext_authz_decisions_total",
    help: "Check answers by result (allow, deny, error) and code.",
    labelNames: ["result", "code"] as const,
    registers: [this.registry],
  });

  /** Handler time, from the decoded request to the encoded answer; Envoy waits this plus the RPC. */
  readonly checkDuration = new SeriesHistogram({
    name: "portico_ext_authz_check_duration_seconds",
    help: "Time spent answering one Check, by result.",
    labelNames: ["result"] as const,
    buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25],
    registers: [this.registry],
  });

  readonly cacheLookups = new SeriesCounter({
    name: "portico_ext_authz_cache_lookups_total",
    help: "Lookups in the verified-token (jwt) and introspection caches, by hit or miss.",
    labelNames: ["cache", "result"] as const,
    registers: [this.registry],
  });

  readonly cacheEvictions = new Counter({
    name: "portico_ext_authz_cache_evictions_total",
    help: "Entries dropped, least recently used first, to keep a cache at its size (per cache).",
    labelNames: ["cache"] as const,
    registers: [this.registry],
  });

  /** Refusal log lines left out to stay within the log budget (each logged line also says how many). */
  readonly logsDropped = new Counter({
    name: "portico_ext_authz_log_lines_dropped_total",
    help: "Refusal log lines not written because more than the budget arrived in one second.",
    registers: [this.registry],
  });

  readonly jwksFetches = new Counter({
    name: "portico_ext_authz_jwks_fetches_total",
    help: "JWKS fetches by provider, trigger (startup, expiry, unknown_kid, retry) and result.",
    labelNames: ["provider", "trigger", "result"] as const,
    registers: [this.registry],
  });

  readonly introspections = new Counter({
    name: "portico_ext_authz_introspection_requests_total",
    help: "RFC 7662 introspection calls by provider and result (active, inactive, error).",
    labelNames: ["provider", "result"] as const,
    registers: [this.registry],
  });

  readonly credentialFailures = new SeriesCounter({
    name: "portico_ext_authz_credential_failures_total",
    help: "Refused credentials by provider and reason (never told to the caller).",
    labelNames: ["provider", "reason"] as const,
    registers: [this.registry],
  });

  /** Calls refused before Check ran, because the caller is no gateway (with TLS on). */
  readonly callsRefused = new Counter({
    name: "portico_ext_authz_calls_refused_total",
    help: "gRPC calls refused for the caller's identity: no-certificate or not-a-gateway.",
    labelNames: ["reason"] as const,
    registers: [this.registry],
  });

  private readonly hits: Record<CacheName, number> = { jwt: 0, introspection: 0 };
  private readonly misses: Record<CacheName, number> = { jwt: 0, introspection: 0 };

  /*
   * The series the hot path counts on, resolved once: a check adds to numbers, and prom-client
   * is handed the sums when scraped.
   */
  private readonly decisionSeries = new Map<string, CounterSeries>();
  private readonly durationSeries: Record<CheckResult, HistogramSeries> = {
    allow: this.checkDuration.for({ result: "allow" }),
    deny: this.checkDuration.for({ result: "deny" }),
    error: this.checkDuration.for({ result: "error" }),
  };
  private readonly lookupSeries: Record<CacheName, { hit: CounterSeries; miss: CounterSeries }> = {
    jwt: {
      hit: this.cacheLookups.for({ cache: "jwt", result: "hit" }),
      miss: this.cacheLookups.for({ cache: "jwt", result: "miss" }),
    },
    introspection: {
      hit: this.cacheLookups.for({ cache: "introspection", result: "hit" }),
      miss: this.cacheLookups.for({ cache: "introspection", result: "miss" }),
    },
  };
  /** Per provider, then reason; both come from the policy and a fixed list, so the map stays small. */
  private readonly failureSeries = new Map<string, Map<string, CounterSeries>>();

  constructor() {
    const { hits, misses } = this;
    new Gauge({
      name: "portico_ext_authz_cache_hit_ratio",
      help: "Hits over lookups since start, per cache (absent before the first lookup).",
      labelNames: ["cache"] as const,
      registers: [this.registry],
      collect() {
        for (const cache of ["jwt", "introspection"] as const) {
          const total = hits[cache] + misses[cache];
          // No sample before the first lookup: 0 would read as "always missing".
          if (total > 0) this.set({ cache }, hits[cache] / total);
        }
      },
    });
  }

  cacheLookup(cache: CacheName, hit: boolean): void {
    if (hit) this.hits[cache]++;
    else this.misses[cache]++;
    const series = this.lookupSeries[cache];
    (hit ? series.hit : series.miss).inc();
  }

  /** Counts one Check answer and its handler time. */
  checked(result: CheckResult, code: string, seconds: number): void {
    let series = this.decisionSeries.get(code);
    if (series === undefined || series.labels.result !== result) {
      series = this.decisions.for({ result, code });
      // Each code has one result, but a map keyed by code alone must not assume it.
      if (this.decisionSeries.get(code) === undefined) this.decisionSeries.set(code, series);
    }
    series.inc();
    this.durationSeries[result].observe(seconds);
  }

  credentialFailure(provider: string, reason: string): void {
    let byReason = this.failureSeries.get(provider);
    if (!byReason) this.failureSeries.set(provider, (byReason = new Map()));
    let series = byReason.get(reason);
    if (!series) byReason.set(reason, (series = this.credentialFailures.for({ provider, reason })));
    series.inc();
  }

  hitRatio(cache: CacheName): number {
    const total = this.hits[cache] + this.misses[cache];
    return total === 0 ? Number.NaN : this.hits[cache] / total;
  }
}
