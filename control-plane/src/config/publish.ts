import { createHash } from "node:crypto";
import type { Logger } from "@portico/common";
import { ConfigError } from "../model/errors.js";
import type { FetchedKeys } from "../model/jwks.js";
import type { Config } from "../model/schema.js";
import type { QuotaDeny } from "../model/usage-quota.js";
import { groupsDividingLimits, translate } from "../translate/translate.js";
import { POLICY_GROUP, translatePolicy } from "../translate/policy.js";
import type { SnapshotCache } from "../xds/cache.js";
import type { XdsMetrics } from "../xds/metrics.js";
import { buildSnapshot, type Snapshot } from "../xds/snapshot.js";

export interface PublishResult {
  /** Hash of the config's canonical JSON. */
  revision: string;
  /** Groups whose snapshot changed, with their new snapshot revision. */
  changed: Record<string, string>;
}

export function configRevision(config: Config): string {
  return createHash("sha256").update(JSON.stringify(config)).digest("hex").slice(0, 20);
}

/**
 * Translates a validated config and builds every group's snapshot before touching the cache, so a
 * config that cannot be encoded changes nothing. `membersOf`: the connected Envoys of a group,
 * among which the limits they count are divided (1 when absent); `quotaDenies`: who has used up a
 * calendar quota the control plane counts.
 */
export function buildSnapshots(
  config: Config,
  revision = configRevision(config),
  membersOf?: (group: string) => number,
  quotaDenies?: readonly QuotaDeny[],
  keys?: FetchedKeys,
  /** Each group's snapshot now, whose encodings an unchanged resource keeps. */
  previous?: (group: string) => Snapshot | undefined,
): Map<string, Snapshot> {
  const snapshots = new Map<string, Snapshot>();
  // The policy group first: its pushes (a new provider, key or limit) start before the Envoy
  // routes that need them.
  const groups = new Map([
    [POLICY_GROUP, translatePolicy(config)],
    ...translate(config, membersOf, quotaDenies, keys),
  ]);
  for (const [group, resources] of groups) {
    try {
      snapshots.set(group, buildSnapshot(group, resources, revision, previous?.(group)));
    } catch (err) {
      throw new ConfigError("translation_failed", `gateway '${group}' could not be translated`, [
        { field: `gateways.${group}`, reason: (err as Error).message },
      ]);
    }
  }
  return snapshots;
}

/**
 * Publishes configs into the snapshot cache. Groups that disappear from the config get an empty
 * snapshot, so their Envoys drop the listeners rather than serve a deleted gateway.
 */
/** Where the translator's signing keys come from (jwks/keeper.ts): it learns each config's providers. */
export interface KeySource {
  track(config: Config): void;
  keys(): FetchedKeys;
}

export class Publisher {
  private groups = new Set<string>();
  /** The member counts the current snapshots divide limits by, for the groups that divide any. */
  private divided = new Map<string, number>();
  current?: { config: Config; revision: string };

  constructor(
    private readonly cache: SnapshotCache,
    private readonly log: Logger,
    private readonly metrics?: XdsMetrics,
    /** The connected Envoys of each gateway group (a group missing has none). */
    private readonly members: () => ReadonlyMap<string, number> = () => new Map(),
    /** Who has used up a calendar quota the control plane counts, now. */
    private readonly quotaDenies: () => readonly QuotaDeny[] = () => [],
    /** The signing keys fetched for providers that publish them; told of every config published. */
    private readonly keySource?: KeySource,
  ) {}

  /** The counts a publish of `config` divides by now: every group's, at least 1. */
  private membersFor(config: Config): Map<string, number> {
    const connected = this.members();
    return new Map(groupsDividingLimits(config).map((g) => [g, Math.max(1, connected.get(g) ?? 0)]));
  }

  /** `revision`: `configRevision(config)`, when the caller has it (a stored revision's hash). */
  publish(config: Config, revision?: string): PublishResult {
    return this.publishWith(config, this.membersFor(config), revision);
  }

  /**
   * Publishes the current config again when a group's connected Envoys changed since the limits
   * they count were divided; a no-op otherwise (and for groups that divide no limits).
   */
  refresh(): PublishResult | undefined {
    if (!this.current) return undefined;
    const now = this.membersFor(this.current.config);
    const same = [...now].every(([g, n]) => this.divided.get(g) === n);
    if (same) return undefined;
    this.log.info(
      { members: Object.fromEntries(now) },
      "gateway group membership changed: dividing the limits their Envoys count again",
    );
    return this.publishWith(this.current.config, now, this.current.revision);
  }

  /**
   * Publishes the current config again with what changed beside it: the quota denies as they are
   * now (a deny or its lifting changes one resource, the deny filter's ECDS config, of the groups
   * it concerns, and only that is pushed), or the signing keys held now (a provider's keys were
   * fetched for the first time, or rotated: its routes move to Envoy, or Envoy gets the new keys).
   */
  republish(): PublishResult | undefined {
    if (!this.current) return undefined;
    return this.publishWith(this.current.config, this.divided, this.current.revision);
  }

  private publishWith(
    config: Config,
    divided: Map<string, number>,
    revision = configRevision(config),
  ): PublishResult {
    const started = process.hrtime.bigint();
    this.keySource?.track(config);
    const snapshots = buildSnapshots(
      config,
      revision,
      (g) => divided.get(g) ?? 1,
      this.quotaDenies(),
      this.keySource?.keys(),
      (g) => this.cache.get(g),
    );
    for (const group of this.groups) {
      if (!snapshots.has(group)) snapshots.set(group, buildSnapshot(group, [], revision));
    }
    this.metrics?.snapshotBuild.observe(Number(process.hrtime.bigint() - started) / 1e9);
    const changed: Record<string, string> = {};
    for (const [group, snapshot] of snapshots) {
      if (this.cache.set(snapshot)) changed[group] = snapshot.revision;
    }
    this.groups = new Set(config.gateways.map((g) => g.name));
    this.divided = divided;
    this.current = { config, revision };
    this.log.info({ revision, changed }, "config published");
    return { revision, changed };
  }
}
