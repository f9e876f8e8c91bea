/** Milliseconds since the Unix epoch. Injected everywhere so tests can pin time (RFC examples expired in 2011). */
export type Clock = () => number;

export const systemClock: Clock = () => Date.now();
