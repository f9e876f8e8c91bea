/**
 * Series of a prom-client metric resolved once, for code that counts on every request:
 * prom-client finds a series by hashing its labels on each `inc` or `observe`, while a series held
 * here is a plain number (or a few) added to in place. prom-client is handed what was added when
 * the metric is read (a scrape, `get()`), so what it reports is always up to date.
 */
import { Counter, Histogram, type LabelValues } from "prom-client";

/** One counter series: `inc` adds to a number. */
export class CounterSeries {
  /** Added since start. */
  value = 0;
  private reported = 0;
  /** Counted at all (an `inc(0)` included): prom-client then shows the series, at 0 if need be. */
  private touched = false;
  private shown = false;

  constructor(readonly labels: Readonly<Record<string, string>>) {}

  inc(by = 1): void {
    this.value += by;
    this.touched = true;
  }

  /** What was added since the last call; undefined when there is nothing to report. */
  take(): number | undefined {
    const d = this.value - this.reported;
    if (d === 0 && (this.shown || !this.touched)) return undefined;
    this.reported = this.value;
    this.shown = true;
    return d;
  }
}

/**
 * A counter whose hot series are held as `CounterSeries`; `inc` with labels still works for the
 * rest. Series are made once per label set and kept (their number is bounded by the caller).
 */
export class SeriesCounter<T extends string> extends Counter<T> {
  private readonly series: Map<string, CounterSeries>;

  constructor(config: {
    name: string;
    help: string;
    labelNames?: readonly T[];
    registers?: import("prom-client").Registry[];
  }) {
    const held = new Map<string, CounterSeries>();
    super({
      ...config,
      collect() {
        for (const s of held.values()) {
          const d = s.take();
          if (d !== undefined) (this as Counter<T>).inc(s.labels as LabelValues<T>, d);
        }
      },
    });
    this.series = held;
  }

  /** The series for these labels, made on first use. */
  for(labels: LabelValues<T>): CounterSeries {
    const key = seriesKey(labels);
    let s = this.series.get(key);
    if (!s) {
      s = new CounterSeries({ ...(labels as Record<string, string>) });
      this.series.set(key, s);
    }
    return s;
  }
}

/** One histogram series: bucket counts, a sum and a count, added to in place. */
export class HistogramSeries {
  /** Per bucket, not cumulative; the last is above every bound. */
  readonly counts: Float64Array;
  sum = 0;
  count = 0;

  constructor(
    readonly labels: Readonly<Record<string, string>>,
    private readonly bounds: readonly number[],
  ) {
    this.counts = new Float64Array(bounds.length + 1);
  }

  observe(value: number): void {
    const bounds = this.bounds;
    let i = 0;
    while (i < bounds.length && value > bounds[i]!) i++;
    this.counts[i]! += 1;
    this.sum += value;
    this.count++;
  }

  /** Starts a timer; the function it returns observes the seconds since. */
  startTimer(): () => void {
    const t0 = performance.now();
    return () => this.observe((performance.now() - t0) / 1000);
  }

  reset(): void {
    this.counts.fill(0);
    this.sum = 0;
    this.count = 0;
  }
}

type PromValue = {
  labels: Record<string, string | number>;
  value: number;
  metricName?: string;
  sharedLabels?: Record<string, string>;
  exemplar?: null;
};

/**
 * A histogram whose hot series are held as `HistogramSeries` and exported beside whatever was
 * observed through prom-client's own `observe` (give a label set to one or the other, not both).
 */
export class SeriesHistogram<T extends string> extends Histogram<T> {
  private readonly series = new Map<string, HistogramSeries>();
  private readonly bounds: readonly number[];
  private readonly metricName: string;

  constructor(config: {
    name: string;
    help: string;
    labelNames?: readonly T[];
    buckets: number[];
    registers?: import("prom-client").Registry[];
  }) {
    super(config);
    this.metricName = config.name;
    this.bounds = [...config.buckets].sort((a, b) => a - b);
    // Not in prom-client's typings, but what its registry calls for the text format (and what
    // its `get()` is built on): the held series are added there.
    const self = this as unknown as { getForPromString: () => Promise<{ values: unknown[] }> };
    const base = self.getForPromString.bind(this);
    self.getForPromString = () => this.exported(base);
  }

  /** The series for these labels, made on first use. */
  for(labels: LabelValues<T>): HistogramSeries {
    const key = seriesKey(labels);
    let s = this.series.get(key);
    if (!s) {
      s = new HistogramSeries({ ...(labels as Record<string, string>) }, this.bounds);
      this.series.set(key, s);
    }
    return s;
  }

  override reset(): void {
    super.reset();
    // prom-client's constructor resets before this class's fields exist.
    if (this.series) for (const s of this.series.values()) s.reset();
  }

  /** Appends the held series to what prom-client exports (its registry and `get()` both read this). */
  private async exported(base: () => Promise<{ values: unknown[] }>) {
    const data = await base();
    const values = data.values as PromValue[];
    for (const s of this.series.values()) {
      if (s.count === 0) continue;
      let acc = 0;
      const shared = s.labels as Record<string, string>;
      const bucket = `${this.metricName}_bucket`;
      this.bounds.forEach((le, i) => {
        acc += s.counts[i]!;
        values.push({ labels: { le }, value: acc, metricName: bucket, sharedLabels: shared, exemplar: null });
      });
      values.push({
        labels: { le: "+Inf" },
        value: s.count,
        metricName: bucket,
        sharedLabels: shared,
        exemplar: null,
      });
      values.push({ labels: {}, value: s.sum, metricName: `${this.metricName}_sum`, sharedLabels: shared });
      values.push({
        labels: {},
        value: s.count,
        metricName: `${this.metricName}_count`,
        sharedLabels: shared,
      });
    }
    return data;
  }
}

function seriesKey(labels: object): string {
  return JSON.stringify(Object.entries(labels).sort(([a], [b]) => (a < b ? -1 : 1)));
}
