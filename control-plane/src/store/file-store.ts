/**
 * The embedded store: one JSON file per revision under `<dir>/revisions`, for a single control
 * plane with a local disk.
 *
 * A commit writes a temp file, fsyncs it, renames it into place and fsyncs the directory before it
 * resolves, so an acknowledged revision survives a crash of the process or of the machine, and a
 * crash mid-write leaves at most a temp file (removed on the next open) rather than a half
 * revision. A revision file that does not parse or whose content does not match its hash is
 * reported and skipped, never loaded.
 *
 * One writer per directory: `<dir>/lock` holds the owner's pid. Compare-and-set runs against the
 * in-memory head, which is only sound while nobody else writes the directory.
 */
import { randomBytes } from "node:crypto";
import { link, mkdir, open, readFile, readdir, realpath, rename, unlink } from "node:fs/promises";
import path from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import type { Logger } from "@portico/common";
import type { Config } from "../model/schema.js";
import {
  checkExpected,
  checkKeep,
  decodeRevision,
  encodeRevision,
  listLimit,
  newRevision,
  sealRevision,
  summaryOf,
} from "./revision.js";
import { openSealer, SecretsKeyError, type SecretSealer, type SecretsKeyOptions } from "./sealer.js";
import {
  StoreConflictError,
  StoreUnavailableError,
  type CommitMeta,
  type ConfigStore,
  type Revision,
  type RevisionSummary,
} from "./types.js";
import { notifyWatchers } from "./watchers.js";

export interface FileStoreOptions {
  dir: string;
  /** Revisions kept in the history; older ones are deleted after each commit. */
  keep?: number;
  log: Logger;
  /** The key that seals secrets at rest; `<dir>/secrets.key` (made when absent) by default. */
  secrets?: SecretsKeyOptions;
}

/** Another live process holds the directory's lock. */
export class StoreLockedError extends Error {
  readonly code = "store_locked";

  constructor(
    readonly pid: number,
    readonly dir: string,
  ) {
    super(`another control plane (pid ${pid}) owns ${dir}; stop it or use another store directory`);
    this.name = "StoreLockedError";
  }
}

const REVISION_FILE = /^(\d{12})\.json$/;
const TEMP_FILE = /^\..+\.tmp$/;

/**
 * Directories open in this process. The lock file cannot tell two stores of one process apart
 * (same pid), and a lock carrying our own pid with no entry here is a leftover of an earlier
 * process that had the same pid, as happens to pid 1 in a restarted container.
 */
const openHere = new Set<string>();

export function revisionFileName(n: number): string {
  return `${String(n).padStart(12, "0")}.json`;
}

export class FileStore implements ConfigStore {
  readonly kind = "file" as const;
  readonly dir: string;
  private readonly revisionsDir: string;
  private readonly lockPath: string;
  private readonly keep: number;
  private readonly log: Logger;
  private state: "new" | "opening" | "open" | "closing" | "closed" = "new";
  private realDir?: string;
  private closing?: Promise<void>;
  private headNumber = 0;
  /** The head's serialized form: every reader gets its own copy, as it would from disk. */
  private headText?: string;
  private readonly summaries = new Map<number, RevisionSummary>();
  /** Damaged files seen on open: skipped, and deleted once they fall out of the history. */
  private readonly damaged = new Set<number>();
  private chain: Promise<unknown> = Promise.resolve();
  private delivered = 0;
  private readonly listeners = new Set<(rev: Revision) => void>();
  private readonly secrets: SecretsKeyOptions;
  private sealer?: SecretSealer;

  constructor(opts: FileStoreOptions) {
    this.secrets = opts.secrets ?? {};
    this.dir = path.resolve(opts.dir);
    this.revisionsDir = path.join(this.dir, "revisions");
    this.lockPath = path.join(this.dir, "lock");
    this.keep = checkKeep(opts.keep ?? 50);
    this.log = opts.log;
  }

  async open(): Promise<void> {
    if (this.state !== "new") throw new Error(`the file store at ${this.dir} was already opened`);
    this.state = "opening";
    try {
      await mkdir(this.revisionsDir, { recursive: true });
      const real = await realpath(this.dir);
      if (openHere.has(real)) throw new Error(`${this.dir} is already open in this process`);
      openHere.add(real);
      this.realDir = real;
      await this.lock();
      this.sealer = await openSealer(this.secrets, path.join(this.dir, "secrets.key"), this.log);
      await this.load();
    } catch (err) {
      if (this.realDir) {
        await this.unlock();
        openHere.delete(this.realDir);
      }
      this.state = "closed";
      throw err;
    }
    this.delivered = this.headNumber;
    this.state = "open";
    this.log.info(
      { dir: this.dir, head: this.headNumber, revisions: this.summaries.size },
      "file store opened",
    );
  }

