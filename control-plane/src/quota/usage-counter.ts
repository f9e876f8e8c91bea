/**
 * Calendar quotas counted off the request path (`enforce: usage`). Each Envoy streams an access
 * log entry for every request it served on a route with such quotas (buffered, over its xDS
 * connection, so under mTLS it speaks as its gateway identity); the counts go into the ledger
 * (Redis on the Redis store, memory on the file store), one batch at a time; a subject whose count
 * reaches its quota is denied until the period ends, and the control plane pushes the deny to
 * every Envoy of the group (translate/features/quota.ts), and lifts it at the period's end.
 *
 * Which requests count: those Envoy passed to the upstream and the upstream answered, whatever
 * the status (`via_upstream`). A request the gateway refused (authentication, a limit, the quota
 * deny itself, a guard) or could not pass on (no healthy upstream, a failed connection, a timeout)
 * uses up nothing. A request counts in the period in which its log entry arrives.
 *
 * What a quota admits beyond itself: the requests served between the one that used it up and the
 * deny taking effect in each Envoy, i.e. at the caller's rate R, about R × (Envoy's flush interval
 * + the batch's round trip to the ledger + the push to the Envoys). bench/quota.ts measures it.
 */
import * as grpc from "@grpc/grpc-js";
import { Counter, Gauge, type Registry } from "prom-client";
import { describeIdentity, peerAuth, type Logger } from "@portico/common";
import { ANONYMOUS } from "../model/ratelimit.js";
import type { Config } from "../model/schema.js";
import { prepareConfig } from "../translate/feature.js";
import { HTTP_FEATURES } from "../translate/features/index.js";
import { ACCESS_LOG_DEFINITION, decodeLogMessage, metadataString } from "./access-log.js";
import { denyMember, type UsageIncrement, type UsageLedger } from "./ledger.js";
import { quotaOf, subjectOf, type QuotaDeny, type UsageCounter } from "../model/usage-quota.js";
import { usageRoutes, type RouteUsage } from "../translate/features/quota.js";
import { PeriodCache } from "./period.js";

export interface UsageCountingOptions {
  ledger: UsageLedger;
  log: Logger;
  /** The config the control plane publishes now; undefined before the first. */
  config: () => Config | undefined;
  /** Clients present certificates (mTLS): only gateway identities may stream access logs. */
  authorizeClients: boolean;
  /** Called when the denies in force changed, to push them to the Envoys. */
  onChange: () => void;
  /** The clock periods and denies are reckoned by; injectable for tests. */
  now?: () => number;
  registry?: Registry;
  /** How often lifted denies are dropped; default 1 s (Envoys stop applying them at once anyway). */
  sweepMs?: number;
  /** How often the ledger's denies are read again, beside its announcements; default 10 s. */
  resyncMs?: number;
}

interface Pending {
  inc: { key: string; n: number; expireAt: number };
  counter: UsageCounter;
  subject: string;
  quota: number;
}

class Metrics {
  readonly entries: Counter<"outcome">;
  readonly refused: Counter;
  readonly failures: Counter;
  readonly denies: Gauge;

  constructor(registry?: Registry) {
    const registers = registry ? [registry] : [];
    this.entries = new Counter({
      name: "portico_quota_log_entries_total",
      help: "Access log entries received for usage-counted quotas, by outcome (counted, or ignored: no such route in the stream's group)",
      labelNames: ["outcome"],
      registers,
    });
    this.refused = new Counter({
      name: "portico_quota_log_streams_refused_total",
      help: "Access log streams refused: the client certificate names no gateway identity",
      registers,
    });
    this.failures = new Counter({
      name: "portico_quota_count_failures_total",
      help: "Batches of usage the ledger could not count (Redis unavailable); those requests count for nothing",
      registers,
    });
    this.denies = new Gauge({
      name: "portico_quota_denies",
      help: "Subjects denied because they used up a calendar quota, until their period ends",
      registers,
    });
  }
}

export class UsageCounting {
  private readonly now: () => number;
  private readonly metrics: Metrics;
  private readonly periods = new PeriodCache();
  private readonly models = new WeakMap<Config, Map<string, RouteUsage>>();
  private current: readonly QuotaDeny[] = [];
  private currentKey = "";
  private pending = new Map<string, Pending>();
  private flushing?: Promise<void>;
  /** Each open log stream, and how to end it. */
  private readonly calls = new Map<grpc.ServerReadableStream<Buffer, Buffer>, () => void>();
  private timers: NodeJS.Timeout[] = [];
  private unwatch?: () => void;
  private stopped = false;

