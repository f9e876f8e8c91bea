/**
 * Command-line values every service reads the same way, each refused with the flag's name and what
 * it should look like, so a typo stops the start with one line instead of a trace.
 */

/** `host:port` (`[::1]:9191` for IPv6); an empty host means loopback. */
export function hostPortFlag(text: string, flag: string): { host: string; port: number } {
  const m = /^\[?([^\]]*?)\]?:(\d+)$/.exec(text);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535) throw new Error(`--${flag} must be host:port, got '${text}'`);
  return { host: m[1] || "127.0.0.1", port };
}

/** A number above zero; `whole` refuses fractions. */
export function positiveFlag(text: string, flag: string, whole = false): number {
  const n = Number(text);
  if (!Number.isFinite(n) || n <= 0 || (whole && !Number.isInteger(n))) {
    throw new Error(`--${flag} must be a positive ${whole ? "whole " : ""}number, got '${text}'`);
  }
  return n;
}
