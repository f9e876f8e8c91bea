import type { Unit } from "./types.js";

/**
 * Window lengths of the epoch-aligned algorithms. Month and year are upstream's: a 30-day and a
 * 365-day block counted from the Unix epoch (envoyproxy/ratelimit `UnitToDivider`); calendar
 * months and years are the `calendar: true` extension.
 */
export const UNIT_MS: Readonly<Record<Unit, number>> = {
  second: 1_000,
  minute: 60_000,
  hour: 3_600_000,
  day: 86_400_000,
  week: 7 * 86_400_000,
  month: 30 * 86_400_000,
  year: 365 * 86_400_000,
};

export const UNITS = Object.keys(UNIT_MS) as Unit[];

export const CALENDAR_UNITS: readonly Unit[] = ["day", "week", "month", "year"];

export function parseUnit(text: string): Unit | undefined {
  const u = text.trim().toLowerCase();
  return (UNITS as string[]).includes(u) ? (u as Unit) : undefined;
}

const WINDOW_SUFFIX: Record<string, Unit> = { s: "second", m: "minute", h: "hour", d: "day", w: "week" };

/** `30s`, `5m`, `2h`, `1d`, `1w` → the unit and its multiplier. */
export function parseWindow(text: string): { unit: Unit; multiplier: number } | undefined {
  const m = /^\s*(\d+)\s*([smhdw])\s*$/.exec(text);
  if (!m) return undefined;
  const multiplier = Number(m[1]);
  if (!Number.isSafeInteger(multiplier) || multiplier < 1) return undefined;
  return { unit: WINDOW_SUFFIX[m[2]!]!, multiplier };
}
