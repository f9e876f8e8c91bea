import { Counter, Registry } from "prom-client";
import { SeriesCounter, SeriesHistogram, type CounterSeries, type HistogramSeries } from "@portico/common";
import type { LimitRule } from "../config/types.js";

type RuleLabels = "domain" | "rule";

/** One rule's counters (or one detailed value's), resolved once: a decision adds to numbers. */
export interface RuleSeries {
  readonly total: CounterSeries;
  readonly over: CounterSeries;
  readonly near: CounterSeries;
  readonly within: CounterSeries;
  readonly shadow: CounterSeries;
  readonly cached: CounterSeries;
}

/**
 * Per-rule counters, labelled by domain and rule name: the number of series is bounded by the
 * config. Rules with `detailed_metric` add the descriptor's values to the rule label, but only
 * for the first `maxDetailedValues` values per rule; later ones share one `…other` series.
 */
export class RateLimitMetrics {
  readonly totalHits: SeriesCounter<RuleLabels>;
  readonly overLimit: SeriesCounter<RuleLabels>;
  readonly nearLimit: SeriesCounter<RuleLabels>;
  readonly withinLimit: SeriesCounter<RuleLabels>;
  readonly shadowMode: SeriesCounter<RuleLabels>;
  /** Refusals answered from the over-limit cache, without the shared backend (upstream's over_limit_with_local_cache). */
  readonly overLimitWithLocalCache: SeriesCounter<RuleLabels>;
  readonly responses: SeriesCounter<"code">;
  readonly invalidRequests: Counter;
  /** Refusals that the service-wide shadow mode turned into OK (upstream's global_shadow_mode). */
  readonly globalShadowMode: Counter;
  readonly degradedDecisions: SeriesCounter<"mode">;
  readonly decisionSeconds: SeriesHistogram<string>;
  /** Configs from the control plane, accepted or refused (NACKed). */
  readonly configUpdates: Counter<"result">;
  /** Calls refused before any counting, because the caller is no gateway (with TLS on). */
  readonly callsRefused: Counter<"reason">;
  private readonly detailed = new WeakMap<LimitRule, Set<string>>();
  /** Per rule: its series, and its detailed values' series (bounded by `maxDetailedValues`). */
  private readonly ruleSeries = new WeakMap<
    LimitRule,
    { plain?: RuleSeries; byValue: Map<string, RuleSeries> }
  >();
  /** The series every answer counts on. */
  readonly hot: {
    readonly ok: CounterSeries;
    readonly overLimit: CounterSeries;
    readonly seconds: HistogramSeries;
    readonly degraded: Readonly<Record<"fail_open" | "fail_closed" | "local", CounterSeries>>;
  };

  constructor(
    readonly registry: Registry = new Registry(),
    private readonly maxDetailedValues = 100,
  ) {
    const counter = <L extends string>(name: string, help: string, labelNames: L[]) =>
      new SeriesCounter<L>({ name, help, labelNames, registers: [registry] });
    this.totalHits = counter("portico_ratelimit_total_hits_total", "Hits checked against a rule", [
      "domain",
      "rule",
    ]);
    this.overLimit = counter("portico_ratelimit_over_limit_total", "Hits over a rule's limit", [
      "domain",
      "rule",
    ]);
    this.nearLimit = counter(
      "portico_ratelimit_near_limit_total",
      "Hits admitted above the near-limit ratio of a rule",
      ["domain", "rule"],
    );
    this.withinLimit = counter("portico_ratelimit_within_limit_total", "Hits within a rule's limit", [
      "domain",
      "rule",
    ]);
    this.shadowMode = counter(
      "portico_ratelimit_shadow_mode_total",
      "Hits over a shadow-mode rule's limit, allowed",
      ["domain", "rule"],
    );
    this.overLimitWithLocalCache = counter(
      "portico_ratelimit_over_limit_with_local_cache_total",
      "Hits refused from the over-limit cache, without asking the shared backend",
      ["domain", "rule"],
    );
    this.responses = counter("portico_ratelimit_responses_total", "ShouldRateLimit answers by overall code", [
      "code",
    ]);
    this.invalidRequests = new Counter({
      name: "portico_ratelimit_invalid_requests_total",
      help: "ShouldRateLimit calls refused as INVALID_ARGUMENT",
      registers: [registry],
    });
    this.globalShadowMode = new Counter({
      name: "portico_ratelimit_global_shadow_mode_total",
      help: "Answers that would have been OVER_LIMIT, turned into OK by --shadow-mode",
      registers: [registry],
    });
    this.degradedDecisions = counter(
      "portico_ratelimit_degraded_decisions_total",
      "Descriptors decided without the shared backend, by failure mode",
      ["mode"],
    );
    this.decisionSeconds = new SeriesHistogram({
      name: "portico_ratelimit_decision_seconds",
      help: "Time to answer ShouldRateLimit",
      buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05],
      registers: [registry],
    });
    this.configUpdates = counter(
      "portico_ratelimit_config_updates_total",
      "Configs received over xDS, by result (accepted, rejected)",
      ["result"],
    );
    this.callsRefused = counter(
      "portico_ratelimit_calls_refused_total",
      "gRPC calls refused for the caller's identity: no-certificate or not-a-gateway",
      ["reason"],
    );
    this.hot = {
      ok: this.responses.for({ code: "OK" }),
      overLimit: this.responses.for({ code: "OVER_LIMIT" }),
      seconds: this.decisionSeconds.for({}),
      degraded: {
        fail_open: this.degradedDecisions.for({ mode: "fail_open" }),
        fail_closed: this.degradedDecisions.for({ mode: "fail_closed" }),
        local: this.degradedDecisions.for({ mode: "local" }),
      },
    };
  }

  /** The counters of a rule (with a detailed value, of that value), made once. */
  forRule(rule: LimitRule, detailedValue?: string): RuleSeries {
    let held = this.ruleSeries.get(rule);
    if (!held) this.ruleSeries.set(rule, (held = { byValue: new Map() }));
    if (detailedValue === undefined) return (held.plain ??= this.series(this.labels(rule)));
    let s = held.byValue.get(detailedValue);
    if (!s) {
      const labels = this.labels(rule, detailedValue);
      // Values past the cap share the `…other` series; only the capped values are kept here.
      s = this.series(labels);
      if (!labels.rule.endsWith("|…other")) held.byValue.set(detailedValue, s);
    }
    return s;
  }

  private series(labels: { domain: string; rule: string }): RuleSeries {
    return {
      total: this.totalHits.for(labels),
      over: this.overLimit.for(labels),
      near: this.nearLimit.for(labels),
      within: this.withinLimit.for(labels),
      shadow: this.shadowMode.for(labels),
      cached: this.overLimitWithLocalCache.for(labels),
    };
  }

  labels(rule: LimitRule, detailedValue?: string): { domain: string; rule: string } {
    if (detailedValue === undefined) return { domain: rule.domain, rule: rule.metricName };
    let seen = this.detailed.get(rule);
    if (!seen) this.detailed.set(rule, (seen = new Set()));
    if (!seen.has(detailedValue)) {
      if (seen.size >= this.maxDetailedValues)
        return { domain: rule.domain, rule: `${rule.metricName}|…other` };
      seen.add(detailedValue);
    }
    return { domain: rule.domain, rule: `${rule.metricName}|${detailedValue}` };
  }
}