  constructor(private readonly opts: UsageCountingOptions) {
    this.now = opts.now ?? Date.now;
    this.metrics = new Metrics(opts.registry);
  }

  /** The denies in force, for the translator: stable order, so equal sets translate alike. */
  denies(): readonly QuotaDeny[] {
    return this.current;
  }

  /** Reads the ledger's denies (a restart keeps them in force), then keeps them current. */
  async start(): Promise<void> {
    await this.reload().catch((err: Error) =>
      this.opts.log.warn(
        { err: err.message },
        "could not read the quota denies; none applied until the ledger answers",
      ),
    );
    this.unwatch = this.opts.ledger.watch(() => void this.reload().catch(() => undefined));
    const every = (ms: number, fn: () => void) => {
      const t = setInterval(fn, ms);
      t.unref();
      this.timers.push(t);
    };
    every(this.opts.sweepMs ?? 1_000, () => this.sweep());
    every(this.opts.resyncMs ?? 10_000, () => void this.reload().catch(() => undefined));
  }

  /** The gRPC service Envoy streams access logs to, on the xDS port. */
  service(): { definition: grpc.ServiceDefinition; implementation: grpc.UntypedServiceImplementation } {
    return {
      definition: ACCESS_LOG_DEFINITION,
      implementation: {
        StreamAccessLogs: (
          call: grpc.ServerReadableStream<Buffer, Buffer>,
          callback: grpc.sendUnaryData<Buffer>,
        ) => this.stream(call, callback),
      },
    };
  }

  private stream(
    call: grpc.ServerReadableStream<Buffer, Buffer>,
    callback: grpc.sendUnaryData<Buffer>,
  ): void {
    let group: string | undefined;
    if (this.opts.authorizeClients) {
      const { identity } = peerAuth(call);
      if (identity?.kind !== "gateway") {
        this.metrics.refused.inc();
        const who = identity
          ? describeIdentity(identity)
          : "a certificate naming no Portico workload identity";
        callback({
          code: grpc.status.PERMISSION_DENIED,
          details: `access logs are accepted from gateway identities (spiffe://portico/gateway/<group>) only, not from ${who}`,
        });
        return;
      }
      group = identity.group;
    }
    if (this.stopped) {
      callback({ code: grpc.status.UNAVAILABLE, details: "the control plane is stopping" });
      return;
    }
    let done = false;
    const finish = (err: grpc.ServiceError | null) => {
      if (done) return;
      done = true;
      this.calls.delete(call);
      if (err) callback(err);
      else callback(null, Buffer.alloc(0));
    };
    this.calls.set(call, () => finish(null));
    call.on("data", (bytes: Buffer) => {
      try {
        const msg = decodeLogMessage(bytes);
        // Without certificates, the group is what the node says (sent on the first message only).
        if (group === undefined && msg.node) group = msg.node.cluster;
        this.count(group, msg.entries);
      } catch (err) {
        this.opts.log.warn(
          { err: (err as Error).message },
          "an access log message could not be read; ignored",
        );
      }
    });
    call.on("end", () => finish(null));
    call.on("error", () => finish(null));
    call.on("cancelled", () => finish(null));
  }

  /** Adds a message's entries to the batch waiting for the ledger. */
  private count(group: string | undefined, entries: ReturnType<typeof decodeLogMessage>["entries"]): void {
    const config = this.opts.config();
    if (!config || entries.length === 0) return;
    const routes = this.routesOf(config);
    const now = this.now();
    let counted = 0;
    for (const e of entries) {
      const usage = routes.get(e.route);
      // A gateway counts only on its own group's routes.
      if (!usage || usage.gateway !== group) continue;
      counted++;
      const consumer = metadataString(e.metadata, usage.consumerKey) ?? ANONYMOUS;
      const plan = consumer === ANONYMOUS ? undefined : metadataString(e.metadata, usage.planKey);
      for (const counter of usage.counters) {
        const subject = subjectOf(counter.kind, consumer, e.address);
        const quota = subject === undefined ? undefined : quotaOf(counter, plan);
        if (subject === undefined || quota === undefined) continue;
        const period = this.periods.at(counter.unit, counter.timeZone, now);
        const key = `${counter.policy}/${counter.id}/${period.index}/${subject}`;
        const p = this.pending.get(key);
        if (p) {
          p.inc.n++;
          p.quota = quota;
        } else {
          this.pending.set(key, { inc: { key, n: 1, expireAt: period.end }, counter, subject, quota });
        }
      }
    }
    this.metrics.entries.inc({ outcome: "counted" }, counted);
    if (entries.length > counted) this.metrics.entries.inc({ outcome: "ignored" }, entries.length - counted);
    if (this.pending.size > 0) this.flushing ??= this.flush().finally(() => (this.flushing = undefined));
  }

