import * as grpc from "@grpc/grpc-js";
import {
  describeIdentity,
  identityUri,
  peerAuth,
  withNonce,
  type LogBudget,
  type Logger,
  type Node,
  type Status,
  type WorkloadIdentity,
} from "@portico/common";
import { authorizeXds, type Refusal } from "./authorize.js";
import type { SnapshotCache } from "./cache.js";
import type { FleetState, NodeStatus } from "./fleet.js";
import { framed } from "./framed.js";
import type { XdsMetrics } from "./metrics.js";
import type { SendBudget } from "./send-budget.js";
import type { Snapshot, EncodedResource } from "./snapshot.js";
import { isKnownType, pushOrder, removalOrder, shortType, TypeUrl } from "./types.js";

export interface StreamDeps {
  budget: SendBudget;
  cache: SnapshotCache;
  fleet: FleetState;
  log: Logger;
  metrics: XdsMetrics;
  /**
   * Set when clients authenticate with certificates (mTLS): each stream is served only what the
   * identity its certificate names may read, and refused before anything is sent otherwise.
   */
  access?: { refusalLogs: LogBudget };
}

export type Protocol = "sotw" | "delta";

/** Why a response is being considered: a change of snapshot, or a request from the node. */
export type Trigger = "push" | "request";

/** The types whose resources route to clusters: they wait while a new cluster warms. */
const REFERRERS: ReadonlySet<string> = new Set([TypeUrl.Listener, TypeUrl.Route]);

/**
 * How long referrers wait for a node to ask for and accept a new cluster's endpoints; Envoy's own
 * initial_fetch_timeout, after which it stops warming the cluster anyway.
 */
const WARMING_TIMEOUT_MS = 15_000;

let streamCounter = 0;

/** `nonce` is field 5 of both DiscoveryResponse and DeltaDiscoveryResponse. */
const NONCE_FIELD = 5;

/**
 * One response, nonce included, framed once and written as the same Buffer to every stream that
 * sends it: a push to a fleet then costs no per-stream copy of a large route table.
 */
export interface SharedResponse {
  /**
   * Increases with every shared response made; a stream sends one only if it is newer than any it
   * sent of that type, so no nonce ever repeats on a stream.
   */
  readonly seq: number;
  readonly nonce: string;
  /** What is written: the response with its nonce, framed for gRPC (./framed.ts). */
  readonly message: Buffer;
  /** The response's size in bytes, nonce included. */
  readonly size: number;
  /** The response without its nonce, for a stream that must give it a nonce of its own. */
  readonly body: Uint8Array;
}

let sharedCounter = 0;

export function sharedResponse(body: Uint8Array): SharedResponse {
  const seq = ++sharedCounter;
  const nonce = `s${seq}`;
  const response = withNonce(body, NONCE_FIELD, nonce);
  const message = framed(response);
  // The body is where the response starts in the message: the nonce is its last field.
  const start = message.length - response.length;
  return { seq, nonce, message, size: response.length, body: message.subarray(start, start + body.length) };
}

/**
 * What SotW and delta streams share: the node (sent only on the first request, so remembered
 * here), the group's snapshot watch, nonces, fleet bookkeeping, and make-before-break order:
 * additions go in CDS → EDS → LDS → RDS → SDS order; on ADS, listeners and routes wait while a
 * cluster new to the node warms, until the node asked for and accepted its endpoints (as Envoy
 * itself waits at start-up); removals go only after the node has answered every response before
 * them, referrers before referees.
 */
export abstract class XdsStream<Req extends { node?: Node; type_url: string; response_nonce: string }> {
  protected readonly id = ++streamCounter;
  protected node?: Node;
  protected status?: NodeStatus;
  protected snapshot?: Snapshot;
  protected log: Logger;
  private unwatch?: () => void;
  private nonceCounter = 0;
  /** The latest nonce sent per type, and whether that response was part of a push's first phase. */
  protected readonly inFlight = new Map<string, string>();
  /** Types whose removals wait for the first phase of a push to be answered. */
  protected readonly removalPending = new Set<string>();
  private closed = false;
  private readonly unknownTypesSeen = new Set<string>();
  /** Endpoints (ClusterLoadAssignment names) of new clusters the node has yet to accept. */
  private readonly warming = new Set<string>();
  /** Referrer types held back while `warming` is not empty. */
  private readonly deferred = new Set<string>();
  private warmingTimer?: NodeJS.Timeout;
  /** The peer's identity, read once from its verified certificate when access is checked. */
  private readonly identity?: WorkloadIdentity;

