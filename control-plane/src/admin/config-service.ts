import { randomBytes } from "node:crypto";
import type { Logger } from "@portico/common";
import { configRevision, type Publisher } from "../config/publish.js";
import { withPartsTokens } from "../model/composite.js";
import { ConfigError } from "../model/errors.js";
import { ConfigSchema, type Config } from "../model/schema.js";
import { validateConfig } from "../model/validate.js";
import type { ConfigStore, Revision } from "../store/types.js";
import type { SnapshotCache } from "../xds/cache.js";
import type { FleetState, NodeStatus } from "../xds/fleet.js";
import { HttpError } from "./http-error.js";

export const EMPTY_CONFIG: Config = ConfigSchema.parse({});

export interface WriteMeta {
  message?: string;
  author?: string;
}

export interface WriteResult {
  revision: Revision;
  /** False when the write changed nothing (same content as the head). */
  changed: boolean;
  /** Gateway groups whose Envoy config changed, with their new snapshot revision. */
  affected: Record<string, string>;
  at: string;
}

export interface NodeRollout {
  id: string;
  group: string;
  state: "applied" | "nacked" | "pending";
  /** Envoy's own error text when the node refused the config. */
  error?: string;
  type?: string;
}

export interface Rollout {
  /** Every connected node of the affected groups applied the write. */
  applied: boolean;
  timedOut: boolean;
  nodes: NodeRollout[];
}

export interface ConfigServiceOptions {
  skipSemanticChecks?: boolean;
  /** Runs before a commit; throws a ConfigError for a config Envoy would refuse. */
  validateWithEnvoy?: (config: Config) => Promise<void>;
  autoRollback?: boolean;
}

/** Commits from other replicas can race ours; each retry re-reads the head and re-applies. */
const MAX_ATTEMPTS = 25;

/**
 * Every change of config goes through here: read the head, apply the change to a copy, validate
 * the whole result, commit with compare-and-set, publish to the fleet. Nothing is stored unless
 * all of it is valid, and nothing is pushed unless it was stored.
 */
export class ConfigService {
  /** The newest revision every connected node applied; what automatic rollback returns to. */
  lastGood?: number;
  private published?: Revision;
  private rolledBackFrom = new Set<number>();

  constructor(
    private readonly store: ConfigStore,
    private readonly publisher: Publisher,
    private readonly cache: SnapshotCache,
    private readonly fleet: FleetState,
    private readonly log: Logger,
    private readonly opts: ConfigServiceOptions = {},
  ) {
    fleet.on("applied", () => this.scheduleConvergenceCheck());
    fleet.on("disconnect", () => this.scheduleConvergenceCheck());
    fleet.on("nack", (node, typeUrl, nack) => void this.onNack(node, typeUrl, nack.message));
  }

  get autoRollback(): boolean {
    return !!this.opts.autoRollback;
  }

  set autoRollback(on: boolean) {
    this.opts.autoRollback = on;
  }

  async head(): Promise<Revision | undefined> {
    return this.store.head();
  }

  async current(): Promise<{ config: Config; number: number; hash: string }> {
    const head = await this.store.head();
    return head
      ? { config: head.config, number: head.number, hash: head.hash }
      : { config: EMPTY_CONFIG, number: 0, hash: configRevision(EMPTY_CONFIG) };
  }

  /** Publishes a revision (own or another replica's); publishing the same content twice is a no-op. */
  publish(rev: Revision): Record<string, string> {
    if (this.published && this.published.number >= rev.number && this.published.hash === rev.hash) return {};
    const result = this.publisher.publish(rev.config, rev.hash);
    this.published = rev;
    this.lastGood ??= rev.number;
    this.checkConverged();
    return result.changed;
  }

  validate(candidate: unknown): Config {
    return validateConfig(candidate, { skipSemanticChecks: this.opts.skipSemanticChecks });
  }

  /**
   * Applies `change` to a copy of the head and commits it. `expected` pins the revision the caller
   * saw (If-Match on the whole config): a different head is a 412. Without it, a concurrent commit
   * by someone else makes this retry on the new head, where `change` re-checks its own conditions.
   */
  write(
    change: (draft: Config) => Config | void,
    meta: WriteMeta = {},
    expected?: number,
  ): Promise<WriteResult> {
    return this.enqueue(change, meta, expected);
  }

  /**
   * Commits `config` whole, in place of the head. It must come from this service's `validate` (or
   * `validateConfig` with the same options) and be left as it came: it is neither copied nor checked
   * again, which for 10,000 routes saves a copy and a validation per change.
   */
  replace(config: Config, meta: WriteMeta = {}): Promise<WriteResult> {
    return this.enqueue(config, meta, undefined);
  }

  private queue: Promise<unknown> = Promise.resolve();

