/**
 * Calendar periods (day, ISO week, month, year, and multiples of them) in an IANA time zone, with
 * DST handled: a period starts at the first instant whose local date is its first day, even when
 * local midnight is skipped.
 */
import type { Unit } from "../config/types.js";

export interface Period {
  /** Counts periods since 1970 in local time, so it names the counter. */
  readonly index: number;
  readonly start: number;
  readonly end: number;
}

const DAY = 86_400_000;
const formatters = new Map<string, Intl.DateTimeFormat>();

function formatter(tz: string): Intl.DateTimeFormat {
  let f = formatters.get(tz);
  if (!f) {
    f = new Intl.DateTimeFormat("en-US", {
      timeZone: tz,
      hourCycle: "h23",
      year: "numeric",
      month: "numeric",
      day: "numeric",
      hour: "numeric",
      minute: "numeric",
      second: "numeric",
    });
    formatters.set(tz, f);
  }
  return f;
}

interface LocalTime {
  y: number;
  m: number;
  d: number;
  h: number;
  mi: number;
  s: number;
}

function localTime(tz: string, t: number): LocalTime {
  if (tz === "UTC") {
    const x = new Date(t);
    return {
      y: x.getUTCFullYear(),
      m: x.getUTCMonth() + 1,
      d: x.getUTCDate(),
      h: x.getUTCHours(),
      mi: x.getUTCMinutes(),
      s: x.getUTCSeconds(),
    };
  }
  const out: LocalTime = { y: 0, m: 0, d: 0, h: 0, mi: 0, s: 0 };
  for (const p of formatter(tz).formatToParts(new Date(t))) {
    const n = Number(p.value);
    if (p.type === "year") out.y = n;
    else if (p.type === "month") out.m = n;
    else if (p.type === "day") out.d = n;
    else if (p.type === "hour") out.h = n;
    else if (p.type === "minute") out.mi = n;
    else if (p.type === "second") out.s = n;
  }
  return out;
}

/** Local wall time minus UTC at instant t. */
function offsetAt(tz: string, t: number): number {
  const l = localTime(tz, t);
  return Date.UTC(l.y, l.m - 1, l.d, l.h, l.mi, l.s) - (t - (((t % 1000) + 1000) % 1000));
}

function dayNumber(y: number, m: number, d: number): number {
  return Math.floor(Date.UTC(y, m - 1, d) / DAY);
}

/**
 * The first instant whose local date in tz is y-m-d or later (later when a zone skipped that day,
 * as Samoa skipped 2011-12-30).
 */
export function startOfLocalDay(y: number, m: number, d: number, tz: string): number {
  const wall = Date.UTC(y, m - 1, d);
  if (tz === "UTC") return wall;
  const target = dayNumber(y, m, d);
  // The offsets a day before and after cover a DST change at or around midnight.
  const candidates = [wall - offsetAt(tz, wall - DAY), wall - offsetAt(tz, wall + DAY)];
  candidates.push(wall - offsetAt(tz, candidates[0]!), wall - offsetAt(tz, candidates[1]!));
  let best = Infinity;
  for (const c of candidates) {
    const l = localTime(tz, c);
    if (dayNumber(l.y, l.m, l.d) >= target && c < best) best = c;
  }
  if (best === Infinity) throw new Error(`no local midnight found for ${y}-${m}-${d} in ${tz}`);
  return best;
}

function periodIndex(unit: Unit, l: LocalTime): number {
  const dn = dayNumber(l.y, l.m, l.d);
  switch (unit) {
    case "day":
      return dn;
    case "week":
      // 1970-01-01 was a Thursday; ISO weeks start on Monday, 3 days earlier.
      return Math.floor((dn + 3) / 7);
    case "month":
      return (l.y - 1970) * 12 + (l.m - 1);
    case "year":
      return l.y - 1970;
    default:
      throw new Error(`${unit} is not a calendar unit`);
  }
}

function periodStart(unit: Unit, index: number, tz: string): number {
  switch (unit) {
    case "day":
    case "week": {
      const dn = unit === "day" ? index : index * 7 - 3;
      const x = new Date(dn * DAY);
      return startOfLocalDay(x.getUTCFullYear(), x.getUTCMonth() + 1, x.getUTCDate(), tz);
    }
    case "month": {
      const y = 1970 + Math.floor(index / 12);
      const m = (((index % 12) + 12) % 12) + 1;
      return startOfLocalDay(y, m, 1, tz);
    }
    case "year":
      return startOfLocalDay(1970 + index, 1, 1, tz);
    default:
      throw new Error(`${unit} is not a calendar unit`);
  }
}

/**
 * The period of `multiplier` calendar units holding `now`. Multiples are counted from 1970 in
 * local time, so 3 months are the quarters and 6 months the halves of the year.
 */
export function calendarPeriod(unit: Unit, multiplier: number, tz: string, now: number): Period {
  const idx = periodIndex(unit, localTime(tz, now));
  const group = Math.floor(idx / multiplier);
  return {
    index: group,
    start: periodStart(unit, group * multiplier, tz),
    end: periodStart(unit, (group + 1) * multiplier, tz),
  };
}
