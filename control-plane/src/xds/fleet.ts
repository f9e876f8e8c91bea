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
 */
export class FleetState extends EventEmitter<FleetEvents> {
  private readonly nodes = new Map<string, NodeStatus>();

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

  /** The live records, without copying: for hot paths that only read (never keep or change them). */
  view(): IterableIterator<Readonly<NodeStatus>> {
    return this.nodes.values();
  }

  list(): NodeStatus[] {
    return [...this.nodes.values()].map((n) => structuredClone(n));
  }

  get(id: string): NodeStatus | undefined {
    const n = this.nodes.get(id);
    return n && structuredClone(n);
  }

  size(): number {
    return this.nodes.size;
  }
}
