import { Counter, Histogram, Registry } from "prom-client";
import type { LimitRule } from "../config/types.js";

type RuleLabels = "domain" | "rule";

/**
 * Per-rule counters, labelled by domain and rule name: the number of series is bounded by the
 * config. Rules with `detailed_metric` add the descriptor's values to the rule label, but only
 * for the first `maxDetailedValues` values per rule; later ones share one `…other` series.
 */
export class RateLimitMetrics {
  readonly totalHits: Counter<RuleLabels>;
  readonly overLimit: Counter<RuleLabels>;
  readonly nearLimit: Counter<RuleLabels>;
  readonly withinLimit: Counter<RuleLabels>;
  readonly shadowMode: Counter<RuleLabels>;
  readonly responses: Counter<"code">;
  readonly invalidRequests: Counter;
  /** Refusals that the service-wide shadow mode turned into OK (upstream's global_shadow_mode). */
  readonly globalShadowMode: Counter;
  readonly degradedDecisions: Counter<"mode">;
  readonly decisionSeconds: Histogram;
  /** Configs from the control plane, accepted or refused (NACKed). */
  readonly configUpdates: Counter<"result">;
  /** Calls refused before any counting, because the caller is no gateway (with TLS on). */
  readonly callsRefused: Counter<"reason">;
  private readonly detailed = new WeakMap<LimitRule, Set<string>>();

  constructor(
    readonly registry: Registry = new Registry(),
    private readonly maxDetailedValues = 100,
  ) {
    const counter = <L extends string>(name: string, help: string, labelNames: L[]) =>
      new Counter<L>({ name, help, labelNames, registers: [registry] });
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
    this.decisionSeconds = new Histogram({
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
