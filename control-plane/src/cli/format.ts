/** Columns padded to their widest cell; the first row is the header. */
export function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  return rows
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i]!))
        .join("  ")
        .trimEnd(),
    )
    .join("\n");
}

const HASH_SHOWN = 10;

/**
 * A config revision as every command shows it: its number and the start of its content hash
 * (`7 (3fa2c1d9e0)`); `? (hash)` for content no longer in the history.
 */
export function revisionLabel(revision: number | null | undefined, hash: string | undefined): string {
  if (revision === undefined && hash === undefined) return "-";
  const n = revision === null || revision === undefined ? "?" : String(revision);
  return hash ? `${n} (${hash.slice(0, HASH_SHOWN)})` : n;
}

/** An ISO time to the second, with how long ago it was. */
export function when(iso: string, now = Date.now()): string {
  const seconds = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  const ago =
    seconds < 90
      ? `${seconds} s ago`
      : seconds < 5400
        ? `${Math.round(seconds / 60)} min ago`
        : `${Math.round(seconds / 3600)} h ago`;
  return `${iso.replace(/\.\d+Z$/, "Z")} (${ago})`;
}
