/**
 * Child process for the file store's crash tests: opens the store in argv[2] and commits forever,
 * printing each revision number once commit() has resolved (that is, once it is acknowledged as
 * durable). The test kills it with SIGKILL at an arbitrary moment.
 */
import { silentLogger } from "@portico/common";
import { FileStore } from "../../src/store/file-store.js";
import { sampleConfig } from "./fixtures.js";

const dir = process.argv[2];
if (!dir) {
  process.stderr.write("usage: commit-loop.ts <store dir>\n");
  process.exit(2);
}

// Keep everything, so every acknowledged revision can be checked after the crash.
const store = new FileStore({ dir, keep: 1_000_000, log: silentLogger() });
await store.open();
let head = (await store.head())?.number ?? 0;
for (;;) {
  const rev = await store.commit(head, sampleConfig(head + 1), { message: `loop ${head + 1}` });
  head = rev.number;
  process.stdout.write(`${head}\n`);
}
