/**
 * The ledger of a control plane on the file store (one replica): counts and denies in memory,
 * written to a file every few seconds when they changed, and on stop. A crash loses the usage
 * counted since the last write (at most `persistMs` of it) — those requests are admitted again —
 * never a deny recorded before that write.
 *
 * Counts of consumers are bounded by the config; counts of addresses (anonymous callers, `by: ip`)
 * by `maxAddressCounts`: beyond it, an address not yet counted this period is not counted at all
 * (admitted), and `droppedCounts` says how many such requests there were.
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync, openSync, fsyncSync, closeSync } from "node:fs";
import path from "node:path";
import type { Logger } from "@portico/common";
import { denyFromMember, denyMember, type UsageIncrement, type UsageLedger } from "./ledger.js";
import type { QuotaDeny } from "../model/usage-quota.js";

export interface MemoryLedgerOptions {
  /** Where counts and denies are kept across restarts; none: memory only. */
  file?: string;
  /** How often changes are written; default 5 s. */
  persistMs?: number;
  /** Addresses counted at once, across policies and periods; default 200,000. */
  maxAddressCounts?: number;
  log: Logger;
  now?: () => number;
}

interface Saved {
  counts: [string, number, number][];
  denies: [string, number][];
}

export class MemoryLedger implements UsageLedger {
  readonly kind = "memory" as const;
  private readonly counts = new Map<string, { n: number; expireAt: number }>();
  /** Deny member → until. */
  private readonly denied = new Map<string, number>();
  private readonly listeners = new Set<() => void>();
  private readonly now: () => number;
  private dirty = false;
  private timer?: NodeJS.Timeout;
  private addressCounts = 0;
  private forgotAt = 0;
  private warnedAt = -Infinity;
  private readonly maxAddressCounts: number;
  /** Requests of addresses left uncounted because `maxAddressCounts` were held already. */
  droppedCounts = 0;

  constructor(private readonly opts: MemoryLedgerOptions) {
    this.now = opts.now ?? Date.now;
    this.maxAddressCounts = opts.maxAddressCounts ?? 200_000;
    if (opts.file) this.load(opts.file);
    // Also without a file: what expired is forgotten.
    this.timer = setInterval(() => this.persist(), opts.persistMs ?? 5_000);
    this.timer.unref();
  }

  async add(increments: readonly UsageIncrement[]): Promise<number[]> {
    const now = this.now();
    const out: number[] = [];
    for (const inc of increments) {
      let c = this.counts.get(inc.key);
      if (!c || c.expireAt <= now) {
        if (!c && isAddress(inc.key)) {
          // At most once a second: a full ledger must not cost a walk per new address.
          if (this.addressCounts >= this.maxAddressCounts && now - this.forgotAt >= 1_000)
            this.forgetExpired(now);
          if (this.addressCounts >= this.maxAddressCounts) {
            this.droppedCounts += inc.n;
            if (now - this.warnedAt >= 60_000) {
              this.warnedAt = now;
              this.opts.log.warn(
                { maxAddressCounts: this.maxAddressCounts, dropped: this.droppedCounts },
                "quota usage of new addresses is not counted: the ledger holds as many addresses as it may",
              );
            }
            out.push(0);
            continue;
          }
          this.addressCounts++;
        }
        c = { n: 0, expireAt: inc.expireAt };
        this.counts.set(inc.key, c);
      }
      c.n += inc.n;
      out.push(c.n);
    }
    if (increments.length > 0) this.dirty = true;
    return out;
  }

  async deny(denies: readonly QuotaDeny[]): Promise<void> {
    for (const d of denies) {
      const m = denyMember(d);
      this.denied.set(m, Math.max(this.denied.get(m) ?? 0, d.until));
    }
    if (denies.length === 0) return;
    this.dirty = true;
    // Written at once: a deny must survive a crash, and there are few of them.
    this.persist();
    for (const l of this.listeners) l();
  }

  async denies(now: number): Promise<QuotaDeny[]> {
    const out: QuotaDeny[] = [];
    for (const [m, until] of this.denied) {
      if (until <= now) continue;
      const d = denyFromMember(m, until);
      if (d) out.push(d);
    }
    return out;
  }

  watch(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    this.persist();
  }

  private forgetExpired(now: number): void {
    this.forgotAt = now;
    for (const [k, c] of this.counts) {
      if (c.expireAt > now) continue;
      this.counts.delete(k);
      if (isAddress(k)) this.addressCounts--;
    }
    for (const [m, until] of this.denied) if (until <= now) this.denied.delete(m);
  }

  /** Forgets what expired, and writes the rest when anything changed since the last write. */
  private persist(): void {
    this.forgetExpired(this.now());
    if (!this.opts.file || !this.dirty) return;
    this.dirty = false;
    const saved: Saved = {
      counts: [...this.counts].map(([k, c]) => [k, c.n, c.expireAt]),
      denies: [...this.denied],
    };
    const tmp = `${this.opts.file}.tmp`;
    try {
      mkdirSync(path.dirname(this.opts.file), { recursive: true });
      writeFileSync(tmp, JSON.stringify(saved));
      const fd = openSync(tmp, "r");
      try {
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(tmp, this.opts.file);
    } catch (err) {
      this.dirty = true;
      this.opts.log.warn(
        { file: this.opts.file, err: (err as Error).message },
        "could not write the quota usage file; counts since the last write would be lost on a crash",
      );
    }
  }

  private load(file: string): void {
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") {
        this.opts.log.warn({ file, err: (err as Error).message }, "could not read the quota usage file");
      }
      return;
    }
    try {
      const saved = JSON.parse(text) as Saved;
      const now = this.now();
      for (const [k, n, expireAt] of saved.counts ?? []) {
        if (expireAt <= now) continue;
        this.counts.set(k, { n, expireAt });
        if (isAddress(k)) this.addressCounts++;
      }
      for (const [m, until] of saved.denies ?? []) if (until > now) this.denied.set(m, until);
    } catch (err) {
      this.opts.log.warn(
        { file, err: (err as Error).message },
        "the quota usage file is damaged; quotas count from zero",
      );
    }
  }
}

/** Whether a count's subject (after the key's last `/`) is an address rather than a consumer. */
function isAddress(key: string): boolean {
  return !key.startsWith("c:", key.lastIndexOf("/") + 1);
}
