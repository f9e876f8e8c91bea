import type { QuotaDeny } from "../model/usage-quota.js";

/** Requests served to one subject on one counter since the last batch. */
export interface UsageIncrement {
  /** `<policy>/<counter id>/<period index>/<subject>`: a new period is a new count. */
  readonly key: string;
  readonly n: number;
  /** When the period ends (ms since the epoch): the count is forgotten after it. */
  readonly expireAt: number;
}

/**
 * Where usage is counted and denies are kept: in Redis when the control plane runs on the Redis
 * store (every replica adds to the same counts and hears of every deny), in memory otherwise.
 */
export interface UsageLedger {
  readonly kind: "memory" | "redis";
  /** Adds each increment to its count; the counts after, in the increments' order. */
  add(increments: readonly UsageIncrement[]): Promise<number[]>;
  /** Records denies; every replica's watchers hear of them. */
  deny(denies: readonly QuotaDeny[]): Promise<void>;
  /** The denies still in force at `now`. */
  denies(now: number): Promise<QuotaDeny[]>;
  /** Called when denies were recorded (by this replica or another). */
  watch(listener: () => void): () => void;
  close(): Promise<void>;
}

/** A deny's identity in a ledger: one per subject and quota, whatever its period. */
export function denyMember(d: QuotaDeny): string {
  return JSON.stringify([d.policy, d.subject, d.limit, d.unit]);
}

export function denyFromMember(member: string, until: number): QuotaDeny | undefined {
  try {
    const [policy, subject, limit, unit] = JSON.parse(member) as unknown[];
    if (typeof policy !== "string" || typeof subject !== "string" || typeof limit !== "number")
      return undefined;
    if (unit !== "day" && unit !== "week" && unit !== "month" && unit !== "year") return undefined;
    return { policy, subject, until, limit, unit };
  } catch {
    return undefined;
  }
}
