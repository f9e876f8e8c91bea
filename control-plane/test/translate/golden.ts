import fs from "node:fs";
import path from "node:path";
import { expect } from "vitest";
import type { ResourceInput } from "../../src/xds/snapshot.js";

/** The folder of the translator's golden files: `<name>.yaml` in, `<name>.json` out. */
export const GOLDEN_DIR = path.join(path.dirname(new URL(import.meta.url).pathname), "..", "golden");

/**
 * Compares `actual`, as indented JSON, with the golden file `<dir>/<name>.json`; with
 * UPDATE_GOLDEN=1 it writes the file first.
 */
export function expectGolden(dir: string, name: string, actual: unknown): void {
  const file = path.join(dir, `${name}.json`);
  const text = JSON.stringify(actual, null, 2) + "\n";
  if (process.env.UPDATE_GOLDEN === "1") fs.writeFileSync(file, text);
  if (!fs.existsSync(file)) throw new Error(`${file} is missing; run with UPDATE_GOLDEN=1 to write it`);
  expect(text).toBe(fs.readFileSync(file, "utf8"));
}

/** Resources as golden files show them: the short type, the name and the message. */
export function shownResources(resources: readonly ResourceInput[]): object[] {
  return resources.map((r) => ({ type: r.typeUrl.split("/")[1], name: r.name, message: r.message }));
}
