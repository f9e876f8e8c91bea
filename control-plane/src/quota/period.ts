/**
 * Calendar periods (day, ISO week from Monday, month, year) in an IANA time zone: the period that
 * holds an instant, when it started and when it ends. A period starts at the first instant whose
 * local date is its first day, so a day on which a DST change skips midnight starts when the clock
 * jumps, and a day a zone skipped altogether (Samoa's 2011-12-30) has no period at all.
 */
import type { CalendarUnit } from "../model/usage-quota.js";

export type { CalendarUnit };

export interface Period {
  /** Counts periods since 1970 in local time: it names the period's counter. */
  readonly index: number;
  /** Milliseconds since the epoch; `end` is the next period's start. */
  readonly start: number;
  readonly end: number;
}

const DAY_MS = 86_400_000;
const HOUR_MS = 3_600_000;
const dateFormats = new Map<string, Intl.DateTimeFormat>();

function dateFormat(tz: string): Intl.DateTimeFormat {
  let f = dateFormats.get(tz);
  if (!f) {
    f = new Intl.DateTimeFormat("en-US", { timeZone: tz, year: "numeric", month: "numeric", day: "numeric" });
    dateFormats.set(tz, f);
  }
  return f;
}

/** Days since 1970-01-01 of a civil date. */
function dayNumber(y: number, m: number, d: number): number {
  return Math.floor(Date.UTC(y, m - 1, d) / DAY_MS);
}

/** Days since 1970-01-01 of the local date at instant t in tz. */
export function localDayNumber(tz: string, t: number): number {
  if (tz === "UTC") return Math.floor(t / DAY_MS);
  let y = 0;
  let m = 0;
  let d = 0;
  for (const p of dateFormat(tz).formatToParts(new Date(t))) {
    if (p.type === "year") y = Number(p.value);
    else if (p.type === "month") m = Number(p.value);
    else if (p.type === "day") d = Number(p.value);
  }
  return dayNumber(y, m, d);
}

/**
 * The first instant (to the second) whose local date in tz is day `dn` or later. Offsets lie
 * within -12 h and +14 h, so that instant lies within 15 h before and 13 h after the day's UTC
 * midnight; a binary search over that span asks the zone about 17 times.
 */
export function firstInstantOfDay(dn: number, tz: string): number {
  const wall = dn * DAY_MS;
  if (tz === "UTC") return wall;
  let lo = Math.floor((wall - 15 * HOUR_MS) / 1000);
  let hi = Math.ceil((wall + 13 * HOUR_MS) / 1000);
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (localDayNumber(tz, mid * 1000) >= dn) hi = mid;
    else lo = mid;
  }
  return hi * 1000;
}

function civil(dn: number): { y: number; m: number } {
  const x = new Date(dn * DAY_MS);
  return { y: x.getUTCFullYear(), m: x.getUTCMonth() + 1 };
}

/** The index of the period holding local day `dn`. */
function indexOf(unit: CalendarUnit, dn: number): number {
  switch (unit) {
    case "day":
      return dn;
    case "week":
      // 1970-01-01 was a Thursday; ISO weeks start on Monday, 3 days earlier.
      return Math.floor((dn + 3) / 7);
    case "month": {
      const { y, m } = civil(dn);
      return (y - 1970) * 12 + (m - 1);
    }
    case "year":
      return civil(dn).y - 1970;
  }
}

/** The local day on which period `index` starts. */
function firstDayOf(unit: CalendarUnit, index: number): number {
  switch (unit) {
    case "day":
      return index;
    case "week":
      return index * 7 - 3;
    case "month":
      return dayNumber(1970 + Math.floor(index / 12), (((index % 12) + 12) % 12) + 1, 1);
    case "year":
      return dayNumber(1970 + index, 1, 1);
  }
}

/** The period of `unit` in `tz` that holds instant `now` (ms since the epoch). */
export function calendarPeriod(unit: CalendarUnit, tz: string, now: number): Period {
  const index = indexOf(unit, localDayNumber(tz, now));
  return {
    index,
    start: firstInstantOfDay(firstDayOf(unit, index), tz),
    end: firstInstantOfDay(firstDayOf(unit, index + 1), tz),
  };
}

/**
 * The current period of each (unit, time zone), worked out again only when the clock leaves it:
 * counting a log entry costs a map lookup, not a walk through the zone's rules.
 */
export class PeriodCache {
  private readonly periods = new Map<string, Period>();

  at(unit: CalendarUnit, tz: string, now: number): Period {
    const key = `${unit} ${tz}`;
    let p = this.periods.get(key);
    if (!p || now < p.start || now >= p.end) {
      p = calendarPeriod(unit, tz, now);
      this.periods.set(key, p);
    }
    return p;
  }
}