  constructor(
    protected readonly call: grpc.ServerDuplexStream<Req, Buffer>,
    protected readonly deps: StreamDeps,
    protected readonly protocol: Protocol,
    /** Set for the per-type services (LDS, CDS, …); undefined on ADS. */
    protected readonly fixedType?: string,
  ) {
    this.log = deps.log.child({ stream: this.id, protocol, ads: !fixedType });
    if (deps.access) this.identity = peerAuth(call).identity;
  }

  private onClosed?: () => void;

  start(onClosed?: () => void): void {
    this.onClosed = onClosed;
    this.deps.metrics.streams.inc({ protocol: this.protocol });
    this.call.on("data", (req: Req) => {
      // Requests already read when the stream was ended (refused, failed) are not served.
      if (this.closed) return;
      try {
        this.onRequest(req);
        // Covers answers to the first phase of a push, and a reconnect after which the node
        // already holds everything (delta with initial versions: nothing to send, nothing to ACK).
        if (!this.closed) this.settle();
      } catch (err) {
        this.log.error({ err }, "xDS request handling failed");
        this.fail(grpc.status.INTERNAL, "internal error handling the request");
      }
    });
    this.call.on("end", () => {
      this.close();
      this.call.end();
    });
    this.call.on("error", (err) => {
      this.log.debug({ err: err.message }, "stream error");
      this.close();
    });
    this.call.on("cancelled", () => this.close());
    this.call.on("close", () => this.close());
  }

  /** Ends the stream (graceful shutdown): the node reconnects, possibly to another replica. */
  end(): void {
    if (this.closed) return;
    this.close();
    this.call.end();
  }

  protected fail(code: grpc.status, details: string): void {
    if (this.closed) return;
    this.close();
    // grpc-js turns an 'error' event on a server stream into the call's status.
    this.call.emit("error", Object.assign(new Error(details), { code, details }));
  }

  private close(): void {
    if (this.closed) return;
    this.closed = true;
    this.outbox.length = 0;
    clearTimeout(this.warmingTimer);
    this.releaseCurrent?.();
    this.unwatch?.();
    this.onClosed?.();
    this.deps.metrics.streams.dec({ protocol: this.protocol });
    if (this.status) {
      this.deps.fleet.disconnect(this.status);
      this.deps.metrics.nodes.set(this.deps.fleet.size());
      this.log.info("node disconnected");
    }
  }

  /**
   * Handles the node and type of a request; returns the type URL, or undefined to ignore it. The
   * node joins the fleet only once its first request was found allowed, so a refused stream is
   * never sent anything and none of its ACKs or NACKs count.
   */
  protected accept(req: Req): string | undefined {
    const node = this.node ?? req.node;
    if (!node || !node.id || !node.cluster) {
      this.fail(
        grpc.status.INVALID_ARGUMENT,
        "the first request of a stream must carry node.id and node.cluster (the gateway group)",
      );
      return undefined;
    }
    const typeUrl = this.fixedType ?? req.type_url;
    if (this.fixedType && req.type_url && req.type_url !== this.fixedType) {
      this.fail(grpc.status.INVALID_ARGUMENT, `this service serves ${this.fixedType}, not ${req.type_url}`);
      return undefined;
    }
    const known = !!typeUrl && isKnownType(typeUrl);
    if (this.deps.access) {
      const refusal = authorizeXds(this.identity, {
        cluster: node.cluster,
        typeUrl: known ? typeUrl : undefined,
      });
      if (refusal) {
        this.refuse(refusal, node);
        return undefined;
      }
    }
    if (!this.node) {
      this.node = node;
      this.log = this.log.child({
        node: node.id,
        group: node.cluster,
        ...(this.identity ? { identity: identityUri(this.identity) } : {}),
      });
      this.status = this.deps.fleet.connect(node, this.protocol);
      this.deps.metrics.nodes.set(this.deps.fleet.size());
      this.log.info({ envoy: this.status.version }, "node connected");
      this.snapshot = this.deps.cache.get(node.cluster);
      this.unwatch = this.deps.cache.watch(node.cluster, (s) => this.onSnapshot(s));
    }
    if (!known) {
      // An unknown type must not cut the node off from everything else on the ADS stream.
      if (!this.unknownTypesSeen.has(typeUrl)) {
        this.unknownTypesSeen.add(typeUrl);
        this.log.warn({ typeUrl }, "request for a resource type this control plane does not serve; ignored");
      }
      return undefined;
    }
    return typeUrl;
  }

