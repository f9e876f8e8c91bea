/**
 * Nearest-rank percentile (p in 0..100) of the finite values; a NaN stands for a sample that was
 * never taken and is left out. NaN when no value is left.
 */
export function percentile(values: readonly number[], p: number): number {
  const xs = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  if (xs.length === 0) return NaN;
  const rank = Math.min(xs.length, Math.max(1, Math.ceil((p / 100) * xs.length)));
  return xs[rank - 1]!;
}

export const median = (values: readonly number[]): number => percentile(values, 50);
