export interface ConfigIssue {
  readonly file: string;
  /** Where in the file, e.g. `descriptors[1].rate_limit.unit`; empty for the whole file. */
  readonly path: string;
  readonly line?: number;
  readonly reason: string;
}

/** A configuration that cannot be used, with every problem found: file, path and reason. */
export class ConfigError extends Error {
  readonly code = "invalid_ratelimit_config";

  constructor(readonly issues: readonly ConfigIssue[]) {
    super(issues.map(formatIssue).join("\n"));
    this.name = "ConfigError";
  }
}

export function formatIssue(i: ConfigIssue): string {
  const where = i.line === undefined ? i.file : `${i.file}:${i.line}`;
  return i.path ? `${where}: ${i.path}: ${i.reason}` : `${where}: ${i.reason}`;
}
