import { spawn, type ChildProcess } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { silentLogger } from "@portico/common";
import { configRevision } from "../../src/config/publish.js";
import { FileStore, StoreLockedError, revisionFileName } from "../../src/store/file-store.js";
import { captureLogger, sampleConfig, waitFor } from "./fixtures.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, "../../..");
const commitLoop = path.join(here, "commit-loop.ts");

const dirs: string[] = [];
const stores: FileStore[] = [];
const children: ChildProcess[] = [];

function tempDir(): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), "portico-file-store-"));
  dirs.push(dir);
  return dir;
}

async function openStore(
  dir: string,
  opts: { keep?: number; log?: ReturnType<typeof silentLogger> } = {},
): Promise<FileStore> {
  const store = new FileStore({ dir, keep: opts.keep, log: opts.log ?? silentLogger() });
  await store.open();
  stores.push(store);
  return store;
}

/** Runs commit-loop.ts in a child process; `acked` holds every number it printed in full. */
function startCommitLoop(dir: string): {
  child: ChildProcess;
  acked: number[];
  exited: Promise<void>;
  stderr: () => string;
} {
  const child = spawn(process.execPath, ["--import", "tsx", commitLoop, dir], {
    cwd: repoRoot,
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.push(child);
  const acked: number[] = [];
  let partial = "";
  let stderr = "";
  child.stdout!.on("data", (chunk: Buffer) => {
    const lines = (partial + chunk.toString()).split("\n");
    partial = lines.pop()!;
    for (const line of lines) acked.push(Number(line));
  });
  child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  return { child, acked, exited, stderr: () => stderr };
}

/** A pid that certainly belongs to no process: one that has just exited. */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ["-e", ""], { stdio: "ignore" });
  await new Promise((resolve) => child.once("exit", resolve));
  return child.pid!;
}