  /**
   * Sends the waiting batch to the ledger, one batch at a time: while one is in flight, the next
   * gathers every stream's entries, so a busy fleet costs one round trip per batch, not per entry.
   */
  private async flush(): Promise<void> {
    while (this.pending.size > 0) {
      const batch = [...this.pending.values()];
      this.pending = new Map();
      let totals: number[];
      try {
        totals = await this.opts.ledger.add(batch.map((p): UsageIncrement => p.inc));
      } catch (err) {
        this.metrics.failures.inc();
        this.opts.log.warn(
          { err: (err as Error).message, counts: batch.length },
          "could not count quota usage; these requests count for nothing",
        );
        continue;
      }
      const held = new Set(this.current.map(denyMember));
      const fresh: QuotaDeny[] = [];
      batch.forEach((p, i) => {
        if (totals[i]! < p.quota) return;
        const d: QuotaDeny = {
          policy: p.counter.policy,
          subject: p.subject,
          until: p.inc.expireAt,
          limit: p.quota,
          unit: p.counter.unit,
        };
        if (!held.has(denyMember(d))) {
          held.add(denyMember(d));
          fresh.push(d);
        }
      });
      if (fresh.length === 0) continue;
      // In force here at once; the ledger tells the other replicas.
      this.apply([...this.current, ...fresh]);
      try {
        await this.opts.ledger.deny(fresh);
      } catch (err) {
        this.opts.log.warn(
          { err: (err as Error).message, denies: fresh.length },
          "could not record quota denies in the ledger; only this replica's Envoys deny them",
        );
      }
      this.opts.log.info(
        {
          denies: fresh.map((d) => ({
            policy: d.policy,
            subject: d.subject,
            until: new Date(d.until).toISOString(),
          })),
        },
        "quota used up: denying until the period ends",
      );
    }
  }

  private routesOf(config: Config): Map<string, RouteUsage> {
    let m = this.models.get(config);
    if (!m) {
      m = usageRoutes(prepareConfig(config, HTTP_FEATURES));
      this.models.set(config, m);
    }
    return m;
  }

  /** Drops the denies whose period ended. */
  private sweep(): void {
    const now = this.now();
    if (this.current.some((d) => d.until <= now)) this.apply(this.current);
  }

  private async reload(): Promise<void> {
    if (this.stopped) return;
    const shared = await this.opts.ledger.denies(this.now());
    // What this replica holds and the ledger does not yet (a write in flight) stays.
    this.apply([...this.current, ...shared]);
  }

  /** Makes `list` (less what has lifted, one entry per deny) the denies in force; pushes on change. */
  private apply(list: readonly QuotaDeny[]): void {
    const now = this.now();
    const byMember = new Map<string, QuotaDeny>();
    for (const d of list) {
      if (d.until <= now) continue;
      const m = denyMember(d);
      const had = byMember.get(m);
      if (!had || had.until < d.until) byMember.set(m, d);
    }
    const next = [...byMember.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, d]) => d);
    const key = next.map((d) => `${denyMember(d)}@${d.until}`).join("\n");
    if (key === this.currentKey) return;
    this.current = next;
    this.currentKey = key;
    this.metrics.denies.set(next.length);
    this.opts.onChange();
  }

  /** Ends the log streams (Envoys reconnect, to another replica if there is one) and the timers. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    this.unwatch?.();
    for (const end of [...this.calls.values()]) end();
    // What the streams delivered is counted before the ledger closes.
    await this.flushing;
  }
}
