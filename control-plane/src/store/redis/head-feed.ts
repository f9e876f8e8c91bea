import type { Logger } from "@portico/common";
import { encodeRevision } from "../revision.js";
import type { Revision } from "../types.js";
import { notifyWatchers } from "../watchers.js";

/** Where the feed reads a head it was told of, or catches up from. */
export interface HeadSource {
  head(): Promise<Revision | undefined>;
  get(number: number): Promise<Revision | undefined>;
}

type Target = number | "head";

/**
 * The new heads a Redis store hands its watchers, from its own commits, from the change
 * notifications, and from catch-up reads after anything may have been missed. Numbers only increase
 * and none is delivered twice; reads run one at a time, in arrival order, so deliveries never
 * overtake each other.
 */
export class HeadFeed {
  private readonly listeners = new Set<(rev: Revision) => void>();
  private running = false;
  /** Highest number already delivered or about to be by the commit that made it. */
  private claimed = 0;
  private delivered = 0;
  /** Numbers this instance's in-flight commits will get if they win; their delivery is the commit's. */
  private readonly pending = new Map<number, number>();
  private chain: Promise<void> = Promise.resolve();
  /** Set while a failed catch-up waits to be tried again. */
  private retry?: NodeJS.Timeout;
  private failures = 0;

  constructor(
    private readonly source: HeadSource,
    private readonly log: Logger,
    /** Names the store in logs. */
    private readonly context: Record<string, string>,
  ) {}

  /** Delivers from here on, every head after `head` (the store's when it opened). */
  start(head: number): void {
    this.claimed = this.delivered = head;
    this.running = true;
  }

  stop(): void {
    this.running = false;
    this.listeners.clear();
    clearTimeout(this.retry);
  }

  watch(listener: (rev: Revision) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** A commit of this instance is trying for `number`. */
  pend(number: number): void {
    this.pending.set(number, (this.pending.get(number) ?? 0) + 1);
  }

  /** That commit is over; `won` if it wrote `number`, which it then delivers itself. */
  settle(number: number, won: boolean): void {
    if (won) this.claimed = Math.max(this.claimed, number);
    const count = (this.pending.get(number) ?? 1) - 1;
    if (count <= 0) this.pending.delete(number);
    else this.pending.set(number, count);
  }

  /** Delivers this instance's own commit on the next turn, after commit() has resolved. */
  deliverOwn(number: number, text: string): void {
    setImmediate(() => this.deliver(number, text));
  }

  /** Reads `target` (a number just announced, or whatever the head is now) and delivers it if new. */
  catchUp(target: Target): void {
    this.chain = this.chain
      .then(() => this.syncTo(target))
      .then(
        () => {
          this.failures = 0;
        },
        (err: Error) => this.syncFailed(err, target),
      );
  }

  /**
   * A catch-up that failed is tried again until one succeeds: the event that asked for it (a
   * reconnection, a notification) does not come again, and a node back from a crash can refuse
   * commands for a while after it accepts connections.
   */
  private syncFailed(err: Error, target: Target): void {
    const first = this.failures++ === 0;
    this.log[first ? "warn" : "debug"]({ err: err.message, target }, "could not read a new store head");
    if (this.retry || !this.running) return;
    this.retry = setTimeout(
      () => {
        this.retry = undefined;
        this.catchUp("head");
      },
      Math.min(this.failures * 250, 2_000),
    );
  }

  private async syncTo(target: Target): Promise<void> {
    if (!this.running) return;
    if (target !== "head" && (target <= this.claimed || this.pending.has(target))) return;
    let rev = target === "head" ? await this.source.head() : await this.source.get(target);
    // Trimmed already: a later head exists, and its own notification follows.
    if (!rev && target !== "head") return;
    if (target === "head" && (rev?.number ?? 0) < this.claimed) {
      // A read sent just before one of our commits landed can be overtaken by it; only a second
      // read, sent after, tells a stale answer from a Redis that really lost revisions.
      rev = await this.source.head();
      const now = rev?.number ?? 0;
      if (now < this.claimed) {
        this.log.error(
          { ...this.context, had: this.claimed, now },
          "the Redis store went back to an older revision (data lost in a restart or failover); " +
            "following it from here, the config in service stays as it is until the next commit",
        );
        this.claimed = this.delivered = now;
        return;
      }
    }
    if (!rev || rev.number <= this.claimed || this.pending.has(rev.number)) return;
    this.claimed = rev.number;
    this.deliver(rev.number, encodeRevision(rev));
  }

  private deliver(number: number, text: string): void {
    if (!this.running || number <= this.delivered) return;
    this.delivered = number;
    notifyWatchers(this.listeners, number, text, this.log);
  }
}