  /** Ends the stream with PERMISSION_DENIED; counted always, logged within the refusal budget. */
  private refuse(refusal: Refusal, node: Node): void {
    this.deps.metrics.refusedStreams.inc({ reason: refusal.reason });
    const budget = this.deps.access?.refusalLogs.take();
    if (budget) {
      const cert = this.call.getAuthContext()?.sslPeerCertificate;
      this.log.warn(
        {
          reason: refusal.reason,
          identity: this.identity ? describeIdentity(this.identity) : undefined,
          // Who the certificate says it is, for a certificate that names no identity.
          ...(this.identity ? {} : { subject: cert?.subject?.CN, san: cert?.subjectaltname?.slice(0, 500) }),
          ...(this.node ? {} : { node: node.id.slice(0, 200), group: node.cluster.slice(0, 200) }),
          ...(budget.dropped ? { dropped: budget.dropped } : {}),
        },
        `xDS stream refused: ${refusal.message}`,
      );
    }
    this.fail(grpc.status.PERMISSION_DENIED, refusal.message);
  }

  /** Per type, the newest shared response this stream sent. */
  private readonly sharedSent = new Map<string, number>();

  /**
   * Queues `response` and returns the nonce it goes with: the shared one, unless this stream
   * already sent that response or a newer one of the type (a forced re-send, a stream going back
   * to an earlier view); then a copy with a nonce of this stream's own.
   */
  protected send(typeUrl: string, response: SharedResponse, version: string): string {
    if (response.seq > (this.sharedSent.get(typeUrl) ?? 0)) {
      this.sharedSent.set(typeUrl, response.seq);
      this.write(typeUrl, response.size, () => response.message, response.nonce, version);
      return response.nonce;
    }
    const nonce = `${this.id}-${++this.nonceCounter}`;
    const size = response.body.length + nonce.length + 2;
    this.write(typeUrl, size, () => withNonce(response.body, NONCE_FIELD, nonce), nonce, version);
    return nonce;
  }

  /** Responses of this stream not yet handed to the socket, in order. */
  private readonly outbox: { size: number; build: () => Buffer }[] = [];
  private writing = false;

  /**
   * Queues a response. Its bytes are built (if it needs a copy of its own) only when the send
   * budget lets it go, so a push to many streams does not hold a copy per stream at once; order
   * within the stream is kept.
   */
  private write(typeUrl: string, size: number, build: () => Buffer, nonce: string, version: string): void {
    if (this.closed) return;
    this.inFlight.set(typeUrl, nonce);
    this.deps.metrics.responses.inc({ type: shortType(typeUrl), protocol: this.protocol });
    this.deps.metrics.responseBytes.inc({ type: shortType(typeUrl), protocol: this.protocol }, size);
    if (this.status) this.deps.fleet.sent(this.status, typeUrl, version);
    this.outbox.push({ size, build });
    this.pump();
  }

  /** Releases the budget held by the write in progress; idempotent, since a closing stream may never call back. */
  private releaseCurrent?: () => void;

  private pump(): void {
    if (this.writing || this.closed) return;
    const next = this.outbox.shift();
    if (!next) return;
    this.writing = true;
    this.deps.budget.acquire(next.size, () => {
      let released = false;
      const release = () => {
        if (released) return;
        released = true;
        this.releaseCurrent = undefined;
        this.deps.budget.release(next.size);
      };
      this.releaseCurrent = release;
      if (this.closed) return release();
      this.call.write(next.build(), () => {
        release();
        this.writing = false;
        this.pump();
      });
    });
  }

  protected recordAck(typeUrl: string, version: string): void {
    this.deps.metrics.acks.inc({ type: shortType(typeUrl) });
    if (this.status) this.deps.fleet.ack(this.status, typeUrl, version);
  }

  protected recordNack(typeUrl: string, version: string, nonce: string, detail: Status): void {
    this.deps.metrics.nacks.inc({ type: shortType(typeUrl) });
    const message = detail.message ?? "";
    this.log.warn(
      { typeUrl, version, error: message },
      "node refused a config (NACK); it keeps its last good one",
    );
    if (this.status)
      this.deps.fleet.nack(this.status, typeUrl, { version, nonce, message, code: detail.code ?? 0 });
    // A refused cluster or endpoint never finishes warming: what waited for it goes now.
    if (typeUrl === TypeUrl.Cluster || typeUrl === TypeUrl.Endpoint) this.endWarming();
  }