afterEach(async () => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  await Promise.all(stores.splice(0).map((s) => s.close()));
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe("file store", () => {
  it("stores each revision as a numbered JSON file", async () => {
    const dir = tempDir();
    const store = await openStore(dir);
    const rev = await store.commit(0, sampleConfig(1), { message: "m", author: "a" });
    const file = path.join(dir, "revisions", "000000000001.json");
    expect(JSON.parse(readFileSync(file, "utf8"))).toEqual({
      number: 1,
      hash: configRevision(sampleConfig(1)),
      config: sampleConfig(1),
      createdAt: rev.createdAt,
      message: "m",
      author: "a",
    });
    expect(readFileSync(path.join(dir, "lock"), "utf8").trim()).toBe(String(process.pid));
  });

  it("reopens with the same head and history", async () => {
    const dir = tempDir();
    const first = await openStore(dir, { keep: 3 });
    for (let n = 1; n <= 5; n++) await first.commit(n - 1, sampleConfig(n), { author: `user-${n}` });
    const head = await first.head();
    const list = await first.list();
    await first.close();
    expect(existsSync(path.join(dir, "lock"))).toBe(false);

    const second = await openStore(dir, { keep: 3 });
    expect(await second.head()).toEqual(head);
    expect(await second.list()).toEqual(list);
    expect(readdirSync(path.join(dir, "revisions")).sort()).toEqual([3, 4, 5].map(revisionFileName));
    await expect(second.commit(4, sampleConfig(9))).rejects.toMatchObject({
      code: "revision_conflict",
      actual: 5,
    });
    expect((await second.commit(5, sampleConfig(6))).number).toBe(6);
  });

  it("refuses a directory whose lock is held by a live process", async () => {
    const dir = tempDir();
    const loop = startCommitLoop(dir);
    await waitFor(() => loop.acked.length > 0, 20_000, `the child to commit (${loop.stderr()})`);

    const store = new FileStore({ dir, log: silentLogger() });
    const err = await store.open().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(StoreLockedError);
    expect((err as Error).message).toContain(`another control plane (pid ${loop.child.pid}) owns ${dir}`);
    // The refused store must not have touched the owner's lock.
    expect(readFileSync(path.join(dir, "lock"), "utf8").trim()).toBe(String(loop.child.pid));
    await expect(store.head()).rejects.toMatchObject({ code: "store_unavailable" });

    // Once the owner is gone its lock is stale and the directory can be taken over.
    loop.child.kill("SIGKILL");
    await loop.exited;
    const taken = await openStore(dir);
    expect((await taken.head())!.number).toBeGreaterThanOrEqual(Math.max(...loop.acked));
    expect(readFileSync(path.join(dir, "lock"), "utf8").trim()).toBe(String(process.pid));
  });

  it("takes over a stale lock left by a dead process, and one left with our own pid", async () => {
    const dir = tempDir();
    mkdirSync(dir, { recursive: true });
    const cap = captureLogger();
    writeFileSync(path.join(dir, "lock"), `${await deadPid()}\n`);
    const store = await openStore(dir, { log: cap.log });
    expect(readFileSync(path.join(dir, "lock"), "utf8").trim()).toBe(String(process.pid));
    expect(cap.lines().some((l) => l.msg.includes("stale lock"))).toBe(true);
    await store.close();

    // A restarted container's control plane often gets the same pid as its predecessor.
    writeFileSync(path.join(dir, "lock"), `${process.pid}\n`);
    await openStore(dir);
    // An empty lock (its writer crashed before writing the pid) is stale too.
    await stores.pop()!.close();
    writeFileSync(path.join(dir, "lock"), "");
    await openStore(dir);
    expect(readFileSync(path.join(dir, "lock"), "utf8").trim()).toBe(String(process.pid));
    expect(readdirSync(dir).filter((f) => f.startsWith("lock"))).toEqual(["lock"]);
  });

  it("refuses to open one directory twice in the same process", async () => {
    const dir = tempDir();
    await openStore(dir);
    await expect(new FileStore({ dir, log: silentLogger() }).open()).rejects.toThrow(
      /already open in this process/,
    );
  });

  it("ignores and reports a torn revision file, and removes leftover temp files", async () => {
    const dir = tempDir();
    const first = await openStore(dir);
    for (let n = 1; n <= 3; n++) await first.commit(n - 1, sampleConfig(n));
    await first.close();
    const revisions = path.join(dir, "revisions");
    const full = readFileSync(path.join(revisions, revisionFileName(3)), "utf8");
    writeFileSync(
      path.join(revisions, revisionFileName(4)),
      full.replaceAll('"number":3', '"number":4').slice(0, 60),
    );
    // Whole JSON, but not what its hash says: damaged just the same.
    const two = JSON.parse(readFileSync(path.join(revisions, revisionFileName(2)), "utf8"));
    two.config.upstreams[0].endpoints[0].port = 9;
    writeFileSync(path.join(revisions, revisionFileName(2)), JSON.stringify(two));
    writeFileSync(path.join(revisions, `.${revisionFileName(5)}.12345.abcd.tmp`), '{"number":5,');

    const cap = captureLogger();
    const store = await openStore(dir, { log: cap.log });
    expect((await store.head())!.number).toBe(3);
    expect((await store.head())!.config).toEqual(sampleConfig(3));
    expect(await store.get(4)).toBeUndefined();
    expect(await store.get(2)).toBeUndefined();
    expect((await store.list()).map((s) => s.number)).toEqual([3, 1]);
    expect(readdirSync(revisions).filter((f) => f.endsWith(".tmp"))).toEqual([]);
    const warnings = cap.lines().filter((l) => l.msg === "ignoring a damaged revision file");
    expect(warnings.map((w) => path.basename(w.file as string)).sort()).toEqual([
      revisionFileName(2),
      revisionFileName(4),
    ]);

    // The next commit takes the torn file's number and replaces it with a whole revision.
    const rev = await store.commit(3, sampleConfig(40));
    expect(rev.number).toBe(4);
    await store.close();
    const again = await openStore(dir);
    expect((await again.get(4))!.config).toEqual(sampleConfig(40));
  });

  it("deletes damaged files once they fall out of the history", async () => {
    const dir = tempDir();
    const first = await openStore(dir, { keep: 2 });
    for (let n = 1; n <= 2; n++) await first.commit(n - 1, sampleConfig(n));
    await first.close();
    writeFileSync(path.join(dir, "revisions", revisionFileName(1)), "{");
    const store = await openStore(dir, { keep: 2 });
    await store.commit(2, sampleConfig(3));
    expect(readdirSync(path.join(dir, "revisions")).sort()).toEqual([2, 3].map(revisionFileName));
  });

  it("reports a write that cannot be made durable as unavailable, and stays usable", async () => {
    const dir = tempDir();
    const store = await openStore(dir);
    await store.commit(0, sampleConfig(1));
    const revisions = path.join(dir, "revisions");
    // A directory where the revision file must go makes the rename fail.
    mkdirSync(path.join(revisions, revisionFileName(2)));
    mkdirSync(path.join(revisions, revisionFileName(2), "x"));
    await expect(store.commit(1, sampleConfig(2))).rejects.toMatchObject({ code: "store_unavailable" });
    expect((await store.head())!.number).toBe(1);
    expect(readdirSync(revisions).filter((f) => f.endsWith(".tmp"))).toEqual([]);
    rmSync(path.join(revisions, revisionFileName(2)), { recursive: true });
    expect((await store.commit(1, sampleConfig(2))).number).toBe(2);
  });

  it("keeps every acknowledged revision when the writer is killed mid-stream", async () => {
    const dir = tempDir();
    let previous = 0;
    for (let round = 1; round <= 3; round++) {
      const loop = startCommitLoop(dir);
      await waitFor(() => loop.acked.length > 0, 20_000, `the child to commit (${loop.stderr()})`);
      await new Promise((r) => setTimeout(r, 700 + round * 150));
      loop.child.kill("SIGKILL");
      await loop.exited;
      const acked = [...loop.acked];
      expect(acked.length).toBeGreaterThan(0);
      expect(acked[0]).toBe(previous + 1);

      const cap = captureLogger();
      const store = await openStore(dir, { keep: 1_000_000, log: cap.log });
      const head = (await store.head())!;
      expect(head.number).toBeGreaterThanOrEqual(acked.at(-1)!);
      for (const n of acked) {
        const rev = await store.get(n);
        expect(rev, `revision ${n}`).toBeDefined();
        expect(rev!.config).toEqual(sampleConfig(n));
        expect(rev!.hash).toBe(configRevision(sampleConfig(n)));
        expect(rev!.message).toBe(`loop ${n}`);
      }
      // Whatever the kill interrupted left no damaged revision behind, only (removed) temp files.
      expect(cap.lines().filter((l) => l.msg === "ignoring a damaged revision file")).toEqual([]);
      expect(readdirSync(path.join(dir, "revisions")).filter((f) => f.endsWith(".tmp"))).toEqual([]);
      previous = head.number;
      await store.close();
      stores.pop();
    }
  }, 60_000);
});
