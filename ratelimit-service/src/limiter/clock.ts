/** Milliseconds since the Unix epoch. Injected everywhere a window or a refill is computed. */
export interface Clock {
  now(): number;
}

export const systemClock: Clock = { now: () => Date.now() };

/** A clock that moves only when told to: exact window edges in tests, a frozen window in benchmarks. */
export class ManualClock implements Clock {
  constructor(private t: number = Date.UTC(2030, 0, 1)) {}

  now(): number {
    return this.t;
  }

  set(t: number | Date): void {
    this.t = typeof t === "number" ? t : t.getTime();
  }

  advance(ms: number): void {
    this.t += ms;
  }
}
