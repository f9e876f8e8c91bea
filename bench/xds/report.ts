import { performance } from "node:perf_hooks";
import { round } from "./format.js";

/** One line of the table; `aim` is the figure the design aims for, shown beside it, never enforced. */
export type Row = [section: string, metric: string, value: string, aim?: string];

/** The figures of one run: printed as they are measured, then as one table, then as JSON. */
export class Report {
  readonly rows: Row[] = [];
  /** Raw figures per section, for the JSON output. */
  readonly results: Record<string, unknown> = {};
  readonly notes: string[] = [];
  readonly sectionSeconds: Record<string, number | null> = {};

  row(section: string, metric: string, value: string, aim?: string): void {
    this.rows.push([section, metric, value, aim]);
    console.log(`  ${section.padEnd(4)} ${metric.padEnd(72)} ${value}${aim ? `   (aim ${aim})` : ""}`);
  }

  note(text: string): void {
    this.notes.push(text);
  }

  /** Runs a section and records how long it took, whether it finished or threw. */
  async timed(name: string, fn: () => Promise<void>): Promise<void> {
    const t = performance.now();
    try {
      await fn();
    } finally {
      this.sectionSeconds[name] = round((performance.now() - t) / 1000, 1);
    }
  }

  printTable(totalSeconds: number): void {
    console.log(`\n${"=".repeat(124)}`);
    console.log(`${"sec".padEnd(4)} ${"metric".padEnd(84)} value`);
    console.log("-".repeat(124));
    for (const [s, m, v, aim] of this.rows)
      console.log(`${s.padEnd(4)} ${m.padEnd(84)} ${v}${aim ? `   [aim ${aim}]` : ""}`);
    console.log("-".repeat(124));
    for (const n of this.notes) console.log(`note: ${n}`);
    console.log(
      `total run time ${totalSeconds.toFixed(1)} s (sections: ${Object.entries(this.sectionSeconds)
        .map(([k, v]) => `${k}: ${v} s`)
        .join(", ")})`,
    );
  }

  /** The JSON document `bench/run.ts` reads back (it shows `table`). */
  json(run: {
    quick: boolean;
    machine: object;
    params: object;
    error?: Error;
    totalSeconds: number;
  }): string {
    const doc = {
      at: new Date().toISOString(),
      quick: run.quick,
      machine: run.machine,
      params: run.params,
      results: this.results,
      table: this.rows.map(([section, metric, value, aim]) => ({ section, metric, value, aim })),
      notes: this.notes,
      error: run.error ? run.error.message : undefined,
      totalSeconds: round(run.totalSeconds, 1),
      sectionSeconds: this.sectionSeconds,
    };
    return JSON.stringify(doc, null, 2) + "\n";
  }
}