  async head(): Promise<Revision | undefined> {
    this.assertReadable();
    return this.headText === undefined ? undefined : (JSON.parse(this.headText) as Revision);
  }

  async get(number: number): Promise<Revision | undefined> {
    this.assertReadable();
    if (!Number.isSafeInteger(number) || number < 1) return undefined;
    if (number === this.headNumber && this.headText !== undefined)
      return JSON.parse(this.headText) as Revision;
    if (!this.summaries.has(number)) return undefined;
    const file = path.join(this.revisionsDir, revisionFileName(number));
    let text: string;
    try {
      text = await readFile(file, "utf8");
    } catch (err) {
      // Pruned by a commit that ran while this read waited.
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw new StoreUnavailableError(`could not read ${file}: ${(err as Error).message}`, { cause: err });
    }
    try {
      return decodeRevision(text, this.sealer!, number);
    } catch (err) {
      if (err instanceof SecretsKeyError) throw err;
      this.log.error(
        { file, reason: (err as Error).message },
        "a revision file was damaged after it was loaded",
      );
      return undefined;
    }
  }

  secretCreatedAt(fp: string): string | undefined {
    return this.sealer?.createdAt(fp);
  }

  async list(limit?: number): Promise<RevisionSummary[]> {
    this.assertReadable();
    return [...this.summaries.values()]
      .sort((a, b) => b.number - a.number)
      .slice(0, listLimit(limit, this.keep))
      .map((s) => ({ ...s }));
  }

  commit(expected: number, config: Config, meta?: CommitMeta): Promise<Revision> {
    try {
      checkExpected(expected);
      if (this.state !== "open") throw this.notOpen();
    } catch (err) {
      return Promise.reject(err);
    }
    const run = this.chain.then(() => this.write(expected, config, meta));
    this.chain = run.catch(() => undefined);
    return run;
  }