  /**
   * Sends what the node should get for this type now, unless it routes to a cluster that is still
   * warming on the node; then it goes once the cluster's endpoints were accepted.
   */
  protected respond(typeUrl: string, trigger: Trigger, namesChanged = false): boolean {
    if (this.warming.size > 0 && REFERRERS.has(typeUrl)) {
      this.deferred.add(typeUrl);
      return false;
    }
    return this.answer(typeUrl, trigger, namesChanged);
  }

  /**
   * Called with the clusters a response gives the node that it did not hold: on ADS, once the node
   * asks for endpoints at all, the referrers wait for theirs.
   */
  protected clustersAdded(added: Iterable<EncodedResource>): void {
    if (this.fixedType || !this.snapshot || !this.isRequested(TypeUrl.Endpoint)) return;
    const endpoints = this.snapshot.get(TypeUrl.Endpoint).resources;
    for (const c of added) if (c.warmsOn && endpoints.has(c.warmsOn)) this.warming.add(c.warmsOn);
    if (this.warming.size > 0 && !this.warmingTimer) {
      this.warmingTimer = setTimeout(() => {
        this.log.warn(
          { endpoints: [...this.warming].slice(0, 5) },
          "node did not accept the endpoints of new clusters in time; sending the routes anyway",
        );
        this.endWarming();
        this.settle();
      }, WARMING_TIMEOUT_MS);
      this.warmingTimer.unref();
    }
  }

  /** Whether the new clusters' endpoints have arrived: still in the snapshot and accepted, or gone. */
  private warmed(): boolean {
    const endpoints = this.snapshot?.get(TypeUrl.Endpoint).resources;
    const pending = [...this.warming].filter((n) => endpoints?.has(n));
    return pending.length === 0 || (!this.inFlight.has(TypeUrl.Endpoint) && this.holdsEndpoints(pending));
  }

  /** Lets the held-back referrers go, in push order. */
  private endWarming(): void {
    clearTimeout(this.warmingTimer);
    this.warmingTimer = undefined;
    this.warming.clear();
    const types = pushOrder().filter((t) => this.deferred.has(t));
    this.deferred.clear();
    let heldBack = false;
    for (const t of types) heldBack = this.answer(t, "push") || heldBack;
  }

  private onSnapshot(snapshot: Snapshot): void {
    this.snapshot = snapshot;
    if (this.closed) return;
    let removals = false;
    for (const typeUrl of pushOrder()) {
      if (this.isRequested(typeUrl)) removals = this.respond(typeUrl, "push") || removals;
    }
    if (removals) this.settle();
    else this.checkApplied();
  }

  /**
   * Called when a response has been answered. Once no response of the first phase is waiting,
   * the removals go out, in push order.
   */
  protected settle(): void {
    if (this.warming.size > 0) {
      if (!this.warmed()) return;
      this.endWarming();
    }
    if (this.inFlight.size > 0) return;
    if (this.removalPending.size > 0) {
      const types = removalOrder().filter((t) => this.removalPending.has(t));
      this.removalPending.clear();
      for (const t of types) this.respond(t, "request");
      return;
    }
    this.checkApplied();
  }

  private checkApplied(): void {
    if (!this.snapshot || !this.status || this.inFlight.size > 0 || this.removalPending.size > 0) return;
    if (this.warming.size > 0 || this.deferred.size > 0) return;
    for (const typeUrl of pushOrder()) {
      if (this.isRequested(typeUrl) && !this.isInSync(typeUrl)) return;
    }
    this.deps.fleet.applied(this.status, this.snapshot.revision, this.snapshot.source);
  }

  /** Whether the node has asked for this type on this stream. */
  protected abstract isRequested(typeUrl: string): boolean;
  /** Whether the node holds and has accepted what the current snapshot says for this type. */
  protected abstract isInSync(typeUrl: string): boolean;
  /**
   * Sends what the node should get for this type now, if anything. On a push, removals are held
   * back (into `removalPending`); returns true when it did that.
   */
  protected abstract answer(typeUrl: string, trigger: Trigger, namesChanged?: boolean): boolean;
  /** Whether the node holds and has accepted these endpoints (ClusterLoadAssignment names). */
  protected abstract holdsEndpoints(names: readonly string[]): boolean;
  protected abstract onRequest(req: Req): void;
}