  /**
   * Writes of this replica go one at a time, so they never race each other; only other replicas'
   * commits can make a compare-and-set fail.
   */
  private enqueue(
    change: ((draft: Config) => Config | void) | Config,
    meta: WriteMeta,
    expected: number | undefined,
  ): Promise<WriteResult> {
    const run = this.queue.then(() => this.writeNow(change, meta, expected));
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async writeNow(
    change: ((draft: Config) => Config | void) | Config,
    meta: WriteMeta,
    expected: number | undefined,
  ): Promise<WriteResult> {
    for (let attempt = 1; ; attempt++) {
      const head = await this.store.head();
      const headNumber = head?.number ?? 0;
      if (expected !== undefined && expected !== headNumber) {
        throw new HttpError(
          412,
          "precondition_failed",
          `the config is at revision ${headNumber}, not ${expected}`,
        );
      }
      let valid: Config;
      if (typeof change === "function") {
        const draft = structuredClone(head?.config ?? EMPTY_CONFIG);
        valid = this.validate(change(draft) ?? draft);
      } else valid = change;
      const config = withPartsTokens(valid, head?.config, () => randomBytes(32).toString("base64url"));
      const hash = configRevision(config);
      if (head && hash === head.hash) {
        return { revision: head, changed: false, affected: {}, at: new Date().toISOString() };
      }
      await this.opts.validateWithEnvoy?.(config);
      const at = new Date().toISOString();
      let revision: Revision;
      try {
        revision = await this.store.commit(headNumber, config, { ...meta, hash });
      } catch (err) {
        const conflict = (err as { code?: string }).code === "revision_conflict";
        if (conflict && expected !== undefined) {
          throw new HttpError(412, "precondition_failed", "another write changed the config first");
        }
        if (conflict && attempt < MAX_ATTEMPTS) {
          // Jittered, so replicas racing for the same head spread out.
          await new Promise((r) => setTimeout(r, Math.random() * 5 * attempt));
          continue;
        }
        throw err; // a conflict after every attempt is a 409 the caller may retry
      }
      const affected = this.publish(revision);
      this.log.info(
        { revision: revision.number, affected, message: meta.message, author: meta.author },
        "config committed",
      );
      return { revision, changed: true, affected, at };
    }
  }

  /** Commits an earlier revision's config again, as a new revision. */
  async rollback(to: number, meta: WriteMeta = {}): Promise<WriteResult> {
    const target = await this.store.get(to);
    if (!target) throw new HttpError(404, "not_found", `revision ${to} is not in the history`);
    return this.write(() => target.config, {
      message: meta.message ?? `rollback to revision ${to}`,
      author: meta.author,
    });
  }

  /**
   * Where each connected node of the affected groups stands with respect to a write. A node that
   * applied a later snapshot of the same config (its group's limits divided again after an Envoy
   * joined or left) applied the write too: `configHash` is the write's config.
   */
  rolloutState(affected: Record<string, string>, since: string, configHash?: string): NodeRollout[] {
    const out: NodeRollout[] = [];
    for (const node of this.fleet.view()) {
      const target = affected[node.group];
      if (target === undefined) continue;
      const redivided =
        configHash !== undefined &&
        node.appliedConfigRevision === configHash &&
        node.appliedRevision === this.cache.get(node.group)?.revision;
      if (node.appliedRevision === target || redivided) {
        out.push({ id: node.id, group: node.group, state: "applied" });
        continue;
      }
      const nack = Object.values(node.types).find((t) => t.lastNack && t.lastNack.at >= since);
      if (nack)
        out.push({
          id: node.id,
          group: node.group,
          state: "nacked",
          error: nack.lastNack!.message,
          type: nack.typeUrl,
        });
      else out.push({ id: node.id, group: node.group, state: "pending" });
    }
    return out;
  }

  /** Resolves when every connected node of the affected groups applied or refused the write, or at the timeout. */
  waitApplied(result: WriteResult, timeoutMs: number): Promise<Rollout> {
    const evaluate = (): Rollout | undefined => {
      const nodes = this.rolloutState(result.affected, result.at, result.revision.hash);
      if (nodes.some((n) => n.state === "pending")) return undefined;
      return { applied: nodes.every((n) => n.state === "applied"), timedOut: false, nodes };
    };
    const now = evaluate();
    if (now) return Promise.resolve(now);
    return new Promise((resolve) => {
      const done = (r: Rollout) => {
        clearTimeout(timer);
        this.fleet.off("applied", check);
        this.fleet.off("nack", check);
        this.fleet.off("disconnect", check);
        resolve(r);
      };
      const check = () => {
        const r = evaluate();
        if (r) done(r);
      };
      const timer = setTimeout(() => {
        done({
          applied: false,
          timedOut: true,
          nodes: this.rolloutState(result.affected, result.at, result.revision.hash),
        });
      }, timeoutMs);
      this.fleet.on("applied", check);
      this.fleet.on("nack", check);
      this.fleet.on("disconnect", check);
    });
  }

  private convergenceCheck?: NodeJS.Immediate;

  /**
   * A push to N nodes brings N `applied` events in a burst; the fleet is checked once per burst,
   * not once per event, which would be quadratic in the fleet's size.
   */
  private scheduleConvergenceCheck(): void {
    this.convergenceCheck ??= setImmediate(() => {
      this.convergenceCheck = undefined;
      this.checkConverged();
    });
  }

  /** The fleet runs the published revision when every node has its group's current snapshot. */
  private checkConverged(): void {
    if (!this.published) return;
    for (const n of this.fleet.view()) {
      if (n.appliedRevision === undefined || n.appliedRevision !== this.cache.get(n.group)?.revision) return;
    }
    this.lastGood = this.published.number;
  }

  private async onNack(node: NodeStatus, typeUrl: string, message: string): Promise<void> {
    if (!this.opts.autoRollback || !this.published || this.lastGood === undefined) return;
    const bad = this.published.number;
    if (bad === this.lastGood || this.rolledBackFrom.has(bad)) return;
    this.rolledBackFrom.add(bad);
    const to = this.lastGood;
    this.log.warn(
      { node: node.id, typeUrl, error: message, from: bad, to },
      "a node refused the config: rolling back",
    );
    try {
      await this.rollback(to, {
        message: `automatic rollback from revision ${bad}: node ${node.id} refused it: ${message.slice(0, 300)}`,
        author: "auto-rollback",
      });
    } catch (err) {
      this.log.error({ err: (err as Error).message }, "automatic rollback failed");
    }
  }
}

export function isConfigError(err: unknown): err is ConfigError {
  return err instanceof ConfigError;
}
