import type { FieldProblem } from "./errors.js";
import type { Config, RateLimit } from "./schema.js";

/**
 * The consumer value rate-limit keys carry for callers without credentials (ext-authz's, and the
 * default of every descriptor that reads the consumer), so no consumer may take the name.
 */
export const ANONYMOUS = "anonymous";

/** Periods that are calendar quotas (reset at midnight, on Monday, on the 1st) with a fixed window. */
export const CALENDAR_PERIODS: ReadonlySet<string> = new Set(["day", "week", "month", "year"]);

/**
 * Which counter a limit uses within one key, as the rate-limit service names it: two limits with
 * the same identity on the same key would share a counter, so only the smaller one can refuse.
 */
export function counterIdentity(l: RateLimit, timeZone: string): string {
  if (l.per !== undefined && l.algorithm === "fixed_window" && CALENDAR_PERIODS.has(l.per)) {
    return `calendar:${l.per}:${timeZone}`;
  }
  return `${l.algorithm}:${windowSeconds(l)}`;
}

const PER_SECONDS: Record<string, number> = {
  second: 1,
  minute: 60,
  hour: 3_600,
  day: 86_400,
  week: 604_800,
  // The service's epoch-aligned month and year (sliding windows and buckets only).
  month: 30 * 86_400,
  year: 365 * 86_400,
};
const SUFFIX_SECONDS: Record<string, number> = { s: 1, m: 60, h: 3_600, d: 86_400, w: 604_800 };

export function windowSeconds(l: { per?: string; window?: string }): number {
  if (l.per !== undefined) return PER_SECONDS[l.per]!;
  const w = l.window!;
  return Number(w.slice(0, -1)) * SUFFIX_SECONDS[w.slice(-1)]!;
}

function validTimeZone(tz: string): boolean {
  try {
    new Intl.DateTimeFormat("en-US", { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}

/**
 * What the schema cannot say about rate-limit policies. `serviceChecks` are those that stand in for
 * the rate-limit service's own (a time zone it cannot load); they are skipped with the other
 * semantic checks so that a config only the service refuses can reach it.
 */
export function rateLimitPolicyProblems(config: Config, serviceChecks: boolean): FieldProblem[] {
  const problems: FieldProblem[] = [];
  config.consumers.forEach((c, i) => {
    if (c.name === ANONYMOUS) {
      problems.push({
        field: `consumers[${i}].name`,
        reason: `'${ANONYMOUS}' stands for callers without credentials; name the consumer otherwise`,
      });
    }
  });
  const policies = new Map(config.rateLimitPolicies.map((p) => [p.name, p]));
  config.routes.forEach((r, ri) => {
    const p = r.rateLimitPolicy === undefined ? undefined : policies.get(r.rateLimitPolicy);
    // Envoy takes descriptors from a route action only: an answer Envoy makes up has none.
    if (p?.limits.length && (r.redirect || r.directResponse)) {
      problems.push({
        field: `routes[${ri}].rateLimitPolicy`,
        reason: `policy '${p.name}' has limits, which apply only to routes with upstreams; give this route a policy with only a local limit`,
      });
    }
  });
  config.rateLimitPolicies.forEach((p, pi) => {
    const at = `rateLimitPolicies[${pi}]`;
    if (serviceChecks && !validTimeZone(p.timeZone)) {
      problems.push({
        field: `${at}.timeZone`,
        reason: `unknown time zone '${p.timeZone}' (an IANA name such as Europe/Paris)`,
      });
    }
    const seen = new Map<string, number>();
    p.limits.forEach((l, li) => {
      const f = `${at}.limits[${li}]`;
      if (l.burst !== undefined && l.algorithm !== "token_bucket") {
        problems.push({ field: `${f}.burst`, reason: "burst applies to the token_bucket algorithm only" });
      }
      if (l.by === "consumer" && l.callers === "anonymous") {
        problems.push({
          field: `${f}.callers`,
          reason: "anonymous callers have no consumer: use by: ip to limit them per address",
        });
      }
      if (l.plan !== undefined && (l.by !== "consumer" || l.callers === "anonymous")) {
        problems.push({
          field: `${f}.plan`,
          reason: "a plan applies to by: consumer limits of identified callers",
        });
      }
      if (l.plan === ANONYMOUS) {
        problems.push({
          field: `${f}.plan`,
          reason: `use callers: anonymous rather than plan '${ANONYMOUS}'`,
        });
      }
      const key = `${l.by}|${l.callers}|${l.plan ?? ""}|${counterIdentity(l, p.timeZone)}`;
      const first = seen.get(key);
      if (first !== undefined) {
        problems.push({
          field: f,
          reason: `counts the same callers over the same window as limits[${first}]: only the smaller can refuse, keep one`,
        });
      } else seen.set(key, li);
    });
  });
  return problems;
}
