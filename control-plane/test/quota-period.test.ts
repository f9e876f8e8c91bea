import { describe, expect, it } from "vitest";
import { calendarPeriod, PeriodCache } from "../src/quota/period.js";

const utc = (s: string) => Date.parse(s);
const iso = (t: number) => new Date(t).toISOString();

/** The local date (YYYY-MM-DD) and weekday at instant t in tz. */
function local(tz: string, t: number): { date: string; weekday: string } {
  const date = new Intl.DateTimeFormat("en-CA", {
    timeZone: tz,
    year: "numeric",
    month: "2-digit",
    day: "2-digit",
  }).format(new Date(t));
  const weekday = new Intl.DateTimeFormat("en-US", { timeZone: tz, weekday: "short" }).format(new Date(t));
  return { date, weekday };
}

describe("calendar periods of usage-counted quotas", () => {
  it("UTC days, months and years start at midnight UTC", () => {
    const d = calendarPeriod("day", "UTC", utc("2030-02-14T12:34:56Z"));
    expect([iso(d.start), iso(d.end)]).toEqual(["2030-02-14T00:00:00.000Z", "2030-02-15T00:00:00.000Z"]);
    const m = calendarPeriod("month", "UTC", utc("2032-02-29T23:59:59.999Z"));
    expect([iso(m.start), iso(m.end)]).toEqual(["2032-02-01T00:00:00.000Z", "2032-03-01T00:00:00.000Z"]);
    const y = calendarPeriod("year", "UTC", utc("2032-12-31T23:59:59.999Z"));
    expect([iso(y.start), iso(y.end)]).toEqual(["2032-01-01T00:00:00.000Z", "2033-01-01T00:00:00.000Z"]);
    // The instant a period ends is its successor's first.
    expect(calendarPeriod("day", "UTC", d.end).start).toBe(d.end);
    expect(calendarPeriod("day", "UTC", d.end).index).toBe(d.index + 1);
  });

  it("ISO weeks start on Monday, in the policy's zone", () => {
    // 2030-01-03 is a Thursday; its week started on Monday 2029-12-31.
    const w = calendarPeriod("week", "UTC", utc("2030-01-03T10:00:00Z"));
    expect([iso(w.start), iso(w.end)]).toEqual(["2029-12-31T00:00:00.000Z", "2030-01-07T00:00:00.000Z"]);
    // Sunday 22:30 UTC is already Monday in Tokyo: a new week there, not in UTC.
    const t = utc("2030-01-06T22:30:00Z");
    expect(calendarPeriod("week", "Asia/Tokyo", t).start).toBe(utc("2030-01-06T15:00:00Z"));
    expect(calendarPeriod("week", "UTC", t).start).toBe(utc("2029-12-31T00:00:00Z"));
  });

  it("a day in Paris starts at local midnight, 23:00 or 22:00 UTC with summer time", () => {
    const winter = calendarPeriod("day", "Europe/Paris", utc("2030-01-15T23:30:00Z"));
    expect(iso(winter.start)).toBe("2030-01-15T23:00:00.000Z");
    const summer = calendarPeriod("day", "Europe/Paris", utc("2030-07-15T12:00:00Z"));
    expect([iso(summer.start), iso(summer.end)]).toEqual([
      "2030-07-14T22:00:00.000Z",
      "2030-07-15T22:00:00.000Z",
    ]);
    const year = calendarPeriod("year", "Europe/Paris", utc("2030-06-01T00:00:00Z"));
    expect([iso(year.start), iso(year.end)]).toEqual([
      "2029-12-31T23:00:00.000Z",
      "2030-12-31T23:00:00.000Z",
    ]);
  });

  it("DST days in New York last 23 and 25 hours", () => {
    const spring = calendarPeriod("day", "America/New_York", utc("2030-03-10T12:00:00Z"));
    expect([iso(spring.start), iso(spring.end)]).toEqual([
      "2030-03-10T05:00:00.000Z",
      "2030-03-11T04:00:00.000Z",
    ]);
    const fall = calendarPeriod("day", "America/New_York", utc("2030-11-03T12:00:00Z"));
    expect(fall.end - fall.start).toBe(25 * 3_600_000);
    // The month holding the spring change is an hour short.
    const march = calendarPeriod("month", "America/New_York", utc("2030-03-20T00:00:00Z"));
    expect(march.end - march.start).toBe(31 * 86_400_000 - 3_600_000);
  });

  it("where DST skips midnight, the day starts when the clock jumps", () => {
    // Santiago springs forward at 24:00 on 2030-09-07: 2030-09-08 begins at 01:00 local (04:00 UTC).
    const p = calendarPeriod("day", "America/Santiago", utc("2030-09-08T12:00:00Z"));
    expect(local("America/Santiago", p.start).date).toBe("2030-09-08");
    expect(local("America/Santiago", p.start - 1_000).date).toBe("2030-09-07");
    expect(p.end - p.start).toBe(23 * 3_600_000);
  });

  it("a day a zone skipped has no period: Samoa went from 29 to 31 December 2011", () => {
    const p = calendarPeriod("day", "Pacific/Apia", utc("2011-12-30T09:00:00Z"));
    expect(local("Pacific/Apia", p.start).date).toBe("2011-12-29");
    expect(local("Pacific/Apia", p.end).date).toBe("2011-12-31");
    const next = calendarPeriod("day", "Pacific/Apia", p.end);
    expect(next.start).toBe(p.end);
  });

  it.each([
    "UTC",
    "Europe/Paris",
    "America/Havana",
    "America/Santiago",
    "Asia/Beirut",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
  ])("days, weeks and months in %s tile time, each starting at the first instant of its local date", (tz) => {
    for (const unit of ["day", "week", "month"] as const) {
      let p = calendarPeriod(unit, tz, utc("2029-12-20T00:00:00Z"));
      for (let i = 0; i < (unit === "day" ? 370 : 30); i++) {
        expect(p.end).toBeGreaterThan(p.start);
        expect(local(tz, p.start - 1_000).date < local(tz, p.start).date).toBe(true);
        if (unit === "week") expect(local(tz, p.start).weekday).toBe("Mon");
        if (unit === "month") expect(local(tz, p.start).date.endsWith("-01")).toBe(true);
        const next = calendarPeriod(unit, tz, p.end);
        expect(next.start).toBe(p.end);
        expect(next.index).toBe(p.index + 1);
        p = next;
      }
    }
  });

  it("works a period out again only when the clock leaves it", () => {
    const cache = new PeriodCache();
    const a = cache.at("day", "Europe/Paris", utc("2030-07-15T10:00:00Z"));
    expect(cache.at("day", "Europe/Paris", utc("2030-07-15T21:59:59Z"))).toBe(a);
    const b = cache.at("day", "Europe/Paris", utc("2030-07-15T22:00:00Z"));
    expect(b.index).toBe(a.index + 1);
    expect(b.start).toBe(a.end);
  });
});
