import { randomBytes } from "node:crypto";
import os from "node:os";
import type { Logger } from "@portico/common";
import type { FleetBoard } from "../store/redis-store.js";
import type { FleetState, NodeStatus } from "../xds/fleet.js";

export interface FleetSharingOptions {
  board: FleetBoard;
  fleet: FleetState;
  log: Logger;
  /** How long a replica's entry outlives its last sign of life; default 15 s. */
  ttlMs?: number;
  /** Changes of this replica's nodes are written at most this often; default 100 ms. */
  publishEveryMs?: number;
}

/**
 * Shares the fleet state between replicas through the store: writes what the nodes connected here
 * sent, accepted and refused (coalesced, and kept alive while nothing changes), and reads back what
 * the other replicas wrote into the FleetState, so every replica answers for the whole fleet. A
 * replica that dies stops keeping its entry alive, and its nodes vanish when the entry expires.
 */
export class FleetSharing {
  readonly replica = `${os.hostname()}-${process.pid}-${randomBytes(3).toString("hex")}`;
  private readonly ttlMs: number;
  private readonly publishEveryMs: number;
  private dirty = true;
  private publishTimer?: NodeJS.Timeout;
  private readTimer?: NodeJS.Timeout;
  private heartbeat?: NodeJS.Timeout;
  private publishing?: Promise<void>;
  private reading?: Promise<void>;
  /** A replica wrote while a read was under way: read once more after it. */
  private readAgain = false;
  private failing = false;
  private stopped = false;
  private readonly unwatch: () => void;
  private readonly onLocal = (node: Readonly<NodeStatus>) => {
    if (!node.replica) this.changed();
  };

  constructor(private readonly opts: FleetSharingOptions) {
    this.ttlMs = opts.ttlMs ?? 15_000;
    this.publishEveryMs = opts.publishEveryMs ?? 100;
    opts.fleet.replica = this.replica;
    for (const e of ["connect", "disconnect", "ack", "nack", "applied"] as const)
      opts.fleet.on(e, this.onLocal);
    this.unwatch = opts.board.watch((replica) => {
      if (replica !== this.replica) this.scheduleRead();
    });
  }

  /** Publishes this replica's (so far empty) fleet and reads the others'. */
  async start(): Promise<void> {
    await Promise.all([this.publish(), this.read()]);
    this.heartbeat = setInterval(
      () => {
        void this.publish();
        void this.read();
      },
      Math.max(50, Math.floor(this.ttlMs / 3)),
    );
    this.heartbeat.unref();
  }

  /** Takes this replica's entry off the board (after its nodes went elsewhere). */
  async stop(): Promise<void> {
    this.stopped = true;
    this.unwatch();
    for (const e of ["connect", "disconnect", "ack", "nack", "applied"] as const)
      this.opts.fleet.off(e, this.onLocal);
    clearInterval(this.heartbeat);
    clearTimeout(this.publishTimer);
    clearTimeout(this.readTimer);
    await Promise.allSettled([this.publishing, this.reading]);
    await this.guard("remove", () => this.opts.board.remove(this.replica));
  }

  private changed(): void {
    this.dirty = true;
    this.publishTimer ??= setTimeout(() => {
      this.publishTimer = undefined;
      void this.publish();
    }, this.publishEveryMs);
  }

  private scheduleRead(): void {
    this.readTimer ??= setTimeout(() => {
      this.readTimer = undefined;
      void this.read();
    }, 20);
  }

  /** Writes the entry when something changed, else keeps it alive; one write at a time. */
  private publish(): Promise<void> {
    if (this.stopped) return Promise.resolve();
    if (this.publishing) {
      // Whatever changes meanwhile goes in the next write.
      return this.publishing.then(() => (this.dirty ? this.publish() : undefined));
    }
    this.publishing = this.guard("publish", async () => {
      const { board } = this.opts;
      if (!this.dirty && (await board.touch(this.replica, this.ttlMs))) return;
      this.dirty = false;
      await board.put(this.replica, JSON.stringify([...this.opts.fleet.local()]), this.ttlMs);
    }).finally(() => {
      this.publishing = undefined;
    });
    return this.publishing;
  }

  /** Reads every other replica's entry into the fleet state; one read at a time. */
  private read(): Promise<void> {
    if (this.stopped) return Promise.resolve();
    if (this.reading) {
      this.readAgain = true;
      return this.reading;
    }
    this.readAgain = false;
    this.reading = this.guard("read", async () => {
      const entries = await this.opts.board.read();
      if (this.stopped) return;
      for (const { replica } of this.opts.fleet.replicas())
        if (!entries.has(replica)) this.opts.fleet.setRemote(replica, []);
      for (const [replica, text] of entries) {
        if (replica === this.replica) continue;
        this.opts.fleet.setRemote(replica, JSON.parse(text) as NodeStatus[]);
      }
    }).finally(() => {
      this.reading = undefined;
      if (this.readAgain) void this.read();
    });
    return this.reading;
  }

  /** Runs a board operation; while the store is unreachable, says so once and keeps trying. */
  private async guard(what: string, fn: () => Promise<void>): Promise<void> {
    try {
      await fn();
      if (this.failing) this.opts.log.info("fleet state shared with the other replicas again");
      this.failing = false;
    } catch (err) {
      if (what === "publish") this.dirty = true;
      if (!this.failing)
        this.opts.log.warn(
          { err: (err as Error).message },
          `could not ${what} the fleet state shared with the other replicas; retrying`,
        );
      this.failing = true;
    }
  }
}
