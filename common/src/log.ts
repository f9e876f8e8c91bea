import { pino, type Logger } from "pino";

export type { Logger };

/**
 * JSON logs on stdout. `LOG_LEVEL` sets the level; tests default to `warn` so their output stays
 * readable.
 */
export function createLogger(service: string, level?: string): Logger {
  const lvl = level ?? process.env.LOG_LEVEL ?? (process.env.VITEST ? "warn" : "info");
  return pino({ name: service, level: lvl, base: { service } });
}

/** A logger that drops everything, for unit tests and benchmarks. */
export function silentLogger(): Logger {
  return pino({ level: "silent" });
}
