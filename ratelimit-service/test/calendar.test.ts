import { describe, expect, it } from "vitest";
import { calendarPeriod } from "../src/limiter/calendar.js";

const utc = (s: string) => Date.parse(s);

function localDate(tz: string, t: number): string {
  return new Intl.DateTimeFormat("en-CA", {
    timeZone: tz,
    year: "numeric",
    month: "2-digit",
    day: "2-digit",
  }).format(new Date(t));
}

describe("calendar periods", () => {
  it("UTC month and year", () => {
    const m = calendarPeriod("month", 1, "UTC", utc("2030-02-14T12:00:00Z"));
    expect([new Date(m.start).toISOString(), new Date(m.end).toISOString()]).toEqual([
      "2030-02-01T00:00:00.000Z",
      "2030-03-01T00:00:00.000Z",
    ]);
    const y = calendarPeriod("year", 1, "UTC", utc("2032-12-31T23:59:59.999Z"));
    expect([new Date(y.start).toISOString(), new Date(y.end).toISOString()]).toEqual([
      "2032-01-01T00:00:00.000Z",
      "2033-01-01T00:00:00.000Z",
    ]);
  });

  it("a year in Paris starts at 23:00 UTC the day before", () => {
    const y = calendarPeriod("year", 1, "Europe/Paris", utc("2030-06-01T00:00:00Z"));
    expect(new Date(y.start).toISOString()).toBe("2029-12-31T23:00:00.000Z");
    expect(new Date(y.end).toISOString()).toBe("2030-12-31T23:00:00.000Z");
  });

  it("a day in New York on the spring DST change lasts 23 hours", () => {
    const p = calendarPeriod("day", 1, "America/New_York", utc("2030-03-10T12:00:00Z"));
    expect(new Date(p.start).toISOString()).toBe("2030-03-10T05:00:00.000Z");
    expect(new Date(p.end).toISOString()).toBe("2030-03-11T04:00:00.000Z");
  });

  it("ISO weeks start on Monday; three months are quarters", () => {
    // 2030-01-03 is a Thursday.
    const w = calendarPeriod("week", 1, "UTC", utc("2030-01-03T10:00:00Z"));
    expect(new Date(w.start).toISOString()).toBe("2029-12-31T00:00:00.000Z");
    expect(w.end - w.start).toBe(7 * 86_400_000);
    const q = calendarPeriod("month", 3, "UTC", utc("2030-05-20T00:00:00Z"));
    expect([new Date(q.start).toISOString(), new Date(q.end).toISOString()]).toEqual([
      "2030-04-01T00:00:00.000Z",
      "2030-07-01T00:00:00.000Z",
    ]);
  });

  it.each([
    "Europe/Paris",
    "America/Havana",
    "America/Santiago",
    "Asia/Beirut",
    "Pacific/Apia",
    "Australia/Lord_Howe",
  ])(
    "days in %s tile time: each starts at the first instant of its local date, even when midnight is skipped",
    (tz) => {
      // Two years around Samoa's skipped 2011-12-30, and a recent stretch.
      for (const from of [utc("2011-01-01T00:00:00Z"), utc("2023-01-01T00:00:00Z")]) {
        let p = calendarPeriod("day", 1, tz, from);
        for (let i = 0; i < 730; i++) {
          expect(p.end).toBeGreaterThan(p.start);
          expect(localDate(tz, p.start - 1) < localDate(tz, p.start)).toBe(true);
          expect(localDate(tz, p.end - 1)).toBe(localDate(tz, p.start));
          const next = calendarPeriod("day", 1, tz, p.end);
          expect(next.start).toBe(p.end);
          p = next;
        }
      }
    },
  );
});
