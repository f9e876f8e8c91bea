import type { Cleanups } from "./cleanups.js";
import type { XdsBenchParams } from "./options.js";
import type { Report } from "./report.js";

/** What every section of the run shares. */
export interface BenchContext {
  params: XdsBenchParams;
  /** The `--long` runs are wanted. */
  long: boolean;
  /** The checkout the control plane under test runs from, and its entry point there. */
  cpRoot: string;
  cpMain: string;
  /** Per-run scratch directory, removed on the way out. */
  tmpRoot: string;
  cleanups: Cleanups;
  /** Where the control plane writes a CPU profile (`--cpu-prof`) when it exits; none when unset. */
  cpProfileDir?: string;
  /** Extra Node flags and environment for the control plane (`--cp-node-arg`, `--cp-env`). */
  cpNodeArgs?: readonly string[];
  cpEnv?: Readonly<Record<string, string>>;
  report: Report;
}
