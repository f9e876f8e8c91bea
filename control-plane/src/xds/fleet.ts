import { EventEmitter } from "node:events";
import type { Node } from "@portico/common";

export interface NackRecord {
  /** The version the node refused. */
  version: string;
  nonce: string;
  /** Envoy's own `error_detail` text. */
  message: string;
  code: number;
  at: string;
}

export interface TypeStatus {
  typeUrl: string;
  sentVersion?: string;
  sentAt?: string;
  ackedVersion?: string;
  ackedAt?: string;
  lastNack?: NackRecord;
}

export interface NodeStatus {
  id: string;
  group: string;
  /** Envoy's build, when it says (e.g. `1.40.0`). */
  version?: string;
  userAgent?: string;
  protocol: "sotw" | "delta";
  /** The control-plane replica the node is connected to, when replicas share their fleet state. */
  replica?: string;
  connectedSince: string;
  streams: number;
  /** The snapshot revision this node has fully applied (every type it asked for ACKed). */
  appliedRevision?: string;
  /** The config revision that snapshot was translated from. */
  appliedConfigRevision?: string;
  types: Record<string, TypeStatus>;
}

export interface FleetEvents {
  ack: [node: NodeStatus, typeUrl: string, version: string];
  nack: [node: NodeStatus, typeUrl: string, nack: NackRecord];
  applied: [node: NodeStatus, revision: string];
  connect: [node: NodeStatus];
  disconnect: [node: NodeStatus];
}

function envoyVersion(node: Node): string | undefined {
  const v = node.user_agent_build_version?.version;
  if (v && v.major_number !== undefined) return `${v.major_number}.${v.minor_number ?? 0}.${v.patch ?? 0}`;
  return node.user_agent_version || undefined;
}

/**
 * What every connected node has been sent, has accepted and has refused, per resource type. Nodes
 * are forgotten when their last stream closes, so memory follows the connected fleet.
 *
 * With replicas sharing a store, it also holds what the other replicas report of their nodes:
 * reading (`view`, `list`, `get`) and the events cover the whole fleet; `local` and `size` cover
 * this replica's connections.
 */
export class FleetState extends EventEmitter<FleetEvents> {
  private readonly nodes = new Map<string, NodeStatus>();
  /** Per other replica: the nodes it reported, by id. */
  private readonly remote = new Map<string, Map<string, NodeStatus>>();
  /** This replica's name on the shared store, when it has one. */
  replica?: string;

  connect(node: Node, protocol: "sotw" | "delta"): NodeStatus {
    let status = this.nodes.get(node.id);
    if (status) {
      status.streams++;
      return status;
    }
    status = {
      id: node.id,
      group: node.cluster,
      version: envoyVersion(node),
      userAgent: node.user_agent_name || undefined,
      protocol,
      connectedSince: new Date().toISOString(),
      streams: 1,
      types: {},
    };
    this.nodes.set(node.id, status);
    this.emit("connect", status);
    return status;
  }

  disconnect(status: NodeStatus): void {
    status.streams--;
    if (status.streams <= 0 && this.nodes.get(status.id) === status) {
      this.nodes.delete(status.id);
      this.emit("disconnect", status);
    }
  }

  private type(status: NodeStatus, typeUrl: string): TypeStatus {
    return (status.types[typeUrl] ??= { typeUrl });
  }

  sent(status: NodeStatus, typeUrl: string, version: string): void {
    const t = this.type(status, typeUrl);
    t.sentVersion = version;
    t.sentAt = new Date().toISOString();
  }

  ack(status: NodeStatus, typeUrl: string, version: string): void {
    const t = this.type(status, typeUrl);
    t.ackedVersion = version;
    t.ackedAt = new Date().toISOString();
    this.emit("ack", status, typeUrl, version);
  }

  nack(status: NodeStatus, typeUrl: string, nack: Omit<NackRecord, "at">): void {
    const record = { ...nack, at: new Date().toISOString() };
    this.type(status, typeUrl).lastNack = record;
    this.emit("nack", status, typeUrl, record);
  }

  applied(status: NodeStatus, revision: string, configRevision?: string): void {
    if (status.appliedRevision === revision) return;
    status.appliedRevision = revision;
    status.appliedConfigRevision = configRevision;
    this.emit("applied", status, revision);
  }

  /**
   * The live records of the whole fleet, without copying: for hot paths that only read (never keep
   * or change them). A node another replica still lists but that is connected here (it moved) is
   * this replica's; one that two other replicas list is the one connected last.
   */
  *view(): IterableIterator<Readonly<NodeStatus>> {
    yield* this.nodes.values();
    if (this.remote.size === 0) return;
    const chosen = new Map<string, NodeStatus>();
    for (const nodes of this.remote.values()) {
      for (const n of nodes.values()) {
        if (this.nodes.has(n.id)) continue;
        const other = chosen.get(n.id);
        if (!other || other.connectedSince < n.connectedSince) chosen.set(n.id, n);
      }
    }
    yield* chosen.values();
  }

  /** This replica's own connections. */
  local(): IterableIterator<Readonly<NodeStatus>> {
    return this.nodes.values();
  }

  list(): NodeStatus[] {
    return [...this.view()].map((n) => this.copy(n));
  }

  get(id: string): NodeStatus | undefined {
    for (const n of this.view()) if (n.id === id) return this.copy(n);
    return undefined;
  }

  private copy(n: Readonly<NodeStatus>): NodeStatus {
    const c = structuredClone(n) as NodeStatus;
    if (this.replica && !c.replica) c.replica = this.replica;
    return c;
  }

  /** The other replicas that reported nodes, with how many each. */
  replicas(): { replica: string; nodes: number }[] {
    return [...this.remote].map(([replica, nodes]) => ({ replica, nodes: nodes.size }));
  }

  /**
   * Replaces what another replica reports (an empty list when it is gone), and emits for what
   * changed there: a node applying, refusing, arriving or leaving, as for this replica's own.
   */
  setRemote(replica: string, nodes: readonly NodeStatus[]): void {
    if (replica === this.replica) return;
    const before = this.remote.get(replica) ?? new Map<string, NodeStatus>();
    const after = new Map(nodes.map((n) => [n.id, { ...n, replica }]));
    if (after.size > 0) this.remote.set(replica, after);
    else this.remote.delete(replica);
    for (const [id, old] of before) if (!after.has(id)) this.emit("disconnect", old);
    for (const [id, n] of after) {
      const old = before.get(id);
      if (!old) this.emit("connect", n);
      for (const [typeUrl, t] of Object.entries(n.types)) {
        const seen = old?.types[typeUrl]?.lastNack?.at;
        if (t.lastNack && t.lastNack.at !== seen) this.emit("nack", n, typeUrl, t.lastNack);
      }
      if (n.appliedRevision && n.appliedRevision !== old?.appliedRevision)
        this.emit("applied", n, n.appliedRevision);
    }
  }

  size(): number {
    return this.nodes.size;
  }
}
