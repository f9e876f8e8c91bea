import { Writable } from "node:stream";
import { pino, type Logger } from "pino";
import type { Config } from "../../src/model/schema.js";
import { validateConfig } from "../../src/model/validate.js";
import type { ConfigStore, Revision } from "../../src/store/types.js";

/** A distinct valid config per number, so a stored revision can be checked against what was written. */
export function sampleConfig(n: number): Config {
  return validateConfig({
    upstreams: [{ name: `svc-${n}`, endpoints: [{ host: "10.0.0.1", port: 1 + (n % 65535) }] }],
    consumers: [{ name: "acme", metadata: { note: `revision ${n}`, unicode: "héllo ✓" } }],
  });
}

export interface CapturedLog {
  log: Logger;
  lines: () => { level: number; msg: string; [k: string]: unknown }[];
}

/** A real pino logger whose output the test can read. */
export function captureLogger(): CapturedLog {
  const out: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      out.push(...chunk.toString().split("\n").filter(Boolean));
      cb();
    },
  });
  const log = pino({ level: "debug" }, stream);
  return { log, lines: () => out.map((l) => JSON.parse(l) as { level: number; msg: string }) };
}

export async function waitFor(
  cond: () => boolean | Promise<boolean>,
  timeoutMs = 5_000,
  what = "condition",
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs}ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Records every revision a store's watchers receive. */
export function recordWatch(store: ConfigStore): { seen: Revision[]; stop: () => void } {
  const seen: Revision[] = [];
  const stop = store.watch((rev) => seen.push(rev));
  return { seen, stop };
}
