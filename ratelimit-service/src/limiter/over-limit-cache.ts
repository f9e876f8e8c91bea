/**
 * envoyproxy/ratelimit's local cache of keys over their limit (its LOCAL_CACHE_SIZE_IN_BYTES):
 * once the shared backend has refused a descriptor, the descriptor's next requests are refused
 * from memory, without a round trip to Redis, until the refusal can no longer hold: the end of the
 * window of a count over its limit, or the moment a token bucket could pass again. A flood from a
 * caller who is over its limit then costs no Redis call at all.
 *
 * A refusal is remembered only when the answer from memory is exactly the one the backend would
 * give (`holdsUntil`): the same decision, and the same remaining counts and reset times. The one
 * difference, as with upstream's cache: a count already over its limit stops growing with the
 * refused hits, which changes no decision. Degraded answers (Redis unreachable) are never
 * remembered; nor is a request that asks without hits.
 */
import { BoundedMap, DEFAULT_MAX_KEYS } from "@portico/common";
import type { LimitRule } from "../config/types.js";
import type { CheckResult, LimitCheck, LimitOutcome } from "./types.js";

interface Refusal {
  readonly limits: readonly LimitRule[];
  readonly outcomes: readonly LimitOutcome[];
  /** When each outcome's `resetMs` ends, in the clock's time. */
  readonly resetAt: readonly number[];
  /** Every outcome holds until then (see `holdsUntil`). */
  readonly until: number;
  /** It holds for requests of this many hits. */
  readonly hits: number;
}

/** The refusals a backend remembers: `recall` before asking the shared store, `remember` after. */
export class OverLimitCache {
  private readonly refusals: BoundedMap<string, Refusal>;

  /** `maxKeys`: descriptors remembered at most, least recently used forgotten first. */
  constructor(maxKeys = DEFAULT_MAX_KEYS) {
    this.refusals = new BoundedMap(maxKeys);
  }

  /** Descriptors remembered as over their limit (tests). */
  get size(): number {
    return this.refusals.size;
  }

  /** The remembered refusal of this check at `now`, if one still holds. */
  recall(c: LimitCheck, now: number): CheckResult | undefined {
    if (c.hits <= 0) return undefined;
    const r = this.refusals.get(c.key);
    if (!r) return undefined;
    if (r.until <= now) {
      this.refusals.delete(c.key);
      return undefined;
    }
    if (c.hits !== r.hits || !sameLimits(c.limits, r.limits)) return undefined;
    const outcomes = r.outcomes.map((o, i) => ({ ...o, resetMs: Math.max(0, r.resetAt[i]! - now) }));
    return { admitted: false, outcomes, cached: true };
  }

  /** Remembers the backend's answer to a check made at `now`, when it is a refusal that will hold. */
  remember(c: LimitCheck, res: CheckResult, now: number): void {
    if (res.admitted || res.degraded || res.cached || c.hits <= 0) return;
    const until = holdsUntil(c, res, now);
    if (until === undefined || !(until > now) || !Number.isFinite(until)) return;
    this.refusals.set(c.key, {
      limits: [...c.limits],
      outcomes: res.outcomes,
      resetAt: res.outcomes.map((o) => now + o.resetMs),
      until,
      hits: c.hits,
    });
  }
}

/**
 * Until when every outcome of this refusal stays exactly as it is, as long as refused requests
 * of the same size keep coming: undefined when some outcome would change sooner than its reset.
 *
 * - A fixed-window or calendar count keeps its count until its window ends, provided the refused
 *   hits are not counted, or it is over its limit already (more hits change nothing there).
 * - A token bucket over its limit passes again at a set time, since a refused request takes no
 *   token (unless the request is larger than the bucket: then it never passes, and the time it
 *   reports moves along); one with room fills up as time passes, so it cannot be remembered.
 * - A sliding window's estimate changes as the window slides: never remembered.
 */
function holdsUntil(c: LimitCheck, res: CheckResult, now: number): number | undefined {
  let until = Infinity;
  for (const o of res.outcomes) {
    const rule = o.rule;
    if (rule.calendar || rule.algorithm === "fixed_window") {
      if (c.countRefused && !o.over) return undefined;
    } else if (rule.algorithm === "token_bucket") {
      if (!o.over || c.hits > rule.burst) return undefined;
    } else return undefined;
    until = Math.min(until, now + o.resetMs);
  }
  return until;
}

function sameLimits(a: readonly LimitRule[], b: readonly LimitRule[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
