import fs from "node:fs";
import path from "node:path";
import type { Logger } from "@portico/common";
import { ConfigError, type FieldProblem } from "../model/errors.js";
import type { Config } from "../model/schema.js";
import { parseYamlText, validateConfig } from "../model/validate.js";

/** The revision a read of the file became (the head again when the file held the same config). */
export interface AppliedRevision {
  revision: number;
  hash: string;
  changed: boolean;
}

/** A read of the file that was refused, with every field and reason, so a person can fix it. */
export interface RefusedEdit {
  at: string;
  code: string;
  message: string;
  details: FieldProblem[];
}

/** What the file source did last: shown by `GET /api/v1/status` and `portico status`. */
export interface FileSourceState {
  /** The file as people know it (the one they edit). */
  path: string;
  /** Watched: the file is the source of truth, and admin API writes are refused. */
  watching: boolean;
  /** Hold-off between a change of the file and its read, so an editor's burst of writes is one read. */
  debounceMs: number;
  lastApplied?: AppliedRevision & { at: string };
  lastRefused?: RefusedEdit;
  /** The file's content now is the refused one: the fleet keeps the last applied revision. */
  refused: boolean;
}

export interface FileSourceOptions {
  file: string;
  /** How the file is named to people, when `file` is a copy made from the one they edit. */
  shownAs?: string;
  log: Logger;
  /** Commits a config read from the file (at start, or after a change); resolves with the revision it became. */
  apply: (config: Config, cause: "start" | "change") => Promise<AppliedRevision>;
  /** Let through configs that only Envoy can refuse (tests of NACK handling). */
  skipSemanticChecks?: boolean;
  /** Hold-off after a change, so an editor's burst of writes is one push, not several. */
  debounceMs?: number;
}

export const DEFAULT_DEBOUNCE_MS = 100;

/** Reads a YAML config file and watches it; a bad edit is reported and the last good config stays. */
export class FileConfigSource {
  private timer?: NodeJS.Timeout;
  private watcher?: fs.FSWatcher;
  private lastApplied?: AppliedRevision & { at: string };
  private lastRefused?: RefusedEdit;
  private refused = false;

  constructor(private readonly opts: FileSourceOptions) {}

  private get debounceMs(): number {
    return this.opts.debounceMs ?? DEFAULT_DEBOUNCE_MS;
  }

  private get shownAs(): string {
    return this.opts.shownAs ?? this.opts.file;
  }

  /** Reads and validates the file; throws a ConfigError for a bad one. */
  load(): Config {
    let text: string;
    try {
      text = fs.readFileSync(this.opts.file, "utf8");
    } catch (err) {
      throw new ConfigError("unreadable_config", `cannot read ${this.shownAs}: ${(err as Error).message}`);
    }
    const value = parseYamlText(text, path.basename(this.shownAs));
    return validateConfig(value, { skipSemanticChecks: this.opts.skipSemanticChecks });
  }

  /** Reads and commits the file at start; throws on a bad file (there is no last good config to keep). */
  async applyNow(): Promise<void> {
    try {
      await this.readAndApply("start");
    } catch (err) {
      this.recordRefused(err);
      throw err;
    }
  }

  watch(): void {
    // Watch the directory: editors and `mv` replace the file, which ends a watch on the file itself.
    const dir = path.dirname(path.resolve(this.opts.file));
    const base = path.basename(this.opts.file);
    this.watcher = fs.watch(dir, (_event, name) => {
      if (name !== null && name !== base) return;
      clearTimeout(this.timer);
      this.timer = setTimeout(() => void this.reload(), this.debounceMs);
    });
  }

  /** Reads and commits the file after a change; a refused edit is kept for status and logged. */
  async reload(): Promise<void> {
    try {
      await this.readAndApply("change");
    } catch (err) {
      const refused = this.recordRefused(err);
      this.opts.log.error(
        { code: refused.code, details: refused.details },
        `${refused.message}; still serving the last good config`,
      );
    }
  }

  state(): FileSourceState {
    return {
      path: this.shownAs,
      watching: this.watcher !== undefined,
      debounceMs: this.debounceMs,
      ...(this.lastApplied ? { lastApplied: this.lastApplied } : {}),
      ...(this.lastRefused ? { lastRefused: this.lastRefused } : {}),
      refused: this.refused,
    };
  }

  close(): void {
    clearTimeout(this.timer);
    this.watcher?.close();
    this.watcher = undefined;
  }

  private async readAndApply(cause: "start" | "change"): Promise<void> {
    const applied = await this.opts.apply(this.load(), cause);
    this.lastApplied = { ...applied, at: new Date().toISOString() };
    this.refused = false;
  }

  private recordRefused(err: unknown): RefusedEdit {
    const e =
      err instanceof ConfigError
        ? err
        : new ConfigError(
            "not_committed",
            `the config in ${this.shownAs} could not be committed: ${(err as Error).message}`,
          );
    this.lastRefused = {
      at: new Date().toISOString(),
      code: e.code,
      message: headline(e),
      details: e.details,
    };
    this.refused = true;
    return this.lastRefused;
  }
}

/** A ConfigError's sentence without the field list its message ends with (the details hold it). */
function headline(e: ConfigError): string {
  const listed = e.details.map((d) => `${d.field}: ${d.reason}`).join("; ");
  return e.details.length && e.message.endsWith(`: ${listed}`)
    ? e.message.slice(0, -(listed.length + 2))
    : e.message;
}