  watch(listener: (rev: Revision) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  close(): Promise<void> {
    if (this.state === "new") this.state = "closed";
    if (this.state === "closed") return this.closing ?? Promise.resolve();
    this.closing ??= (async () => {
      this.state = "closing";
      // Commits already accepted finish: their callers are waiting for an answer.
      await this.chain;
      this.state = "closed";
      this.listeners.clear();
      await this.unlock();
      if (this.realDir) openHere.delete(this.realDir);
    })();
    return this.closing;
  }

  private async write(expected: number, config: Config, meta?: CommitMeta): Promise<Revision> {
    if (this.headNumber !== expected) throw new StoreConflictError(expected, this.headNumber);
    const number = expected + 1;
    const rev = newRevision(number, config, meta);
    const text = encodeRevision(rev);
    await this.writeDurably(number, `${sealRevision(rev, this.sealer!)}\n`);
    this.headNumber = number;
    this.headText = text;
    this.summaries.set(number, summaryOf(rev));
    this.damaged.delete(number);
    await this.prune();
    // After the caller's continuation: the committer publishes its own revision before watchers.
    setImmediate(() => this.deliver(number, text));
    // The committer built `config`; the store keeps its own text, so no copy is needed.
    return rev;
  }

  private async writeDurably(number: number, data: string): Promise<void> {
    const name = revisionFileName(number);
    const tmp = path.join(this.revisionsDir, `.${name}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`);
    try {
      const fh = await open(tmp, "wx");
      try {
        await fh.writeFile(data);
        await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(tmp, path.join(this.revisionsDir, name));
    } catch (err) {
      await unlink(tmp).catch(() => undefined);
      throw new StoreUnavailableError(
        `could not write revision ${number} in ${this.revisionsDir}: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
    try {
      await syncDir(this.revisionsDir);
    } catch (err) {
      throw new StoreUnavailableError(
        `could not sync ${this.revisionsDir} after writing revision ${number}: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
  }

  private async prune(): Promise<void> {
    const numbers = [...this.summaries.keys()].sort((a, b) => b - a);
    if (numbers.length <= this.keep && this.damaged.size === 0) return;
    const oldestKept = numbers[Math.min(this.keep, numbers.length) - 1] ?? 0;
    const drop = [...numbers.slice(this.keep), ...[...this.damaged].filter((n) => n < oldestKept)];
    for (const n of drop) {
      try {
        await unlink(path.join(this.revisionsDir, revisionFileName(n)));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ENOENT") {
          this.log.warn({ revision: n, err: (err as Error).message }, "could not delete an old revision");
          continue;
        }
      }
      this.summaries.delete(n);
      this.damaged.delete(n);
    }
  }

  private deliver(number: number, text: string): void {
    if (this.state !== "open" && this.state !== "closing") return;
    if (number <= this.delivered) return;
    this.delivered = number;
    notifyWatchers(this.listeners, number, text, this.log);
  }

  private async load(): Promise<void> {
    const names = await readdir(this.revisionsDir);
    for (const name of names.filter((n) => TEMP_FILE.test(n))) {
      // We hold the lock, so no temp file can belong to a live writer.
      await unlink(path.join(this.revisionsDir, name)).catch(() => undefined);
      this.log.info(
        { file: path.join(this.revisionsDir, name) },
        "removed a temp file left by an interrupted write",
      );
    }
    const numbers = names
      .map((n) => REVISION_FILE.exec(n)?.[1])
      .filter((n): n is string => n !== undefined)
      .map(Number)
      .sort((a, b) => b - a);
    for (const n of numbers) {
      const file = path.join(this.revisionsDir, revisionFileName(n));
      let rev: Revision;
      let text: string;
      try {
        text = await readFile(file, "utf8");
        rev = decodeRevision(text, this.sealer!, n);
      } catch (err) {
        // A wrong key is no damage: skipping every revision would start the store empty.
        if (err instanceof SecretsKeyError) throw err;
        this.damaged.add(n);
        this.log.warn({ file, reason: (err as Error).message }, "ignoring a damaged revision file");
        continue;
      }
      this.summaries.set(n, summaryOf(rev));
      if (this.headText === undefined) {
        this.headNumber = n;
        this.headText = encodeRevision(rev);
      }
    }
  }

  private async lock(): Promise<void> {
    for (let attempt = 0; attempt < 10; attempt++) {
      if (await this.createLock()) return;
      let held = await readIfExists(this.lockPath);
      if (held === undefined) continue;
      let pid = parsePid(held);
      if (pid === undefined) {
        // Either its owner is between creating and writing it, or it crashed there.
        await delay(100);
        const again = await readIfExists(this.lockPath);
        if (again !== held) continue;
        held = again;
        pid = parsePid(held);
      }
      if (pid !== undefined && pid !== process.pid && isAlive(pid)) throw new StoreLockedError(pid, this.dir);
      await this.takeOver(held, pid);
    }
    throw new Error(`could not take the lock ${this.lockPath}: other processes keep taking it`);
  }

  private async createLock(): Promise<boolean> {
    let fh;
    try {
      fh = await open(this.lockPath, "wx");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "EEXIST") return false;
      throw err;
    }
    try {
      await fh.writeFile(`${process.pid}\n`);
      await fh.sync();
    } catch (err) {
      await fh.close().catch(() => undefined);
      await unlink(this.lockPath).catch(() => undefined);
      throw err;
    }
    await fh.close();
    return true;
  }

  /**
   * Moves the stale lock aside instead of deleting it: if another process took it over between
   * our read and now, what we moved is its live lock, which we then put back.
   */
  private async takeOver(held: string, pid: number | undefined): Promise<void> {
    const aside = `${this.lockPath}.${process.pid}.${randomBytes(4).toString("hex")}.stale`;
    try {
      await rename(this.lockPath, aside);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
      throw err;
    }
    const moved = await readIfExists(aside);
    if (moved !== held) await link(aside, this.lockPath).catch(() => undefined);
    else this.log.warn({ dir: this.dir, pid }, "took over a stale lock: the process that held it is gone");
    await unlink(aside).catch(() => undefined);
  }

  private async unlock(): Promise<void> {
    const held = await readIfExists(this.lockPath).catch(() => undefined);
    if (held !== undefined && parsePid(held) === process.pid)
      await unlink(this.lockPath).catch(() => undefined);
  }

  private assertReadable(): void {
    if (this.state !== "open" && this.state !== "closing") throw this.notOpen();
  }

  private notOpen(): StoreUnavailableError {
    return new StoreUnavailableError(
      this.state === "new" || this.state === "opening"
        ? `the file store at ${this.dir} is not open yet`
        : `the file store at ${this.dir} is closed`,
    );
  }
}

async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function readIfExists(file: string): Promise<string | undefined> {
  try {
    return await readFile(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}

function parsePid(text: string): number | undefined {
  const m = /^\s*(\d+)\s*$/.exec(text);
  const pid = m ? Number(m[1]) : NaN;
  return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: the process exists but belongs to another user.
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}
