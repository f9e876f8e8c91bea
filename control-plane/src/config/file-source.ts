import fs from "node:fs";
import path from "node:path";
import type { Logger } from "@portico/common";
import { ConfigError } from "../model/errors.js";
import type { Config } from "../model/schema.js";
import { parseYamlText, validateConfig } from "../model/validate.js";

export interface FileSourceOptions {
  file: string;
  log: Logger;
  onConfig: (config: Config) => void;
  onError?: (err: ConfigError) => void;
  /** Let through configs that only Envoy can refuse (tests of NACK handling). */
  skipSemanticChecks?: boolean;
  /** Hold-off after a change, so an editor's burst of writes is one push, not several. */
  debounceMs?: number;
}

/** Reads a YAML config file and watches it; a bad edit is reported and the last good config stays. */
export class FileConfigSource {
  private timer?: NodeJS.Timeout;
  private watcher?: fs.FSWatcher;
  lastError?: ConfigError;

  constructor(private readonly opts: FileSourceOptions) {}

  /** Loads once; throws on a bad file (at start-up there is no last good config to keep). */
  load(): Config {
    const value = parseYamlText(fs.readFileSync(this.opts.file, "utf8"), path.basename(this.opts.file));
    return validateConfig(value, { skipSemanticChecks: this.opts.skipSemanticChecks });
  }

  watch(): void {
    // Watch the directory: editors and `mv` replace the file, which ends a watch on the file itself.
    const dir = path.dirname(path.resolve(this.opts.file));
    const base = path.basename(this.opts.file);
    this.watcher = fs.watch(dir, (_event, name) => {
      if (name !== null && name !== base) return;
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.reload(), this.opts.debounceMs ?? 100);
    });
  }

  reload(): void {
    try {
      this.opts.onConfig(this.load());
      this.lastError = undefined;
    } catch (err) {
      const e =
        err instanceof ConfigError
          ? err
          : new ConfigError("unreadable_config", `cannot read ${this.opts.file}: ${(err as Error).message}`);
      this.lastError = e;
      this.opts.log.error(
        { code: e.code, details: e.details },
        `${e.message}; still serving the last good config`,
      );
      this.opts.onError?.(e);
    }
  }

  close(): void {
    clearTimeout(this.timer);
    this.watcher?.close();
  }
}
