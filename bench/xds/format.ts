// How figures read in the table; NaN (a sample never taken) reads "n/a".
import type { XdsProtocol } from "@portico/envoy";

export const protocolTag = (protocol: XdsProtocol): string => (protocol === "sotw" ? "SotW" : "delta");

export function ms(v: number): string {
  if (!Number.isFinite(v)) return "n/a";
  return v < 10 ? `${v.toFixed(2)} ms` : v < 1000 ? `${v.toFixed(1)} ms` : `${(v / 1000).toFixed(2)} s`;
}

export function bytes(v: number): string {
  if (!Number.isFinite(v)) return "n/a";
  if (v < 1024) return `${v} B`;
  if (v < 1024 * 1024) return `${(v / 1024).toFixed(1)} KiB`;
  return `${(v / 1024 / 1024).toFixed(2)} MiB`;
}

export const mib = (kib: number): string => `${(kib / 1024).toFixed(0)} MiB`;

/** A figure for the JSON output: `d` decimals, null where it was never measured. */
export const round = (v: number, d = 2): number | null => (Number.isFinite(v) ? Number(v.toFixed(d)) : null);

export interface HeapReading {
  usedMiB: number;
  totalMiB: number;
  externalMiB: number;
}

export function heapText(h: HeapReading): string {
  return `(V8 heap ${h.usedMiB.toFixed(0)} used / ${h.totalMiB.toFixed(0)} MiB, external ${h.externalMiB.toFixed(0)} MiB)`;
}
