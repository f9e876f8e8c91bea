/**
 * From each descriptor's status to the request's answer, as envoyproxy/ratelimit decides it:
 * the overall code (with quota mode), what Retry-After says, and which descriptor the RateLimit-*
 * headers describe. Pure functions of the statuses.
 */
import type { Code, DescriptorStatus } from "./codec.js";

/** One descriptor's status and how it counts towards the overall code. */
export interface Judged {
  readonly status: DescriptorStatus;
  /** Its rule has `quota_mode`, and a limit was checked (not unlimited, not replaced). */
  readonly quotaMode: boolean;
}

/** Header names for the limit, what remains and the reset (upstream's LIMIT_*_HEADER). */
export interface LimitHeaderNames {
  readonly limit: string;
  readonly remaining: string;
  readonly reset: string;
}

export const DEFAULT_LIMIT_HEADERS: LimitHeaderNames = {
  limit: "RateLimit-Limit",
  remaining: "RateLimit-Remaining",
  reset: "RateLimit-Reset",
};

const over = (j: Judged) => j.status.code === "OVER_LIMIT";

/**
 * OVER_LIMIT when a descriptor that is not in quota mode is over its limit, or when the request
 * has quota-mode descriptors and every one of them is over; OK otherwise.
 */
export function overallCode(judged: readonly Judged[]): Code {
  return judged.some((j) => !j.quotaMode && over(j)) || allQuotaOver(judged) ? "OVER_LIMIT" : "OK";
}

function allQuotaOver(judged: readonly Judged[]): boolean {
  let any = false;
  for (const j of judged) {
    if (!j.quotaMode) continue;
    if (!over(j)) return false;
    any = true;
  }
  return any;
}

/**
 * Seconds until a refused request could pass: the latest reset among the descriptors that refuse
 * it (a quota-mode descriptor refuses only when every quota-mode descriptor is over).
 */
export function retryAfterSeconds(judged: readonly Judged[]): number {
  const quotaRefuses = allQuotaOver(judged);
  let seconds = 0;
  for (const j of judged) {
    if (over(j) && (!j.quotaMode || quotaRefuses)) {
      seconds = Math.max(seconds, j.status.duration_until_reset?.seconds ?? 0);
    }
  }
  return Math.max(1, seconds);
}

/**
 * The descriptor the RateLimit-* headers describe, chosen as upstream chooses it: the last one
 * that is over its limit outside quota mode, otherwise the first with the least remaining.
 */
export function headlineStatus(judged: readonly Judged[]): DescriptorStatus | undefined {
  let pick: DescriptorStatus | undefined;
  let least = Infinity;
  for (const j of judged) {
    if (j.status.current_limit && j.status.limit_remaining < least) {
      pick = j.status;
      least = j.status.limit_remaining;
    }
    if (over(j) && !j.quotaMode) {
      pick = j.status;
      least = 0;
    }
  }
  return pick;
}

/** The RateLimit-* headers for the chosen descriptor. */
export function limitHeaders(
  status: DescriptorStatus,
  names: LimitHeaderNames,
): { key: string; value: string }[] {
  return [
    { key: names.limit, value: String(status.current_limit?.requests_per_unit ?? 0) },
    { key: names.remaining, value: String(status.limit_remaining) },
    { key: names.reset, value: String(status.duration_until_reset?.seconds ?? 0) },
  ];
}
