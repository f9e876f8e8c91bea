import type { LimitRule } from "../config/types.js";

/** One descriptor's limits, checked together for one request. */
export interface LimitCheck {
  /** Names the descriptor's counters (`Match.counterKey`). */
  readonly key: string;
  readonly limits: readonly LimitRule[];
  /** What this request adds; 0 asks without counting. */
  readonly hits: number;
  /** Whether a refused request still counts on the counters (upstream's behaviour). */
  readonly countRefused: boolean;
}

export interface LimitOutcome {
  readonly rule: LimitRule;
  /** This request's hits do not fit (a shadow-mode rule reports it but does not refuse). */
  readonly over: boolean;
  readonly remaining: number;
  /** Until the window resets; for a refused request, until it could pass. */
  readonly resetMs: number;
  /** Usage after this request, in requests, for near-limit metrics. */
  readonly used: number;
  /** What `used` is measured against: the limit, or a bucket's capacity. */
  readonly limit: number;
}

/** How a decision was made when the shared backend could not be asked. */
export type Degraded = "fail_open" | "fail_closed" | "local";

export interface CheckResult {
  /** Every non-shadow limit admitted the request. */
  readonly admitted: boolean;
  /** One per limit of the check, in order. */
  readonly outcomes: readonly LimitOutcome[];
  readonly degraded?: Degraded;
  /** Refused from the over-limit cache, without asking the shared backend. */
  readonly cached?: boolean;
}

/** A backend that decides: memory, or Redis in strict or local-first mode. */
export interface RateLimiter {
  readonly kind: string;
  /** One result per check, in order. Never rejects for a backend failure: that is a `degraded` result. */
  check(checks: readonly LimitCheck[]): Promise<CheckResult[]>;
  close(): Promise<void>;
}

/** What to do when Redis cannot answer. */
export type FailureMode = "fail_open" | "fail_closed" | "local";
