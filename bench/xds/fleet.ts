// Simulated Envoys: many ADS clients in this process, each on its own connection (or all on one).
import type { ClientHttp2Session } from "node:http2";
import { performance } from "node:perf_hooks";
import type { ClientUpdate } from "@portico/common";
import { TypeUrl } from "@portico/control-plane";
import type { XdsProtocol } from "@portico/envoy";
import { waitFor } from "@portico/testing";
import { AdsLoadClient, connect } from "./ads-load-client.js";

/** What an Envoy subscribes to over ADS: a node is synced once it has all four. */
export const FOUR_TYPES = [TypeUrl.Cluster, TypeUrl.Endpoint, TypeUrl.Listener, TypeUrl.Route];

/** EDS and RDS are asked for by name, as Envoy does (on SotW an empty list there means none). */
export interface SubscribedNames {
  eds: string[];
  rds: string[];
}

/** Arrival times (ms after `start`) and bytes of one change, as the fleet sees it. */
export interface ChangeWait {
  start: (t0: number) => void;
  done: Promise<void>;
  /** Per client; NaN until that client has the new version. */
  arrivals: number[];
  /** Bytes of every update received since the wait began, all types, all clients. */
  bytes: () => number;
}

type UpdateListener = (i: number, u: ClientUpdate, at: number) => void;
let fleetCounter = 0;

export class Fleet {
  readonly clients: AdsLoadClient[] = [];
  /** The one connection of a shared fleet. */
  private session?: ClientHttp2Session;
  readonly versions: Map<string, string>[] = [];
  private readonly seen: Set<string>[] = [];
  private readonly listeners = new Set<UpdateListener>();
  private readonly id = ++fleetCounter;
  errors = 0;
  firstError?: string;
  /** Bytes of every update received, all clients. */
  totalBytes = 0;

  constructor(
    readonly target: string,
    readonly group: string,
    readonly protocol: XdsProtocol,
    readonly names: SubscribedNames,
    /** All clients on one HTTP/2 connection, grpc-js's default, instead of one each. */
    readonly shared: boolean,
  ) {}

  get size(): number {
    return this.clients.length;
  }

  onUpdate(fn: UpdateListener): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private add(): number {
    const i = this.clients.length;
    if (this.shared) this.session ??= connect(this.target);
    const client = new AdsLoadClient({
      target: this.target,
      node: { id: `${this.group}-${this.protocol}-${this.id}-${i}`, cluster: this.group },
      protocol: this.protocol,
      session: this.session,
    });
    const versions = new Map<string, string>();
    const seen = new Set<string>();
    this.clients.push(client);
    this.versions.push(versions);
    this.seen.push(seen);
    client.on("error", (err) => {
      this.errors++;
      this.firstError ??= err.message;
    });
    client.on("update", (u) => {
      const at = performance.now();
      this.totalBytes += u.bytes;
      versions.set(u.typeUrl, u.version);
      seen.add(u.typeUrl);
      for (const l of this.listeners) l(i, u, at);
    });
    for (const t of FOUR_TYPES) client.subscribe(t, this.namesFor(t));
    return i;
  }

  /** Both protocols ask for CDS/LDS by wildcard and for EDS/RDS by name, as Envoy does. */
  private namesFor(typeUrl: string): string[] {
    if (typeUrl === TypeUrl.Endpoint) return this.names.eds;
    if (typeUrl === TypeUrl.Route) return this.names.rds;
    return [];
  }

  synced(i: number): boolean {
    return this.seen[i]!.size === FOUR_TYPES.length;
  }

  /**
   * Adds clients `batch` at a time (a burst of connects would overflow the listen backlog), each
   * batch synced before the next; resolves with the time it took.
   */
  async grow(count: number, batch: number, timeoutMs = 120_000): Promise<number> {
    const t0 = performance.now();
    while (this.clients.length < count) {
      const from = this.clients.length;
      const to = Math.min(count, from + batch);
      for (let k = from; k < to; k++) this.add();
      await waitFor(
        () => {
          for (let k = from; k < to; k++) if (!this.synced(k)) return false;
          return true;
        },
        {
          what: `clients ${from}..${to - 1} of ${this.protocol} fleet to sync (errors: ${this.errors}, ${this.firstError ?? "-"})`,
          timeoutMs,
          intervalMs: 5,
        },
      );
    }
    return performance.now() - t0;
  }

  /** Resolves when every client has received (and ACKed) a new version of `typeUrl` after `t0`. */
  waitAllNew(typeUrl: string, timeoutMs = 60_000): ChangeWait {
    const before = this.versions.map((v) => v.get(typeUrl));
    const arrivals = new Array<number>(this.size).fill(NaN);
    let bytesAfter = 0;
    let remaining = this.size;
    let t0 = NaN;
    let off = () => {};
    const done = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`${remaining} of ${this.size} clients never got the new ${typeUrl}`)),
        timeoutMs,
      );
      off = this.onUpdate((i, u, at) => {
        bytesAfter += u.bytes;
        if (u.typeUrl !== typeUrl || !Number.isNaN(arrivals[i]!) || u.version === before[i]) return;
        arrivals[i] = at - t0;
        if (--remaining === 0) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
    return {
      start: (t: number) => {
        t0 = t;
      },
      done: done.finally(() => off()),
      arrivals,
      bytes: () => bytesAfter,
    };
  }

  close(): void {
    for (const c of this.clients) c.close();
    this.session?.close();
  }
}
